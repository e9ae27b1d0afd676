//! The case on tag values: one rule for every store. A value with a NUL or longer than
//! [`MAX_TAG_VALUE_LEN`] bytes cannot become a [`Tag`]; a value at the limit, under the
//! longest key, is stored and found by a tag query.

use crate::event::{MAX_TAG_KEY_LEN, MAX_TAG_VALUE_LEN, NewEvent, Tag, TagError, Tags};
use crate::query::{EventQuery, QueryItem};
use crate::testing::{ContractFailure, EventStoreFactory};

use super::support::{Ctx, positions_of};

/// Tag values follow one rule on every store: `Tag::new` and `Tag::parse` refuse a value
/// with a NUL and a value one byte over [`MAX_TAG_VALUE_LEN`]; an event carrying two tags
/// whose keys are [`MAX_TAG_KEY_LEN`] bytes and whose values are exactly [`MAX_TAG_VALUE_LEN`]
/// bytes (multi-byte characters included) is stored, read back intact and found by a query
/// on each tag.
pub async fn tag_values_follow_one_rule<F: EventStoreFactory>(
    factory: &F,
) -> Result<(), ContractFailure> {
    let ctx = Ctx("tag_values_follow_one_rule");
    refusals(ctx)?;

    let store = factory.create().await;
    // Values exactly at the limit in bytes, of characters a database cannot compress much
    // (PostgreSQL compresses long index keys): 341 three-byte characters and one byte.
    let value_a = format!("{}z", scrambled(MAX_TAG_VALUE_LEN / 3, 1));
    let value_b = format!("{}z", scrambled(MAX_TAG_VALUE_LEN / 3, 2));
    ctx.eq(
        value_a.len(),
        MAX_TAG_VALUE_LEN,
        "bytes of the value at the limit",
    )?;
    ctx.eq(
        value_b.len(),
        MAX_TAG_VALUE_LEN,
        "bytes of the value at the limit",
    )?;
    let at_limit = |key: char, value: &str| {
        Tag::new(&key.to_string().repeat(MAX_TAG_KEY_LEN), value).map_err(|e| {
            ctx.fail(format!(
                "Tag::new refused a {MAX_TAG_KEY_LEN}-byte key with a {}-byte value: {e}",
                value.len()
            ))
        })
    };
    let (a, b) = (at_limit('a', &value_a)?, at_limit('b', &value_b)?);
    let short = ctx.event("contract.short", &["a:short"], "{}")?;
    let long = NewEvent::new(
        "contract.long",
        Tags::from_tags([a.clone(), b.clone()]),
        b"{}".to_vec(),
    )
    .map_err(|e| ctx.fail(format!("bad type name in the suite itself: {e}")))?;
    let appended = ctx
        .append(
            &store,
            vec![short, long],
            None,
            "append of tags at the limit",
        )
        .await?;
    ctx.eq(positions_of(&appended), vec![1, 2], "positions appended")?;
    let read = ctx.read(&store, &EventQuery::match_all()).await?;
    ctx.eq(
        &read,
        &appended,
        "read(match_all) against the appended events",
    )?;
    for (what, tag) in [("first", &a), ("second", &b)] {
        let found = ctx
            .read(&store, &EventQuery::item(QueryItem::tagged([tag.clone()])))
            .await?;
        ctx.eq(
            positions_of(&found),
            vec![2],
            format!("positions found by a query on the {what} tag at the limit"),
        )?;
        let typed = EventQuery::item(QueryItem::types(["contract.long"]).and_tag(tag.clone()));
        ctx.eq(
            ctx.positions(&store, &typed).await?,
            vec![2],
            format!("positions found by a query on type and the {what} tag"),
        )?;
    }
    Ok(())
}

/// The values the rule refuses, through every constructor of a tag.
fn refusals(ctx: Ctx) -> Result<(), ContractFailure> {
    let over = "v".repeat(MAX_TAG_VALUE_LEN + 1);
    let three_kb = "v".repeat(3 * 1024);
    for (what, value) in [
        ("a NUL", "a\0b"),
        ("a value one byte over the limit", over.as_str()),
        ("a 3 KB value", three_kb.as_str()),
    ] {
        for (how, result) in [
            ("Tag::new", Tag::new("k", value)),
            ("Tag::parse", Tag::parse(&format!("k:{value}"))),
        ] {
            ctx.check(refused_value(&result), || {
                format!(
                    "{how} with {what}: expected a TagError on the value of `k`, got {result:?}"
                )
            })?;
        }
    }
    Ok(())
}

/// Whether `result` is the refusal of the value of key `k`.
fn refused_value(result: &Result<Tag, TagError>) -> bool {
    matches!(
        result,
        Err(TagError::ValueContainsNul { key, .. } | TagError::ValueTooLong { key, .. })
            if key == "k"
    )
}

/// `n` CJK characters (three bytes each) from a small generator seeded by `seed`.
fn scrambled(n: usize, seed: u64) -> String {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let offset = u32::try_from((x >> 33) % 0x5000).unwrap_or(0);
            char::from_u32(0x4E00 + offset).unwrap_or('z')
        })
        .collect()
}

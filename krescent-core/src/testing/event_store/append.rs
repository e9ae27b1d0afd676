//! Cases on appending: events come back as appended, and DCB conditional appends succeed,
//! conflict or store nothing as their condition says.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::event::{NewEvent, RecordedEvent};
use crate::query::{AppendCondition, EventQuery, QueryItem};
use crate::store::{EventStore, StoreError};
use crate::testing::{ContractFailure, EventStoreFactory};

use super::support::{CLOCK_TOLERANCE, Ctx, describe, limit, positions_of, tag};

/// Appended events come back in order at positions 1..=n, with their types, tags and payloads
/// intact, unique UUID v7 ids and the time of the append; the events `append` returns equal
/// those `read` returns.
pub async fn append_and_read_back<F: EventStoreFactory>(
    factory: &F,
) -> Result<(), ContractFailure> {
    let ctx = Ctx("append_and_read_back");
    let store = factory.create().await;
    let batches = [
        vec![
            ctx.event("contract.opened", &["account:1"], r#"{"n":1}"#)?,
            ctx.event(
                "contract.deposited",
                &["account:1", "currency:EUR"],
                r#"{"n":2,"amount":10}"#,
            )?,
            ctx.event("contract.untagged", &[], r#"{"n":3}"#)?,
        ],
        vec![
            ctx.event(
                "contract.deposited",
                &["account:2", "note:with:colons"],
                r#"{"n":4,"text":"grüße \"quoted\""}"#,
            )?,
            ctx.event("contract.opened", &["account:2"], r#"{"n":5}"#)?,
        ],
        vec![ctx.event("contract.closed", &["account:1"], r#"{"n":6}"#)?],
    ];

    let started = Utc::now();
    let mut returned = Vec::new();
    let mut next = 1;
    for (i, batch) in batches.iter().enumerate() {
        let recorded = ctx
            .append(&store, batch.clone(), None, &format!("append of batch {i}"))
            .await?;
        let expected: Vec<u64> = (next..next + batch.len() as u64).collect();
        ctx.eq(
            positions_of(&recorded),
            expected,
            format!("positions returned for batch {i} ({} events)", batch.len()),
        )?;
        next += batch.len() as u64;
        returned.extend(recorded);
    }
    let finished = Utc::now();

    let inputs: Vec<&NewEvent> = batches.iter().flatten().collect();
    expect_as_appended(ctx, &inputs, &returned, started, finished)?;
    let ids: HashSet<_> = returned.iter().map(|r| r.id).collect();
    ctx.eq(
        ids.len(),
        returned.len(),
        "number of distinct ids among the appended events",
    )?;

    ctx.eq(ctx.head(&store).await?, 6, "head after appending 6 events")?;
    let read = ctx.read(&store, &EventQuery::match_all()).await?;
    ctx.eq(
        read,
        returned,
        "read(match_all) compared with the events append returned",
    )?;
    Ok(())
}

/// Each recorded event carries the type, tags and payload of the event appended, a UUID v7
/// id and a timestamp between `started` and `finished`, give or take the clock tolerance.
fn expect_as_appended(
    ctx: Ctx,
    inputs: &[&NewEvent],
    returned: &[RecordedEvent],
    started: DateTime<Utc>,
    finished: DateTime<Utc>,
) -> Result<(), ContractFailure> {
    for (new, recorded) in inputs.iter().zip(returned) {
        let at = recorded.position;
        ctx.eq(
            &*recorded.event_type,
            &*new.event_type,
            format!("type of the event at position {at}"),
        )?;
        ctx.eq(
            &recorded.tags,
            &new.tags,
            format!("tags of the event at position {at}"),
        )?;
        ctx.eq(
            &recorded.data,
            &new.payload,
            format!("payload of the event at position {at}"),
        )?;
        ctx.eq(
            recorded.id.get_version_num(),
            7,
            format!("UUID version of the id {} at position {at}", recorded.id),
        )?;
        ctx.check(
            recorded.timestamp >= started - CLOCK_TOLERANCE
                && recorded.timestamp <= finished + CLOCK_TOLERANCE,
            || {
                format!(
                    "timestamp {} of the event at position {at} is not the time of the append \
                     ({started} to {finished}, give or take {CLOCK_TOLERANCE})",
                    recorded.timestamp
                )
            },
        )?;
    }
    Ok(())
}

/// DCB conditional appends: an append succeeds when no event matching the condition's query
/// is stored after its position, and otherwise fails with `StoreError::Conflict` naming the
/// first conflicting position, storing nothing.
pub async fn conditional_append<F: EventStoreFactory>(factory: &F) -> Result<(), ContractFailure> {
    let ctx = Ctx("conditional_append");
    let store = factory.create().await;
    ctx.append(
        &store,
        vec![
            ctx.event("contract.a", &["k:1"], "{}")?, // 1
            ctx.event("contract.b", &["k:2"], "{}")?, // 2
            ctx.event("contract.a", &["k:2"], "{}")?, // 3
        ],
        None,
        "append of 3 events",
    )
    .await?;
    let types = |t: &'static str| QueryItem::types([t]);
    let q = EventQuery::item;

    // Succeeds: nothing of type a with tag k:1 after position 1.
    let recorded = ctx
        .append(
            &store,
            vec![ctx.event("contract.c", &["k:1"], "{}")?], // 4
            Some(AppendCondition::none_match_after(
                q(types("contract.a").and_tag(tag("k:1"))),
                1,
            )),
            "append expecting no `contract.a` with k:1 after 1",
        )
        .await?;
    ctx.eq(
        positions_of(&recorded),
        vec![4],
        "position of the conditional append",
    )?;

    expect_conflicts(ctx, &store).await?;
    append_expecting_successes(ctx, &store).await?;

    // The events just appended now conflict with the same condition.
    let result = store
        .append(
            vec![ctx.event("contract.self", &[], "{}")?],
            Some(AppendCondition::none_match(q(types("contract.self")))),
        )
        .await;
    ctx.eq(
        result
            .as_ref()
            .err()
            .and_then(StoreError::conflict_position),
        Some(8),
        "conflicting position of a repeated `no contract.self at all` append",
    )?;
    ctx.eq(ctx.head(&store).await?, 9, "head at the end")?;
    Ok(())
}

/// The conflicting appends of `conditional_append`: each fails with the first conflicting
/// position and leaves the head at 4.
async fn expect_conflicts<S: EventStore + ?Sized>(
    ctx: Ctx,
    store: &S,
) -> Result<(), ContractFailure> {
    let types = |t: &'static str| QueryItem::types([t]);
    let q = EventQuery::item;
    let conflicts: Vec<(&str, AppendCondition, u64)> = vec![
        (
            "no event tagged k:2 after 1 (stored at 2 and 3)",
            AppendCondition::none_match_after(q(QueryItem::tagged([tag("k:2")])), 1),
            2,
        ),
        (
            "no `contract.a` after 1 (stored at 3)",
            AppendCondition::none_match_after(q(types("contract.a")), 1),
            3,
        ),
        (
            "no `contract.c` OR `contract.b` after 0 (stored at 2 and 4)",
            AppendCondition::none_match_after(q(types("contract.c")).or(types("contract.b")), 0),
            2,
        ),
        (
            "no `contract.b` at all (empty-store expectation; stored at 2)",
            AppendCondition::none_match(q(types("contract.b"))),
            2,
        ),
        (
            "no `contract.a` at all, query backwards with limit 1 (stored at 1 and 3)",
            AppendCondition::none_match(q(types("contract.a")).backward().with_limit(limit(1))),
            1,
        ),
        (
            "no event at all after 3 (stored at 4)",
            AppendCondition::none_match_after(EventQuery::match_all(), 3),
            4,
        ),
    ];
    for (what, condition, first) in conflicts {
        let result = store
            .append(
                vec![ctx.event("contract.rejected", &["k:1"], "{}")?],
                Some(condition),
            )
            .await;
        match result {
            Err(StoreError::Conflict { position }) => ctx.eq(
                position,
                first,
                format!("conflicting position reported for the condition \"{what}\""),
            )?,
            Err(e) => {
                return Err(ctx.fail(format!(
                    "append with the condition \"{what}\" should fail with \
                     StoreError::Conflict {{ position: {first} }}, got the error: {e}"
                )));
            }
            Ok(r) => {
                return Err(ctx.fail(format!(
                    "append with the condition \"{what}\" should fail with \
                     StoreError::Conflict {{ position: {first} }}, but stored positions {:?}",
                    positions_of(&r)
                )));
            }
        }
        ctx.eq(
            ctx.head(store).await?,
            4,
            format!("head after the conflicting append \"{what}\""),
        )?;
    }
    Ok(())
}

/// The successful appends of `conditional_append` after its conflicts, at positions 5 to 9.
async fn append_expecting_successes<S: EventStore + ?Sized>(
    ctx: Ctx,
    store: &S,
) -> Result<(), ContractFailure> {
    let types = |t: &'static str| QueryItem::types([t]);
    let q = EventQuery::item;
    // (what, condition, type of the appended events, expected positions)
    let successes: Vec<(&str, AppendCondition, &str, Vec<u64>)> = vec![
        (
            "no `contract.never` at all",
            AppendCondition::none_match(q(types("contract.never"))),
            "contract.accepted",
            vec![5],
        ),
        (
            "no event at all after 15 (beyond the head, 5)",
            AppendCondition::none_match_after(EventQuery::match_all(), 15),
            "contract.accepted",
            vec![6],
        ),
        (
            "no event at all after 6 (the head)",
            AppendCondition::none_match_after(EventQuery::match_all(), 6),
            "contract.accepted",
            vec![7],
        ),
        (
            "no `contract.self` at all (appending two of them must not conflict with itself)",
            AppendCondition::none_match(q(types("contract.self"))),
            "contract.self",
            vec![8, 9],
        ),
    ];
    for (what, condition, event_type, expected) in successes {
        let events = expected
            .iter()
            .map(|_| ctx.event(event_type, &[], "{}"))
            .collect::<Result<Vec<_>, _>>()?;
        let recorded = ctx
            .append(
                store,
                events,
                Some(condition),
                &format!("append expecting {what}"),
            )
            .await?;
        ctx.eq(
            positions_of(&recorded),
            expected,
            format!("positions of the append expecting {what}"),
        )?;
    }
    Ok(())
}

/// Append conditions on items of several tags: an event matches only if it carries every tag
/// of the item, whichever of its own tags comes first, and with a type of the item if it
/// names any.
pub async fn conditional_append_on_several_tags<F: EventStoreFactory>(
    factory: &F,
) -> Result<(), ContractFailure> {
    let ctx = Ctx("conditional_append_on_several_tags");
    let store = factory.create().await;
    ctx.append(
        &store,
        vec![
            ctx.event("contract.a", &["m:1", "z:9"], "{}")?, // 1
            ctx.event("contract.a", &["a:0", "m:1"], "{}")?, // 2
            ctx.event("contract.b", &["m:1", "z:9"], "{}")?, // 3
        ],
        None,
        "append of 3 events",
    )
    .await?;
    let tagged = |t: &[&str]| QueryItem::tagged(t.iter().map(|t| tag(t)));
    let q = EventQuery::item;
    let conflicts: Vec<(&str, AppendCondition, u64)> = vec![
        (
            "no event tagged m:1 AND z:9 (stored at 1 and 3)",
            AppendCondition::none_match(q(tagged(&["m:1", "z:9"]))),
            1,
        ),
        (
            "no event tagged a:0 AND m:1 (stored at 2)",
            AppendCondition::none_match(q(tagged(&["a:0", "m:1"]))),
            2,
        ),
        (
            "no event tagged m:1 AND z:9 after 1 (stored at 3)",
            AppendCondition::none_match_after(q(tagged(&["m:1", "z:9"])), 1),
            3,
        ),
        (
            "no `contract.b` tagged z:9 AND m:1 (stored at 3)",
            AppendCondition::none_match(q(
                QueryItem::types(["contract.b"]).and_tags([tag("z:9"), tag("m:1")])
            )),
            3,
        ),
    ];
    for (what, condition, first) in conflicts {
        let result = store
            .append(
                vec![ctx.event("contract.rejected", &[], "{}")?],
                Some(condition),
            )
            .await;
        ctx.eq(
            result
                .as_ref()
                .err()
                .and_then(StoreError::conflict_position),
            Some(first),
            format!("conflicting position reported for the condition \"{what}\""),
        )?;
    }
    append_expecting_several_tags(ctx, &store).await
}

/// The successful appends of `conditional_append_on_several_tags`, at positions 4 to 6.
async fn append_expecting_several_tags<S: EventStore + ?Sized>(
    ctx: Ctx,
    store: &S,
) -> Result<(), ContractFailure> {
    let tagged = |t: &[&str]| QueryItem::tagged(t.iter().map(|t| tag(t)));
    let q = EventQuery::item;
    let successes: Vec<(&str, AppendCondition)> = vec![
        (
            "no event tagged a:0 AND z:9 (none has both)",
            AppendCondition::none_match(q(tagged(&["a:0", "z:9"]))),
        ),
        (
            "no `contract.a` tagged m:1 AND z:9 after 1 (3 is a `contract.b`)",
            AppendCondition::none_match_after(
                q(QueryItem::types(["contract.a"]).and_tags([tag("m:1"), tag("z:9")])),
                1,
            ),
        ),
        (
            "no event tagged m:1 AND z:9 after 3",
            AppendCondition::none_match_after(q(tagged(&["m:1", "z:9"])), 3),
        ),
    ];
    for (k, (what, condition)) in successes.into_iter().enumerate() {
        let recorded = ctx
            .append(
                store,
                vec![ctx.event("contract.accepted", &["m:1"], "{}")?],
                Some(condition),
                &format!("append expecting {what}"),
            )
            .await?;
        ctx.eq(
            positions_of(&recorded),
            vec![4 + k as u64],
            format!("position of the append expecting {what}"),
        )?;
    }
    Ok(())
}

/// A batch whose condition fails stores none of its events, consumes no position and is
/// never seen by a live subscriber.
pub async fn failed_conditional_append_stores_nothing<F: EventStoreFactory>(
    factory: &F,
) -> Result<(), ContractFailure> {
    let ctx = Ctx("failed_conditional_append_stores_nothing");
    let store = factory.create().await;
    ctx.append(
        &store,
        vec![
            ctx.event("contract.a", &["k:1"], "{}")?,
            ctx.event("contract.b", &[], "{}")?,
        ],
        None,
        "append of 2 events",
    )
    .await?;
    let cancel = CancellationToken::new();
    let mut sub = store.subscribe(EventQuery::match_all(), 0, cancel.clone());
    let seen = ctx
        .collect(&mut sub, 2, "subscription before the failed append")
        .await?;
    ctx.eq(
        positions_of(&seen),
        vec![1, 2],
        "history delivered by the subscription",
    )?;

    let batch = (0..3)
        .map(|i| ctx.event("contract.rejected", &["k:1"], &format!(r#"{{"i":{i}}}"#)))
        .collect::<Result<Vec<_>, _>>()?;
    let condition = AppendCondition::none_match(EventQuery::item(QueryItem::types(["contract.a"])));
    match store.append(batch.clone(), Some(condition)).await {
        Err(StoreError::Conflict { position: 1 }) => {}
        other => {
            return Err(ctx.fail(format!(
                "a batch of 3 expecting no `contract.a` should fail with \
                 StoreError::Conflict {{ position: 1 }}, got {}",
                describe(&other)
            )));
        }
    }
    ctx.eq(ctx.head(&store).await?, 2, "head after the failed batch")?;
    ctx.eq(
        ctx.positions(&store, &EventQuery::match_all()).await?,
        vec![1, 2],
        "read(match_all) after the failed batch",
    )?;
    ctx.eq(
        ctx.positions(
            &store,
            &EventQuery::item(QueryItem::types(["contract.rejected"])),
        )
        .await?,
        vec![],
        "read of the failed batch's type",
    )?;

    let recorded = ctx
        .append(&store, batch, None, "unconditional append of the batch")
        .await?;
    ctx.eq(
        positions_of(&recorded),
        vec![3, 4, 5],
        "positions of the batch appended after the failure (a failed append consumes none)",
    )?;
    let live = ctx
        .collect(&mut sub, 3, "subscription after the failed append")
        .await?;
    ctx.eq(
        live,
        recorded,
        "events delivered live after the failed append",
    )?;
    cancel.cancel();
    ctx.expect_end(&mut sub, "subscription").await
}

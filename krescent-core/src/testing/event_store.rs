//! The cases of the event store contract, one `pub async fn` each.
//!
//! Every case takes an [`EventStoreFactory`], creates its own fresh store and returns
//! `Err(`[`ContractFailure`]`)` on the first expectation that does not hold. See the
//! [module documentation](crate::testing) for the rules the cases enforce.

use std::collections::HashSet;
use std::fmt::{Debug, Display};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use futures::StreamExt;
use tokio::sync::Barrier;
use tokio::task::JoinError;
use tokio_util::sync::CancellationToken;

use super::{ContractFailure, EventStoreFactory};
use crate::event::{NewEvent, RecordedEvent, Tag, Tags};
use crate::query::{AppendCondition, EventQuery, Limit, QueryItem};
use crate::store::{EventStore, StoreError, Subscription};

/// How long a case waits for a subscription before it fails. A failure guard only: cases
/// never wait for time to pass, they wait for events.
const WAIT: Duration = Duration::from_secs(30);

/// How far a recorded timestamp may lie from the client's clock (database servers have their
/// own clocks).
const CLOCK_TOLERANCE: TimeDelta = TimeDelta::minutes(5);

/// Runs every case of the event store contract, each with a fresh store from `factory`, and
/// returns the first failure.
///
/// Needs a tokio runtime with the time driver; see the [module documentation](crate::testing).
/// To see each case pass or fail on its own, use
/// [`event_store_contract_tests!`](crate::event_store_contract_tests) instead.
pub async fn run_event_store_contract<F: EventStoreFactory>(
    factory: F,
) -> Result<(), ContractFailure> {
    let f = &factory;
    empty_store(f).await?;
    append_and_read_back(f).await?;
    read_position_ranges(f).await?;
    backward_limit_one_finds_latest_match(f).await?;
    query_filter_semantics(f).await?;
    match_none_matches_nothing(f).await?;
    conditional_append(f).await?;
    conditional_append_on_several_tags(f).await?;
    failed_conditional_append_stores_nothing(f).await?;
    subscribe_from_start_while_appending(f).await?;
    subscribe_from_head_sees_only_new_events(f).await?;
    subscription_sees_burst_of_appends(f).await?;
    concurrent_appenders_with_live_subscribers(f).await?;
    subscription_filter_delivers_only_matches(f).await?;
    read_pages_yields_every_event_once(f).await?;
    Ok(())
}

/// An empty store has head 0, and neither a forward read of everything nor a backwards
/// limit-1 read returns anything.
pub async fn empty_store<F: EventStoreFactory>(factory: &F) -> Result<(), ContractFailure> {
    let ctx = Ctx("empty_store");
    let store = factory.create().await;
    ctx.eq(ctx.head(&store).await?, 0, "head of an empty store")?;
    ctx.eq(
        ctx.positions(&store, &EventQuery::match_all()).await?,
        vec![],
        "read(match_all) on an empty store",
    )?;
    let latest = EventQuery::match_all().backward().with_limit(limit(1));
    ctx.eq(
        ctx.positions(&store, &latest).await?,
        vec![],
        "backwards limit-1 read on an empty store",
    )?;
    Ok(())
}

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
    for (new, recorded) in inputs.iter().zip(&returned) {
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

/// Forward reads honour `after` (exclusive), `until` (inclusive), `before` (exclusive) and the
/// limit, alone and combined, also backwards.
pub async fn read_position_ranges<F: EventStoreFactory>(
    factory: &F,
) -> Result<(), ContractFailure> {
    let ctx = Ctx("read_position_ranges");
    let store = factory.create().await;
    let events = (1..=10)
        .map(|n| ctx.event("contract.numbered", &[], &format!(r#"{{"n":{n}}}"#)))
        .collect::<Result<Vec<_>, _>>()?;
    ctx.append(&store, events, None, "append of 10 events")
        .await?;

    let all = EventQuery::match_all;
    let cases: Vec<(&str, EventQuery, Vec<u64>)> = vec![
        (
            "after 3, limit 4",
            all().after(3).with_limit(limit(4)),
            range(4..=7),
        ),
        ("after 0", all().after(0), range(1..=10)),
        ("until 5", all().until(5), range(1..=5)),
        ("after 2, until 5", all().after(2).until(5), range(3..=5)),
        ("before 4", all().before(4), range(1..=3)),
        ("before 1", all().before(1), vec![]),
        ("after 9", all().after(9), vec![10]),
        ("after 10", all().after(10), vec![]),
        ("after 20", all().after(20), vec![]),
        ("until 100", all().until(100), range(1..=10)),
        ("after 5, until 5", all().after(5).until(5), vec![]),
        ("limit 3", all().with_limit(limit(3)), range(1..=3)),
        ("limit 30", all().with_limit(limit(30)), range(1..=10)),
        ("backward", all().backward(), rev(1..=10)),
        (
            "backward, after 3, until 8, limit 2",
            all().backward().after(3).until(8).with_limit(limit(2)),
            vec![8, 7],
        ),
        (
            "backward, before 5, limit 10",
            all().backward().before(5).with_limit(limit(10)),
            rev(1..=4),
        ),
    ];
    for (what, query, expected) in cases {
        ctx.eq(
            ctx.positions(&store, &query).await?,
            expected,
            format!("read({what})"),
        )?;
    }
    Ok(())
}

/// A backwards limit-1 query returns the latest matching event, also when it lies far back
/// among hundreds of events that do not match.
pub async fn backward_limit_one_finds_latest_match<F: EventStoreFactory>(
    factory: &F,
) -> Result<(), ContractFailure> {
    let ctx = Ctx("backward_limit_one_finds_latest_match");
    let store = factory.create().await;
    ctx.append(
        &store,
        vec![
            ctx.event("contract.counted", &["product:A"], r#"{"counted":1}"#)?,
            ctx.event("contract.counted", &["product:B"], r#"{"counted":7}"#)?,
            ctx.event("contract.counted", &["product:A"], r#"{"counted":2}"#)?,
        ],
        None,
        "append of three counts",
    )
    .await?;
    // 300 events that the savepoint query for A does not match: movements of A and counts of
    // B, at positions 4..=303.
    for chunk in 0..6 {
        let events = (0..50)
            .map(|i| {
                if (chunk * 50 + i) % 2 == 0 {
                    ctx.event("contract.moved", &["product:A"], r#"{"quantity":1}"#)
                } else {
                    ctx.event("contract.counted", &["product:B"], r#"{"counted":3}"#)
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        ctx.append(
            &store,
            events,
            None,
            &format!("append of filler chunk {chunk}"),
        )
        .await?;
    }

    let counted_a =
        || EventQuery::item(QueryItem::types(["contract.counted"]).and_tag(tag("product:A")));
    let latest = ctx
        .read(&store, &counted_a().backward().with_limit(limit(1)))
        .await?;
    ctx.eq(
        positions_of(&latest),
        vec![3],
        "latest count of product A (backwards, limit 1) behind 300 non-matching events",
    )?;
    ctx.eq(
        latest.first().map(|e| e.data.clone()),
        Some(br#"{"counted":2}"#.as_slice().into()),
        "payload of the latest count of product A",
    )?;

    let cases: Vec<(&str, EventQuery, Vec<u64>)> = vec![
        (
            "counts of A, backwards, limit 1, before 3",
            counted_a().backward().before(3).with_limit(limit(1)),
            vec![1],
        ),
        (
            "counts of A, forward, limit 1",
            counted_a().with_limit(limit(1)),
            vec![1],
        ),
        (
            "everything, backwards, limit 1",
            EventQuery::match_all().backward().with_limit(limit(1)),
            vec![303],
        ),
        (
            "tag product:A, backwards, limit 1",
            EventQuery::item(QueryItem::tagged([tag("product:A")]))
                .backward()
                .with_limit(limit(1)),
            vec![302],
        ),
        (
            "type contract.counted, backwards, limit 1",
            EventQuery::item(QueryItem::types(["contract.counted"]))
                .backward()
                .with_limit(limit(1)),
            vec![303],
        ),
        (
            "counts of A, backwards, limit 2",
            counted_a().backward().with_limit(limit(2)),
            vec![3, 1],
        ),
    ];
    for (what, query, expected) in cases {
        ctx.eq(
            ctx.positions(&store, &query).await?,
            expected,
            format!("read({what})"),
        )?;
    }
    Ok(())
}

/// Query items match any of their types (none: any type) AND all of their tags; the items of a
/// query are OR-ed, without duplicates, and limits and directions apply to the union.
pub async fn query_filter_semantics<F: EventStoreFactory>(
    factory: &F,
) -> Result<(), ContractFailure> {
    let ctx = Ctx("query_filter_semantics");
    let store = factory.create().await;
    ctx.append(
        &store,
        vec![
            ctx.event("contract.a", &["x:1"], "{}")?,        // 1
            ctx.event("contract.b", &["x:1", "y:1"], "{}")?, // 2
            ctx.event("contract.c", &["y:1"], "{}")?,        // 3
            ctx.event("contract.a", &["x:2", "y:1"], "{}")?, // 4
            ctx.event("contract.b", &[], "{}")?,             // 5
            ctx.event("contract.a", &["x:1", "y:1"], "{}")?, // 6
        ],
        None,
        "append of 6 events",
    )
    .await?;

    let types = |t: &[&'static str]| QueryItem::types(t.iter().copied());
    let tagged = |t: &[&str]| QueryItem::tagged(t.iter().map(|t| tag(t)));
    let cases: Vec<(&str, EventQuery, Vec<u64>)> = vec![
        (
            "types a OR b",
            EventQuery::item(types(&["contract.a", "contract.b"])),
            vec![1, 2, 4, 5, 6],
        ),
        ("type c", EventQuery::item(types(&["contract.c"])), vec![3]),
        (
            "unknown type",
            EventQuery::item(types(&["contract.unknown"])),
            vec![],
        ),
        (
            "tag x:1, any type",
            EventQuery::item(tagged(&["x:1"])),
            vec![1, 2, 6],
        ),
        (
            "tags x:1 AND y:1",
            EventQuery::item(tagged(&["x:1", "y:1"])),
            vec![2, 6],
        ),
        (
            "tag x:3 (never used)",
            EventQuery::item(tagged(&["x:3"])),
            vec![],
        ),
        (
            "tags x:1 AND x:3 (one never used)",
            EventQuery::item(tagged(&["x:1", "x:3"])),
            vec![],
        ),
        (
            "type a AND tag y:1",
            EventQuery::item(types(&["contract.a"]).and_tag(tag("y:1"))),
            vec![4, 6],
        ),
        (
            "types a OR c, AND tag y:1",
            EventQuery::item(types(&["contract.a", "contract.c"]).and_tag(tag("y:1"))),
            vec![3, 4, 6],
        ),
        (
            "item type c OR item tag x:2",
            EventQuery::item(types(&["contract.c"])).or(tagged(&["x:2"])),
            vec![3, 4],
        ),
        (
            "overlapping items: type a OR tag x:1",
            EventQuery::item(types(&["contract.a"])).or(tagged(&["x:1"])),
            vec![1, 2, 4, 6],
        ),
        (
            "item type c OR item tag x:2, backwards",
            EventQuery::item(types(&["contract.c"]))
                .or(tagged(&["x:2"]))
                .backward(),
            vec![4, 3],
        ),
        (
            "item type a OR item type b, limit 3",
            EventQuery::item(types(&["contract.a"]))
                .or(types(&["contract.b"]))
                .with_limit(limit(3)),
            vec![1, 2, 4],
        ),
        (
            "item type a OR item type b, backwards, limit 2",
            EventQuery::item(types(&["contract.a"]))
                .or(types(&["contract.b"]))
                .backward()
                .with_limit(limit(2)),
            vec![6, 5],
        ),
        (
            "item with no types and no tags (any event)",
            EventQuery::item(QueryItem::any()),
            range(1..=6),
        ),
        (
            "item tag y:1 OR item type b, after 2, until 5",
            EventQuery::item(tagged(&["y:1"]))
                .or(types(&["contract.b"]))
                .after(2)
                .until(5),
            vec![3, 4, 5],
        ),
    ];
    for (what, query, expected) in cases {
        ctx.eq(
            ctx.positions(&store, &query).await?,
            expected,
            format!("read({what})"),
        )?;
    }
    Ok(())
}

/// `EventQuery::match_none()` (a query without items) returns nothing, whatever is stored.
pub async fn match_none_matches_nothing<F: EventStoreFactory>(
    factory: &F,
) -> Result<(), ContractFailure> {
    let ctx = Ctx("match_none_matches_nothing");
    let store = factory.create().await;
    let events = (0..5)
        .map(|_| ctx.event("contract.any", &["k:1"], "{}"))
        .collect::<Result<Vec<_>, _>>()?;
    ctx.append(&store, events, None, "append of 5 events")
        .await?;
    let cases = [
        ("match_none", EventQuery::match_none()),
        (
            "match_none, backwards, limit 1",
            EventQuery::match_none().backward().with_limit(limit(1)),
        ),
        ("from_items([])", EventQuery::from_items([])),
        (
            "match_all, after 4, until 2 (empty range)",
            EventQuery::match_all().after(4).until(2),
        ),
    ];
    for (what, query) in cases {
        ctx.eq(
            ctx.positions(&store, &query).await?,
            vec![],
            format!("read({what})"),
        )?;
    }
    ctx.eq(ctx.head(&store).await?, 5, "head")?;
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
            ctx.head(&store).await?,
            4,
            format!("head after the conflicting append \"{what}\""),
        )?;
    }

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
                &store,
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
                &store,
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

/// A subscription from the start delivers the stored events, then the ones appended while it
/// runs, exactly once and in order, and ends once cancelled.
pub async fn subscribe_from_start_while_appending<F: EventStoreFactory>(
    factory: &F,
) -> Result<(), ContractFailure> {
    let ctx = Ctx("subscribe_from_start_while_appending");
    let store = factory.create().await;
    let mut expected = ctx
        .append(
            &store,
            vec![
                ctx.event("contract.n", &[], r#"{"n":1}"#)?,
                ctx.event("contract.n", &[], r#"{"n":2}"#)?,
            ],
            None,
            "append of events 1 and 2",
        )
        .await?;
    let cancel = CancellationToken::new();
    let mut sub = store.subscribe(EventQuery::match_all(), 0, cancel.clone());
    let mut got = ctx.collect(&mut sub, 2, "history (events 1 and 2)").await?;
    ctx.eq(
        positions_of(&got),
        vec![1, 2],
        "history delivered by the subscription",
    )?;

    for n in [3, 4] {
        let e = ctx.event("contract.n", &[], &format!(r#"{{"n":{n}}}"#))?;
        expected.extend(
            ctx.append(&store, vec![e], None, &format!("append of event {n}"))
                .await?,
        );
    }
    got.extend(ctx.collect(&mut sub, 2, "live events 3 and 4").await?);
    ctx.eq(
        positions_of(&got),
        vec![1, 2, 3, 4],
        "positions delivered by the subscription",
    )?;
    ctx.eq(
        got,
        expected,
        "events delivered compared with the events appended",
    )?;

    // Cancel while a call to `next_batch` is waiting for new events: that call must end.
    let waiting = ctx
        .next_batch_then_cancel(&mut sub, &cancel, "subscription at the head")
        .await?;
    if waiting {
        ctx.expect_end(&mut sub, "subscription cancelled while waiting")
            .await
    } else {
        Ok(())
    }
}

/// A subscription from the head delivers only events appended afterwards; one from the middle
/// delivers the rest of the history first.
pub async fn subscribe_from_head_sees_only_new_events<F: EventStoreFactory>(
    factory: &F,
) -> Result<(), ContractFailure> {
    let ctx = Ctx("subscribe_from_head_sees_only_new_events");
    let store = factory.create().await;
    let events = (1..=3)
        .map(|n| ctx.event("contract.n", &[], &format!(r#"{{"n":{n}}}"#)))
        .collect::<Result<Vec<_>, _>>()?;
    ctx.append(&store, events, None, "append of 3 events")
        .await?;
    let head = ctx.head(&store).await?;
    ctx.eq(head, 3, "head after 3 events")?;

    let cancel = CancellationToken::new();
    let mut from_head = store.subscribe(EventQuery::match_all(), head, cancel.clone());
    let mut from_one = store.subscribe(EventQuery::match_all(), 1, cancel.clone());
    for n in [4, 5] {
        let e = ctx.event("contract.n", &[], &format!(r#"{{"n":{n}}}"#))?;
        ctx.append(&store, vec![e], None, &format!("append of event {n}"))
            .await?;
    }
    let got = ctx
        .collect(&mut from_head, 2, "subscription after the head (3)")
        .await?;
    ctx.eq(
        positions_of(&got),
        vec![4, 5],
        "positions delivered to a subscription after the head",
    )?;
    let got = ctx
        .collect(&mut from_one, 4, "subscription after position 1")
        .await?;
    ctx.eq(
        positions_of(&got),
        vec![2, 3, 4, 5],
        "positions delivered to a subscription after 1",
    )?;

    cancel.cancel();
    ctx.expect_end(&mut from_head, "subscription after the head")
        .await?;
    ctx.expect_end(&mut from_one, "subscription after position 1")
        .await
}

/// 100 events appended one by one by another task while a subscription runs are all
/// delivered, once each, in order.
pub async fn subscription_sees_burst_of_appends<F: EventStoreFactory>(
    factory: &F,
) -> Result<(), ContractFailure> {
    const BURST: u64 = 100;
    let ctx = Ctx("subscription_sees_burst_of_appends");
    let store = Arc::new(factory.create().await);
    let cancel = CancellationToken::new();
    let mut sub = store.subscribe(EventQuery::match_all(), 0, cancel.clone());

    let writer = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            let mut appended = Vec::new();
            for n in 1..=BURST {
                let e = ctx.event("contract.burst", &[], &format!(r#"{{"n":{n}}}"#))?;
                appended.extend(
                    ctx.append(
                        &*store,
                        vec![e],
                        None,
                        &format!("append of burst event {n}"),
                    )
                    .await?,
                );
            }
            Ok::<_, ContractFailure>(appended)
        })
    };
    let got = ctx
        .collect(&mut sub, BURST as usize, "subscription during the burst")
        .await?;
    let appended = ctx.joined(writer.await, "burst writer")??;

    ctx.eq(
        positions_of(&got),
        range(1..=BURST),
        "positions delivered during the burst",
    )?;
    ctx.eq(
        got,
        appended,
        "events delivered compared with the events appended",
    )?;
    cancel.cancel();
    ctx.expect_end(&mut sub, "subscription").await
}

/// Eight tasks append 50 events each (single events and small batches) at the same time while
/// live subscriptions run: positions are 1..=400 without gaps, every event is delivered
/// exactly once, each batch sits at consecutive positions, each task's events appear in the
/// order it appended them, and a filtered subscription sees exactly its task's events.
pub async fn concurrent_appenders_with_live_subscribers<F: EventStoreFactory>(
    factory: &F,
) -> Result<(), ContractFailure> {
    const WRITERS: u64 = 8;
    const PER_WRITER: u64 = 50;
    const TOTAL: u64 = WRITERS * PER_WRITER;
    const BATCH_SIZES: [u64; 6] = [1, 2, 1, 3, 1, 4];
    let ctx = Ctx("concurrent_appenders_with_live_subscribers");
    let store = Arc::new(factory.create().await);
    let cancel = CancellationToken::new();

    let all_sub = store.subscribe(EventQuery::match_all(), 0, cancel.clone());
    let writer0_sub = store.subscribe(
        EventQuery::item(QueryItem::tagged([tag("writer:0")])),
        0,
        cancel.clone(),
    );
    let subscriber = |mut sub: Subscription, want: u64, what: &'static str| {
        tokio::spawn(async move {
            let got = ctx.collect(&mut sub, want as usize, what).await?;
            Ok::<_, ContractFailure>((got, sub))
        })
    };
    let all_task = subscriber(all_sub, TOTAL, "subscription to everything");
    let writer0_task = subscriber(writer0_sub, PER_WRITER, "subscription to writer 0");

    let start = Arc::new(Barrier::new(WRITERS as usize));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = Arc::clone(&store);
            let start = Arc::clone(&start);
            tokio::spawn(async move {
                start.wait().await;
                let mut batches = Vec::new();
                let mut seq = 0;
                let mut round = w as usize;
                while seq < PER_WRITER {
                    let size = BATCH_SIZES[round % BATCH_SIZES.len()].min(PER_WRITER - seq);
                    round += 1;
                    let events = (seq..seq + size)
                        .map(|s| {
                            ctx.event(
                                "contract.concurrent",
                                &[&format!("writer:{w}")],
                                &format!(r#"{{"writer":{w},"seq":{s}}}"#),
                            )
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    let recorded = ctx
                        .append(&*store, events, None, &format!("append by writer {w}"))
                        .await?;
                    batches.push(recorded);
                    seq += size;
                }
                Ok::<_, ContractFailure>(batches)
            })
        })
        .collect();

    let mut batches = Vec::new();
    for (w, writer) in writers.into_iter().enumerate() {
        batches.push(ctx.joined(writer.await, &format!("writer {w}"))??);
    }
    let (got, mut all_sub) = ctx.joined(all_task.await, "subscriber to everything")??;
    let (got0, mut writer0_sub) = ctx.joined(writer0_task.await, "subscriber to writer 0")??;

    ctx.eq(
        positions_of(&got),
        range(1..=TOTAL),
        "positions delivered to the live subscription (each once, in order, no gaps)",
    )?;
    ctx.eq(
        ctx.head(&*store).await?,
        TOTAL,
        "head after all writers finished",
    )?;
    let read = ctx.read(&*store, &EventQuery::match_all()).await?;
    ctx.eq(
        &read,
        &got,
        "read(match_all) compared with the events delivered live",
    )?;

    for (w, writer_batches) in batches.iter().enumerate() {
        for batch in writer_batches {
            let first = batch.first().map_or(0, |e| e.position);
            ctx.eq(
                positions_of(batch),
                (first..first + batch.len() as u64).collect::<Vec<_>>(),
                format!(
                    "positions of a batch of {} appended by writer {w}",
                    batch.len()
                ),
            )?;
            for e in batch {
                let delivered = got.get((e.position - 1) as usize);
                ctx.eq(
                    delivered,
                    Some(e),
                    format!(
                        "event delivered at position {} (appended by writer {w})",
                        e.position
                    ),
                )?;
            }
        }
        let writer_tag = tag(&format!("writer:{w}"));
        let seqs: Vec<Option<u64>> = got
            .iter()
            .filter(|e| e.tags.contains(&writer_tag))
            .map(|e| payload_u64(e, "seq"))
            .collect();
        ctx.eq(
            seqs,
            (0..PER_WRITER).map(Some).collect::<Vec<_>>(),
            format!("sequence numbers of writer {w}'s events in position order"),
        )?;
    }
    let writer0_positions: Vec<u64> = got
        .iter()
        .filter(|e| e.tags.contains(&tag("writer:0")))
        .map(|e| e.position)
        .collect();
    ctx.eq(
        positions_of(&got0),
        writer0_positions,
        "positions delivered to the subscription filtered to writer 0",
    )?;

    cancel.cancel();
    ctx.expect_end(&mut all_sub, "subscription to everything")
        .await?;
    ctx.expect_end(&mut writer0_sub, "subscription to writer 0")
        .await
}

/// A subscription delivers only the events its query matches, history and live, and ignores
/// the query's direction and limit.
pub async fn subscription_filter_delivers_only_matches<F: EventStoreFactory>(
    factory: &F,
) -> Result<(), ContractFailure> {
    let ctx = Ctx("subscription_filter_delivers_only_matches");
    let store = factory.create().await;
    ctx.append(
        &store,
        vec![
            ctx.event("contract.a", &["k:1"], "{}")?,        // 1: A
            ctx.event("contract.b", &["k:1"], "{}")?,        // 2: B
            ctx.event("contract.a", &["k:2"], "{}")?,        // 3: B
            ctx.event("contract.a", &["k:1", "x:9"], "{}")?, // 4: A
        ],
        None,
        "append of the history",
    )
    .await?;
    // A: type a with tag k:1. B: type b, or tag k:2.
    let query_a = EventQuery::item(QueryItem::types(["contract.a"]).and_tag(tag("k:1")));
    let query_b =
        EventQuery::item(QueryItem::types(["contract.b"])).or(QueryItem::tagged([tag("k:2")]));
    let cancel = CancellationToken::new();
    let mut sub_a = store.subscribe(query_a.clone(), 0, cancel.clone());
    let mut sub_a_backward =
        store.subscribe(query_a.backward().with_limit(limit(1)), 0, cancel.clone());
    let mut sub_b = store.subscribe(query_b, 0, cancel.clone());

    let mut got_a = ctx
        .collect(&mut sub_a, 2, "subscription A (history)")
        .await?;
    ctx.eq(
        positions_of(&got_a),
        vec![1, 4],
        "history delivered to subscription A",
    )?;
    let live = vec![
        ctx.event("contract.b", &["k:1"], "{}")?,        // 5: B
        ctx.event("contract.c", &["k:1"], "{}")?,        // 6
        ctx.event("contract.a", &["k:1"], "{}")?,        // 7: A
        ctx.event("contract.a", &["k:3"], "{}")?,        // 8
        ctx.event("contract.a", &["k:1"], "{}")?,        // 9: A
        ctx.event("contract.a", &["k:1", "k:2"], "{}")?, // 10: A and B
    ];
    for (i, e) in live.into_iter().enumerate() {
        ctx.append(
            &store,
            vec![e],
            None,
            &format!("append of live event {}", i + 5),
        )
        .await?;
    }
    // The last event matches every subscription, so anything delivered that should not have
    // been shows up before it, in the collected events.
    got_a.extend(ctx.collect(&mut sub_a, 3, "subscription A (live)").await?);
    ctx.eq(
        positions_of(&got_a),
        vec![1, 4, 7, 9, 10],
        "positions delivered to subscription A",
    )?;
    let got = ctx
        .collect(
            &mut sub_a_backward,
            5,
            "subscription A with a backwards limit-1 query",
        )
        .await?;
    ctx.eq(
        positions_of(&got),
        vec![1, 4, 7, 9, 10],
        "positions delivered to subscription A with a backwards limit-1 query \
         (direction and limit are ignored)",
    )?;
    let got = ctx.collect(&mut sub_b, 4, "subscription B").await?;
    ctx.eq(
        positions_of(&got),
        vec![2, 3, 5, 10],
        "positions delivered to subscription B",
    )?;

    cancel.cancel();
    ctx.expect_end(&mut sub_a, "subscription A").await?;
    ctx.expect_end(&mut sub_a_backward, "subscription A backwards")
        .await?;
    ctx.expect_end(&mut sub_b, "subscription B").await
}

/// `EventStoreExt::read_pages` yields every selected event exactly once, in order, forward and
/// backward, in non-empty pages no larger than the page size, honouring the query's range and
/// limit.
pub async fn read_pages_yields_every_event_once<F: EventStoreFactory>(
    factory: &F,
) -> Result<(), ContractFailure> {
    let ctx = Ctx("read_pages_yields_every_event_once");
    let store = factory.create().await;
    let kinds = ["contract.a", "contract.b", "contract.c"];
    let events = (0..23)
        .map(|i| ctx.event(kinds[i % 3], &[], &format!(r#"{{"i":{i}}}"#)))
        .collect::<Result<Vec<_>, _>>()?;
    ctx.append(&store, events, None, "append of 23 events")
        .await?;

    let all = EventQuery::match_all;
    let type_a = || EventQuery::item(QueryItem::types(["contract.a"]));
    let a_positions: Vec<u64> = (1..=23).filter(|p| (p - 1) % 3 == 0).collect();
    let a_backward: Vec<u64> = a_positions.iter().rev().copied().collect();
    let cases: Vec<PagesCase> = vec![
        (
            "everything, pages of 5",
            all(),
            5,
            range(1..=23),
            Some(vec![5, 5, 5, 5, 3]),
        ),
        (
            "everything backwards, pages of 5",
            all().backward(),
            5,
            rev(1..=23),
            Some(vec![5, 5, 5, 5, 3]),
        ),
        (
            "everything, pages of 23",
            all(),
            23,
            range(1..=23),
            Some(vec![23]),
        ),
        (
            "everything, pages of 100",
            all(),
            100,
            range(1..=23),
            Some(vec![23]),
        ),
        (
            "everything, pages of 1",
            all(),
            1,
            range(1..=23),
            Some(vec![1; 23]),
        ),
        ("type a, pages of 2", type_a(), 2, a_positions.clone(), None),
        (
            "type a backwards, pages of 2",
            type_a().backward(),
            2,
            a_backward,
            None,
        ),
        (
            "everything, limit 7, pages of 3",
            all().with_limit(limit(7)),
            3,
            range(1..=7),
            Some(vec![3, 3, 1]),
        ),
        (
            "everything backwards, limit 7, pages of 3",
            all().backward().with_limit(limit(7)),
            3,
            rev(17..=23),
            Some(vec![3, 3, 1]),
        ),
        (
            "after 5, until 15, pages of 4",
            all().after(5).until(15),
            4,
            range(6..=15),
            None,
        ),
        (
            "after 5, until 15 backwards, pages of 4",
            all().after(5).until(15).backward(),
            4,
            rev(6..=15),
            None,
        ),
        (
            "match_none, pages of 5",
            EventQuery::match_none(),
            5,
            vec![],
            Some(vec![]),
        ),
    ];
    for (what, query, page_size, expected, page_lengths) in cases {
        let size = Limit::from_const(page_size);
        let results: Vec<Result<Vec<RecordedEvent>, StoreError>> =
            store.read_pages(query.clone(), size).collect().await;
        let mut pages = Vec::new();
        for page in results {
            pages.push(ctx.store(page, &format!("read_pages({what})"))?);
        }
        for page in &pages {
            ctx.check(!page.is_empty() && page.len() as u64 <= page_size, || {
                format!(
                    "read_pages({what}) yielded a page of {} events; pages must hold 1 to \
                     {page_size}",
                    page.len()
                )
            })?;
        }
        if let Some(lengths) = page_lengths {
            ctx.eq(
                pages.iter().map(Vec::len).collect::<Vec<_>>(),
                lengths,
                format!("page lengths of read_pages({what})"),
            )?;
        }
        let flat: Vec<RecordedEvent> = pages.into_iter().flatten().collect();
        ctx.eq(
            positions_of(&flat),
            expected,
            format!("positions of read_pages({what})"),
        )?;
        let read = ctx.read(&store, &query).await?;
        ctx.eq(flat, read, format!("read_pages({what}) compared with read"))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// A paging case: what, query, page size, expected positions, expected page lengths (when the
/// case fixes them).
type PagesCase = (&'static str, EventQuery, u64, Vec<u64>, Option<Vec<usize>>);

/// The case being run: builds failures that name it.
#[derive(Clone, Copy)]
struct Ctx(&'static str);

impl Ctx {
    fn fail(self, message: impl Into<String>) -> ContractFailure {
        ContractFailure::new(self.0, message)
    }

    fn check(self, ok: bool, message: impl FnOnce() -> String) -> Result<(), ContractFailure> {
        if ok {
            Ok(())
        } else {
            Err(self.fail(message()))
        }
    }

    fn eq<T: PartialEq + Debug>(
        self,
        actual: T,
        expected: T,
        what: impl Display,
    ) -> Result<(), ContractFailure> {
        self.check(actual == expected, || {
            format!("{what}: expected {expected:?}, got {actual:?}")
        })
    }

    fn store<T>(self, result: Result<T, StoreError>, what: &str) -> Result<T, ContractFailure> {
        result.map_err(|e| self.fail(format!("{what} failed: {e}")))
    }

    fn joined<T>(self, result: Result<T, JoinError>, what: &str) -> Result<T, ContractFailure> {
        result.map_err(|e| self.fail(format!("the task of {what} failed: {e}")))
    }

    /// A new event; the suite's own type names and tags are valid.
    fn event(
        self,
        event_type: &str,
        tags: &[&str],
        payload: &str,
    ) -> Result<NewEvent, ContractFailure> {
        let tags = Tags::parse(tags.iter().copied())
            .map_err(|e| self.fail(format!("bad tag in the suite itself: {e}")))?;
        NewEvent::new(event_type, tags, payload.as_bytes().to_vec())
            .map_err(|e| self.fail(format!("bad type name in the suite itself: {e}")))
    }

    async fn append<S: EventStore + ?Sized>(
        self,
        store: &S,
        events: Vec<NewEvent>,
        condition: Option<AppendCondition>,
        what: &str,
    ) -> Result<Vec<RecordedEvent>, ContractFailure> {
        let n = events.len();
        let recorded = self.store(store.append(events, condition).await, what)?;
        self.eq(
            recorded.len(),
            n,
            format!("number of events returned by the {what}"),
        )?;
        Ok(recorded)
    }

    async fn read<S: EventStore + ?Sized>(
        self,
        store: &S,
        query: &EventQuery,
    ) -> Result<Vec<RecordedEvent>, ContractFailure> {
        self.store(store.read(query).await, &format!("read({query:?})"))
    }

    async fn positions<S: EventStore + ?Sized>(
        self,
        store: &S,
        query: &EventQuery,
    ) -> Result<Vec<u64>, ContractFailure> {
        Ok(positions_of(&self.read(store, query).await?))
    }

    async fn head<S: EventStore + ?Sized>(self, store: &S) -> Result<u64, ContractFailure> {
        self.store(store.head().await, "head()")
    }

    /// Receives batches until at least `want` events arrived (more if a batch overshoots, so
    /// that the caller's comparison shows them).
    async fn collect(
        self,
        sub: &mut Subscription,
        want: usize,
        what: &str,
    ) -> Result<Vec<RecordedEvent>, ContractFailure> {
        let mut got = Vec::new();
        let outcome = tokio::time::timeout(WAIT, async {
            while got.len() < want {
                match sub.next_batch().await {
                    Some(Ok(batch)) => {
                        if batch.is_empty() {
                            tokio::task::yield_now().await;
                        }
                        got.extend(batch);
                    }
                    Some(Err(e)) => return Err(format!("failed: {e}")),
                    None => return Err("ended".to_owned()),
                }
            }
            Ok(())
        })
        .await;
        let problem = match outcome {
            Ok(Ok(())) => return Ok(got),
            Ok(Err(problem)) => problem,
            Err(_) => format!("delivered nothing more within {WAIT:?}"),
        };
        Err(self.fail(format!(
            "{what}: waiting for {want} events, the subscription {problem} after {} events \
             (positions {})",
            got.len(),
            summary(&got)
        )))
    }

    /// Starts a `next_batch` call on a subscription that has delivered everything, lets it
    /// begin waiting, fires `cancel`, and requires that very call to end (`None`) without
    /// delivering anything. Returns whether the subscription may still need draining (the
    /// call yielded an empty batch instead of ending).
    async fn next_batch_then_cancel(
        self,
        sub: &mut Subscription,
        cancel: &CancellationToken,
        what: &str,
    ) -> Result<bool, ContractFailure> {
        let mut call = std::pin::pin!(sub.next_batch());
        let early = futures::poll!(call.as_mut());
        cancel.cancel();
        let ended_early = matches!(early, Poll::Ready(None));
        let outcome = match early {
            Poll::Ready(outcome) => outcome,
            Poll::Pending => match tokio::time::timeout(WAIT, call).await {
                Ok(outcome) => outcome,
                Err(_) => {
                    return Err(self.fail(format!(
                        "{what}: a next_batch call waiting for new events did not end within \
                         {WAIT:?} after the cancellation token fired"
                    )));
                }
            },
        };
        match outcome {
            None if ended_early => Err(self.fail(format!(
                "{what}: the subscription ended before it was cancelled"
            ))),
            None => Ok(false),
            Some(Ok(batch)) if batch.is_empty() => Ok(true),
            Some(Ok(batch)) => Err(self.fail(format!(
                "{what}: delivered events at positions {} though nothing new was appended",
                summary(&batch)
            ))),
            Some(Err(e)) => Err(self.fail(format!(
                "{what}: a next_batch call waiting for new events failed when cancelled: {e}"
            ))),
        }
    }

    /// After cancellation, the subscription must end without delivering anything more.
    async fn expect_end(self, sub: &mut Subscription, what: &str) -> Result<(), ContractFailure> {
        let outcome = tokio::time::timeout(WAIT, async {
            loop {
                match sub.next_batch().await {
                    None => return Ok(()),
                    Some(Ok(batch)) if batch.is_empty() => tokio::task::yield_now().await,
                    Some(Ok(batch)) => {
                        return Err(format!(
                            "delivered events at positions {} after cancellation, though \
                             nothing was appended after the events it had delivered",
                            summary(&batch)
                        ));
                    }
                    Some(Err(e)) => return Err(format!("failed after cancellation: {e}")),
                }
            }
        })
        .await;
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(problem)) => Err(self.fail(format!("{what}: {problem}"))),
            Err(_) => Err(self.fail(format!(
                "{what}: did not end within {WAIT:?} after its cancellation token fired"
            ))),
        }
    }
}

/// A limit known to be non-zero.
fn limit(n: u64) -> Option<Limit> {
    Some(Limit::from_const(n))
}

/// A tag the suite spells; every such text is valid.
fn tag(text: &str) -> Tag {
    match Tag::parse(text) {
        Ok(tag) => tag,
        Err(e) => panic!("bad tag `{text}` in the contract suite itself: {e}"),
    }
}

fn range(r: RangeInclusive<u64>) -> Vec<u64> {
    r.collect()
}

fn rev(r: RangeInclusive<u64>) -> Vec<u64> {
    r.rev().collect()
}

fn positions_of(events: &[RecordedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.position).collect()
}

/// The positions of `events`, abbreviated when there are many.
fn summary(events: &[RecordedEvent]) -> String {
    let p = positions_of(events);
    if p.len() <= 20 {
        format!("{p:?}")
    } else {
        format!("{:?} … {:?}", &p[..10], &p[p.len() - 10..])
    }
}

fn describe(result: &Result<Vec<RecordedEvent>, StoreError>) -> String {
    match result {
        Ok(r) => format!("success storing positions {:?}", positions_of(r)),
        Err(e) => format!("the error: {e} ({e:?})"),
    }
}

/// A number field of a recorded JSON payload.
fn payload_u64(event: &RecordedEvent, field: &str) -> Option<u64> {
    serde_json::from_slice::<serde_json::Value>(&event.data)
        .ok()?
        .get(field)?
        .as_u64()
}

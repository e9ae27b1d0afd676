//! Cases on reading: position ranges, directions, limits, query filters and pages.

use futures::StreamExt;

use crate::event::RecordedEvent;
use crate::query::{EventQuery, Limit, QueryItem};
use crate::store::{EventStore, StoreError};
use crate::testing::{ContractFailure, EventStoreFactory};

use super::support::{Ctx, ReadCase, limit, positions_of, range, rev, tag};

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
    let cases: Vec<ReadCase> = vec![
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
    ctx.expect_positions(&store, cases).await
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
    append_filler(ctx, &store).await?;

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

    let cases: Vec<ReadCase> = vec![
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
    ctx.expect_positions(&store, cases).await
}

/// Appends 300 events that the savepoint query for A does not match: movements of A and counts
/// of B, at positions 4..=303.
async fn append_filler<S: EventStore + ?Sized>(ctx: Ctx, store: &S) -> Result<(), ContractFailure> {
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
            store,
            events,
            None,
            &format!("append of filler chunk {chunk}"),
        )
        .await?;
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

    let mut cases = type_and_tag_cases();
    cases.extend(item_union_cases());
    ctx.expect_positions(&store, cases).await
}

/// The cases of `query_filter_semantics` on one item: its types OR-ed, its tags AND-ed.
fn type_and_tag_cases() -> Vec<ReadCase> {
    let types = |t: &[&'static str]| QueryItem::types(t.iter().copied());
    let tagged = |t: &[&str]| QueryItem::tagged(t.iter().map(|t| tag(t)));
    vec![
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
    ]
}

/// The cases of `query_filter_semantics` on the union of items, with directions, limits and
/// ranges applied to the union, and on the item that matches any event.
fn item_union_cases() -> Vec<ReadCase> {
    let types = |t: &[&'static str]| QueryItem::types(t.iter().copied());
    let tagged = |t: &[&str]| QueryItem::tagged(t.iter().map(|t| tag(t)));
    vec![
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
    ]
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

/// `EventStore::read_pages` yields every selected event exactly once, in order, forward and
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

    let mut cases = whole_history_pages_cases();
    cases.extend(selected_pages_cases());
    for case in cases {
        expect_pages(ctx, &store, case).await?;
    }
    Ok(())
}

/// A paging case: what, query, page size, expected positions, expected page lengths (when the
/// case fixes them).
type PagesCase = (&'static str, EventQuery, u64, Vec<u64>, Option<Vec<usize>>);

/// The cases of `read_pages_yields_every_event_once` that page through all 23 events.
fn whole_history_pages_cases() -> Vec<PagesCase> {
    let all = EventQuery::match_all;
    vec![
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
    ]
}

/// The cases of `read_pages_yields_every_event_once` that page through a selection: a type,
/// a limit, a range, nothing.
fn selected_pages_cases() -> Vec<PagesCase> {
    let all = EventQuery::match_all;
    let type_a = || EventQuery::item(QueryItem::types(["contract.a"]));
    let a_positions: Vec<u64> = (1..=23).filter(|p| (p - 1) % 3 == 0).collect();
    let a_backward: Vec<u64> = a_positions.iter().rev().copied().collect();
    vec![
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
    ]
}

/// Reads one paging case through `read_pages` and checks the pages against the case and
/// against `read`.
async fn expect_pages<S: EventStore + ?Sized>(
    ctx: Ctx,
    store: &S,
    (what, query, page_size, expected, page_lengths): PagesCase,
) -> Result<(), ContractFailure> {
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
    let read = ctx.read(store, &query).await?;
    ctx.eq(flat, read, format!("read_pages({what}) compared with read"))?;
    Ok(())
}

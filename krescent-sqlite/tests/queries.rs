//! Queries: the statements use the indexes (never a scan or a sort) and return what a filter
//! over every event returns; paged reads with read-ahead see every event once.

mod common;

use common::{event, tag};
use futures::StreamExt as _;
use krescent_core::{
    EventQuery, EventStore, Limit, NewEvent, QueryItem, RecordedEvent, StoreError,
};
use krescent_sqlite::SqliteEventStore;

/// Asserts that every step of a plan that reads a table uses an index (scanning `s`, the
/// merged positions of a co-routine, is no table scan) and that nothing is sorted.
fn assert_indexed(what: &str, plan: &str) {
    eprintln!("plan of {what}:\n{plan}");
    assert!(!plan.trim().is_empty(), "{what}: empty plan");
    assert!(
        !plan.contains("SCAN events"),
        "{what}: scans events:\n{plan}"
    );
    assert!(!plan.contains("SCAN e"), "{what}: scans events:\n{plan}");
    assert!(
        !plan.contains("SCAN t"),
        "{what}: scans event_tags:\n{plan}"
    );
    // SQLite before 3.48 (3.46, bundled by the libsqlite3-sys 0.30 that sqlx 0.8 links) cannot
    // use the order of the merged arms `u` for the outer ORDER BY: one sort of the merged rows
    // at the top of the plan is all it may add.
    let outer_sort = rusqlite::version_number() < 3_048_000 && plan.contains("CO-ROUTINE u");
    let inner = plan
        .lines()
        .filter(|line| !(outer_sort && *line == "USE TEMP B-TREE FOR ORDER BY"))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(!inner.contains("TEMP B-TREE"), "{what}: sorts:\n{plan}");
    let indexed = [
        "USING INDEX",
        "USING COVERING INDEX",
        "USING INTEGER PRIMARY KEY",
        "USING PRIMARY KEY",
    ];
    for line in plan.lines() {
        let line = line.trim();
        if line == "SCAN u" {
            continue;
        }
        if line.starts_with("SEARCH") || line.starts_with("SCAN") {
            assert!(
                indexed.iter().any(|i| line.contains(i)),
                "{what}: a step without an index: `{line}` in\n{plan}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_use_the_indexes_with_many_events() {
    const EVENTS: u64 = 170_000;
    const PRODUCTS: u64 = 1_000;
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteEventStore::open(dir.path().join("plans.db"))
        .await
        .unwrap();
    let types = ["stock.added", "stock.picked", "stock.counted"];
    for chunk in 0..EVENTS / 10_000 {
        let batch = (0..10_000)
            .map(|i| {
                let n = chunk * 10_000 + i;
                let product = format!("product:P-{}", n % PRODUCTS);
                // One early event carries a tag no other event has.
                let tags: &[&str] = if n == 5 {
                    &[&product, "warehouse:main", "batch:rare"]
                } else {
                    &[&product, "warehouse:main"]
                };
                event(types[(n % 3) as usize], tags, &format!(r#"{{"n":{n}}}"#))
            })
            .collect();
        store.append(batch, None).await.unwrap();
    }
    assert_eq!(store.head().await.unwrap(), EVENTS);
    let product = tag("product:P-42");

    // The init query: the latest savepoint of one product.
    let init = EventQuery::item(QueryItem::types(["stock.counted"]).and_tag(product.clone()))
        .backward()
        .limit(1)
        .unwrap();
    let plan = store.explain(&init).await.unwrap();
    assert_indexed("init query", &plan);
    let latest = store.read(&init).await.unwrap();
    assert_eq!(latest.len(), 1);
    assert_eq!(&*latest[0].event_type, "stock.counted");
    assert!(latest[0].tags.contains(&product));
    let expected_latest = (0..EVENTS)
        .rev()
        .find(|n| n % 3 == 2 && n % PRODUCTS == 42)
        .unwrap()
        + 1;
    assert_eq!(latest[0].position, expected_latest);

    // The event query: the movements of one product after the savepoint.
    let movements = EventQuery::item(
        QueryItem::types(["stock.added", "stock.picked"]).and_tag(product.clone()),
    )
    .after(EVENTS / 2)
    .limit(500)
    .unwrap();
    assert_indexed(
        "movements after a position",
        &store.explain(&movements).await.unwrap(),
    );
    let got = store.read(&movements).await.unwrap();
    let expected: Vec<u64> = (EVENTS / 2..EVENTS)
        .filter(|n| n % PRODUCTS == 42 && n % 3 != 2)
        .map(|n| n + 1)
        .collect();
    assert_eq!(got.iter().map(|e| e.position).collect::<Vec<_>>(), expected);

    // One type after a position, with two tags, a tag alone, everything after a position.
    let cases = [
        (
            "one type after a position",
            EventQuery::item(QueryItem::types(["stock.picked"]))
                .after(100_000)
                .limit(1000)
                .unwrap(),
        ),
        (
            "two types after a position",
            EventQuery::item(QueryItem::types(["stock.picked", "stock.added"]))
                .after(100_000)
                .limit(1000)
                .unwrap(),
        ),
        (
            "type with two tags, backwards",
            EventQuery::item(
                QueryItem::types(["stock.added"])
                    .and_tag(product.clone())
                    .and_tag(tag("warehouse:main")),
            )
            .backward()
            .limit(1)
            .unwrap(),
        ),
        (
            "a tag alone, backwards",
            EventQuery::item(QueryItem::tagged([product.clone()]))
                .backward()
                .limit(1)
                .unwrap(),
        ),
        (
            "a rare tag, backwards over every segment",
            EventQuery::item(QueryItem::types(["stock.counted"]).and_tag(tag("batch:rare")))
                .backward()
                .limit(1)
                .unwrap(),
        ),
        (
            "a rare tag alone, forwards",
            EventQuery::item(QueryItem::tagged([tag("batch:rare")]))
                .limit(10)
                .unwrap(),
        ),
        (
            "everything after a position",
            EventQuery::match_all().after(110_000).limit(1000).unwrap(),
        ),
        (
            "every stored type after a position",
            EventQuery::item(QueryItem::types(types))
                .after(110_000)
                .limit(1000)
                .unwrap(),
        ),
        (
            "two items",
            EventQuery::item(QueryItem::types(["stock.counted"]).and_tag(product.clone()))
                .or(QueryItem::types(["stock.added"]).and_tag(tag("product:P-7")))
                .after(1000)
                .limit(10)
                .unwrap(),
        ),
    ];
    for (what, query) in cases {
        assert_indexed(what, &store.explain(&query).await.unwrap());
        // And the results are what a filter over everything gives.
        let got = store.read(&query).await.unwrap();
        let mut all = store
            .read(&EventQuery::match_all().after(query.after_position()))
            .await
            .unwrap();
        if query.direction_value() == krescent_core::Direction::Backward {
            all.reverse();
        }
        let expected: Vec<u64> = all
            .iter()
            .filter(|e| query.matches(e.position, &e.event_type, &e.tags))
            .map(|e| e.position)
            .take(query.limit_value().map_or(usize::MAX, |l| l.get() as usize))
            .collect();
        assert_eq!(
            got.iter().map(|e| e.position).collect::<Vec<_>>(),
            expected,
            "{what}"
        );
    }

    // The rare tag is found from the far end of the store.
    let rare = EventQuery::item(QueryItem::tagged([tag("batch:rare")]))
        .backward()
        .limit(1)
        .unwrap();
    let found = store.read(&rare).await.unwrap();
    assert_eq!(found.iter().map(|e| e.position).collect::<Vec<_>>(), [6]);

    // A type that is not stored needs no statement at all.
    let unknown = EventQuery::item(QueryItem::types(["stock.never"]).and_tag(product));
    assert!(store.explain(&unknown).await.unwrap().starts_with("EMPTY"));
    assert!(store.read(&unknown).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_types_fall_back_to_correct_results() {
    // More types than a query expands into index ranges, and more arms than it merges.
    let store = SqliteEventStore::open_in_memory().unwrap();
    let batch: Vec<NewEvent> = (0..400)
        .map(|n| {
            event(
                &format!("t.{}", n % 80),
                &[&format!("k:{}", n % 7)],
                &format!(r#"{{"n":{n}}}"#),
            )
        })
        .collect();
    let stored = store.append(batch, None).await.unwrap();
    let many_types: Vec<String> = (0..70).map(|t| format!("t.{t}")).collect();
    let queries = [
        EventQuery::item(QueryItem::tagged([tag("k:3")])),
        EventQuery::item(QueryItem::tagged([tag("k:3")]))
            .backward()
            .limit(5)
            .unwrap(),
        EventQuery::item(QueryItem::types(many_types.clone())),
        EventQuery::item(QueryItem::types(many_types.clone()).and_tag(tag("k:2")))
            .backward()
            .limit(7)
            .unwrap(),
        EventQuery::item(QueryItem::types(many_types))
            .after(100)
            .until(300)
            .limit(9)
            .unwrap(),
    ];
    for query in queries {
        let got: Vec<u64> = store
            .read(&query)
            .await
            .unwrap()
            .iter()
            .map(|e| e.position)
            .collect();
        let mut expected: Vec<u64> = stored
            .iter()
            .filter(|e| query.matches(e.position, &e.event_type, &e.tags))
            .map(|e| e.position)
            .collect();
        if query.direction_value() == krescent_core::Direction::Backward {
            expected.reverse();
        }
        expected.truncate(query.limit_value().map_or(usize::MAX, |l| l.get() as usize));
        assert_eq!(got, expected, "{query:?}");
    }
}

/// Paged forward reads (`read_pages`, what a catch-up does) are read ahead; every page is
/// what a fresh read returns, and a page read ahead before an append is never returned stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paged_reads_with_read_ahead_see_every_event_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteEventStore::open(dir.path().join("pages.db"))
        .await
        .unwrap();
    let batch = |from: u64, n: u64| -> Vec<NewEvent> {
        (from..from + n)
            .map(|i| event(["a.x", "b.y"][(i % 2) as usize], &["k:v"], &format!("{i}")))
            .collect()
    };
    store.append(batch(0, 2_500), None).await.unwrap();
    let query = EventQuery::item(QueryItem::types(["a.x", "b.y"]));
    let size = Limit::from_const(1_000);
    let len = |page: Option<Result<Vec<RecordedEvent>, StoreError>>| page.map(|p| p.unwrap());

    // Pages 1 and 2 are full; handing out page 2 starts reading page 3 ahead, which is short
    // at that moment (events 2001..=2500).
    let mut pages = store.read_pages(query.clone(), size);
    let p1 = len(pages.next().await).expect("page 1");
    let p2 = len(pages.next().await).expect("page 2");
    assert_eq!((p1.len(), p2.len()), (1_000, 1_000));
    // More events arrive before page 3 is asked for: a short page read ahead is discarded.
    store.append(batch(2_500, 1_500), None).await.unwrap();
    let p3 = len(pages.next().await).expect("page 3");
    assert_eq!(p3.len(), 1_000, "page 3 sees the events appended meanwhile");
    let p4 = len(pages.next().await).expect("page 4");
    assert_eq!(p4.len(), 1_000);
    assert!(
        pages.next().await.is_none(),
        "the read after page 4 finds nothing"
    );
    drop(pages);

    let paged: Vec<_> = [p1, p2, p3, p4].concat();
    let whole = store.read(&query).await.unwrap();
    assert_eq!(paged, whole, "paged reads equal one whole read");
    let positions: Vec<u64> = paged.iter().map(|e| e.position).collect();
    assert_eq!(positions, (1..=4_000).collect::<Vec<_>>());

    // Two readers paging the same query at once, and a reader that jumps, stay exact.
    let page_through = || async {
        let mut seen = Vec::new();
        let mut pages = store.read_pages(query.clone(), size);
        while let Some(page) = pages.next().await {
            seen.extend(page.unwrap().into_iter().map(|e| e.position));
        }
        seen
    };
    let jumps = async {
        let mut lens = Vec::new();
        for after in [0, 1_000, 3_500, 500] {
            let page = query.clone().after(after).limit(1_000).unwrap();
            lens.push(store.read(&page).await.unwrap().len());
        }
        lens
    };
    let (a, b, c) = tokio::join!(page_through(), page_through(), jumps);
    assert_eq!(a, (1..=4_000).collect::<Vec<_>>());
    assert_eq!(b, a);
    assert_eq!(c, [1_000, 1_000, 500, 1_000]);
}

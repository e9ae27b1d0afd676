//! Query plans at scale: the statements use their indexes, in the custom and the generic
//! plan, without statistics.
//!
//! They run against the database named by `KRESCENT_POSTGRES_URL` (for example
//! `postgres://postgres@127.0.0.1:5432/test`). Without that variable every test prints that it
//! was skipped and passes. Each test works in tables of its own (a random prefix) and drops
//! them at the end.

use krescent_core::{EventQuery, EventStore, QueryItem};

mod common;
use common::{
    append_in_batches, connect, drop_tables, event, fresh_prefix, is_sort_node, paged_positions,
    positions, raw_client, tag, with_database,
};

/// With 200k events stored (7 segments of the tag index), the init query (latest of one type
/// with one tag, backwards, limit 1) and reads after a position use indexes, in the custom and
/// in the generic plan; tag queries walk the segments of the tag index (no sort below the
/// final one of the init query's single row), and find exactly the events they should.
#[test]
fn queries_use_indexes_at_scale() {
    with_database(|url| async move {
        const EVENTS: usize = 200_000;
        const PRODUCTS: usize = 2_000;
        let prefix = fresh_prefix();
        let store = connect(&url, &prefix).await;
        let types = ["pg.added", "pg.picked", "pg.counted"];
        // Every fifth event also carries a batch tag, its smallest: its product tag is then
        // in `extra_tags` rather than in `events.tag`.
        let batch = |i: usize| (i % 5 == 0).then(|| format!("batch:{}", i / 10_000));
        append_in_batches(&store, EVENTS, |i| {
            let product = format!("product:{}", i % PRODUCTS);
            let batch = batch(i);
            let tags: Vec<&str> = batch
                .as_deref()
                .into_iter()
                .chain([product.as_str()])
                .collect();
            event(types[i % 3], &tags, format!(r#"{{"quantity":{i}}}"#))
        })
        .await;
        raw_client(&url)
            .await
            .batch_execute(&format!(
                "ANALYZE {prefix}events; ANALYZE {prefix}extra_tags"
            ))
            .await
            .expect("analyze");

        let init = EventQuery::item(QueryItem::types(["pg.counted"]).and_tag(tag("product:42")))
            .backward()
            .limit(1)
            .expect("limit");
        let cases = [
            ("init query", init.clone()),
            (
                "everything after a position",
                EventQuery::match_all()
                    .after(150_000)
                    .limit(1000)
                    .expect("limit"),
            ),
            (
                "types after a position",
                EventQuery::item(QueryItem::types(types))
                    .after(150_000)
                    .limit(1000)
                    .expect("limit"),
            ),
            (
                "one type after a position",
                EventQuery::item(QueryItem::types(["pg.picked"]))
                    .after(150_000)
                    .limit(1000)
                    .expect("limit"),
            ),
            (
                "one tag after a position",
                EventQuery::item(QueryItem::tagged([tag("product:7")]))
                    .after(150_000)
                    .limit(1000)
                    .expect("limit"),
            ),
            (
                "init query with two types",
                EventQuery::item(
                    QueryItem::types(["pg.counted", "pg.added"]).and_tag(tag("product:42")),
                )
                .backward()
                .limit(1)
                .expect("limit"),
            ),
        ];
        for (what, query) in cases {
            let plan = store.explain(&query).await.expect("explain");
            println!("{what}:\n{plan}");
            for table in ["events", "extra_tags"] {
                assert!(
                    !plan.contains(&format!("Seq Scan on {prefix}{table} ")),
                    "{what}: sequential scan of {table}:\n{plan}"
                );
            }
            assert!(plan.contains("Index"), "{what}: no index scan:\n{plan}");
            assert!(plan.contains("-- generic plan"), "{what}:\n{plan}");
            if query.items().iter().any(|i| !i.required_tags().is_empty()) {
                for needle in [
                    "Function Scan on generate_series s",
                    &format!("using {prefix}events_tag_idx"),
                    &format!("using {prefix}extra_tags_pkey"),
                    "seg = s.seg",
                    &format!("{prefix}tag_starts_pkey"),
                ] {
                    assert!(plan.contains(needle), "{what}: no `{needle}`:\n{plan}");
                }
            }
            if what.starts_with("init query") {
                // A sort at the root orders the (at most one) row found; none below it.
                for line in plan.lines().filter(|l| is_sort_node(l)) {
                    assert!(
                        !line.contains("->"),
                        "{what}: a sort below the root:\n{plan}"
                    );
                }
            }
        }
        // Reads by tag across the segments, in both directions, against the events written.
        let tagged = |i: usize, product: usize| i % PRODUCTS == product;
        let expected = |product: usize, ty: Option<usize>| -> Vec<u64> {
            (0..EVENTS)
                .filter(|&i| tagged(i, product) && ty.is_none_or(|t| i % 3 == t))
                .map(|i| i as u64 + 1)
                .collect()
        };
        let after: Vec<u64> = expected(7, None)
            .into_iter()
            .filter(|&p| p > 150_000)
            .collect();
        let found = store
            .read(
                &EventQuery::item(QueryItem::tagged([tag("product:7")]))
                    .after(150_000)
                    .limit(1000)
                    .expect("limit"),
            )
            .await
            .expect("read by tag");
        assert_eq!(positions(&found), after);
        let mut latest = expected(42, Some(1));
        latest.reverse();
        latest.truncate(3);
        let found = store
            .read(
                &EventQuery::item(QueryItem::types(["pg.picked"]).and_tag(tag("product:42")))
                    .backward()
                    .limit(3)
                    .expect("limit"),
            )
            .await
            .expect("read by tag");
        assert_eq!(positions(&found), latest);
        let first: Vec<u64> = expected(1999, None).into_iter().take(5).collect();
        let found = store
            .read(
                &EventQuery::item(QueryItem::tagged([tag("product:1999")]))
                    .limit(5)
                    .expect("limit"),
            )
            .await
            .expect("read by tag");
        assert_eq!(positions(&found), first);
        // Two tags: the batch tag in `events.tag`, the product in `extra_tags`.
        let both: Vec<u64> = expected(10, None)
            .into_iter()
            .filter(|&p| batch(p as usize - 1).as_deref() == Some("batch:3"))
            .collect();
        assert!(!both.is_empty());
        for query in [
            EventQuery::item(QueryItem::tagged([tag("product:10"), tag("batch:3")])),
            EventQuery::item(QueryItem::types(types).and_tags([tag("product:10"), tag("batch:3")])),
        ] {
            let found = store.read(&query).await.expect("read by two tags");
            assert_eq!(positions(&found), both, "{query:?}");
            let found = store
                .read(&query.backward().limit(2).expect("limit"))
                .await
                .expect("read by two tags");
            let mut latest = both.clone();
            latest.reverse();
            latest.truncate(2);
            assert_eq!(positions(&found), latest);
        }
        for absent in [
            EventQuery::item(QueryItem::tagged([tag("product:absent")])),
            EventQuery::item(QueryItem::types(["pg.other"]).and_tag(tag("product:42")))
                .backward()
                .limit(1)
                .expect("limit"),
        ] {
            let found = store.read(&absent).await.expect("read by tag");
            assert!(found.is_empty(), "{absent:?}: {found:?}");
        }
        // The init query finds the latest count of product 42.
        let latest = store.read(&init).await.expect("init query");
        let expected = (0..EVENTS)
            .filter(|i| i % 3 == 2 && i % PRODUCTS == 42)
            .max()
            .map(|i| i as u64 + 1);
        assert_eq!(latest.first().map(|e| e.position), expected);
        drop(store);
        drop_tables(&url, &prefix).await;
    });
}

/// Reads of a few types keep a sort-free plan on a table whose statistics are missing (a
/// large append that autovacuum has not analysed yet): one range of the `(type, position)`
/// index per type, merged. Planned per execution from missing statistics, the same page was a
/// bitmap scan of every later event of those types and a sort, at every page of a catch-up.
#[test]
fn type_reads_need_no_statistics() {
    with_database(|url| async move {
        const EVENTS: usize = 30_000;
        let prefix = fresh_prefix();
        let store = connect(&url, &prefix).await;
        raw_client(&url)
            .await
            .batch_execute(&format!(
                "ALTER TABLE {prefix}events SET (autovacuum_enabled = off)"
            ))
            .await
            .expect("autovacuum off");
        let types = ["pg.added", "pg.picked", "pg.counted"];
        append_in_batches(&store, EVENTS, |i| event(types[i % 3], &[], format!("{i}"))).await;
        let two = EventQuery::item(QueryItem::types(["pg.added", "pg.picked"]));
        let page = two.clone().after(10_000).limit(1000).expect("limit");
        let plan = store.explain(&page).await.expect("explain");
        println!("{plan}");
        let generic = plan
            .split("-- generic plan")
            .nth(1)
            .expect("a generic plan");
        assert!(
            !generic.lines().any(is_sort_node),
            "a sort in the generic plan:\n{plan}"
        );
        for kind in ["Bitmap", "Seq Scan"] {
            assert!(
                !generic.contains(kind),
                "`{kind}` in the generic plan:\n{plan}"
            );
        }
        assert!(generic.contains("Merge Append"), "{plan}");
        assert!(
            generic.contains(&format!("{prefix}events_type_idx")),
            "{plan}"
        );
        // Paged reads return exactly the events of the two types, in order.
        let seen = paged_positions(&store, &two, 700).await;
        let expected: Vec<u64> = (0..EVENTS)
            .filter(|i| i % 3 != 2)
            .map(|i| i as u64 + 1)
            .collect();
        assert_eq!(seen, expected);
        drop(store);
        drop_tables(&url, &prefix).await;
    });
}

//! Reads: paged reads and read-ahead, type-only reads read as position ranges, and corrupt
//! rows read back as typed errors.
//!
//! They run against the database named by `KRESCENT_POSTGRES_URL` (for example
//! `postgres://postgres@127.0.0.1:5432/test`). Without that variable every test prints that it
//! was skipped and passes. Each test works in tables of its own (a random prefix) and drops
//! them at the end.

use futures::StreamExt;
use krescent_core::{EventQuery, EventStore, Limit, NewEvent, QueryItem};
use krescent_postgres::{PostgresError, PostgresEventStore, PostgresOptions};

mod common;
use common::{
    connect, connect_with, drop_tables, event, fresh_prefix, paged_positions, positions,
    raw_client, tag, with_database,
};

/// Pages of a long read come back in order without duplicates through `read_pages`.
#[test]
fn paged_reads_come_back_in_order() {
    with_database(|url| async move {
        let prefix = fresh_prefix();
        let store = connect(&url, &prefix).await;
        let batch: Vec<NewEvent> = (0..3000)
            .map(|i| event("pg.paged", &[], format!(r#"{{"i":{i}}}"#)))
            .collect();
        store.append(batch, None).await.expect("append");
        let pages: Vec<_> = store
            .read_pages(
                EventQuery::match_all(),
                krescent_core::Limit::from_const(1000),
            )
            .collect()
            .await;
        let all: Vec<u64> = pages
            .into_iter()
            .flat_map(|p| positions(&p.expect("page")))
            .collect();
        assert_eq!(all, (1..=3000).collect::<Vec<_>>());
        drop(store);
        drop_tables(&url, &prefix).await;
    });
}

/// Paged forward reads (`read_pages`) are read ahead. Every page equals a fresh read: a page
/// read ahead while it was short is not returned once more events have arrived, and readers
/// paging at once, or jumping, get exact pages.
#[test]
fn paged_reads_with_read_ahead_are_exact() {
    with_database(|url| async move {
        let prefix = fresh_prefix();
        // One connection: the page read ahead holds it, so the append below waits for that
        // read to finish whenever the read started first.
        let store = connect_with(
            &url,
            PostgresOptions::default()
                .table_prefix(&prefix)
                .pool_size(1),
        )
        .await;
        let batch = |from: u64, n: u64| -> Vec<NewEvent> {
            (from..from + n)
                .map(|i| {
                    event(
                        ["pg.x", "pg.y"][(i % 2) as usize],
                        &["k:v"],
                        format!(r#"{{"i":{i}}}"#),
                    )
                })
                .collect()
        };
        store.append(batch(0, 2_500), None).await.expect("append");
        for query in [
            EventQuery::match_all(),
            EventQuery::item(QueryItem::types(["pg.x", "pg.y"])),
            EventQuery::item(QueryItem::tagged([tag("k:v")])),
        ] {
            let head = store.head().await.expect("head");
            let mut pages =
                store.read_pages(query.clone().after(head - 2_500), Limit::from_const(1_000));
            let mut next = async || pages.next().await.map(|p| p.expect("page"));
            // Pages 1 and 2 are full; handing out page 2 starts reading page 3, which is
            // short at that moment.
            let p1 = next().await.expect("page 1");
            let p2 = next().await.expect("page 2");
            assert_eq!((p1.len(), p2.len()), (1_000, 1_000));
            store
                .append(batch(head, 1_500), None)
                .await
                .expect("append");
            let p3 = next().await.expect("page 3");
            assert_eq!(p3.len(), 1_000, "page 3 sees the events appended meanwhile");
            let p4 = next().await.expect("page 4");
            assert_eq!(p4.len(), 1_000);
            assert!(
                next().await.is_none(),
                "the read after page 4 finds nothing"
            );
            drop(pages);
            let paged = [p1, p2, p3, p4].concat();
            let whole = store
                .read(&query.clone().after(head - 2_500))
                .await
                .expect("whole");
            assert_eq!(paged, whole, "paged reads equal one whole read");
            assert_eq!(
                positions(&paged),
                (head - 2_499..=head + 1_500).collect::<Vec<_>>()
            );
            // The next query pages from the same head onwards.
            store
                .append(batch(head + 1_500, 1_000), None)
                .await
                .expect("append");
        }

        // Two readers paging at once, and a reader that jumps back and forth, stay exact.
        let head = store.head().await.expect("head");
        let page = |after: u64| {
            EventQuery::match_all()
                .after(after)
                .limit(700)
                .expect("limit")
        };
        let everything = EventQuery::match_all();
        let sequential = paged_positions(&store, &everything, 700);
        let jumping = async {
            let mut firsts = Vec::new();
            for after in [0, 700, 1_400, 300, 1_400, head - 100] {
                let p = store.read(&page(after)).await.expect("page");
                firsts.push((p.first().map(|e| e.position), p.len()));
            }
            firsts
        };
        let (seen, firsts) = tokio::join!(sequential, jumping);
        assert_eq!(seen, (1..=head).collect::<Vec<_>>());
        assert_eq!(
            firsts,
            [
                (Some(1), 700),
                (Some(701), 700),
                (Some(1_401), 700),
                (Some(301), 700),
                (Some(1_401), 700),
                (Some(head - 99), 100)
            ]
        );
        drop(store);
        drop_tables(&url, &prefix).await;
    });
}

/// Pages read two ahead on the guess that positions have no gaps stay exact when the guess is
/// wrong: with rows deleted by hand (gaps a store never makes itself), every page equals a
/// fresh read and the pages together equal one whole read.
#[test]
fn pages_read_two_ahead_are_exact_across_gaps() {
    with_database(|url| async move {
        let prefix = fresh_prefix();
        let store = connect(&url, &prefix).await;
        let batch: Vec<NewEvent> = (0..5_000)
            .map(|i| event(["pg.x", "pg.y"][i % 2], &[], format!(r#"{{"i":{i}}}"#)))
            .collect();
        store.append(batch, None).await.expect("append");
        let raw = raw_client(&url).await;
        raw.execute(
            &format!("DELETE FROM {prefix}events WHERE position IN (1500, 3200, 3201, 4999)"),
            &[],
        )
        .await
        .expect("delete");
        for query in [
            EventQuery::match_all(),
            EventQuery::item(QueryItem::types(["pg.x", "pg.y"])),
        ] {
            for size in [700, 1_000] {
                let whole = store.read(&query).await.expect("whole");
                assert_eq!(whole.len(), 4_996);
                let mut paged = Vec::new();
                let mut cursor = 0;
                let mut pages = store.read_pages(query.clone(), Limit::new(size).expect("size"));
                while let Some(events) = pages.next().await {
                    let events = events.expect("page");
                    let fresh = store
                        .read(&query.clone().after(cursor))
                        .await
                        .expect("fresh");
                    let n = events.len();
                    assert_eq!(events[..], fresh[..n.min(fresh.len())], "after {cursor}");
                    assert!(n as u64 == size || n == fresh.len(), "after {cursor}");
                    cursor = events.last().expect("pages are not empty").position;
                    paged.extend(events);
                }
                assert_eq!(paged, whole, "{query:?} in pages of {size}");
            }
        }
        drop(store);
        drop_tables(&url, &prefix).await;
    });
}

/// Type-only reads naming every stored type are read as position ranges up to the last
/// position whose types the store looked up, and with the type filter beyond: pages that
/// cross that position, types appended after it, queries that stop naming every type and a
/// store that grew far past it all read exactly what the filter selects.
#[test]
fn type_only_reads_match_the_filter_around_the_known_types() {
    with_database(|url| async move {
        let prefix = fresh_prefix();
        let store = connect(&url, &prefix).await;
        let batch = |types: &[&str], from: usize, n: usize| -> Vec<NewEvent> {
            (from..from + n)
                .map(|i| event(types[i % types.len()], &[], format!(r#"{{"i":{i}}}"#)))
                .collect()
        };
        // Reads every page of `query` and checks it against the whole store filtered here.
        let check = |query: EventQuery, page: u64| {
            let store = store.clone();
            async move {
                let all = store.read(&EventQuery::match_all()).await.expect("all");
                let want: Vec<u64> = all
                    .iter()
                    .filter(|e| query.matches(e.position, &e.event_type, &e.tags))
                    .map(|e| e.position)
                    .collect();
                let mut got = Vec::new();
                let mut cursor = query.after_position();
                loop {
                    let q = query.clone().after(cursor).limit(page).expect("limit");
                    let events = store.read(&q).await.expect("page");
                    assert!(events.len() as u64 <= page);
                    for e in &events {
                        assert!(query.matches(e.position, &e.event_type, &e.tags), "{e:?}");
                    }
                    let Some(last) = events.last() else { break };
                    cursor = last.position;
                    got.extend(positions(&events));
                }
                assert_eq!(got, want, "{query:?} in pages of {page}");
                let whole = store.read(&query).await.expect("whole");
                assert_eq!(positions(&whole), want, "{query:?} at once");
                want.len()
            }
        };
        let ab = EventQuery::item(QueryItem::types(["pg.a", "pg.b"]));
        let abc = EventQuery::item(QueryItem::types(["pg.a", "pg.b", "pg.c"]));
        let a = EventQuery::item(QueryItem::types(["pg.a"]));
        let split = EventQuery::item(QueryItem::types(["pg.b"])).or(QueryItem::types(["pg.a"]));

        store
            .append(batch(&["pg.a", "pg.b"], 0, 2_500), None)
            .await
            .expect("append");
        // The first read looks the types up: every event up to 2,500 is a or b.
        assert_eq!(check(ab.clone(), 1_000).await, 2_500);
        // Types the store has not looked at since: the pages from 2,500 on use the filter.
        store
            .append(batch(&["pg.c", "pg.c", "pg.a"], 2_500, 900), None)
            .await
            .expect("append");
        assert_eq!(check(ab.clone(), 1_000).await, 2_800);
        assert_eq!(check(ab.clone(), 333).await, 2_800);
        assert_eq!(check(ab.clone().until(2_600), 1_000).await, 2_533);
        assert_eq!(check(ab.clone().after(2_499).until(2_520), 7).await, 8);
        assert_eq!(check(split.clone(), 1_000).await, 2_800);
        assert_eq!(check(abc.clone(), 1_000).await, 3_400);
        assert_eq!(check(a.clone(), 1_000).await, 1_550);
        // Far past the known position the types are looked up again: c is stored now, so
        // the query of a and b alone is read with the filter from then on.
        store
            .append(batch(&["pg.c", "pg.a"], 3_400, 10_000), None)
            .await
            .expect("append");
        let past = EventQuery::item(QueryItem::types(["pg.a", "pg.b"])).after(3_400);
        assert_eq!(check(past, 1_000).await, 5_000);
        assert_eq!(check(ab.clone(), 1_000).await, 7_800);
        assert_eq!(check(abc.clone(), 2_000).await, 13_400);
        // Backwards reads are read as they are.
        let back = store
            .read(&abc.clone().backward().limit(3).expect("limit"))
            .await
            .expect("backwards");
        assert_eq!(positions(&back), [13_400, 13_399, 13_398]);
        drop(store);
        drop_tables(&url, &prefix).await;
    });
}

/// A stored row that cannot be decoded (changed outside krescent) fails the read with
/// `PostgresError::Corrupt` naming its position, on every read path (a range, a filter by
/// type, by tag), and the rows around it still read once it is repaired.
#[test]
fn corrupt_rows_are_typed_errors_naming_their_position() {
    with_database(|url| async move {
        let prefix = fresh_prefix();
        let store = connect(&url, &prefix).await;
        let events: Vec<NewEvent> = (0..6)
            .map(|i| event("pg.row", &["k:v"], format!(r#"{{"i":{i}}}"#)))
            .collect();
        let recorded = store.append(events, None).await.expect("append");
        let raw = raw_client(&url).await;
        let table = format!("{prefix}events");
        raw.batch_execute(&format!(
            "ALTER TABLE {table} ALTER COLUMN payload DROP NOT NULL"
        ))
        .await
        .expect("alter");
        let queries = [
            EventQuery::match_all(),
            EventQuery::item(QueryItem::types(["pg.row"])),
            EventQuery::item(QueryItem::types(["pg.row", "pg.other"])),
            EventQuery::item(QueryItem::tagged([tag("k:v")])),
            EventQuery::match_all().limit(5).expect("limit"),
        ];
        for (position, set, what) in [
            (
                2,
                "tags = '\\x00000009'::bytea || convert_to('k:v', 'UTF8')",
                "cut short",
            ),
            (
                3,
                "tags = '\\x00000003'::bytea || convert_to('kvv', 'UTF8')",
                "no `:`",
            ),
            (4, "recorded_at = 'infinity'", "recorded_at"),
            (5, "payload = NULL", "payload"),
        ] {
            let original = raw
                .query_one(
                    &format!("SELECT tags, recorded_at, payload FROM {table} WHERE position = $1"),
                    &[&position],
                )
                .await
                .expect("row");
            raw.execute(
                &format!("UPDATE {table} SET {set} WHERE position = $1"),
                &[&position],
            )
            .await
            .expect("corrupt the row");
            for query in &queries {
                let err = store.read(query).await.expect_err("corrupt row");
                match PostgresError::of(&err) {
                    Some(PostgresError::Corrupt {
                        position: p,
                        what: w,
                    }) => {
                        assert_eq!(*p, position, "{query:?}: {w}");
                        assert!(w.contains(what), "{query:?}: {w}");
                    }
                    other => panic!("{query:?}: {other:?} ({err})"),
                }
            }
            let tags: Vec<u8> = original.get(0);
            let time: chrono::DateTime<chrono::Utc> = original.get(1);
            let payload: Vec<u8> = original.get(2);
            raw.execute(
                &format!(
                    "UPDATE {table} SET tags = $2, recorded_at = $3, payload = $4 \
                     WHERE position = $1"
                ),
                &[&position, &tags, &time, &payload],
            )
            .await
            .expect("repair the row");
            for query in &queries {
                let read = store.read(query).await.expect("repaired");
                assert_eq!(read[..], recorded[..read.len()], "{query:?}");
            }
        }
        drop(store);
        drop_tables(&url, &prefix).await;
    });
}

/// The store and its error can move between threads.
#[test]
fn store_types_are_send_and_sync() {
    fn assert<T: Send + Sync + 'static>() {}
    assert::<PostgresEventStore>();
    assert::<PostgresError>();
}

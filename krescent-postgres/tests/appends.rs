//! Appends: concurrent appenders and their positions, conditions racing, type ids and tag
//! starts under concurrency, awkward tags and large batches, and abandoned appends.
//!
//! They run against the database named by `KRESCENT_POSTGRES_URL` (for example
//! `postgres://postgres@127.0.0.1:5432/test`). Without that variable every test prints that it
//! was skipped and passes. Each test works in tables of its own (a random prefix) and drops
//! them at the end.

use std::sync::Arc;

use krescent_core::{
    AppendCondition, EventQuery, EventStore, NewEvent, QueryItem, StoreError, Tag,
};
use krescent_postgres::PostgresOptions;
use tokio::sync::Barrier;
use tokio_util::sync::CancellationToken;

mod common;
use common::{
    WAIT, collect, connect, connect_with, drop_tables, event, fresh_prefix, positions, raw_client,
    tag, with_database,
};

/// Writers on two store instances (two pools) append concurrently while subscribers on a
/// writing instance and on a third, read-only instance run: every event arrives exactly once,
/// in position order, without gaps, each writer's events in its order.
#[test]
fn concurrent_appenders_on_two_pools_with_live_subscribers() {
    with_database(|url| async move {
        const WRITERS: usize = 6;
        const PER_WRITER: usize = 60;
        const TOTAL: usize = WRITERS * PER_WRITER;
        let prefix = fresh_prefix();
        let stores = [connect(&url, &prefix).await, connect(&url, &prefix).await];
        let watcher = connect(&url, &prefix).await;
        let cancel = CancellationToken::new();
        let subs = [
            stores[0].subscribe(EventQuery::match_all(), 0, cancel.clone()),
            watcher.subscribe(EventQuery::match_all(), 0, cancel.clone()),
        ];
        let readers: Vec<_> = subs
            .into_iter()
            .enumerate()
            .map(|(i, mut sub)| {
                tokio::spawn(
                    async move { collect(&mut sub, TOTAL, &format!("subscriber {i}")).await },
                )
            })
            .collect();
        let start = Arc::new(Barrier::new(WRITERS));
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let store = stores[w % 2].clone();
                let start = Arc::clone(&start);
                tokio::spawn(async move {
                    start.wait().await;
                    let mut seq = 0;
                    while seq < PER_WRITER {
                        let size = (1 + (seq + w) % 3).min(PER_WRITER - seq);
                        let batch = (seq..seq + size)
                            .map(|s| {
                                event(
                                    "pg.concurrent",
                                    &[&format!("writer:{w}")],
                                    format!(r#"{{"w":{w},"s":{s}}}"#),
                                )
                            })
                            .collect();
                        let recorded = store.append(batch, None).await.expect("append");
                        let p = positions(&recorded);
                        assert_eq!(p, (p[0]..p[0] + size as u64).collect::<Vec<_>>());
                        seq += size;
                    }
                })
            })
            .collect();
        for w in writers {
            w.await.expect("writer");
        }
        let expected = (1..=TOTAL as u64).collect::<Vec<_>>();
        let stored = stores[1]
            .read(&EventQuery::match_all())
            .await
            .expect("read");
        assert_eq!(positions(&stored), expected);
        for reader in readers {
            let got = reader.await.expect("subscriber");
            assert_eq!(positions(&got), expected, "each event once, in order");
            assert_eq!(got, stored);
        }
        for w in 0..WRITERS {
            let t = tag(&format!("writer:{w}"));
            let seqs: Vec<String> = stored
                .iter()
                .filter(|e| e.tags.contains(&t))
                .map(|e| String::from_utf8_lossy(&e.data).into_owned())
                .collect();
            let want: Vec<String> = (0..PER_WRITER)
                .map(|s| format!(r#"{{"w":{w},"s":{s}}}"#))
                .collect();
            assert_eq!(seqs, want, "writer {w}'s events in its order");
        }
        cancel.cancel();
        drop_tables(&url, &prefix).await;
    });
}

/// Two writers on separate pools append with the same DCB condition at the same time: in every
/// round exactly one wins and the other gets a conflict naming the winner's position.
#[test]
fn conditional_append_race_has_exactly_one_winner() {
    with_database(|url| async move {
        let prefix = fresh_prefix();
        let a = connect(&url, &prefix).await;
        let b = connect(&url, &prefix).await;
        for round in 0..25 {
            let product = format!("product:{round}");
            let query = EventQuery::item(QueryItem::types(["pg.reserved"]).and_tag(tag(&product)));
            let head = a.head().await.expect("head");
            let start = Arc::new(Barrier::new(2));
            let tasks: Vec<_> = [a.clone(), b.clone()]
                .into_iter()
                .enumerate()
                .map(|(i, store)| {
                    let start = Arc::clone(&start);
                    let condition = AppendCondition::none_match_after(query.clone(), head);
                    let e = event("pg.reserved", &[&product], format!(r#"{{"by":{i}}}"#));
                    tokio::spawn(async move {
                        start.wait().await;
                        store.append(vec![e], Some(condition)).await
                    })
                })
                .collect();
            let mut won = Vec::new();
            let mut lost = Vec::new();
            for t in tasks {
                match t.await.expect("writer") {
                    Ok(r) => won.extend(r),
                    Err(StoreError::Conflict { position }) => lost.push(position),
                    Err(e) => panic!("round {round}: unexpected error {e}"),
                }
            }
            assert_eq!(won.len(), 1, "round {round}: exactly one winner");
            assert_eq!(
                lost,
                vec![won[0].position],
                "round {round}: the loser names it"
            );
            assert_eq!(won[0].position, head + 1, "round {round}: no gap");
            let stored = a.read(&query).await.expect("read");
            assert_eq!(stored, won, "round {round}: only the winner is stored");
        }
        assert_eq!(b.head().await.expect("head"), 25);
        drop_tables(&url, &prefix).await;
    });
}

/// Handles that each see a type name for the first time store it at once: every append
/// succeeds, the name gets one id, and reads by that type find every event; an append that
/// fails after naming a new type leaves no id behind, and the next one gives it one.
#[test]
fn new_types_get_one_id_under_concurrent_appends() {
    with_database(|url| async move {
        let prefix = fresh_prefix();
        let handles = [
            connect(&url, &prefix).await,
            connect(&url, &prefix).await,
            connect(&url, &prefix).await,
        ];
        let rounds = 5;
        let appends = handles.iter().flat_map(|store| {
            (0..rounds).map(move |round| {
                let batch = vec![
                    event(&format!("pg.new{round}"), &["k:a"], "{}".into()),
                    event("pg.shared", &[], "{}".into()),
                ];
                async move { store.append(batch, None).await }
            })
        });
        for result in futures::future::join_all(appends).await {
            result.expect("every append succeeds");
        }
        let client = raw_client(&url).await;
        let names: Vec<String> = client
            .query(
                &format!("SELECT name FROM {prefix}types ORDER BY name"),
                &[],
            )
            .await
            .expect("types")
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut expected: Vec<String> = (0..rounds).map(|r| format!("pg.new{r}")).collect();
        expected.push("pg.shared".into());
        assert_eq!(names, expected);
        for store in &handles {
            let shared = store
                .read(&EventQuery::item(QueryItem::types(["pg.shared"])))
                .await
                .expect("read by type");
            assert_eq!(shared.len(), handles.len() * rounds);
            let tagged = store
                .read(&EventQuery::item(
                    QueryItem::types(["pg.new0"]).and_tag(tag("k:a")),
                ))
                .await
                .expect("read by type and tag");
            assert_eq!(tagged.len(), handles.len());
        }

        // A failed conditional append names a new type: the name gets no id.
        let head = handles[0].head().await.expect("head");
        let failed = handles[0]
            .append(
                vec![event("pg.rolled_back", &[], "{}".into())],
                Some(AppendCondition::none_match_after(
                    EventQuery::item(QueryItem::types(["pg.shared"])),
                    head - 1,
                )),
            )
            .await;
        assert!(
            matches!(failed, Err(StoreError::Conflict { .. })),
            "{failed:?}"
        );
        let ids: i64 = client
            .query_one(
                &format!("SELECT count(*) FROM {prefix}types WHERE name = 'pg.rolled_back'"),
                &[],
            )
            .await
            .expect("count")
            .get(0);
        assert_eq!(ids, 0);
        handles[0]
            .append(vec![event("pg.rolled_back", &[], "{}".into())], None)
            .await
            .expect("append of the type after all");
        let found = handles[1]
            .read(&EventQuery::item(QueryItem::types(["pg.rolled_back"])))
            .await
            .expect("read by type");
        assert_eq!(found.len(), 1);
        drop(handles);
        drop_tables(&url, &prefix).await;
    });
}

/// The first segment of each (tag, type) pair is recorded by whichever handle stores the pair
/// first, and again harmlessly by a handle that has not seen it; a pair is remembered by a
/// handle only once its append committed, so a failed append of a new pair does not stop the
/// next one from recording it.
#[test]
fn tag_starts_follow_committed_appends() {
    with_database(|url| async move {
        let prefix = fresh_prefix();
        let a = connect(&url, &prefix).await;
        let b = connect(&url, &prefix).await;
        let by_tag = |t: &str| EventQuery::item(QueryItem::tagged([tag(t)]));
        a.append(vec![event("pg.a", &["k:shared"], "{}".into())], None)
            .await
            .expect("append");
        b.append(vec![event("pg.a", &["k:shared"], "{}".into())], None)
            .await
            .expect("append of a pair stored by another handle");
        let found = b.read(&by_tag("k:shared")).await.expect("read");
        assert_eq!(positions(&found), [1, 2]);

        // A conditional append of a new pair fails: nothing of it is stored or remembered.
        let condition =
            AppendCondition::none_match_after(EventQuery::item(QueryItem::types(["pg.a"])), 0);
        let err = a
            .append(
                vec![event("pg.a", &["k:new"], "{}".into())],
                Some(condition),
            )
            .await
            .expect_err("the condition fails");
        assert!(
            matches!(err, StoreError::Conflict { position: 1 }),
            "{err:?}"
        );
        assert!(a.read(&by_tag("k:new")).await.expect("read").is_empty());
        a.append(vec![event("pg.a", &["k:new"], "{}".into())], None)
            .await
            .expect("append");
        for store in [&a, &b] {
            let found = store.read(&by_tag("k:new")).await.expect("read");
            assert_eq!(positions(&found), [3]);
        }
        let client = raw_client(&url).await;
        let starts: i64 = client
            .query_one(&format!("SELECT count(*) FROM {prefix}tag_starts"), &[])
            .await
            .expect("count")
            .get(0);
        assert_eq!(starts, 2);
        drop((a, b));
        drop_tables(&url, &prefix).await;
    });
}

/// Tags with quotes, backslashes, braces, commas and non-ASCII text round-trip; batches larger
/// than one insert statement are stored whole; a tag PostgreSQL cannot store (a NUL byte)
/// cannot be built at all.
#[test]
fn awkward_tags_and_large_batches() {
    with_database(|url| async move {
        let prefix = fresh_prefix();
        let store = connect(&url, &prefix).await;
        let awkward = [
            "k:\"quoted\"",
            "k:back\\slash",
            "k:{braces},commas",
            "k:NULL",
            "k:",
            "k:grüße ☃",
        ];
        let recorded = store
            .append(vec![event("pg.awkward", &awkward, "{}".into())], None)
            .await
            .expect("append");
        let read = store.read(&EventQuery::match_all()).await.expect("read");
        assert_eq!(read, recorded);
        for t in awkward {
            let found = store
                .read(&EventQuery::item(QueryItem::tagged([tag(t)])))
                .await
                .expect("read by tag");
            assert_eq!(positions(&found), [1], "tag {t:?}");
        }

        let big: Vec<NewEvent> = (0..2500)
            .map(|i| {
                event(
                    ["pg.a", "pg.b"][i % 2],
                    &[&format!("n:{i}"), &format!("m:{}", i % 7)],
                    format!(r#"{{"i":{i}}}"#),
                )
            })
            .collect();
        let recorded = store.append(big, None).await.expect("large batch");
        assert_eq!(positions(&recorded), (2..=2501).collect::<Vec<_>>());
        let read = store
            .read(&EventQuery::match_all().after(1))
            .await
            .expect("read");
        assert_eq!(read, recorded);
        let sevens = store
            .read(&EventQuery::item(
                QueryItem::types(["pg.b"]).and_tags([tag("m:3")]),
            ))
            .await
            .expect("read");
        let want: Vec<u64> = (0..2500u64)
            .filter(|i| i % 2 == 1 && i % 7 == 3)
            .map(|i| i + 2)
            .collect();
        assert_eq!(positions(&sevens), want);

        // A tag PostgreSQL cannot store (a NUL) cannot be built: `Tag` refuses it on every
        // store alike, before any I/O.
        assert!(
            Tag::new("k", "a\0b").is_err(),
            "a NUL in a tag value was accepted"
        );
        assert_eq!(store.head().await.expect("head"), 2501);
        drop(store);
        drop_tables(&url, &prefix).await;
    });
}

/// An append whose future is dropped midway (here after its first poll, which queues the
/// transaction's statements) leaves no transaction open: another store appends at once, the
/// abandoned append wrote all or nothing (before or after the other one: what was queued may
/// still run), and the connection goes back to the pool idle.
#[test]
fn an_abandoned_append_leaves_no_transaction_open() {
    with_database(|url| async move {
        use futures::FutureExt;
        let prefix = fresh_prefix();
        let app = format!("krescent abandoned {prefix}");
        let a = connect_with(
            &url,
            PostgresOptions::default()
                .table_prefix(&prefix)
                .pool_size(1)
                .application_name(&app),
        )
        .await;
        let b = connect(&url, &prefix).await;
        let query = EventQuery::item(QueryItem::types(["pg.held"]).and_tag(tag("k:1")));
        for (round, conditional) in [(0u64, true), (1, false), (2, true)] {
            let head = a.head().await.expect("head");
            // Prepares the statements, so that the first poll below reaches the database.
            a.append(
                vec![event("pg.held", &["k:1"], "{}".into())],
                Some(AppendCondition::none_match_after(query.clone(), head)),
            )
            .await
            .expect("append");
            let head = head + 1;
            let batch: Vec<NewEvent> = (0..1500)
                .map(|i| event("pg.held", &["k:1"], format!(r#"{{"i":{i}}}"#)))
                .collect();
            let condition =
                conditional.then(|| AppendCondition::none_match_after(query.clone(), head));
            let abandoned = a.append(batch, condition).now_or_never();
            assert!(
                abandoned.is_none(),
                "round {round}: the append finished at once"
            );

            let other = tokio::time::timeout(
                WAIT,
                b.append(vec![event("pg.other", &[], "{}".into())], None),
            )
            .await
            .unwrap_or_else(|_| panic!("round {round}: the counter row stayed locked"))
            .expect("append from another store");
            // The pool's one connection runs what the abandoned append had queued first.
            let after = a.head().await.expect("head on the same connection");
            let other = other[0].position;
            // Rolled back (the other store's event is the head), committed before the other
            // append (likewise), or committed after it: its requests were already on their
            // way when the future was dropped, and the other store took the counter row
            // first. All or nothing in each case.
            let outcomes = [
                (head + 1, head + 1),
                (head + 1501, head + 1501),
                (head + 1, head + 1501),
            ];
            assert!(
                outcomes.contains(&(other, after)),
                "round {round}: all or nothing, got the other event at {other} and head {after} \
                 after {head}"
            );
            let all = a.read(&EventQuery::match_all()).await.expect("read");
            assert_eq!(
                positions(&all),
                (1..=after).collect::<Vec<_>>(),
                "round {round}: no gap"
            );
            let admin = raw_client(&url).await;
            let states: Vec<String> = admin
                .query(
                    "SELECT state FROM pg_stat_activity WHERE application_name = $1",
                    &[&app],
                )
                .await
                .expect("activity")
                .iter()
                .map(|r| r.get(0))
                .collect();
            assert_eq!(states, ["idle"], "round {round}");
        }
        drop((a, b));
        drop_tables(&url, &prefix).await;
    });
}

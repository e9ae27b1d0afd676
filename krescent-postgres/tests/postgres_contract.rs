//! The event store contract and PostgreSQL-specific behaviour, against the database named by
//! `KRESCENT_POSTGRES_URL` (for example `postgres://postgres@127.0.0.1:5432/test`).
//!
//! Without that variable every test prints that it was skipped and passes. Each test works in
//! tables of its own (a random prefix) and drops them at the end.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use krescent_core::testing::EventStoreFactory;
use krescent_core::{
    AppendCondition, EventQuery, EventStore, NewEvent, QueryItem, RecordedEvent, StoreError,
    Subscription, Tag, Tags,
};
use krescent_postgres::{PostgresError, PostgresEventStore, PostgresOptions};
use parking_lot::Mutex;
use tokio::sync::Barrier;
use tokio_util::sync::CancellationToken;

mod common;
use common::{connect_with, drop_tables, fresh_prefix, raw_client, with_database};

/// How long a test waits for something that should happen (a failure guard, not a timing).
const WAIT: Duration = Duration::from_secs(30);

async fn connect(url: &str, prefix: &str) -> PostgresEventStore {
    connect_with(url, PostgresOptions::default().table_prefix(prefix)).await
}

/// Makes a store in fresh tables for each contract case and drops them afterwards.
struct Factory {
    url: String,
    prefixes: Arc<Mutex<Vec<String>>>,
}

impl EventStoreFactory for Factory {
    type Store = PostgresEventStore;

    async fn create(&self) -> PostgresEventStore {
        let prefix = fresh_prefix();
        self.prefixes.lock().push(prefix.clone());
        connect(&self.url, &prefix).await
    }
}

/// One `#[test]` per contract case, each on fresh tables.
macro_rules! contract_cases {
    ($($case:ident),+ $(,)?) => {
        mod contract {
            $(
                #[test]
                fn $case() {
                    super::with_database(|url| async move {
                        let prefixes = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
                        let factory = super::Factory { url: url.clone(), prefixes: prefixes.clone() };
                        let result = krescent_core::testing::event_store::$case(&factory).await;
                        let made: Vec<String> = prefixes.lock().clone();
                        for prefix in made {
                            super::drop_tables(&url, &prefix).await;
                        }
                        if let Err(failure) = result {
                            panic!("{failure}");
                        }
                    });
                }
            )+
        }
    };
}

contract_cases!(
    empty_store,
    append_and_read_back,
    read_position_ranges,
    backward_limit_one_finds_latest_match,
    query_filter_semantics,
    match_none_matches_nothing,
    conditional_append,
    conditional_append_on_several_tags,
    failed_conditional_append_stores_nothing,
    subscribe_from_start_while_appending,
    subscribe_from_head_sees_only_new_events,
    subscription_sees_burst_of_appends,
    concurrent_appenders_with_live_subscribers,
    subscription_filter_delivers_only_matches,
    read_pages_yields_every_event_once,
);

// ---------------------------------------------------------------------------------------------
// Helpers

fn tag(text: &str) -> Tag {
    Tag::parse(text).expect("valid tag")
}

fn event(event_type: &str, tags: &[&str], payload: String) -> NewEvent {
    NewEvent::new(
        event_type,
        Tags::parse(tags.iter().copied()).expect("valid tags"),
        payload.into_bytes(),
    )
    .expect("valid type name")
}

fn positions(events: &[RecordedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.position).collect()
}

/// Appends `count` events, `make(i)` for i from 0, in batches of 1,000.
async fn append_in_batches(
    store: &PostgresEventStore,
    count: usize,
    make: impl Fn(usize) -> NewEvent,
) {
    for from in (0..count).step_by(1000) {
        let batch = (from..(from + 1000).min(count)).map(&make).collect();
        store.append(batch, None).await.expect("append");
    }
}

/// The positions of every event `query` selects, read page by page (`size` each), as a
/// catch-up reads them.
async fn paged_positions(store: &PostgresEventStore, query: &EventQuery, size: u64) -> Vec<u64> {
    let mut seen = Vec::new();
    let mut cursor = query.after_position();
    loop {
        let page = query.clone().after(cursor).limit(size).expect("limit");
        let events = store.read(&page).await.expect("page");
        let Some(last) = events.last() else { break };
        cursor = last.position;
        seen.extend(positions(&events));
    }
    seen
}

/// Whether a line of `EXPLAIN` output is a sort node.
fn is_sort_node(line: &str) -> bool {
    let node = line.trim_start().trim_start_matches("->").trim_start();
    node.starts_with("Sort  (") || node.starts_with("Incremental Sort")
}

/// Receives batches until `want` events arrived; panics on an error, an end or a timeout.
async fn collect(sub: &mut Subscription, want: usize, what: &str) -> Vec<RecordedEvent> {
    let mut got = Vec::new();
    let outcome = tokio::time::timeout(WAIT, async {
        while got.len() < want {
            match sub.next_batch().await {
                Some(Ok(batch)) => got.extend(batch),
                Some(Err(e)) => panic!("{what}: subscription failed: {e}"),
                None => panic!("{what}: subscription ended after {} events", got.len()),
            }
        }
    })
    .await;
    if outcome.is_err() {
        panic!(
            "{what}: only {} of {want} events within {WAIT:?}",
            got.len()
        );
    }
    got
}

/// The process ids of the connections with this `application_name`.
async fn backends(client: &tokio_postgres::Client, application_name: &str) -> Vec<i32> {
    client
        .query(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1 ORDER BY pid",
            &[&application_name],
        )
        .await
        .expect("pg_stat_activity")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Polls `pg_stat_activity` (there is no signal to wait for) until `done` holds for the
/// backends of `application_name`.
async fn wait_for_backends(
    client: &tokio_postgres::Client,
    application_name: &str,
    what: &str,
    done: impl Fn(&[i32]) -> bool,
) -> Vec<i32> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let pids = backends(client, application_name).await;
        if done(&pids) {
            return pids;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("{what}: backends of `{application_name}` are {pids:?} after {WAIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn postgres_error(e: &StoreError) -> &PostgresError {
    PostgresError::of(e).unwrap_or_else(|| panic!("not a postgres backend error: {e:?}"))
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL-specific behaviour

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

/// Concurrent first uses of a prefix all succeed; connecting again keeps the data; a schema
/// version newer than the code knows is refused with a typed error.
#[test]
fn schema_creation_is_idempotent_and_versioned() {
    with_database(|url| async move {
        let prefix = fresh_prefix();
        let connects: Vec<_> = (0..8)
            .map(|_| {
                let (url, prefix) = (url.clone(), prefix.clone());
                tokio::spawn(async move {
                    PostgresEventStore::connect(
                        &url,
                        PostgresOptions::default().table_prefix(prefix),
                    )
                    .await
                })
            })
            .collect();
        let mut stores = Vec::new();
        for c in connects {
            stores.push(c.await.expect("task").expect("concurrent first use"));
        }
        stores[0]
            .append(vec![event("pg.kept", &["k:1"], "{}".into())], None)
            .await
            .expect("append");
        drop(stores);
        let again = connect(&url, &prefix).await;
        assert_eq!(again.head().await.expect("head"), 1);
        assert_eq!(
            again
                .read(&EventQuery::match_all())
                .await
                .expect("read")
                .len(),
            1
        );

        let client = raw_client(&url).await;
        let version: i64 = client
            .query_one(
                &format!("SELECT value FROM {prefix}meta WHERE name = 'schema_version'"),
                &[],
            )
            .await
            .expect("version")
            .get(0);
        assert_eq!(version, 1);
        client
            .batch_execute(&format!(
                "UPDATE {prefix}meta SET value = 99 WHERE name = 'schema_version'"
            ))
            .await
            .expect("bump version");
        let err =
            PostgresEventStore::connect(&url, PostgresOptions::default().table_prefix(&prefix))
                .await
                .expect_err("a newer schema is refused");
        match postgres_error(&err) {
            PostgresError::UnsupportedSchemaVersion {
                found: 99,
                supported: 1,
                ..
            } => {}
            other => panic!("expected UnsupportedSchemaVersion, got {other:?}"),
        }
        assert!(err.to_string().contains("schema version 99"), "{err}");
        // A version below 1 was never written by krescent: refused too.
        client
            .batch_execute(&format!(
                "UPDATE {prefix}meta SET value = 0 WHERE name = 'schema_version'"
            ))
            .await
            .expect("set version 0");
        let err =
            PostgresEventStore::connect(&url, PostgresOptions::default().table_prefix(&prefix))
                .await
                .expect_err("version 0 is refused");
        assert!(
            matches!(
                postgres_error(&err),
                PostgresError::UnsupportedSchemaVersion { found: 0, .. }
            ),
            "{err:?}"
        );
        drop(again);
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

/// Invalid prefixes, pool sizes and URLs are typed errors, and no table is created.
#[test]
fn invalid_settings_are_rejected() {
    with_database(|url| async move {
        for bad in [
            "",
            "Upper_",
            "1starts_with_digit",
            "has-dash",
            "semi;colon",
            "quote\"",
            "dot.ted",
            "space d",
            "ünïcode",
            "a23456789012345678901234567890123456789012",
        ] {
            let err =
                PostgresEventStore::connect(&url, PostgresOptions::default().table_prefix(bad))
                    .await
                    .expect_err("invalid prefix");
            match postgres_error(&err) {
                PostgresError::InvalidTablePrefix { prefix } => assert_eq!(prefix, bad),
                other => panic!("prefix {bad:?}: expected InvalidTablePrefix, got {other:?}"),
            }
        }
        let err = PostgresEventStore::connect(&url, PostgresOptions::default().pool_size(0))
            .await
            .expect_err("pool size 0");
        assert!(matches!(
            postgres_error(&err),
            PostgresError::InvalidPoolSize
        ));
        let err =
            PostgresEventStore::connect("postgres://host:notaport/db", PostgresOptions::default())
                .await
                .expect_err("bad url");
        assert!(matches!(
            postgres_error(&err),
            PostgresError::InvalidUrl { .. }
        ));
    });
}

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

/// The listening connection is terminated by the server; the store reconnects and a
/// subscription sees an event appended afterwards by another store instance (the polling
/// fallback is set to an hour, so only the new LISTEN connection can deliver it).
#[test]
fn subscription_survives_a_forced_disconnect() {
    with_database(|url| async move {
        let prefix = fresh_prefix();
        let app = format!("krescent test {prefix}");
        let store = connect_with(
            &url,
            PostgresOptions::default()
                .table_prefix(&prefix)
                .application_name(&app)
                .poll_interval(Duration::from_secs(3600)),
        )
        .await;
        let other = connect(&url, &prefix).await;
        let admin = raw_client(&url).await;
        let listener = store.listener_application_name().to_owned();
        let cancel = CancellationToken::new();
        let mut sub = store.subscribe(EventQuery::match_all(), 0, cancel.clone());

        let before =
            wait_for_backends(&admin, &listener, "listener started", |p| p.len() == 1).await;
        other
            .append(vec![event("pg.before", &[], "{}".into())], None)
            .await
            .expect("append");
        assert_eq!(
            positions(&collect(&mut sub, 1, "before the disconnect").await),
            [1]
        );

        let terminated: bool = admin
            .query_one("SELECT pg_terminate_backend($1)", &[&before[0]])
            .await
            .expect("terminate")
            .get(0);
        assert!(terminated);
        wait_for_backends(&admin, &listener, "listener reconnected", |p| {
            p.len() == 1 && p[0] != before[0]
        })
        .await;
        other
            .append(vec![event("pg.after", &[], "{}".into())], None)
            .await
            .expect("append after the disconnect");
        let got = collect(&mut sub, 1, "after the disconnect").await;
        assert_eq!(positions(&got), [2]);
        assert_eq!(&*got[0].event_type, "pg.after");
        cancel.cancel();
        drop(sub);
        drop(store);
        drop(other);
        drop_tables(&url, &prefix).await;
    });
}

/// A database that cannot be reached, or connections the server closed, give
/// `StoreError::Backend` errors, never panics; the store recovers with new connections.
#[test]
fn database_gone_is_a_backend_error() {
    with_database(|url| async move {
        let err = PostgresEventStore::connect(
            "postgres://postgres@127.0.0.1:1/none",
            PostgresOptions::default().connect_timeout(Duration::from_secs(2)),
        )
        .await
        .expect_err("nothing listens on port 1");
        assert!(
            matches!(
                err,
                StoreError::Backend {
                    backend: "postgres",
                    ..
                }
            ),
            "{err:?}"
        );

        let prefix = fresh_prefix();
        let app = format!("krescent test {prefix}");
        let store = connect_with(
            &url,
            PostgresOptions::default()
                .table_prefix(&prefix)
                .application_name(&app)
                .pool_size(2),
        )
        .await;
        store
            .append(vec![event("pg.one", &[], "{}".into())], None)
            .await
            .expect("append");
        let admin = raw_client(&url).await;
        admin
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
                &[&app],
            )
            .await
            .expect("terminate the pool's connections");
        let mut recovered = false;
        for _ in 0..20 {
            match store.read(&EventQuery::match_all()).await {
                Ok(events) => {
                    assert_eq!(positions(&events), [1]);
                    recovered = true;
                    break;
                }
                Err(e) => assert!(
                    matches!(
                        e,
                        StoreError::Backend {
                            backend: "postgres",
                            ..
                        }
                    ),
                    "{e:?}"
                ),
            }
        }
        assert!(recovered, "the store did not recover with new connections");
        drop(store);
        drop_tables(&url, &prefix).await;
    });
}

/// When the last handle (and subscription) of a store is dropped, its listener and pool
/// connections close.
#[test]
fn listener_ends_with_the_last_store_handle() {
    with_database(|url| async move {
        let prefix = fresh_prefix();
        let app = format!("krescent test {prefix}");
        let store = connect_with(
            &url,
            PostgresOptions::default()
                .table_prefix(&prefix)
                .application_name(&app),
        )
        .await;
        let admin = raw_client(&url).await;
        let listener = store.listener_application_name().to_owned();
        wait_for_backends(&admin, &listener, "listener started", |p| p.len() == 1).await;
        let clone = store.clone();
        let cancel = CancellationToken::new();
        let sub = clone.subscribe(EventQuery::match_all(), 0, cancel.clone());
        drop(store);
        drop(clone);
        // The subscription still holds the store: the listener stays.
        assert_eq!(backends(&admin, &listener).await.len(), 1);
        drop(sub);
        wait_for_backends(&admin, &listener, "listener ended", |p| p.is_empty()).await;
        wait_for_backends(&admin, &app, "pool closed", |p| p.is_empty()).await;
        drop_tables(&url, &prefix).await;
    });
}

/// Tags with quotes, backslashes, braces, commas and non-ASCII text round-trip; batches larger
/// than one insert statement are stored whole; a tag PostgreSQL cannot store (a NUL byte)
/// fails the whole batch with a backend error and stores nothing.
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

        let nul = NewEvent::new(
            "pg.nul",
            Tags::from_tags([Tag::new("k", "a\0b").expect("tag")]),
            b"{}".to_vec(),
        )
        .expect("event");
        let err = store
            .append(vec![event("pg.fine", &[], "{}".into()), nul], None)
            .await
            .expect_err("NUL in a tag");
        assert!(
            matches!(
                err,
                StoreError::Backend {
                    backend: "postgres",
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(store.head().await.expect("head"), 2501);
        let after = store
            .append(vec![event("pg.fine", &[], "{}".into())], None)
            .await
            .expect("append after the failure");
        assert_eq!(
            positions(&after),
            [2502],
            "the failed batch consumed no position"
        );
        drop(store);
        drop_tables(&url, &prefix).await;
    });
}

/// Pages of a long read come back in order without duplicates, also through `read_pages`.
#[test]
fn paged_reads_through_the_extension() {
    with_database(|url| async move {
        use krescent_core::EventStoreExt;
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

/// The store and its error can move between threads.
#[test]
fn store_types_are_send_and_sync() {
    fn assert<T: Send + Sync + 'static>() {}
    assert::<PostgresEventStore>();
    assert::<PostgresError>();
}

/// Paged forward reads are read ahead. Every page equals a fresh read: a page read ahead while
/// it was short is not returned once more events have arrived, and readers paging at once,
/// or jumping, get exact pages.
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
            let page = |after: u64| query.clone().after(after).limit(1_000).expect("limit");
            // Pages 1 and 2 are full; asking for page 2 (the continuation of page 1) starts
            // reading page 3, which is short at that moment.
            let p1 = store.read(&page(head - 2_500)).await.expect("page 1");
            let p2 = store.read(&page(head - 1_500)).await.expect("page 2");
            assert_eq!((p1.len(), p2.len()), (1_000, 1_000));
            store
                .append(batch(head, 1_500), None)
                .await
                .expect("append");
            let p3 = store.read(&page(head - 500)).await.expect("page 3");
            assert_eq!(p3.len(), 1_000, "page 3 sees the events appended meanwhile");
            let p4 = store.read(&page(head + 500)).await.expect("page 4");
            let p5 = store.read(&page(head + 1_500)).await.expect("page 5");
            assert_eq!((p4.len(), p5.len()), (1_000, 0));
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
                loop {
                    let page = query.clone().after(cursor).limit(size).expect("limit");
                    let events = store.read(&page).await.expect("page");
                    let fresh = store
                        .read(&page.clone().with_limit(None))
                        .await
                        .expect("fresh");
                    let n = events.len();
                    assert_eq!(events[..], fresh[..n.min(fresh.len())], "after {cursor}");
                    assert!(n as u64 == size || n == fresh.len(), "after {cursor}");
                    let Some(last) = events.last() else { break };
                    cursor = last.position;
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

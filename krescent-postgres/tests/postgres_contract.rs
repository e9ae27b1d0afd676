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

/// The stored tags of schema versions 4 and 5: each event's `(position, tag)` (its first tag, by
/// position) and the rows of `extra_tags` `(tag, type, position, seg)`, in key order.
async fn tag_layout(
    client: &tokio_postgres::Client,
    prefix: &str,
) -> (Vec<(i64, Option<String>)>, Vec<(String, String, i64, i64)>) {
    let inline = client
        .query(
            &format!("SELECT position, tag FROM {prefix}events ORDER BY position"),
            &[],
        )
        .await
        .expect("events.tag")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let extra = client
        .query(
            &format!(
                "SELECT tag, type, position, seg FROM {prefix}extra_tags \
                 ORDER BY seg, tag, type, position"
            ),
            &[],
        )
        .await
        .expect("extra_tags")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    (inline, extra)
}

/// Each query finds exactly its expected positions, forwards, backwards and as the latest
/// one (backwards, limit 1).
async fn assert_tag_reads(
    store: &PostgresEventStore,
    cases: impl IntoIterator<Item = (EventQuery, Vec<u64>)>,
) {
    for (query, expected) in cases {
        let found = store.read(&query).await.expect("read by tag");
        assert_eq!(positions(&found), expected, "{query:?}");
        let mut backward = expected.clone();
        backward.reverse();
        let found = store
            .read(&query.clone().backward())
            .await
            .expect("read by tag");
        assert_eq!(positions(&found), backward, "backward {query:?}");
        let latest = store
            .read(&query.clone().backward().limit(1).expect("limit"))
            .await
            .expect("read by tag");
        assert_eq!(
            positions(&latest),
            backward.first().copied().into_iter().collect::<Vec<_>>(),
            "latest {query:?}"
        );
    }
}

/// The tables that schema versions 2 and 3 created alike: `meta`, `events` with its type
/// index, and `head`.
fn old_tables(prefix: &str) -> String {
    format!(
        "CREATE TABLE {prefix}meta (name text PRIMARY KEY, value bigint NOT NULL);
         CREATE TABLE {prefix}events (
             position bigint PRIMARY KEY, id uuid NOT NULL,
             type text COLLATE \"C\" NOT NULL, tags bytea NOT NULL,
             recorded_at timestamptz NOT NULL, payload bytea NOT NULL);
         CREATE INDEX {prefix}events_type_idx ON {prefix}events (type, position);
         CREATE TABLE {prefix}head (
             id boolean PRIMARY KEY DEFAULT true CHECK (id), position bigint NOT NULL,
             recorded_at timestamptz);"
    )
}

/// The tables of schema version 3, empty: those of [`old_tables`], `event_tags` (every tag
/// a row, keyed by segment first) and `tag_starts`.
fn version_3_tables(prefix: &str) -> String {
    format!(
        "{}
         CREATE TABLE {prefix}event_tags (
             tag text COLLATE \"C\" NOT NULL, type text COLLATE \"C\" NOT NULL,
             position bigint NOT NULL, seg bigint NOT NULL,
             CONSTRAINT {prefix}event_tags_seg_check CHECK (seg = position >> 15),
             PRIMARY KEY (seg, tag, type, position));
         CREATE TABLE {prefix}tag_starts (
             tag text COLLATE \"C\" NOT NULL, type text COLLATE \"C\" NOT NULL,
             seg bigint NOT NULL, PRIMARY KEY (tag, type) INCLUDE (seg));",
        old_tables(prefix)
    )
}

/// The tables of schema version 4, empty: those of [`old_tables`] with `events.tag` (the
/// first tag) and its index keyed by the type's name, `extra_tags` and `tag_starts`.
fn version_4_tables(prefix: &str) -> String {
    format!(
        "{}
         ALTER TABLE {prefix}events ADD COLUMN tag text COLLATE \"C\";
         CREATE INDEX {prefix}events_tag_idx ON {prefix}events
             ((position >> 15), tag, type, position) WHERE tag IS NOT NULL;
         CREATE TABLE {prefix}extra_tags (
             tag text COLLATE \"C\" NOT NULL, type text COLLATE \"C\" NOT NULL,
             position bigint NOT NULL, seg bigint NOT NULL,
             CONSTRAINT {prefix}extra_tags_seg_check CHECK (seg = position >> 15),
             PRIMARY KEY (seg, tag, type, position));
         CREATE TABLE {prefix}tag_starts (
             tag text COLLATE \"C\" NOT NULL, type text COLLATE \"C\" NOT NULL,
             seg bigint NOT NULL, PRIMARY KEY (tag, type) INCLUDE (seg));",
        old_tables(prefix)
    )
}

/// Writes a store as an older version left it: `tables` (its DDL), then `rows` of
/// `<prefix>events` written the way versions 1 to 4 wrote them, `(position, type, hex of the
/// stored tag list)`, the k-th (from 0) with the id ending in k + 1, the time
/// `2024-01-01T00:00:0k` and the payload `{}`; the head at the last row; then `rest`.
async fn write_old_store(
    client: &tokio_postgres::Client,
    prefix: &str,
    tables: &str,
    rows: &[(i64, &str, &str)],
    rest: &str,
) {
    let values: Vec<String> = rows
        .iter()
        .enumerate()
        .map(|(k, (position, ty, tags))| {
            format!(
                "({position}, '0190e8a0-0000-7000-8000-{:012}', '{ty}', '\\x{tags}', \
                 '2024-01-01T00:00:{k:02}Z', '\\x7b7d')",
                k + 1
            )
        })
        .collect();
    let (head, last) = rows.last().map_or((0, 0), |(p, ..)| (*p, rows.len() - 1));
    client
        .batch_execute(&format!(
            "{tables}
             INSERT INTO {prefix}head (id, position, recorded_at)
                 VALUES (true, {head}, '2024-01-01T00:00:{last:02}Z');
             INSERT INTO {prefix}events VALUES {};
             {rest}",
            values.join(", ")
        ))
        .await
        .expect("the tables of an older version");
}

/// The schema version recorded in `<prefix>meta`.
async fn schema_version(client: &tokio_postgres::Client, prefix: &str) -> i64 {
    client
        .query_one(
            &format!("SELECT value FROM {prefix}meta WHERE name = 'schema_version'"),
            &[],
        )
        .await
        .expect("version")
        .get(0)
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
        assert_eq!(version, 5);
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
                supported: 5,
                ..
            } => {}
            other => panic!("expected UnsupportedSchemaVersion, got {other:?}"),
        }
        assert!(err.to_string().contains("schema version 99"), "{err}");
        drop(again);
        drop_tables(&url, &prefix).await;
    });
}

/// Tables of schema version 1 (tags as a JSON array, the database's collation) are migrated
/// on connect (through versions 2, 3 and 4): every stored event reads back with its tags, is found by
/// its tags, and the positions continue; the schema is then version 5 (the first tag of each
/// event in `events.tag`, the others in `extra_tags`), and a version below 1 is refused.
#[test]
fn schema_version_1_is_migrated() {
    with_database(|url| async move {
        let prefix = fresh_prefix();
        let client = raw_client(&url).await;
        // The schema as version 1 created it, with two events written the way it wrote them.
        client
            .batch_execute(&format!(
                "CREATE TABLE {prefix}meta (name text PRIMARY KEY, value bigint NOT NULL);
                 CREATE TABLE {prefix}events (
                     position bigint PRIMARY KEY, id uuid NOT NULL, type text NOT NULL,
                     tags json NOT NULL, recorded_at timestamptz NOT NULL,
                     payload bytea NOT NULL);
                 CREATE INDEX {prefix}events_type_idx ON {prefix}events (type, position);
                 CREATE TABLE {prefix}event_tags (
                     tag text NOT NULL, type text NOT NULL, position bigint NOT NULL,
                     PRIMARY KEY (tag, type, position));
                 CREATE TABLE {prefix}head (
                     id boolean PRIMARY KEY DEFAULT true CHECK (id), position bigint NOT NULL);
                 INSERT INTO {prefix}head (id, position) VALUES (true, 2);
                 INSERT INTO {prefix}events VALUES
                     (1, '0190e8a0-0000-7000-8000-000000000001', 'pg.old',
                      '[\"k:a\\\"b\",\"k:back\\\\slash\",\"k:ctl\\u0001\",\"m:grüße\"]',
                      '2024-01-01T00:00:00Z', '\\x7b7d'),
                     (2, '0190e8a0-0000-7000-8000-000000000002', 'pg.old', '[]',
                      '2024-01-01T00:00:01Z', '\\x7b7d');
                 INSERT INTO {prefix}event_tags VALUES
                     ('k:a\"b', 'pg.old', 1), ('k:back\\slash', 'pg.old', 1),
                     (E'k:ctl\\x01', 'pg.old', 1), ('m:grüße', 'pg.old', 1);
                 INSERT INTO {prefix}meta VALUES ('schema_version', 1);"
            ))
            .await
            .expect("version 1 tables");
        let store = connect(&url, &prefix).await;
        let old_tags = ["k:a\"b", "k:back\\slash", "k:ctl\u{1}", "m:grüße"];
        let read = store.read(&EventQuery::match_all()).await.expect("read");
        assert_eq!(positions(&read), [1, 2]);
        assert_eq!(read[0].tags, Tags::parse(old_tags).expect("tags"));
        assert_eq!(read[1].tags, Tags::empty());
        assert_eq!(&*read[0].data, b"{}");
        for t in old_tags {
            let found = store
                .read(&EventQuery::item(
                    QueryItem::types(["pg.old"]).and_tag(tag(t)),
                ))
                .await
                .expect("read by tag");
            assert_eq!(positions(&found), [1], "tag {t:?}");
        }
        let appended = store
            .append(vec![event("pg.new", &["k:a\"b"], "{}".into())], None)
            .await
            .expect("append after the migration");
        assert_eq!(positions(&appended), [3]);
        let both = store
            .read(&EventQuery::item(QueryItem::tagged([tag("k:a\"b")])))
            .await
            .expect("read by tag");
        assert_eq!(positions(&both), [1, 3]);
        let (inline, extra) = tag_layout(&client, &prefix).await;
        assert_eq!(
            inline,
            [
                (1, Some("k:a\"b".into())),
                (2, None),
                (3, Some("k:a\"b".into()))
            ]
        );
        let extra: Vec<&str> = extra.iter().map(|(t, ..)| t.as_str()).collect();
        assert_eq!(extra, &old_tags[1..]);
        assert_eq!(schema_version(&client, &prefix).await, 5);
        drop(store);

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
        drop_tables(&url, &prefix).await;
    });
}

/// Tables of schema version 2 (a tag index keyed by tag first) are migrated on connect: the
/// tag index gets its segments (`position >> 15`), `tag_starts` the first segment of each tag
/// and type, and (through version 3) each event's first tag moves to `events.tag`; every
/// event is found by its tags, in both directions, across segments; the positions continue,
/// an append in the way of version 2 fails, and the schema is then version 5.
#[test]
fn schema_version_2_is_migrated() {
    with_database(|url| async move {
        let prefix = fresh_prefix();
        let client = raw_client(&url).await;
        // The schema as version 2 created it, with events at positions 1, 2 (segment 0) and
        // 40,000 (segment 1) written the way it wrote them (tags: each one's length, then its
        // text).
        write_old_store(
            &client,
            &prefix,
            &format!(
                "{}
                 CREATE TABLE {prefix}event_tags (
                     tag text COLLATE \"C\" NOT NULL, type text COLLATE \"C\" NOT NULL,
                     position bigint NOT NULL, PRIMARY KEY (tag, type, position));",
                old_tables(&prefix)
            ),
            &[
                (1, "pg.a", "000000036b3a61000000036d3a31"),
                (2, "pg.b", "000000036b3a61"),
                (40000, "pg.a", "000000036b3a61"),
            ],
            &format!(
                "INSERT INTO {prefix}event_tags VALUES
                     ('k:a', 'pg.a', 1), ('m:1', 'pg.a', 1), ('k:a', 'pg.b', 2),
                     ('k:a', 'pg.a', 40000);
                 INSERT INTO {prefix}meta VALUES ('schema_version', 2);"
            ),
        )
        .await;
        let store = connect(&url, &prefix).await;
        let read = store.read(&EventQuery::match_all()).await.expect("read");
        assert_eq!(positions(&read), [1, 2, 40000]);
        assert_eq!(read[0].tags, Tags::parse(["k:a", "m:1"]).expect("tags"));

        let (inline, extra) = tag_layout(&client, &prefix).await;
        assert_eq!(
            inline,
            [
                (1, Some("k:a".into())),
                (2, Some("k:a".into())),
                (40000, Some("k:a".into()))
            ]
        );
        assert_eq!(extra, [("m:1".into(), "pg.a".into(), 1, 0)]);
        let starts: Vec<(String, String, i64)> = client
            .query(
                &format!("SELECT tag, type, seg FROM {prefix}tag_starts ORDER BY tag, type"),
                &[],
            )
            .await
            .expect("starts")
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        let start = |tag: &str, ty: &str, seg| (tag.into(), ty.into(), seg);
        assert_eq!(
            starts,
            [
                start("k:a", "pg.a", 0),
                start("k:a", "pg.b", 0),
                start("m:1", "pg.a", 0),
            ]
        );

        let by_tag = |items: QueryItem| EventQuery::item(items);
        let cases = [
            (by_tag(QueryItem::tagged([tag("k:a")])), vec![1, 2, 40000]),
            (
                by_tag(QueryItem::types(["pg.a"]).and_tag(tag("k:a"))),
                vec![1, 40000],
            ),
            (
                by_tag(QueryItem::types(["pg.a", "pg.b"]).and_tag(tag("k:a"))),
                vec![1, 2, 40000],
            ),
            (by_tag(QueryItem::tagged([tag("k:a"), tag("m:1")])), vec![1]),
            (by_tag(QueryItem::tagged([tag("m:2")])), vec![]),
            (
                by_tag(QueryItem::types(["pg.b"]).and_tag(tag("m:1"))),
                vec![],
            ),
        ];
        assert_tag_reads(&store, cases).await;

        let appended = store
            .append(vec![event("pg.c", &["k:a", "n:new"], "{}".into())], None)
            .await
            .expect("append after the migration");
        assert_eq!(positions(&appended), [40001]);
        let found = store
            .read(&EventQuery::item(QueryItem::tagged([tag("n:new")])))
            .await
            .expect("read a new tag");
        assert_eq!(positions(&found), [40001]);
        let found = store
            .read(
                &EventQuery::item(QueryItem::tagged([tag("k:a")]))
                    .backward()
                    .limit(2)
                    .expect("limit"),
            )
            .await
            .expect("read by tag");
        assert_eq!(positions(&found), [40001, 40000]);

        // An append of version 2 or 3 writes every tag to `event_tags`, which is gone: it
        // fails rather than store a tag that neither `events.tag` nor `tag_starts` would know.
        let old_append = client
            .batch_execute(&format!(
                "INSERT INTO {prefix}event_tags (tag, type, position) VALUES ('z:1', 'pg.a', 9)"
            ))
            .await;
        assert!(old_append.is_err(), "an append of version 2 fails");
        assert_eq!(schema_version(&client, &prefix).await, 5);
        drop(store);
        drop_tables(&url, &prefix).await;
    });
}

/// Tables of schema version 3 (every tag a row of `event_tags`) are migrated on connect:
/// each event's smallest tag moves to `events.tag` (also when a row written by hand stores
/// its tags out of order), the others to `extra_tags`, and `event_tags` is dropped, so that
/// an append of version 3 fails; every event is found by its tags, alone and together, in
/// both directions, across segments; the positions continue, and the schema is version 5.
#[test]
fn schema_version_3_is_migrated() {
    with_database(|url| async move {
        let prefix = fresh_prefix();
        let client = raw_client(&url).await;
        // The schema as version 3 created it. Event 3's tags are stored out of order (`m:2`
        // before `k:b`), which only a hand-written row can be.
        write_old_store(
            &client,
            &prefix,
            &version_3_tables(&prefix),
            &[
                (1, "pg.a", "000000036b3a61000000036d3a31"),
                (2, "pg.b", ""),
                (3, "pg.a", "000000036d3a32000000036b3a62"),
                (40000, "pg.a", "000000036b3a61"),
            ],
            &format!(
                "INSERT INTO {prefix}event_tags VALUES
                     ('k:a', 'pg.a', 1, 0), ('m:1', 'pg.a', 1, 0), ('m:2', 'pg.a', 3, 0),
                     ('k:b', 'pg.a', 3, 0), ('k:a', 'pg.a', 40000, 1);
                 INSERT INTO {prefix}tag_starts VALUES
                     ('k:a', 'pg.a', 0), ('m:1', 'pg.a', 0), ('m:2', 'pg.a', 0),
                     ('k:b', 'pg.a', 0);
                 INSERT INTO {prefix}meta VALUES ('schema_version', 3);"
            ),
        )
        .await;
        let store = connect(&url, &prefix).await;
        let read = store.read(&EventQuery::match_all()).await.expect("read");
        assert_eq!(positions(&read), [1, 2, 3, 40000]);
        assert_eq!(read[0].tags, Tags::parse(["k:a", "m:1"]).expect("tags"));
        assert_eq!(read[1].tags, Tags::empty());
        assert_eq!(read[2].tags, Tags::parse(["k:b", "m:2"]).expect("tags"));

        let (inline, extra) = tag_layout(&client, &prefix).await;
        assert_eq!(
            inline,
            [
                (1, Some("k:a".into())),
                (2, None),
                (3, Some("k:b".into())),
                (40000, Some("k:a".into()))
            ]
        );
        let row = |tag: &str, position| (tag.into(), "pg.a".into(), position, 0);
        assert_eq!(extra, [row("m:1", 1), row("m:2", 3)]);

        let by = |items: QueryItem| EventQuery::item(items);
        assert_tag_reads(
            &store,
            [
                (by(QueryItem::tagged([tag("k:a")])), vec![1, 40000]),
                (by(QueryItem::tagged([tag("k:a"), tag("m:1")])), vec![1]),
                (by(QueryItem::tagged([tag("k:b")])), vec![3]),
                (by(QueryItem::tagged([tag("m:2")])), vec![3]),
                (by(QueryItem::tagged([tag("k:b"), tag("m:2")])), vec![3]),
                (by(QueryItem::types(["pg.a"]).and_tag(tag("m:1"))), vec![1]),
                (by(QueryItem::tagged([tag("k:a"), tag("m:2")])), vec![]),
                (by(QueryItem::tagged([tag("m:9")])), vec![]),
                (by(QueryItem::types(["pg.b"]).and_tag(tag("k:a"))), vec![]),
            ],
        )
        .await;

        let appended = store
            .append(vec![event("pg.c", &["n:new", "k:a"], "{}".into())], None)
            .await
            .expect("append after the migration");
        assert_eq!(positions(&appended), [40001]);
        assert_tag_reads(
            &store,
            [
                (by(QueryItem::tagged([tag("n:new")])), vec![40001]),
                (by(QueryItem::tagged([tag("k:a")])), vec![1, 40000, 40001]),
                (
                    by(QueryItem::tagged([tag("k:a"), tag("n:new")])),
                    vec![40001],
                ),
            ],
        )
        .await;
        let (inline, extra) = tag_layout(&client, &prefix).await;
        assert_eq!(inline.last(), Some(&(40001, Some("k:a".into()))));
        assert_eq!(
            extra.last(),
            Some(&("n:new".into(), "pg.c".into(), 40001, 1))
        );

        let old_append = client
            .batch_execute(&format!(
                "INSERT INTO {prefix}event_tags (tag, type, position, seg) \
                 VALUES ('z:1', 'pg.a', 9, 0)"
            ))
            .await;
        assert!(old_append.is_err(), "an append of version 3 fails");
        assert_eq!(schema_version(&client, &prefix).await, 5);
        drop(store);
        drop_tables(&url, &prefix).await;
    });
}

/// Tables of schema version 4 (types named in both indexes of `events`) are migrated on
/// connect: each stored type name gets an id in `types`, in byte order, every event its
/// `type_id`, and the indexes are built again on the id; reads by type, by type and tag and
/// of every type (the stored types come from `types` now) find every event, an append
/// continues the positions and gives a new type the next id, and the schema is version 5.
#[test]
fn schema_version_4_is_migrated() {
    with_database(|url| async move {
        let prefix = fresh_prefix();
        let client = raw_client(&url).await;
        write_old_store(
            &client,
            &prefix,
            &version_4_tables(&prefix),
            &[
                (1, "pg.b", "000000036b3a61"),
                (2, "pg.a", ""),
                (3, "pg.b", "000000036b3a61000000036d3a31"),
                (40000, "pg.a", "000000036b3a61"),
            ],
            &format!(
                "UPDATE {prefix}events SET tag = 'k:a' WHERE position IN (1, 3, 40000);
                 INSERT INTO {prefix}extra_tags VALUES ('m:1', 'pg.b', 3, 0);
                 INSERT INTO {prefix}tag_starts VALUES
                     ('k:a', 'pg.b', 0), ('k:a', 'pg.a', 0), ('m:1', 'pg.b', 0);
                 INSERT INTO {prefix}meta VALUES ('schema_version', 4);"
            ),
        )
        .await;
        let store = connect(&url, &prefix).await;
        assert_eq!(schema_version(&client, &prefix).await, 5);
        let ids: Vec<(i32, String)> = client
            .query(
                &format!("SELECT id, name FROM {prefix}types ORDER BY id"),
                &[],
            )
            .await
            .expect("types")
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        assert_eq!(ids, [(1, "pg.a".into()), (2, "pg.b".into())]);
        let type_ids: Vec<(i64, i32)> = client
            .query(
                &format!("SELECT position, type_id FROM {prefix}events ORDER BY position"),
                &[],
            )
            .await
            .expect("type ids")
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        assert_eq!(type_ids, [(1, 2), (2, 1), (3, 2), (40000, 1)]);

        let by = |item: QueryItem| EventQuery::item(item);
        assert_tag_reads(
            &store,
            [
                (by(QueryItem::types(["pg.a"])), vec![2, 40000]),
                (by(QueryItem::types(["pg.b"])), vec![1, 3]),
                (by(QueryItem::types(["pg.a", "pg.b"])), vec![1, 2, 3, 40000]),
                (
                    by(QueryItem::types(["pg.b"]).and_tag(tag("k:a"))),
                    vec![1, 3],
                ),
                (
                    by(QueryItem::types(["pg.a"]).and_tag(tag("k:a"))),
                    vec![40000],
                ),
                (by(QueryItem::types(["pg.b"]).and_tag(tag("m:1"))), vec![3]),
                (by(QueryItem::tagged([tag("k:a")])), vec![1, 3, 40000]),
                (by(QueryItem::types(["pg.c"])), vec![]),
            ],
        )
        .await;

        let appended = store
            .append(
                vec![
                    event("pg.c", &["k:a"], "{}".into()),
                    event("pg.a", &[], "{}".into()),
                ],
                None,
            )
            .await
            .expect("append after the migration");
        assert_eq!(positions(&appended), [40001, 40002]);
        let new_id: i32 = client
            .query_one(
                &format!("SELECT id FROM {prefix}types WHERE name = 'pg.c'"),
                &[],
            )
            .await
            .expect("the new type's id")
            .get(0);
        assert_eq!(new_id, 3);
        assert_tag_reads(
            &store,
            [
                (by(QueryItem::types(["pg.c"])), vec![40001]),
                (by(QueryItem::types(["pg.a"])), vec![2, 40000, 40002]),
                (
                    by(QueryItem::types(["pg.c"]).and_tag(tag("k:a"))),
                    vec![40001],
                ),
            ],
        )
        .await;
        drop(store);
        drop_tables(&url, &prefix).await;
    });
}

/// A version-3 row whose stored tags cannot be read (text that is not UTF-8, here written by
/// hand) stops the migration with `PostgresError::Corrupt` naming its position, and nothing
/// changes: the schema stays version 3 with `event_tags` in place. Once the row is repaired,
/// the migration runs and every event is there.
#[test]
fn undecodable_tags_stop_the_version_3_migration_and_lose_nothing() {
    with_database(|url| async move {
        let prefix = fresh_prefix();
        let client = raw_client(&url).await;
        // Event 2's only tag is the 2 bytes ff 61: not UTF-8.
        write_old_store(
            &client,
            &prefix,
            &version_3_tables(&prefix),
            &[
                (1, "pg.a", "000000036b3a61"),
                (2, "pg.a", "00000002ff61"),
                (3, "pg.a", "000000036b3a61"),
            ],
            &format!(
                "INSERT INTO {prefix}event_tags VALUES
                     ('k:a', 'pg.a', 1, 0), ('k:a', 'pg.a', 3, 0);
                 INSERT INTO {prefix}tag_starts VALUES ('k:a', 'pg.a', 0);
                 INSERT INTO {prefix}meta VALUES ('schema_version', 3);"
            ),
        )
        .await;
        let err =
            PostgresEventStore::connect(&url, PostgresOptions::default().table_prefix(&prefix))
                .await
                .expect_err("the migration stops at the undecodable row");
        match postgres_error(&err) {
            PostgresError::Corrupt { position: 2, what } => {
                assert!(what.contains("schema version 3"), "{what}");
            }
            other => panic!("expected Corrupt at position 2, got {other:?}"),
        }
        assert_eq!(schema_version(&client, &prefix).await, 3);
        let old_rows: i64 = client
            .query_one(&format!("SELECT count(*) FROM {prefix}event_tags"), &[])
            .await
            .expect("event_tags is still there")
            .get(0);
        assert_eq!(old_rows, 2);

        client
            .batch_execute(&format!(
                "UPDATE {prefix}events SET tags = '\\x000000036b3a62' WHERE position = 2;
                 INSERT INTO {prefix}event_tags VALUES ('k:b', 'pg.a', 2, 0);
                 INSERT INTO {prefix}tag_starts VALUES ('k:b', 'pg.a', 0);"
            ))
            .await
            .expect("repair the row");
        let store = connect(&url, &prefix).await;
        let read = store.read(&EventQuery::match_all()).await.expect("read");
        assert_eq!(positions(&read), [1, 2, 3]);
        assert_eq!(read[1].tags, Tags::parse(["k:b"]).expect("tags"));
        assert_tag_reads(
            &store,
            [
                (
                    EventQuery::item(QueryItem::tagged([tag("k:a")])),
                    vec![1, 3],
                ),
                (EventQuery::item(QueryItem::tagged([tag("k:b")])), vec![2]),
            ],
        )
        .await;
        assert_eq!(schema_version(&client, &prefix).await, 5);
        drop(store);
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

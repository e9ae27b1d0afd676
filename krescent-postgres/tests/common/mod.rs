//! What the PostgreSQL test files share: the URL, the runtime, fresh table prefixes, a plain
//! client, dropping a prefix's tables, events and checkpoints to store, and waiting for
//! connections and subscriptions.

#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use krescent_core::checkpoint::{CheckpointBucket, CheckpointVersion, StoredCheckpoint};
use krescent_core::{
    EventQuery, EventStore, NewEvent, RecordedEvent, StoreError, Subscription, Tag, Tags,
};
use krescent_postgres::{PostgresError, PostgresEventStore, PostgresOptions, PostgresWrites};

/// How long a test waits for something that should happen (a failure guard, not a timing).
pub const WAIT: Duration = Duration::from_secs(60);

/// The variable naming the test database.
pub const URL_VAR: &str = "KRESCENT_POSTGRES_URL";

/// Runs `test` with the database URL on a two-worker runtime, or reports the skip.
pub fn with_database<F, Fut>(test: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()>,
{
    let Ok(url) = std::env::var(URL_VAR) else {
        println!("skipped: {URL_VAR} not set");
        return;
    };
    runtime().block_on(test(url));
}

/// A two-worker multi-thread runtime.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A fresh, unique table prefix.
pub fn fresh_prefix() -> String {
    format!("t_{}_", uuid::Uuid::now_v7().simple())
}

/// A store with `options`, or a panic naming the URL.
pub async fn connect_with(url: &str, options: PostgresOptions) -> PostgresEventStore {
    match PostgresEventStore::connect(url, options).await {
        Ok(store) => store,
        Err(e) => panic!("cannot connect to {url}: {e}"),
    }
}

/// A plain client for statements the store does not offer.
pub async fn raw_client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("raw connection");
    tokio::spawn(connection);
    client
}

/// Drops every table of `prefix` (the event store's, the storages', a test's own).
pub async fn drop_tables(url: &str, prefix: &str) {
    let client = raw_client(url).await;
    let tables: Vec<String> = client
        .query(
            "SELECT tablename::text FROM pg_tables \
             WHERE schemaname = current_schema() AND starts_with(tablename, $1)",
            &[&prefix],
        )
        .await
        .expect("tables of the prefix")
        .iter()
        .map(|row| row.get(0))
        .collect();
    if !tables.is_empty() {
        client
            .batch_execute(&format!("DROP TABLE IF EXISTS {}", tables.join(", ")))
            .await
            .expect("drop tables");
    }
}

/// A store on the tables of `prefix`.
pub async fn connect(url: &str, prefix: &str) -> PostgresEventStore {
    connect_with(url, options(prefix)).await
}

pub fn tag(text: &str) -> Tag {
    Tag::parse(text).expect("valid tag")
}

pub fn event(event_type: &str, tags: &[&str], payload: String) -> NewEvent {
    NewEvent::new(
        event_type,
        Tags::parse(tags.iter().copied()).expect("valid tags"),
        payload.into_bytes(),
    )
    .expect("valid type name")
}

pub fn positions(events: &[RecordedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.position).collect()
}

/// Appends `count` events, `make(i)` for i from 0, in batches of 1,000.
pub async fn append_in_batches(
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
pub async fn paged_positions(
    store: &PostgresEventStore,
    query: &EventQuery,
    size: u64,
) -> Vec<u64> {
    use futures::StreamExt as _;
    let size = krescent_core::Limit::new(size).expect("page size");
    let mut pages = store.read_pages(query.clone(), size);
    let mut seen = Vec::new();
    while let Some(page) = pages.next().await {
        seen.extend(positions(&page.expect("page")));
    }
    seen
}

/// Whether a line of `EXPLAIN` output is a sort node.
pub fn is_sort_node(line: &str) -> bool {
    let node = line.trim_start().trim_start_matches("->").trim_start();
    node.starts_with("Sort  (") || node.starts_with("Incremental Sort")
}

/// Receives batches until `want` events arrived; panics on an error, an end or a timeout.
pub async fn collect(sub: &mut Subscription, want: usize, what: &str) -> Vec<RecordedEvent> {
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
pub async fn backends(client: &tokio_postgres::Client, application_name: &str) -> Vec<i32> {
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
pub async fn wait_for_backends(
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

pub fn postgres_error(e: &StoreError) -> &PostgresError {
    PostgresError::of(e).unwrap_or_else(|| panic!("not a postgres backend error: {e:?}"))
}

pub fn options(prefix: &str) -> PostgresOptions {
    PostgresOptions::default().table_prefix(prefix)
}

/// A checkpoint of `model` at `position` with a small state and a fixed time.
pub fn checkpoint(model: &str, position: u64) -> StoredCheckpoint {
    StoredCheckpoint {
        model: model.to_owned(),
        version: CheckpointVersion::new(2, 3, 0xfeed_f00d),
        position,
        timestamp: chrono::DateTime::from_timestamp_micros(1_730_000_000_000_000 + position as i64)
            .expect("timestamp"),
        state: CheckpointBucket::new().with("position", position),
        deltas: Vec::new(),
    }
}

/// The `(position, label)` rows of a test table, by position.
pub async fn rows(client: &tokio_postgres::Client, table: &str) -> Vec<(i64, String)> {
    client
        .query(
            &format!("SELECT position, label FROM {table} ORDER BY position"),
            &[],
        )
        .await
        .expect("rows")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Creates the test table `<prefix>rows`.
pub async fn create_rows_table(client: &tokio_postgres::Client, prefix: &str) -> String {
    let table = format!("{prefix}rows");
    client
        .batch_execute(&format!(
            "CREATE TABLE {table} (position bigint PRIMARY KEY, label text NOT NULL)"
        ))
        .await
        .expect("create the rows table");
    table
}

/// Queues an insert of `(position, "row <position>")` into `table`.
pub fn insert_row(writes: &mut PostgresWrites, table: &str, position: i64) {
    writes.execute(
        format!("INSERT INTO {table} (position, label) VALUES ($1, $2)"),
        vec![Box::new(position), Box::new(format!("row {position}"))],
    );
}

pub fn expected_rows(positions: impl IntoIterator<Item = i64>) -> Vec<(i64, String)> {
    positions
        .into_iter()
        .map(|p| (p, format!("row {p}")))
        .collect()
}

/// Polls (there is no signal to wait for) until `done` holds, or panics after [`WAIT`].
pub async fn wait_until<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not the case after {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Terminates every connection named `application_name` and waits until they are gone.
pub async fn terminate_backends(admin: &tokio_postgres::Client, application_name: &str) {
    let pids = backends(admin, application_name).await;
    assert!(!pids.is_empty(), "no connections of `{application_name}`");
    for pid in &pids {
        admin
            .execute("SELECT pg_terminate_backend($1)", &[pid])
            .await
            .expect("pg_terminate_backend");
    }
    wait_until("the terminated connections are gone", || async {
        let now = backends(admin, application_name).await;
        !pids.iter().any(|pid| now.contains(pid))
    })
    .await;
}

//! The event store contract, run against the SQLite store (a fresh temporary file per case,
//! and in memory), and the SQLite-specific behaviour: reopening, the schema version, errors
//! for files that are not stores, and the query plans of the index design.

use std::error::Error as _;
use std::sync::atomic::{AtomicU64, Ordering};

use krescent_core::testing::EventStoreFactory;
use krescent_core::{
    AppendCondition, EventQuery, EventStore, NewEvent, QueryItem, StoreError, Tag, Tags,
};
use krescent_sqlite::{SqliteEventStore, SqliteStoreError};
use tempfile::TempDir;

/// Makes each store in a new file of one temporary directory, which the factory owns and
/// removes when the test is over.
struct TempFileFactory {
    dir: TempDir,
    next: AtomicU64,
}

impl TempFileFactory {
    fn new() -> Self {
        TempFileFactory {
            dir: tempfile::tempdir().expect("cannot create a temporary directory"),
            next: AtomicU64::new(0),
        }
    }
}

impl EventStoreFactory for TempFileFactory {
    type Store = SqliteEventStore;

    async fn create(&self) -> SqliteEventStore {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.path().join(format!("store-{n}.db"));
        SqliteEventStore::open(&path)
            .await
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()))
    }
}

/// One test per contract case, each on a new file.
mod file {
    krescent_core::event_store_contract_tests!(super::TempFileFactory::new());
}

/// One test per contract case, in memory.
mod in_memory {
    use krescent_sqlite::SqliteEventStore;

    krescent_core::event_store_contract_tests!(|| async {
        SqliteEventStore::open_in_memory().expect("cannot open an in-memory SQLite store")
    });
}

// ---------------------------------------------------------------------------------------------
// SQLite-specific behaviour

fn tag(text: &str) -> Tag {
    Tag::parse(text).unwrap()
}

fn event(ty: &str, tags: &[&str], payload: &str) -> NewEvent {
    NewEvent::new(
        ty,
        Tags::parse(tags.iter().copied()).unwrap(),
        payload.as_bytes().to_vec(),
    )
    .unwrap()
}

/// The `SqliteStoreError` inside a backend error.
fn sqlite_error(e: &StoreError) -> &SqliteStoreError {
    match e {
        StoreError::Backend { backend, source } => {
            assert_eq!(*backend, "sqlite");
            source
                .downcast_ref::<SqliteStoreError>()
                .unwrap_or_else(|| panic!("the source of {e} is not a SqliteStoreError"))
        }
        other => panic!("expected a backend error, got {other:?}"),
    }
}

#[test]
fn store_is_send_sync_clone_debug() {
    fn assert<T: Send + Sync + Clone + std::fmt::Debug + 'static>() {}
    assert::<SqliteEventStore>();
    assert::<SqliteStoreError>();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopened_file_keeps_events_and_positions_continue() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let first = {
        let store = SqliteEventStore::open(&path).await.unwrap();
        assert_eq!(store.path(), Some(path.as_path()));
        store
            .append(
                vec![
                    event("t.a", &["k:1"], r#"{"n":1}"#),
                    event("t.b", &["k:1", "k:2"], r#"{"n":2}"#),
                    event("t.a", &[], r#"{"n":3}"#),
                ],
                None,
            )
            .await
            .unwrap()
    };
    // Every handle is gone; open the file again.
    let store = SqliteEventStore::open(&path).await.unwrap();
    assert_eq!(store.head().await.unwrap(), 3);
    assert_eq!(store.read(&EventQuery::match_all()).await.unwrap(), first);
    let tagged = EventQuery::item(QueryItem::types(["t.b"]).and_tag(tag("k:2")));
    assert_eq!(store.read(&tagged).await.unwrap(), vec![first[1].clone()]);

    let more = store
        .append(vec![event("t.c", &["k:2"], "{}")], None)
        .await
        .unwrap();
    assert_eq!(more[0].position, 4);
    // A condition sees the events of the earlier session.
    let conflict = store
        .append(
            vec![event("t.c", &[], "{}")],
            Some(AppendCondition::none_match(EventQuery::item(
                QueryItem::tagged([tag("k:1")]),
            ))),
        )
        .await
        .unwrap_err();
    assert_eq!(conflict.conflict_position(), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_handles_on_one_file_share_positions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let a = SqliteEventStore::open(&path).await.unwrap();
    let b = SqliteEventStore::open(&path).await.unwrap();
    a.append(vec![event("t.a", &[], "{}")], None).await.unwrap();
    let from_b = b.append(vec![event("t.b", &[], "{}")], None).await.unwrap();
    assert_eq!(from_b[0].position, 2);
    assert_eq!(a.head().await.unwrap(), 2);
    let types = EventQuery::item(QueryItem::types(["t.b"]));
    assert_eq!(a.read(&types).await.unwrap(), from_b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_creation_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idempotent.db");
    for round in 0..3u64 {
        let store = SqliteEventStore::open(&path).await.unwrap();
        assert_eq!(store.head().await.unwrap(), round);
        store
            .append(vec![event("t.a", &["k:1"], "{}")], None)
            .await
            .unwrap();
    }
    let conn = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = conn
        .query_row(
            "SELECT value FROM krescent_meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(version, SqliteEventStore::SCHEMA_VERSION);
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM krescent_meta", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 1);
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let tag_rows: i64 = conn
        .query_row("SELECT count(*) FROM event_tags", [], |r| r.get(0))
        .unwrap();
    assert_eq!(tag_rows, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newer_schema_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("newer.db");
    drop(SqliteEventStore::open(&path).await.unwrap());
    let newer = SqliteEventStore::SCHEMA_VERSION + 1;
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute(
            "UPDATE krescent_meta SET value = ?1 WHERE key = 'schema_version'",
            [newer],
        )
        .unwrap();
    let err = SqliteEventStore::open(&path).await.unwrap_err();
    match sqlite_error(&err) {
        SqliteStoreError::UnsupportedSchemaVersion {
            found, supported, ..
        } => {
            assert_eq!(*found, newer);
            assert_eq!(*supported, SqliteEventStore::SCHEMA_VERSION);
        }
        other => panic!("expected UnsupportedSchemaVersion, got {other:?}"),
    }
    assert!(err.to_string().contains("sqlite"), "{err}");
    assert!(
        err.source().unwrap().to_string().contains("schema version"),
        "{err}"
    );
}

/// The event tables of schema version 1, as krescent wrote them.
const SCHEMA_V1: &str = "
CREATE TABLE krescent_meta (key TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT INTO krescent_meta (key, value) VALUES ('schema_version', 1);
CREATE TABLE events (
    position INTEGER PRIMARY KEY, id BLOB NOT NULL, type TEXT NOT NULL, tags TEXT NOT NULL,
    ts INTEGER NOT NULL, payload BLOB NOT NULL
);
CREATE INDEX events_type_position ON events (type, position);
CREATE TABLE event_tags (
    tag TEXT NOT NULL, type TEXT NOT NULL, position INTEGER NOT NULL,
    PRIMARY KEY (tag, type, position)
) WITHOUT ROWID;
CREATE TABLE event_types (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_1_files_are_migrated_with_every_event() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1.db");
    {
        let mut conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(SCHEMA_V1).unwrap();
        let conn = conn.transaction().unwrap();
        // 70,000 events across nine segments of the tag index; `t.b` is missing from `event_types`, as in
        // files written before that table existed.
        conn.execute_batch("INSERT INTO event_types (name) VALUES ('t.a');")
            .unwrap();
        let mut insert = conn
            .prepare("INSERT INTO events VALUES (?1, zeroblob(16), ?2, ?3, 1700000000000000, ?4)")
            .unwrap();
        let mut tag = conn
            .prepare("INSERT INTO event_tags VALUES (?1, ?2, ?3)")
            .unwrap();
        for p in 1..=70_000i64 {
            let ty = if p % 2 == 0 { "t.a" } else { "t.b" };
            let k = format!("k:{}", p % 7);
            let tags = if p == 3 {
                format!("{}:{k}6:rare:1", k.len())
            } else {
                format!("{}:{k}", k.len())
            };
            insert
                .execute(rusqlite::params![
                    p,
                    ty,
                    tags,
                    format!("{{\"n\":{p}}}").into_bytes()
                ])
                .unwrap();
            tag.execute(rusqlite::params![k, ty, p]).unwrap();
            if p == 3 {
                tag.execute(rusqlite::params!["rare:1", ty, p]).unwrap();
            }
        }
        drop((insert, tag));
        conn.commit().unwrap();
    }
    let store = SqliteEventStore::open(&path).await.unwrap();
    assert_eq!(store.head().await.unwrap(), 70_000);
    let all = store.read(&EventQuery::match_all()).await.unwrap();
    assert_eq!(all.len(), 70_000);
    assert_eq!(&*all[1].event_type, "t.a");
    assert_eq!(&*all[2].event_type, "t.b");
    assert_eq!(&all[2].data[..], b"{\"n\":3}");
    // The tag index came along: a tag, a rare tag, a type with a tag, backwards.
    let k3 = store
        .read(&EventQuery::item(QueryItem::tagged([tag("k:3")])))
        .await
        .unwrap();
    assert_eq!(
        k3.iter().map(|e| e.position).collect::<Vec<_>>(),
        (1..=70_000u64).filter(|p| p % 7 == 3).collect::<Vec<_>>()
    );
    let rare = store
        .read(
            &EventQuery::item(QueryItem::types(["t.b"]).and_tag(tag("rare:1")))
                .backward()
                .limit(1)
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(rare.iter().map(|e| e.position).collect::<Vec<_>>(), [3]);
    // New appends continue the positions, and the file now has the current version.
    let next = store
        .append(vec![event("t.b", &["k:3"], "{}")], None)
        .await
        .unwrap();
    assert_eq!(next[0].position, 70_001);
    drop(store);
    let version: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row(
            "SELECT value FROM krescent_meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(version, SqliteEventStore::SCHEMA_VERSION);
    // Reopening a migrated file is a plain open.
    let store = SqliteEventStore::open(&path).await.unwrap();
    assert_eq!(store.head().await.unwrap(), 70_001);
}

/// The event tables of schema version 2, as krescent wrote them.
const SCHEMA_V2: &str = "
CREATE TABLE krescent_meta (key TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT INTO krescent_meta (key, value) VALUES ('schema_version', 2);
CREATE TABLE events (
    position INTEGER PRIMARY KEY, id BLOB NOT NULL, type INTEGER NOT NULL, tags TEXT NOT NULL,
    ts INTEGER NOT NULL, payload BLOB NOT NULL
);
CREATE INDEX events_type_position ON events (type, position);
CREATE TABLE event_segments (seg INTEGER PRIMARY KEY);
CREATE TABLE event_tags (
    seg INTEGER NOT NULL, tag TEXT NOT NULL, type INTEGER NOT NULL, position INTEGER NOT NULL,
    PRIMARY KEY (seg, tag, type, position)
) WITHOUT ROWID;
CREATE TABLE event_types (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
INSERT INTO event_types (id, name) VALUES (1, 't.a'), (2, 't.b');
";

/// Writes a version-2 file of `events` events at `path`: type `t.a` at even positions and
/// `t.b` at odd ones, tag `k:<position % 5>`, id bytes and time from the position, payload
/// `{"n":<position>}`.
fn write_v2_file(path: &std::path::Path, events: i64) {
    let mut conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(SCHEMA_V2).unwrap();
    let txn = conn.transaction().unwrap();
    {
        let mut insert = txn
            .prepare("INSERT INTO events VALUES (?1, ?2, ?3, ?4, ?5, ?6)")
            .unwrap();
        let mut tag = txn
            .prepare("INSERT INTO event_tags VALUES (?1 >> 15, ?2, ?3, ?1)")
            .unwrap();
        let mut segment = txn
            .prepare("INSERT OR IGNORE INTO event_segments VALUES (?1 >> 15)")
            .unwrap();
        for p in 1..=events {
            let ty = if p % 2 == 0 { 1 } else { 2 };
            let k = format!("k:{}", p % 5);
            let mut id = [0u8; 16];
            id[8..].copy_from_slice(&p.to_be_bytes());
            insert
                .execute(rusqlite::params![
                    p,
                    id.to_vec(),
                    ty,
                    format!("{}:{k}", k.len()),
                    1_700_000_000_000_000i64 + p,
                    format!("{{\"n\":{p}}}").into_bytes()
                ])
                .unwrap();
            tag.execute(rusqlite::params![p, k, ty]).unwrap();
            segment.execute([p]).unwrap();
        }
    }
    txn.commit().unwrap();
}

fn schema_version(path: &std::path::Path) -> i64 {
    rusqlite::Connection::open(path)
        .unwrap()
        .query_row(
            "SELECT value FROM krescent_meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_2_files_are_migrated_with_every_event() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v2.db");
    write_v2_file(&path, 40_000);
    let store = SqliteEventStore::open(&path).await.unwrap();
    assert_eq!(schema_version(&path), SqliteEventStore::SCHEMA_VERSION);
    let all = store.read(&EventQuery::match_all()).await.unwrap();
    assert_eq!(all.len(), 40_000);
    for (e, p) in all.iter().zip(1u64..) {
        assert_eq!(e.position, p);
        assert_eq!(&e.id.as_bytes()[8..], &p.to_be_bytes());
        assert_eq!(&*e.event_type, if p % 2 == 0 { "t.a" } else { "t.b" });
        assert_eq!(
            e.tags,
            Tags::parse([format!("k:{}", p % 5).as_str()]).unwrap()
        );
        assert_eq!(
            e.timestamp.timestamp_micros(),
            1_700_000_000_000_000 + p as i64
        );
        assert_eq!(&e.data[..], format!("{{\"n\":{p}}}").as_bytes());
    }
    // The indexes came along: a type, and a type with a tag backwards across both segments.
    let b = store
        .read(&EventQuery::item(QueryItem::types(["t.b"])))
        .await
        .unwrap();
    assert_eq!(b.len(), 20_000);
    let latest = store
        .read(
            &EventQuery::item(QueryItem::types(["t.a"]).and_tag(tag("k:4")))
                .backward()
                .limit(1)
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        latest.iter().map(|e| e.position).collect::<Vec<_>>(),
        [39_994]
    );
    let next = store
        .append(vec![event("t.a", &["k:4"], "{}")], None)
        .await
        .unwrap();
    assert_eq!(next[0].position, 40_001);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_2_file_with_a_corrupt_row_is_refused_and_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v2-corrupt.db");
    write_v2_file(&path, 100);
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute("UPDATE events SET id = x'0102' WHERE position = 42", [])
        .unwrap();
    let err = SqliteEventStore::open(&path).await.unwrap_err();
    match sqlite_error(&err) {
        SqliteStoreError::CorruptRow { position, what } => {
            assert_eq!(*position, Some(42));
            assert!(what.contains("id"), "{what}");
        }
        other => panic!("expected CorruptRow, got {other:?}"),
    }
    // Nothing changed: still version 2, every row in the six-column table.
    assert_eq!(schema_version(&path), 2);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let (rows, payloads): (i64, i64) = conn
        .query_row("SELECT count(*), count(payload) FROM events", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((rows, payloads), (100, 100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meta_table_without_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-version.db");
    drop(SqliteEventStore::open(&path).await.unwrap());
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute("DELETE FROM krescent_meta", [])
        .unwrap();
    let err = SqliteEventStore::open(&path).await.unwrap_err();
    assert!(
        matches!(
            sqlite_error(&err),
            SqliteStoreError::MissingSchemaVersion { .. }
        ),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_that_is_not_a_database_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("not-a-db.txt");
    std::fs::write(&path, "this is a text file, not a database\n".repeat(200)).unwrap();
    let err = SqliteEventStore::open(&path).await.unwrap_err();
    match sqlite_error(&err) {
        SqliteStoreError::NotADatabase { path: p } => {
            assert!(p.ends_with("not-a-db.txt"), "{p}")
        }
        other => panic!("expected NotADatabase, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_path_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let err = SqliteEventStore::open(dir.path()).await.unwrap_err();
    sqlite_error(&err);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_rows_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("corrupt.db");
    let store = SqliteEventStore::open(&path).await.unwrap();
    store
        .append((0..8).map(|_| event("t.a", &["k:1"], "{}")).collect(), None)
        .await
        .unwrap();
    // A record is position (8 bytes) ‖ type id (8) ‖ id (16) ‖ time (8) ‖ tags length (4) ‖
    // tags ‖ payload;
    // SQL's `||`
    // makes text, so the changed records are cast back to blobs.
    let conn = rusqlite::Connection::open(&path).unwrap();
    for (position, update) in [
        (1, "SET record = x'0102'"),
        (2, "SET record = 42"),
        // The tags length says more bytes than the record has.
        (
            3,
            "SET record = CAST(substr(record, 1, 40) || x'ffffff00' || substr(record, 45) AS BLOB)",
        ),
        // The tags text has a wrong length prefix.
        (
            4,
            "SET record = CAST(substr(record, 1, 44) || x'39' || substr(record, 46) AS BLOB)",
        ),
        // A time beyond what a timestamp can hold.
        (
            5,
            "SET record = CAST(substr(record, 1, 32) || x'ffffffffffffff7f' || substr(record, 41) AS BLOB)",
        ),
        // A type id that `event_types` does not have.
        (
            6,
            "SET record = CAST(substr(record, 1, 8) || x'6300000000000000' || substr(record, 17) AS BLOB)",
        ),
        // A record whose position is not its row's.
        (
            7,
            "SET record = CAST(x'6300000000000000' || substr(record, 9) AS BLOB)",
        ),
    ] {
        let changed = conn
            .execute(
                &format!("UPDATE events {update} WHERE position = ?1"),
                [position],
            )
            .unwrap();
        assert_eq!(changed, 1, "{update}");
    }
    for (position, what) in [
        (1, "shorter than its 44-byte header"),
        (2, "record is not a blob"),
        (3, "run past its end"),
        (4, "tags"),
        (5, "timestamp out of range"),
        (6, "type id 99"),
        (7, "record says position 99"),
    ] {
        let query = EventQuery::match_all().after(position - 1).until(position);
        let err = store.read(&query).await.unwrap_err();
        match sqlite_error(&err) {
            SqliteStoreError::CorruptRow {
                position: p,
                what: w,
            } => {
                assert_eq!(*p, Some(position));
                assert!(w.contains(what), "{w}");
            }
            other => panic!("expected CorruptRow, got {other:?}"),
        }
        assert!(err.to_string().contains("sqlite"), "{err}");
    }
    // The intact event still reads.
    let intact = EventQuery::match_all().after(7);
    assert_eq!(store.read(&intact).await.unwrap().len(), 1);
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_meeting_a_damaged_index_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("damaged.db");
    let store = SqliteEventStore::open(&path).await.unwrap();
    store
        .append(vec![event("t.a", &["k:1"], "{}")], None)
        .await
        .unwrap();
    // A tag row for position 3, which no event has yet: the next append's tag insert conflicts.
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch(
            "INSERT INTO event_tags (seg, tag, type, position)
             SELECT 0, 'k:1', id, 3 FROM event_types WHERE name = 't.a'",
        )
        .unwrap();
    let batch = vec![event("t.b", &["k:2"], "{}"), event("t.a", &["k:1"], "{}")];
    let err = store.append(batch.clone(), None).await.unwrap_err();
    assert!(
        matches!(sqlite_error(&err), SqliteStoreError::CorruptRow { .. }),
        "{err:?}"
    );
    // Nothing of the batch is stored, not even its first event or its new type.
    assert_eq!(store.head().await.unwrap(), 1);
    assert_eq!(store.read(&EventQuery::match_all()).await.unwrap().len(), 1);
    assert!(
        store
            .read(&EventQuery::item(QueryItem::types(["t.b"])))
            .await
            .unwrap()
            .is_empty()
    );
    // Repaired, the store appends again.
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute("DELETE FROM event_tags WHERE position = 3", [])
        .unwrap();
    let recorded = store.append(batch, None).await.unwrap();
    assert_eq!(recorded[0].position, 2);
    assert_eq!(store.head().await.unwrap(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_conditional_appends_admit_exactly_one() {
    // Many writers race to claim the same name; the grouped commit must let exactly one win.
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteEventStore::open(dir.path().join("race.db"))
        .await
        .unwrap();
    let claim = || {
        AppendCondition::none_match(EventQuery::item(
            QueryItem::types(["name.claimed"]).and_tag(tag("name:alice")),
        ))
    };
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let store = store.clone();
            let condition = claim();
            tokio::spawn(async move {
                store
                    .append(
                        vec![event(
                            "name.claimed",
                            &["name:alice"],
                            &format!(r#"{{"by":{i}}}"#),
                        )],
                        Some(condition),
                    )
                    .await
            })
        })
        .collect();
    let mut won = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(r) => {
                assert_eq!(r[0].position, 1);
                won += 1;
            }
            Err(e) => assert_eq!(e.conflict_position(), Some(1), "{e}"),
        }
    }
    assert_eq!(won, 1);
    assert_eq!(store.head().await.unwrap(), 1);
}

/// Paged forward reads (what a catch-up does) are read ahead; every page is what a fresh
/// read returns, and a page read ahead before an append is never returned stale.
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
    let page = |after: u64| query.clone().after(after).limit(1_000).unwrap();

    // Pages 1 and 2 are full; reading page 2 (a continuation) starts reading page 3 ahead,
    // which is short at that moment (events 2001..=2500).
    let p1 = store.read(&page(0)).await.unwrap();
    let p2 = store.read(&page(1_000)).await.unwrap();
    assert_eq!((p1.len(), p2.len()), (1_000, 1_000));
    // More events arrive before page 3 is asked for: the short page read ahead is discarded.
    store.append(batch(2_500, 1_500), None).await.unwrap();
    let p3 = store.read(&page(2_000)).await.unwrap();
    assert_eq!(p3.len(), 1_000, "page 3 sees the events appended meanwhile");
    let p4 = store.read(&page(3_000)).await.unwrap();
    let p5 = store.read(&page(4_000)).await.unwrap();
    assert_eq!((p4.len(), p5.len()), (1_000, 0));

    let paged: Vec<_> = [p1, p2, p3, p4].concat();
    let whole = store.read(&query).await.unwrap();
    assert_eq!(paged, whole, "paged reads equal one whole read");
    let positions: Vec<u64> = paged.iter().map(|e| e.position).collect();
    assert_eq!(positions, (1..=4_000).collect::<Vec<_>>());

    // Two readers paging the same query at once, and a reader that jumps, stay exact.
    let (a, b) = tokio::join!(
        async {
            let mut seen = Vec::new();
            let mut cursor = 0;
            loop {
                let p = store.read(&page(cursor)).await.unwrap();
                let Some(last) = p.last() else { break };
                cursor = last.position;
                seen.extend(p.into_iter().map(|e| e.position));
            }
            seen
        },
        async {
            let mut seen = Vec::new();
            for after in [0, 1_000, 3_500, 500] {
                seen.extend(
                    store
                        .read(&page(after))
                        .await
                        .unwrap()
                        .len()
                        .to_string()
                        .chars(),
                );
                seen.push(',');
            }
            seen.into_iter().collect::<String>()
        }
    );
    assert_eq!(a, (1..=4_000).collect::<Vec<_>>());
    assert_eq!(b, "1000,1000,500,1000,");
}

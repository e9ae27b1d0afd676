//! The SQLite checkpoint and bookmark storages: their contract suites (a fresh temporary file
//! per case, and in memory), projection writes committed in one transaction with the
//! checkpoint, persistence across reopening, corrupt rows, several connections on one file,
//! and a crash between the projection writes and the checkpoint in a child process.

use std::error::Error as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use krescent_core::checkpoint::{
    CheckpointBucket, CheckpointStorage, CheckpointStorageError, CheckpointVersion, FixedEventRate,
    PendingWrites, StoredCheckpoint,
};
use krescent_core::model::{ReadModel, ReadModelExt};
use krescent_core::testing::{BookmarkStorageFactory, CheckpointStorageFactory};
use krescent_core::{BookmarkError, BookmarkStorage, EventStoreExt, HandlerError, Recorded};
use krescent_sqlite::rusqlite::types::Value;
use krescent_sqlite::{
    SqliteBookmarkStorage, SqliteCheckpointStorage, SqliteError, SqliteEventStore, SqliteWrites,
    rusqlite,
};
use serde::{Deserialize, Serialize};
use tempfile::TempDir;

// ---------------------------------------------------------------------------------------------
// Contract suites

/// Makes each storage in a new file of one temporary directory, which the factory owns and
/// removes when the test is over.
struct TempFiles {
    dir: TempDir,
    next: AtomicU64,
}

impl TempFiles {
    fn new() -> Self {
        TempFiles {
            dir: tempfile::tempdir().expect("cannot create a temporary directory"),
            next: AtomicU64::new(0),
        }
    }

    fn next_path(&self) -> PathBuf {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.dir.path().join(format!("storage-{n}.db"))
    }
}

impl CheckpointStorageFactory for TempFiles {
    type Storage = SqliteCheckpointStorage;

    async fn create(&self) -> SqliteCheckpointStorage {
        let path = self.next_path();
        SqliteCheckpointStorage::open(&path)
            .await
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()))
    }
}

impl BookmarkStorageFactory for TempFiles {
    type Storage = SqliteBookmarkStorage;

    async fn create(&self) -> SqliteBookmarkStorage {
        let path = self.next_path();
        SqliteBookmarkStorage::open(&path)
            .await
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()))
    }
}

/// The checkpoint contract, one file per case.
mod checkpoint_contract_file {
    krescent_core::checkpoint_storage_contract_tests!(super::TempFiles::new());
}

/// The checkpoint contract, in memory (reads go through the writer thread).
mod checkpoint_contract_in_memory {
    krescent_core::checkpoint_storage_contract_tests!(|| async {
        krescent_sqlite::SqliteCheckpointStorage::open_in_memory()
            .expect("cannot open an in-memory SQLite checkpoint storage")
    });
}

/// The bookmark contract, one file per case.
mod bookmark_contract_file {
    krescent_core::bookmark_storage_contract_tests!(super::TempFiles::new());
}

/// The bookmark contract, in memory.
mod bookmark_contract_in_memory {
    krescent_core::bookmark_storage_contract_tests!(|| async {
        krescent_sqlite::SqliteBookmarkStorage::open_in_memory()
            .expect("cannot open an in-memory SQLite bookmark storage")
    });
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("cannot start a tokio runtime")
}

fn checkpoint(model: &str, position: u64) -> StoredCheckpoint {
    StoredCheckpoint::new(
        model,
        CheckpointVersion::new(1, 1, 0),
        position,
        CheckpointBucket::new().with("position", position),
    )
}

/// Runs `f` with a plain connection to the file, on the blocking pool.
async fn with_raw<T, F>(path: &Path, f: F) -> T
where
    T: Send + 'static,
    F: FnOnce(&rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
{
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let conn = rusqlite::Connection::open(&path).expect("open a raw connection");
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .expect("set the busy timeout");
        f(&conn).expect("raw SQL")
    })
    .await
    .expect("the blocking task")
}

/// The `(position, item)` rows of the projection table `items`, sorted.
async fn item_rows(path: &Path) -> Vec<(i64, i64)> {
    with_raw(path, |conn| {
        let mut stmt = conn.prepare("SELECT position, item FROM items ORDER BY position, item")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect()
    })
    .await
}

async fn create_items_table(path: &Path) {
    with_raw(path, |conn| {
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS items (position INTEGER NOT NULL, item INTEGER NOT NULL)",
        )
    })
    .await;
}

/// The `SqliteError` inside a checkpoint storage error.
fn storage_error(e: &CheckpointStorageError) -> &SqliteError {
    SqliteError::of_checkpoint_error(e)
        .unwrap_or_else(|| panic!("expected a SQLite backend error, got {e:?}"))
}

fn insert_item(writes: &mut SqliteWrites, position: u64, item: u64) {
    writes.execute(
        "INSERT INTO items (position, item) VALUES (?1, ?2)",
        [position, item].map(|v| Value::from(i64::try_from(v).expect("small"))),
    );
}

// ---------------------------------------------------------------------------------------------
// Projection writes in the checkpoint's transaction

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_with_writes_commits_rows_and_checkpoint_together() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("together.db");
    let store = SqliteEventStore::open(&path).await.unwrap();
    let storage = store.checkpoint_storage();

    let mut writes = SqliteWrites::new();
    writes.run(|tx| {
        tx.execute_batch("CREATE TABLE items (position INTEGER NOT NULL, item INTEGER NOT NULL)")
    });
    for position in 1..=3 {
        insert_item(&mut writes, position, position * 10);
    }
    assert_eq!(writes.len(), 4);
    assert!(!PendingWrites::is_empty(&writes));
    let stored = checkpoint("items", 3);
    storage
        .store_with_writes(&stored, &mut writes)
        .await
        .unwrap();
    assert!(writes.is_empty(), "the buffer is emptied once committed");
    assert_eq!(item_rows(&path).await, vec![(1, 10), (2, 20), (3, 30)]);
    assert_eq!(storage.load("items").await.unwrap(), Some(stored));

    // An empty buffer stores the checkpoint alone.
    storage
        .store_with_writes(&checkpoint("items", 4), &mut writes)
        .await
        .unwrap();
    assert_eq!(storage.load("items").await.unwrap().unwrap().position, 4);
    assert_eq!(item_rows(&path).await.len(), 3);

    // The informative position column follows the checkpoint.
    let column: i64 = with_raw(&path, |conn| {
        conn.query_row(
            "SELECT position FROM krescent_checkpoints WHERE model = 'items'",
            [],
            |r| r.get(0),
        )
    })
    .await;
    assert_eq!(column, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_statement_commits_neither_rows_nor_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("failing.db");
    let store = SqliteEventStore::open(&path).await.unwrap();
    create_items_table(&path).await;
    let storage = store.checkpoint_storage();

    let mut writes = SqliteWrites::new();
    insert_item(&mut writes, 1, 1);
    storage
        .store_with_writes(&checkpoint("items", 1), &mut writes)
        .await
        .unwrap();

    insert_item(&mut writes, 2, 2);
    writes.execute(
        "INSERT INTO no_such_table (x) VALUES (?1)",
        [Value::from(1_i64)],
    );
    insert_item(&mut writes, 3, 3);
    let err = storage
        .store_with_writes(&checkpoint("items", 3), &mut writes)
        .await
        .unwrap_err();
    match storage_error(&err) {
        SqliteError::WriteFailed {
            model,
            index,
            write,
            ..
        } => {
            assert_eq!(model, "items");
            assert_eq!(*index, 1);
            assert!(write.contains("no_such_table"), "{write}");
        }
        other => panic!("expected WriteFailed, got {other:?}"),
    }
    let message = err.to_string();
    assert!(message.contains("no_such_table"), "{message}");
    assert!(message.contains("nothing was committed"), "{message}");
    assert!(writes.is_empty(), "writes that started to run are dropped");
    assert_eq!(item_rows(&path).await, vec![(1, 1)]);
    assert_eq!(storage.load("items").await.unwrap().unwrap().position, 1);

    // A closure that fails, and one that panics: the same, named by where they were added.
    insert_item(&mut writes, 2, 2);
    let line = line!() + 1;
    writes.run(|tx| {
        tx.execute("UPDATE items SET item = ?1 WHERE nope = 1", [5])
            .map(drop)
    });
    let err = storage
        .store_with_writes(&checkpoint("items", 2), &mut writes)
        .await
        .unwrap_err();
    match storage_error(&err) {
        SqliteError::WriteFailed { index, write, .. } => {
            assert_eq!(*index, 1);
            assert!(
                write.contains(&format!("sqlite_storage.rs:{line}")),
                "{write} should name line {line}"
            );
        }
        other => panic!("expected WriteFailed, got {other:?}"),
    }

    insert_item(&mut writes, 2, 2);
    writes.run(|_| panic!("the projection is broken"));
    let err = storage
        .store_with_writes(&checkpoint("items", 2), &mut writes)
        .await
        .unwrap_err();
    match storage_error(&err) {
        SqliteError::WritePanicked { index, message, .. } => {
            assert_eq!(*index, 1);
            assert_eq!(message, "the projection is broken");
        }
        other => panic!("expected WritePanicked, got {other:?}"),
    }
    assert_eq!(item_rows(&path).await, vec![(1, 1)]);
    assert_eq!(storage.load("items").await.unwrap().unwrap().position, 1);

    // The writer thread survived the panic: the store and the storage still work.
    store
        .append_events(&[ItemEvent::Added { item: 1 }], None)
        .await
        .unwrap();
    insert_item(&mut writes, 2, 2);
    storage
        .store_with_writes(&checkpoint("items", 2), &mut writes)
        .await
        .unwrap();
    assert_eq!(item_rows(&path).await, vec![(1, 1), (2, 2)]);
}

/// A buffer of a type the SQLite storage does not know.
#[derive(Default)]
struct ForeignWrites(Vec<String>);

impl PendingWrites for ForeignWrites {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    fn as_any(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_buffer_is_refused_and_nothing_is_written() {
    let storage = SqliteCheckpointStorage::open_in_memory().unwrap();
    let mut foreign = ForeignWrites(vec!["row".into()]);
    let err = storage
        .store_with_writes(&checkpoint("foreign", 7), &mut foreign)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CheckpointStorageError::WritesMismatch { model, found }
            if model == "foreign" && found.ends_with("ForeignWrites")),
        "{err:?}"
    );
    assert!(err.to_string().contains("ForeignWrites"), "{err}");
    assert_eq!(foreign.0, vec!["row".to_owned()], "the buffer is untouched");
    assert_eq!(storage.load("foreign").await.unwrap(), None);

    // Invalid names and unencodable states are refused before the buffer is touched.
    let mut writes = SqliteWrites::new();
    insert_item(&mut writes, 1, 1);
    let err = storage
        .store_with_writes(&checkpoint("no/slash", 1), &mut writes)
        .await
        .unwrap_err();
    assert!(
        matches!(err, CheckpointStorageError::InvalidModelName { .. }),
        "{err:?}"
    );
    assert_eq!(writes.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_file_keeps_the_buffer_for_a_retry() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("locked.db");
    let store = SqliteEventStore::open(&path).await.unwrap();
    create_items_table(&path).await;
    let storage = store.checkpoint_storage();

    // Another connection holds the write lock until told to let go.
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let holder_path = path.clone();
    let holder = std::thread::spawn(move || {
        let conn = rusqlite::Connection::open(&holder_path).unwrap();
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        locked_tx.send(()).unwrap();
        let _ = release_rx.recv();
        conn.execute_batch("ROLLBACK").unwrap();
    });
    tokio::task::spawn_blocking(move || locked_rx.recv().unwrap())
        .await
        .unwrap();

    let mut writes = SqliteWrites::new();
    insert_item(&mut writes, 1, 1);
    insert_item(&mut writes, 2, 2);
    let err = storage
        .store_with_writes(&checkpoint("items", 2), &mut writes)
        .await
        .unwrap_err();
    match storage_error(&err) {
        SqliteError::Sqlite(e) => assert_eq!(
            e.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DatabaseBusy),
            "{e}"
        ),
        other => panic!("expected a busy error, got {other:?}"),
    }
    assert_eq!(writes.len(), 2, "nothing ran, so the writes are kept");

    release_tx.send(()).unwrap();
    tokio::task::spawn_blocking(move || holder.join().unwrap())
        .await
        .unwrap();
    storage
        .store_with_writes(&checkpoint("items", 2), &mut writes)
        .await
        .unwrap();
    assert!(writes.is_empty());
    assert_eq!(item_rows(&path).await, vec![(1, 1), (2, 2)]);
}

// ---------------------------------------------------------------------------------------------
// Files: reopening, sharing, corrupt rows, older files

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_and_bookmarks_persist_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("persist.db");
    let stored = checkpoint("book.available", 42);
    {
        let store = SqliteEventStore::open(&path).await.unwrap();
        store.checkpoint_storage().store(&stored).await.unwrap();
        store
            .bookmark_storage()
            .place("stock-report", u64::MAX)
            .await
            .unwrap();
    }
    let checkpoints = SqliteCheckpointStorage::open(&path).await.unwrap();
    assert_eq!(checkpoints.path(), Some(path.as_path()));
    assert_eq!(
        checkpoints.load("book.available").await.unwrap(),
        Some(stored.clone())
    );
    assert_eq!(checkpoints.list().await.unwrap().len(), 1);
    let bookmarks = SqliteBookmarkStorage::open(&path).await.unwrap();
    assert_eq!(
        bookmarks.load("stock-report").await.unwrap(),
        Some(u64::MAX)
    );

    // The three share one file: what one writes, the others read.
    bookmarks.place("other", 7).await.unwrap();
    assert_eq!(
        checkpoints
            .event_store()
            .bookmark_storage()
            .load("other")
            .await
            .unwrap(),
        Some(7)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn separately_opened_connections_share_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let store = SqliteEventStore::open(&path).await.unwrap();
    // A second writer connection (and thread) on the same file.
    let storage = SqliteCheckpointStorage::open(&path).await.unwrap();

    let appends = {
        let store = store.clone();
        tokio::spawn(async move {
            for item in 0..50 {
                store
                    .append_events(&[ItemEvent::Added { item }], None)
                    .await
                    .unwrap();
            }
        })
    };
    let stores = {
        let storage = storage.clone();
        tokio::spawn(async move {
            for position in 1..=50 {
                storage
                    .store(&checkpoint("shared", position))
                    .await
                    .unwrap();
            }
        })
    };
    appends.await.unwrap();
    stores.await.unwrap();
    assert_eq!(krescent_core::EventStore::head(&store).await.unwrap(), 50);
    assert_eq!(
        store
            .checkpoint_storage()
            .load("shared")
            .await
            .unwrap()
            .unwrap()
            .position,
        50
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_rows_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("corrupt.db");
    let storage = SqliteCheckpointStorage::open(&path).await.unwrap();
    let good = checkpoint("good", 1).encode().unwrap();
    with_raw(&path, move |conn| {
        conn.execute(
            "INSERT INTO krescent_checkpoints (model, position, bytes) VALUES ('broken', 1, ?1)",
            [vec![0x4b_u8, 0x52, 0x43, 0x4b, 0, 1, 2]],
        )?;
        conn.execute(
            "INSERT INTO krescent_checkpoints (model, position, bytes) VALUES ('text', 1, 'not a checkpoint')",
            [],
        )?;
        conn.execute(
            "INSERT INTO krescent_checkpoints (model, position, bytes) VALUES ('renamed', 1, ?1)",
            [good],
        )?;
        conn.execute(
            "INSERT INTO krescent_bookmarks (reader, position) VALUES ('reader', 'eleven')",
            [],
        )?;
        Ok(())
    })
    .await;

    for model in ["broken", "text"] {
        let err = storage.load(model).await.unwrap_err();
        match &err {
            CheckpointStorageError::Corrupt {
                model: m, location, ..
            } => {
                assert_eq!(m, model);
                assert!(location.contains("krescent_checkpoints"), "{location}");
                assert!(location.contains("corrupt.db"), "{location}");
            }
            other => panic!("expected Corrupt for {model}, got {other:?}"),
        }
        assert!(err.source().is_some());
    }
    let err = storage.load("renamed").await.unwrap_err();
    assert!(
        matches!(&err, CheckpointStorageError::ModelMismatch { expected, found, .. }
            if expected == "renamed" && found == "good"),
        "{err:?}"
    );
    let err = storage.list().await.unwrap_err();
    assert!(
        matches!(
            err,
            CheckpointStorageError::Corrupt { .. } | CheckpointStorageError::ModelMismatch { .. }
        ),
        "{err:?}"
    );
    // Deleting a corrupt checkpoint works, so that the model can rebuild.
    assert!(storage.delete("broken").await.unwrap());
    assert_eq!(storage.load("broken").await.unwrap(), None);

    let bookmarks = storage.event_store().bookmark_storage();
    let err = bookmarks.load("reader").await.unwrap_err();
    assert!(
        matches!(
            &err,
            BookmarkError::Backend {
                backend: "sqlite",
                ..
            }
        ),
        "{err:?}"
    );
    match SqliteError::of_bookmark_error(&err) {
        Some(SqliteError::CorruptBookmark { reader, what, .. }) => {
            assert_eq!(reader, "reader");
            assert!(what.contains("not an integer"), "{what}");
        }
        other => panic!("expected CorruptBookmark, got {other:?}"),
    }
    bookmarks.place("reader", 11).await.unwrap();
    assert_eq!(bookmarks.load("reader").await.unwrap(), Some(11));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_file_without_the_storage_tables_gets_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("older.db");
    drop(SqliteEventStore::open(&path).await.unwrap());
    // A file whose storage tables were dropped: opening creates them again.
    with_raw(&path, |conn| {
        conn.execute_batch("DROP TABLE krescent_checkpoints; DROP TABLE krescent_bookmarks;")
    })
    .await;
    let store = SqliteEventStore::open(&path).await.unwrap();
    store
        .checkpoint_storage()
        .store(&checkpoint("older", 1))
        .await
        .unwrap();
    store.bookmark_storage().place("older", 1).await.unwrap();
    assert_eq!(
        store.bookmark_storage().load("older").await.unwrap(),
        Some(1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_a_file_that_is_not_a_database_fails_with_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("not-a-db.db");
    std::fs::write(&path, vec![b'x'; 4096]).unwrap();
    let err = SqliteCheckpointStorage::open(&path).await.unwrap_err();
    assert!(
        matches!(storage_error(&err), SqliteError::NotADatabase { .. }),
        "{err:?}"
    );
    let err = SqliteBookmarkStorage::open(&path).await.unwrap_err();
    assert!(matches!(err, BookmarkError::Backend { .. }), "{err:?}");
}

// ---------------------------------------------------------------------------------------------
// The crash test: a read model projecting into a table through SqliteWrites

#[derive(krescent_derive::Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[krescent(crate = "krescent_core", catalog = "items", revision = 1)]
enum ItemEvent {
    #[krescent(name = "item.added")]
    Added { item: u64 },
}

/// Projects every event into a row of `items`; checkpoints count the events handled. When
/// `abort_at` is set, the write of the event at that position is a closure that inserts the
/// row, reports how many rows the transaction holds, and aborts the process.
#[derive(krescent_derive::ReadModel, krescent_derive::CheckpointSupport)]
#[krescent(
    crate = "krescent_core",
    name = "crash.items",
    version = 1,
    events = ItemEvent,
    handles(Added),
    meta(Added),
    writes = writes
)]
struct ItemRows {
    handled: u64,
    #[krescent(skip)]
    abort_at: Option<u64>,
    #[krescent(skip)]
    writes: SqliteWrites,
}

impl ItemRows {
    fn new(abort_at: Option<u64>) -> Self {
        ItemRows {
            handled: 0,
            abort_at,
            writes: SqliteWrites::new(),
        }
    }

    fn on_added(&mut self, item: &u64, event: &Recorded<ItemEvent>) -> Result<(), HandlerError> {
        self.handled += 1;
        let position = i64::try_from(event.position)?;
        let item = i64::try_from(*item)?;
        if self.abort_at == Some(event.position) {
            self.writes.run(move |tx| {
                tx.execute(
                    "INSERT INTO items (position, item) VALUES (?1, ?2)",
                    [position, item],
                )?;
                let rows: i64 = tx.query_row("SELECT count(*) FROM items", [], |r| r.get(0))?;
                eprintln!("{CRASH_MARKER} rows={rows}");
                std::process::abort()
            });
        } else {
            self.writes.execute(
                "INSERT INTO items (position, item) VALUES (?1, ?2)",
                [position, item],
            );
        }
        Ok(())
    }
}

/// Set (to the database path) in the child process of the crash test.
const CRASH_CHILD_ENV: &str = "KRESCENT_SQLITE_CRASH_CHILD";
/// What the child prints just before it aborts.
const CRASH_MARKER: &str = "krescent-crash-child: aborting inside the transaction with";
/// Events in the store.
const EVENTS: u64 = 55;
/// A checkpoint every this many events.
const EVERY: u64 = 10;
/// The child dies while committing the checkpoint of this position (the third).
const ABORT_AT: u64 = 30;

fn item_of(position: u64) -> u64 {
    position * 7
}

/// The child process dies between its projection writes and the checkpoint upsert of the
/// third checkpoint, inside the transaction. The table and the checkpoint then still agree
/// (the second checkpoint and its rows), and a restarted model brings the table to the head
/// with every event in it exactly once.
#[test]
fn crash_between_projection_writes_and_checkpoint_leaves_them_in_agreement() {
    if let Some(path) = std::env::var_os(CRASH_CHILD_ENV) {
        crash_child(Path::new(&path));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.db");
    let rt = runtime();
    rt.block_on(async {
        let store = SqliteEventStore::open(&path).await.unwrap();
        let events: Vec<ItemEvent> = (1..=EVENTS)
            .map(|p| ItemEvent::Added { item: item_of(p) })
            .collect();
        store.append_events(&events, None).await.unwrap();
        create_items_table(&path).await;
    });

    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash_between_projection_writes_and_checkpoint_leaves_them_in_agreement",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_CHILD_ENV, &path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "the child should have aborted; stderr:\n{stderr}"
    );
    assert!(
        stderr.contains(&format!("{CRASH_MARKER} rows={ABORT_AT}")),
        "the child should have died inside the transaction of the checkpoint at {ABORT_AT}, \
         with its rows written; status {:?}, stderr:\n{stderr}",
        output.status
    );
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            output.status.signal(),
            Some(6),
            "SIGABRT; stderr:\n{stderr}"
        );
    }

    rt.block_on(async {
        let store = SqliteEventStore::open(&path).await.unwrap();
        let storage = store.checkpoint_storage();
        let survived = storage
            .load(ItemRows::NAME)
            .await
            .unwrap()
            .expect("the checkpoints before the crash");
        let before = ABORT_AT - EVERY;
        assert_eq!(survived.position, before);
        assert_eq!(survived.state.u64("handled").unwrap(), before);
        let expected = |up_to: u64| -> Vec<(i64, i64)> {
            (1..=up_to).map(|p| (p as i64, item_of(p) as i64)).collect()
        };
        assert_eq!(
            item_rows(&path).await,
            expected(before),
            "the rows are exactly those of the events up to the checkpoint"
        );

        // Restart in this process, to the head.
        let mut runner = ItemRows::new(None)
            .configure(|c| c.use_checkpoints(storage.clone(), FixedEventRate::new(EVERY).unwrap()));
        let metrics = runner.catch_up(&store).await.unwrap();
        assert_eq!(metrics.restored_from, Some(before));
        assert_eq!(metrics.events_handled, EVENTS - before);
        runner.checkpoint_now().await.unwrap();
        assert!(runner.model().writes.is_empty());
        assert_eq!(
            item_rows(&path).await,
            expected(EVENTS),
            "every event is in the table exactly once"
        );
        let last = storage.load(ItemRows::NAME).await.unwrap().unwrap();
        assert_eq!(last.position, EVENTS);
        assert_eq!(last.state.u64("handled").unwrap(), EVENTS);
    });
}

/// The child's side: run the model from scratch; it aborts inside the checkpoint at
/// `ABORT_AT`.
fn crash_child(path: &Path) {
    let rt = runtime();
    let result = rt.block_on(async {
        let store = SqliteEventStore::open(path).await.unwrap();
        let mut runner = ItemRows::new(Some(ABORT_AT)).configure(|c| {
            c.use_checkpoints(
                store.checkpoint_storage(),
                FixedEventRate::new(EVERY).unwrap(),
            )
        });
        runner.catch_up(&store).await
    });
    panic!("the crash child should have aborted, but its model returned {result:?}");
}

//! The checkpoint storage: projection writes committed in one transaction with the
//! checkpoint, failing and foreign buffers, and a locked file.

mod common;

use common::{
    ItemEvent, checkpoint, create_items_table, insert_item, item_rows, storage_error, with_raw,
};
use krescent_core::EventStoreExt;
use krescent_core::checkpoint::{CheckpointStorage, CheckpointStorageError, PendingWrites};
use krescent_sqlite::rusqlite::types::Value;
use krescent_sqlite::{
    SqliteCheckpointStorage, SqliteError, SqliteEventStore, SqliteWrites, rusqlite,
};

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
                write.contains(&format!("{}:{line}", file!())),
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

//! The checkpoint and bookmark storages in a store's file: they persist across reopening,
//! share the file with the store, and report damaged rows as typed errors.

mod common;

use std::error::Error as _;

use common::{checkpoint, with_raw};
use krescent_core::checkpoint::{CheckpointStorage, CheckpointStorageError};
use krescent_core::{BookmarkError, BookmarkStorage};
use krescent_sqlite::{
    SqliteBookmarkStorage, SqliteCheckpointStorage, SqliteError, SqliteEventStore,
};

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

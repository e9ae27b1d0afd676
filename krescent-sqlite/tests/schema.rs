//! Opening a file: the schema is created once and its version checked; files that are not
//! krescent stores, or have another schema version, are typed errors.

mod common;

use std::error::Error as _;

use common::{checkpoint, event, sqlite_error, storage_error, with_raw};
use krescent_core::checkpoint::CheckpointStorage;
use krescent_core::{BookmarkError, BookmarkStorage, EventStore};
use krescent_sqlite::{
    SqliteBookmarkStorage, SqliteCheckpointStorage, SqliteError, SqliteEventStore,
};

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
        SqliteError::UnsupportedSchemaVersion {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_older_schema_version_is_refused_and_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("older.db");
    drop(SqliteEventStore::open(&path).await.unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute(
        "UPDATE krescent_meta SET value = 0 WHERE key = 'schema_version'",
        [],
    )
    .unwrap();
    let err = SqliteEventStore::open(&path).await.unwrap_err();
    match sqlite_error(&err) {
        SqliteError::UnsupportedSchemaVersion {
            path: p,
            found,
            supported,
        } => {
            assert!(p.ends_with("older.db"), "{p}");
            assert_eq!((*found, *supported), (0, SqliteEventStore::SCHEMA_VERSION));
        }
        other => panic!("expected UnsupportedSchemaVersion, got {other:?}"),
    }
    let version: i64 = conn
        .query_row(
            "SELECT value FROM krescent_meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(version, 0, "a refused file is not changed");
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
        matches!(sqlite_error(&err), SqliteError::MissingSchemaVersion { .. }),
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
        SqliteError::NotADatabase { path: p } => {
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

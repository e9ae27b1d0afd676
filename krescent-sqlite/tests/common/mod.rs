//! Helpers shared by the test files: events and tags, the SQLite error inside an error, plain
//! connections to a store's file, the `items` projection table, and the `ItemEvent` events.
#![allow(dead_code)]

use std::path::Path;

use krescent_core::checkpoint::{
    CheckpointBucket, CheckpointStorageError, CheckpointVersion, StoredCheckpoint,
};
use krescent_core::{NewEvent, StoreError, Tag, Tags};
use krescent_sqlite::rusqlite::types::Value;
use krescent_sqlite::{SqliteError, SqliteWrites, rusqlite};
use serde::{Deserialize, Serialize};

pub fn tag(text: &str) -> Tag {
    Tag::parse(text).unwrap()
}

pub fn event(ty: &str, tags: &[&str], payload: &str) -> NewEvent {
    NewEvent::new(
        ty,
        Tags::parse(tags.iter().copied()).unwrap(),
        payload.as_bytes().to_vec(),
    )
    .unwrap()
}

/// The `SqliteError` inside a backend error.
pub fn sqlite_error(e: &StoreError) -> &SqliteError {
    SqliteError::of(e).unwrap_or_else(|| panic!("expected a SQLite backend error, got {e:?}"))
}

/// The `SqliteError` inside a checkpoint storage error.
pub fn storage_error(e: &CheckpointStorageError) -> &SqliteError {
    SqliteError::of_checkpoint_error(e)
        .unwrap_or_else(|| panic!("expected a SQLite backend error, got {e:?}"))
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("cannot start a tokio runtime")
}

pub fn checkpoint(model: &str, position: u64) -> StoredCheckpoint {
    StoredCheckpoint::new(
        model,
        CheckpointVersion::new(1, 1, 0),
        position,
        CheckpointBucket::new().with("position", position),
    )
}

/// Runs `f` with a plain connection to the file, on the blocking pool.
pub async fn with_raw<T, F>(path: &Path, f: F) -> T
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
pub async fn item_rows(path: &Path) -> Vec<(i64, i64)> {
    with_raw(path, |conn| {
        let mut stmt = conn.prepare("SELECT position, item FROM items ORDER BY position, item")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect()
    })
    .await
}

pub async fn create_items_table(path: &Path) {
    with_raw(path, |conn| {
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS items (position INTEGER NOT NULL, item INTEGER NOT NULL)",
        )
    })
    .await;
}

pub fn insert_item(writes: &mut SqliteWrites, position: u64, item: u64) {
    writes.execute(
        "INSERT INTO items (position, item) VALUES (?1, ?2)",
        [position, item].map(|v| Value::from(i64::try_from(v).expect("small"))),
    );
}

/// The events of the `items` projection.
#[derive(krescent_derive::Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[krescent(crate = "krescent_core", catalog = "items", revision = 1)]
pub enum ItemEvent {
    #[krescent(name = "item.added")]
    Added { item: u64 },
}

//! [`SqliteBookmarkStorage`]: projector bookmarks in the `krescent_bookmarks` table of a
//! SQLite store's file.

use std::path::Path;

use async_trait::async_trait;
use rusqlite::types::ValueRef;

use crate::error::SqliteError;
use crate::schema::{from_db, to_db};
use crate::store::SqliteEventStore;
use krescent_core::projection::{BookmarkError, BookmarkStorage, validate_reader_name};

const LOAD: &str = "SELECT position FROM krescent_bookmarks WHERE reader = ?1";
const PLACE: &str = "INSERT INTO krescent_bookmarks (reader, position) VALUES (?1, ?2) \
     ON CONFLICT (reader) DO UPDATE SET position = excluded.position";
const DELETE: &str = "DELETE FROM krescent_bookmarks WHERE reader = ?1";

/// Projector bookmarks in the `krescent_bookmarks` table of a SQLite store's file (see the
/// [crate documentation](crate) for the schema): one row per reader name, holding its
/// position. Every `u64` position round-trips (those above `i64::MAX` are stored as negative
/// integers, the same 64 bits).
///
/// Get one from an open store with [`SqliteEventStore::bookmark_storage`], so that the
/// bookmarks live in the store's file and share its connections, or open a file of its own
/// with [`open`](Self::open). Placing and deleting run on the store's writer thread, loading
/// on tokio's blocking pool, never on the runtime's workers; several processes may share the
/// file (see [`SqliteCheckpointStorage`](crate::SqliteCheckpointStorage)). A bookmark row that
/// holds something other than an integer is reported as
/// [`SqliteError::CorruptBookmark`] inside [`BookmarkError::Backend`]. Cloning gives
/// another handle to the same storage.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use krescent_core::BookmarkStorage;
/// use krescent_sqlite::SqliteEventStore;
///
/// let store = SqliteEventStore::open_in_memory()?;
/// let bookmarks = store.bookmark_storage();
/// bookmarks.place("stock-report", 42).await?;
/// assert_eq!(bookmarks.load("stock-report").await?, Some(42));
/// bookmarks.delete("stock-report").await?;
/// assert_eq!(bookmarks.load("stock-report").await?, None);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct SqliteBookmarkStorage {
    store: SqliteEventStore,
}

impl SqliteEventStore {
    /// A bookmark storage in this store's file (or, for an in-memory store, its database),
    /// sharing the store's connections.
    pub fn bookmark_storage(&self) -> SqliteBookmarkStorage {
        SqliteBookmarkStorage {
            store: self.clone(),
        }
    }
}

impl SqliteBookmarkStorage {
    /// Opens the bookmarks in the SQLite file at `path`, creating the file and the krescent
    /// schema (event, checkpoint and bookmark tables alike) if needed. Opening is idempotent.
    ///
    /// # Errors
    ///
    /// [`BookmarkError::Backend`] with a [`SqliteError`]: the file cannot be
    /// opened or created, is not a SQLite database, or has a newer krescent schema.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, BookmarkError> {
        let store = SqliteEventStore::open_file(path.as_ref()).await?;
        Ok(store.bookmark_storage())
    }

    /// A new, empty storage in memory, lost when the last handle is dropped. For tests.
    ///
    /// # Errors
    ///
    /// [`BookmarkError::Backend`] if SQLite cannot open an in-memory database.
    pub fn open_in_memory() -> Result<Self, BookmarkError> {
        let store = SqliteEventStore::in_memory()?;
        Ok(store.bookmark_storage())
    }

    /// The event store whose file (and connections) the bookmarks share.
    pub fn event_store(&self) -> &SqliteEventStore {
        &self.store
    }

    /// The file of the storage; `None` in memory.
    pub fn path(&self) -> Option<&Path> {
        self.store.path()
    }
}

#[async_trait]
impl BookmarkStorage for SqliteBookmarkStorage {
    async fn load(&self, reader: &str) -> Result<Option<u64>, BookmarkError> {
        validate_reader_name(reader)?;
        let owned = reader.to_owned();
        let location = format!(
            "{}: krescent_bookmarks",
            self.store
                .path()
                .map_or_else(|| ":memory:".to_owned(), |p| p.display().to_string())
        );
        let loaded = self
            .store
            .with_reader(move |conn| {
                let mut stmt = conn.conn.prepare_cached(LOAD)?;
                let mut rows = stmt.query([owned.as_str()])?;
                let Some(row) = rows.next()? else {
                    return Ok(Ok(None));
                };
                Ok(match row.get_ref(0)? {
                    ValueRef::Integer(position) => Ok(Some(from_db(position))),
                    other => Err(SqliteError::CorruptBookmark {
                        reader: owned.clone(),
                        location,
                        what: format!("the position is {}, not an integer", other.data_type()),
                    }),
                })
            })
            .await?;
        Ok(loaded?)
    }

    async fn place(&self, reader: &str, position: u64) -> Result<(), BookmarkError> {
        validate_reader_name(reader)?;
        let owned = reader.to_owned();
        self.store
            .on_writer(move |conn| {
                conn.conn
                    .prepare_cached(PLACE)
                    .and_then(|mut stmt| stmt.execute(rusqlite::params![owned, to_db(position)]))
            })
            .await?
            .map_err(SqliteError::from)?;
        Ok(())
    }

    async fn delete(&self, reader: &str) -> Result<(), BookmarkError> {
        validate_reader_name(reader)?;
        let owned = reader.to_owned();
        self.store
            .on_writer(move |conn| {
                conn.conn
                    .prepare_cached(DELETE)
                    .and_then(|mut stmt| stmt.execute([owned.as_str()]))
            })
            .await?
            .map_err(SqliteError::from)?;
        Ok(())
    }
}

//! [`PostgresBookmarkStorage`]: projector bookmarks in `<prefix>bookmarks`, with the
//! statements on them ([`BookmarkSql`]).

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use deadpool_postgres::Pool;

use crate::error::{BACKEND, is_transient_source};
use crate::options::open_pool;
use crate::retry::{failed, lost, with_retry};
use crate::schema::{u64_from_sql, u64_to_sql};
use crate::{PostgresEventStore, PostgresOptions};
use krescent_core::projection::{BookmarkError, BookmarkStorage, validate_reader_name};

/// The statements of the bookmark storage on `<prefix>bookmarks`.
#[derive(Debug)]
pub(crate) struct BookmarkSql {
    /// The table name.
    pub table: String,
    /// `$1` reader → its position.
    pub load: String,
    /// `$1` reader, `$2` position: insert or replace.
    pub upsert: String,
    /// `$1` reader.
    pub delete: String,
}

impl BookmarkSql {
    /// The statements for a prefix that [`is_valid_prefix`] accepted.
    pub fn new(prefix: &str) -> Self {
        let table = format!("{prefix}bookmarks");
        BookmarkSql {
            load: format!("SELECT position FROM {table} WHERE reader = $1"),
            upsert: format!(
                "INSERT INTO {table} (reader, position) VALUES ($1, $2) \
                 ON CONFLICT (reader) DO UPDATE SET position = EXCLUDED.position"
            ),
            delete: format!("DELETE FROM {table} WHERE reader = $1"),
            table,
        }
    }
}

/// Bookmarks in PostgreSQL, in the table `<prefix>bookmarks` next to the event store's
/// tables: one row `(reader text, position bigint)` per reader name. Cloning gives another
/// handle to the same pool.
///
/// Get one from an open store with [`PostgresEventStore::bookmark_storage`] (sharing its pool
/// and table prefix), or open one on its own with [`connect`](Self::connect).
///
/// Positions are `u64` values kept in `bigint` with the same 64 bits: every position
/// round-trips, and positions of 2^63 and more read as negative numbers in SQL. Reader names
/// are compared byte for byte. [`place`](BookmarkStorage::place) is one
/// `INSERT … ON CONFLICT (reader) DO UPDATE`, so the last write wins.
///
/// Every failure of the database or the pool is a [`BookmarkError::Backend`] holding a
/// [`PostgresError`](crate::PostgresError). Each operation is one statement that is safe to repeat, so when a
/// pooled connection turns out to be dead (the server restarted, the backend was terminated)
/// it is dropped and the operation runs again on another connection.
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// use krescent_core::projection::BookmarkStorage;
/// use krescent_postgres::{PostgresBookmarkStorage, PostgresOptions};
///
/// let bookmarks =
///     PostgresBookmarkStorage::connect("postgres://app@localhost/app", PostgresOptions::default())
///         .await?;
/// bookmarks.place("stock-report", 42).await?;
/// assert_eq!(bookmarks.load("stock-report").await?, Some(42));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PostgresBookmarkStorage {
    pool: Pool,
    prefix: Arc<str>,
    sql: Arc<BookmarkSql>,
}

impl fmt::Debug for PostgresBookmarkStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresBookmarkStorage")
            .field("table", &self.sql.table)
            .finish_non_exhaustive()
    }
}

impl PostgresEventStore {
    /// A bookmark storage in this store's database, in `<prefix>bookmarks`, sharing the
    /// store's connection pool.
    pub fn bookmark_storage(&self) -> PostgresBookmarkStorage {
        PostgresBookmarkStorage::from_pool(self.inner.pool.clone(), &self.inner.tables.prefix)
    }
}

impl PostgresBookmarkStorage {
    /// Connects to the database at `url` with a pool of its own (see [`PostgresOptions`];
    /// `poll_interval` does not apply) and creates the tables of `options.table_prefix` if
    /// needed: the event store's and the storages', one versioned schema.
    ///
    /// # Errors
    ///
    /// [`BookmarkError::Backend`] holding a [`PostgresError`](crate::PostgresError): an invalid prefix, pool size or
    /// URL, a database that cannot be reached, or tables of a newer schema version.
    pub async fn connect(url: &str, options: PostgresOptions) -> Result<Self, BookmarkError> {
        let pool = open_pool(url, &options).await.map_err(bookmark_backend)?;
        Ok(Self::from_pool(pool, &options.table_prefix))
    }

    /// A storage on `pool` for a prefix whose schema exists.
    fn from_pool(pool: Pool, prefix: &str) -> Self {
        PostgresBookmarkStorage {
            pool,
            prefix: prefix.into(),
            sql: Arc::new(BookmarkSql::new(prefix)),
        }
    }

    /// The table prefix.
    pub fn table_prefix(&self) -> &str {
        &self.prefix
    }

    /// The name of the bookmark table, `<prefix>bookmarks`.
    pub fn table(&self) -> &str {
        &self.sql.table
    }
}

/// A failure of this backend as a bookmark error.
fn bookmark_backend(source: Box<dyn std::error::Error + Send + Sync>) -> BookmarkError {
    BookmarkError::Backend {
        backend: BACKEND,
        transient: is_transient_source(source.as_ref()),
        source,
    }
}

#[async_trait]
impl BookmarkStorage for PostgresBookmarkStorage {
    async fn load(&self, reader: &str) -> Result<Option<u64>, BookmarkError> {
        validate_reader_name(reader)?;
        let position: Option<i64> = with_retry!(&self.pool, bookmark_backend, |client| {
            let statement = client.prepare_cached(&self.sql.load).await.map_err(lost)?;
            let row = client
                .query_opt(&statement, &[&reader])
                .await
                .map_err(lost)?;
            row.map(|r| r.try_get::<_, i64>(0))
                .transpose()
                .map_err(failed)
        })?;
        Ok(position.map(u64_from_sql))
    }

    async fn place(&self, reader: &str, position: u64) -> Result<(), BookmarkError> {
        validate_reader_name(reader)?;
        let position = u64_to_sql(position);
        with_retry!(&self.pool, bookmark_backend, |client| {
            let statement = client
                .prepare_cached(&self.sql.upsert)
                .await
                .map_err(lost)?;
            client
                .execute(&statement, &[&reader, &position])
                .await
                .map_err(lost)?;
            Ok(())
        })
    }

    async fn delete(&self, reader: &str) -> Result<(), BookmarkError> {
        validate_reader_name(reader)?;
        with_retry!(&self.pool, bookmark_backend, |client| {
            let statement = client
                .prepare_cached(&self.sql.delete)
                .await
                .map_err(lost)?;
            client.execute(&statement, &[&reader]).await.map_err(lost)?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_is_send_and_sync() {
        fn assert<T: Send + Sync + Clone + fmt::Debug + 'static>() {}
        assert::<PostgresBookmarkStorage>();
    }
}

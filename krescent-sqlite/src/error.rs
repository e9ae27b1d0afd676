//! [`SqliteError`]: why the SQLite backend failed, for the event store and the storages alike.

use std::sync::Arc;

use krescent_core::checkpoint::CheckpointStorageError;
use krescent_core::projection::BookmarkError;
use krescent_core::store::StoreError;

/// The `backend` of the errors this crate returns.
pub(crate) const BACKEND: &str = "sqlite";

/// Why the SQLite backend failed: the `source` of [`StoreError::Backend`],
/// [`CheckpointStorageError::Backend`] and [`BookmarkError::Backend`] with backend `"sqlite"`.
/// Find it with [`SqliteError::of`], [`SqliteError::of_checkpoint_error`] or
/// [`SqliteError::of_bookmark_error`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = std::env::temp_dir().join(format!("krescent-doc-{}", uuid::Uuid::now_v7()));
/// # std::fs::create_dir_all(&dir)?;
/// use krescent_sqlite::{SqliteError, SqliteEventStore};
///
/// let path = dir.join("notes.txt");
/// std::fs::write(&path, "not a database, just text ".repeat(200))?;
/// let error = SqliteEventStore::open(&path).await.unwrap_err();
/// assert!(matches!(
///     SqliteError::of(&error),
///     Some(SqliteError::NotADatabase { .. })
/// ));
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SqliteError {
    /// The file exists but is not a SQLite database.
    #[error("`{path}` is not a SQLite database")]
    NotADatabase {
        /// The file.
        path: String,
    },
    /// The file has a schema version this krescent does not know (written by a newer one).
    #[error(
        "`{path}` has krescent schema version {found}; this krescent supports only version \
         {supported}"
    )]
    UnsupportedSchemaVersion {
        /// The file.
        path: String,
        /// The version stored in `krescent_meta`.
        found: i64,
        /// The version this crate knows.
        supported: i64,
    },
    /// The file has a `krescent_meta` table without a usable schema version.
    #[error("`{path}` has a krescent_meta table without a schema version")]
    MissingSchemaVersion {
        /// The file.
        path: String,
    },
    /// A stored event row could not be read back (a damaged file, or a row written by
    /// something other than krescent).
    #[error("corrupt event row{}: {what}", at(*.position))]
    CorruptRow {
        /// The position of the row, when it could be read.
        position: Option<u64>,
        /// What is wrong with it.
        what: String,
    },
    /// A bookmark row holds something other than an integer position.
    #[error("the bookmark of reader {reader:?} at {location} is corrupt: {what}")]
    CorruptBookmark {
        /// The reader whose bookmark it is.
        reader: String,
        /// The file and table.
        location: String,
        /// What is wrong with it.
        what: String,
    },
    /// A pending write of a [`SqliteWrites`](crate::SqliteWrites) buffer failed, so the
    /// transaction was rolled back: neither the projection writes nor the checkpoint were
    /// committed.
    #[error(
        "pending write #{index} of model `{model}` failed ({write}); nothing was committed: \
         {source}"
    )]
    WriteFailed {
        /// The model whose checkpoint was being stored.
        model: String,
        /// The position of the failing write in the buffer, from 0.
        index: usize,
        /// The failing write: its SQL text (shortened when long), or where the closure was
        /// added.
        write: String,
        /// What SQLite (or the closure) reported.
        #[source]
        source: Arc<rusqlite::Error>,
    },
    /// A closure of a [`SqliteWrites`](crate::SqliteWrites) buffer panicked, so the
    /// transaction was rolled back: neither the projection writes nor the checkpoint were
    /// committed.
    #[error(
        "pending write #{index} of model `{model}` panicked ({write}): {message}; nothing was \
         committed"
    )]
    WritePanicked {
        /// The model whose checkpoint was being stored.
        model: String,
        /// The position of the closure in the buffer, from 0.
        index: usize,
        /// Where the closure was added.
        write: String,
        /// The panic message.
        message: String,
    },
    /// SQLite reported an error.
    #[error("SQLite error: {0}")]
    Sqlite(#[source] Arc<rusqlite::Error>),
    /// The writer thread stopped, so nothing can be written any more.
    #[error("the SQLite writer thread has stopped")]
    WriterStopped,
    /// A thread for SQLite work could not be started, or a blocking task failed.
    #[error("cannot run SQLite work on a blocking thread: {0}")]
    Thread(String),
}

impl SqliteError {
    /// Whether trying again may succeed: SQLite reported the database busy or locked by
    /// another connection past the busy timeout, or a pending write failed that way. Every
    /// other error (invalid input, a damaged file, a schema mismatch, a stopped writer) is
    /// permanent.
    pub fn is_transient(&self) -> bool {
        match self {
            SqliteError::Sqlite(e) | SqliteError::WriteFailed { source: e, .. } => matches!(
                e.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            ),
            _ => false,
        }
    }
}

fn at(position: Option<u64>) -> String {
    position.map_or_else(String::new, |p| format!(" at position {p}"))
}

/// A [`SqliteError::CorruptRow`].
pub(crate) fn corrupt(position: Option<u64>, what: impl Into<String>) -> SqliteError {
    SqliteError::CorruptRow {
        position,
        what: what.into(),
    }
}

impl SqliteError {
    /// The SQLite error inside `error`, when it is a [`StoreError::Backend`] of this backend.
    pub fn of(error: &StoreError) -> Option<&SqliteError> {
        match error {
            StoreError::Backend {
                backend, source, ..
            } if *backend == BACKEND => source.downcast_ref::<SqliteError>(),
            _ => None,
        }
    }

    /// The SQLite error inside `error`, when it is a [`CheckpointStorageError::Backend`] of
    /// this backend.
    pub fn of_checkpoint_error(error: &CheckpointStorageError) -> Option<&SqliteError> {
        match error {
            CheckpointStorageError::Backend {
                backend, source, ..
            } if *backend == BACKEND => source.downcast_ref::<SqliteError>(),
            _ => None,
        }
    }

    /// The SQLite error inside `error`, when it is a [`BookmarkError::Backend`] of this
    /// backend.
    pub fn of_bookmark_error(error: &BookmarkError) -> Option<&SqliteError> {
        match error {
            BookmarkError::Backend {
                backend, source, ..
            } if *backend == BACKEND => source.downcast_ref::<SqliteError>(),
            _ => None,
        }
    }
}

impl From<rusqlite::Error> for SqliteError {
    fn from(e: rusqlite::Error) -> Self {
        SqliteError::Sqlite(Arc::new(e))
    }
}

impl From<SqliteError> for StoreError {
    fn from(e: SqliteError) -> Self {
        StoreError::Backend {
            backend: BACKEND,
            transient: e.is_transient(),
            source: Box::new(e),
        }
    }
}

impl From<SqliteError> for CheckpointStorageError {
    fn from(e: SqliteError) -> Self {
        CheckpointStorageError::Backend {
            backend: BACKEND,
            transient: e.is_transient(),
            source: Box::new(e),
        }
    }
}

impl From<SqliteError> for BookmarkError {
    fn from(e: SqliteError) -> Self {
        BookmarkError::Backend {
            backend: BACKEND,
            transient: e.is_transient(),
            source: Box::new(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accessors_find_the_error_of_this_backend_only() {
        let store = StoreError::from(SqliteError::WriterStopped);
        assert!(matches!(
            SqliteError::of(&store),
            Some(SqliteError::WriterStopped)
        ));
        let checkpoint = CheckpointStorageError::from(corrupt(Some(7), "short"));
        assert!(matches!(
            SqliteError::of_checkpoint_error(&checkpoint),
            Some(SqliteError::CorruptRow {
                position: Some(7),
                ..
            })
        ));
        let bookmark = BookmarkError::from(SqliteError::Thread("gone".into()));
        assert!(SqliteError::of_bookmark_error(&bookmark).is_some());
        let other = StoreError::Backend {
            backend: "postgres",
            source: Box::new(SqliteError::WriterStopped),
            transient: false,
        };
        assert!(SqliteError::of(&other).is_none());
    }

    #[test]
    fn messages_name_what_they_are_about() {
        assert_eq!(
            corrupt(Some(42), "record is not a blob").to_string(),
            "corrupt event row at position 42: record is not a blob"
        );
        assert_eq!(corrupt(None, "x").to_string(), "corrupt event row: x");
        let newer = SqliteError::UnsupportedSchemaVersion {
            path: "a.db".into(),
            found: 9,
            supported: 1,
        };
        assert!(newer.to_string().contains("`a.db`"), "{newer}");
        assert!(newer.to_string().contains("version 9"), "{newer}");
    }
}

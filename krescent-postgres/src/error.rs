//! [`PostgresError`], what failed in this backend, and its conversions into the errors of the
//! store and storage traits.

use std::error::Error as StdError;

use krescent_core::checkpoint::CheckpointStorageError;
use krescent_core::projection::BookmarkError;
use krescent_core::store::StoreError;

/// The backend name in the `Backend` variants of the store and storage errors.
pub(crate) const BACKEND: &str = "postgres";

/// Why the PostgreSQL store failed: the `source` of [`StoreError::Backend`] for this backend.
///
/// ```no_run
/// # async fn f() {
/// use krescent_postgres::{PostgresError, PostgresEventStore, PostgresOptions};
///
/// let options = PostgresOptions::default().table_prefix("Not-Valid");
/// let error = PostgresEventStore::connect("postgres://localhost/app", options)
///     .await
///     .unwrap_err();
/// assert!(matches!(
///     PostgresError::of(&error),
///     Some(PostgresError::InvalidTablePrefix { .. })
/// ));
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PostgresError {
    /// The table prefix does not match `^[a-z_][a-z0-9_]{0,40}$`.
    #[error(
        "invalid table prefix `{prefix}`: use 1 to 41 characters from a-z, 0-9 and `_`, \
         not starting with a digit"
    )]
    InvalidTablePrefix {
        /// The rejected prefix.
        prefix: String,
    },
    /// The pool size was zero.
    #[error("invalid pool size 0: the pool needs at least one connection")]
    InvalidPoolSize,
    /// The connection URL could not be parsed.
    #[error("invalid PostgreSQL connection URL: {source}")]
    InvalidUrl {
        /// What the parser said.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The tables have a schema version this code does not know (written by a newer version
    /// of krescent).
    #[error(
        "the tables with prefix `{prefix}` have schema version {found}; this version of \
         krescent supports up to {supported}"
    )]
    UnsupportedSchemaVersion {
        /// The table prefix.
        prefix: String,
        /// The version found in `<prefix>meta`.
        found: i64,
        /// The newest version this code knows.
        supported: i64,
    },
    /// A stored row could not be read back (the tables were changed outside krescent).
    #[error("corrupt event at position {position}: {what}")]
    Corrupt {
        /// The position of the row.
        position: i64,
        /// What is wrong with it.
        what: String,
    },
    /// The database failed or went away; the message carries the server's own text.
    #[error("{}", describe(.0))]
    Database(#[from] tokio_postgres::Error),
    /// No connection could be taken from the pool (the database is unreachable, or every
    /// connection stayed busy past the timeout).
    #[error("no database connection: {}", describe_pool(.0))]
    Pool(#[from] deadpool_postgres::PoolError),
    /// The connection pool could not be built.
    #[error("cannot build the connection pool: {0}")]
    PoolBuild(#[from] deadpool_postgres::BuildError),
}

impl PostgresError {
    /// The PostgreSQL error inside `error`, when it is a [`StoreError::Backend`] of this
    /// backend.
    pub fn of(error: &StoreError) -> Option<&PostgresError> {
        match error {
            StoreError::Backend {
                backend, source, ..
            } => of_backend(backend, source.as_ref()),
            _ => None,
        }
    }

    /// The PostgreSQL error inside `error`, when it is a [`CheckpointStorageError::Backend`] of
    /// this backend (a failed [`PostgresWrites`](crate::PostgresWrites) statement is a
    /// [`PostgresWriteError`](crate::PostgresWriteError) instead).
    pub fn of_checkpoint_error(error: &CheckpointStorageError) -> Option<&PostgresError> {
        match error {
            CheckpointStorageError::Backend {
                backend, source, ..
            } => of_backend(backend, source.as_ref()),
            _ => None,
        }
    }

    /// The PostgreSQL error inside `error`, when it is a [`BookmarkError::Backend`] of this
    /// backend.
    pub fn of_bookmark_error(error: &BookmarkError) -> Option<&PostgresError> {
        match error {
            BookmarkError::Backend {
                backend, source, ..
            } => of_backend(backend, source.as_ref()),
            _ => None,
        }
    }
}

/// The error of type `T` behind the `source` of a `Backend` error variant, when `backend` is
/// this one.
pub(crate) fn of_backend<'a, T: StdError + 'static>(
    backend: &str,
    source: &'a (dyn StdError + Send + Sync + 'static),
) -> Option<&'a T> {
    if backend == BACKEND {
        source.downcast_ref::<T>()
    } else {
        None
    }
}

impl From<PostgresError> for StoreError {
    fn from(e: PostgresError) -> Self {
        StoreError::Backend {
            backend: BACKEND,
            transient: e.is_transient(),
            source: Box::new(e),
        }
    }
}

impl PostgresError {
    /// Whether trying again may succeed: the connection was lost or could not be made, the
    /// server is shutting down or starting, too many clients are connected, no pooled
    /// connection came free in time, or a transaction lost a serialization or deadlock race.
    /// Invalid settings, corrupt rows, schema mismatches and every other server error are
    /// permanent.
    pub fn is_transient(&self) -> bool {
        match self {
            PostgresError::Database(e) => is_transient_db(e),
            PostgresError::Pool(deadpool_postgres::PoolError::Timeout(_)) => true,
            PostgresError::Pool(deadpool_postgres::PoolError::Backend(e)) => is_transient_db(e),
            _ => false,
        }
    }
}

/// Whether a driver error is worth retrying (see [`PostgresError::is_transient`]).
pub(crate) fn is_transient_db(error: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    if error.is_closed() {
        return true;
    }
    match error.code() {
        Some(code) => {
            code.code().starts_with("08")
                || [
                    SqlState::ADMIN_SHUTDOWN,
                    SqlState::CRASH_SHUTDOWN,
                    SqlState::CANNOT_CONNECT_NOW,
                    SqlState::TOO_MANY_CONNECTIONS,
                    SqlState::T_R_SERIALIZATION_FAILURE,
                    SqlState::T_R_DEADLOCK_DETECTED,
                ]
                .contains(code)
        }
        // No server error: the driver could not connect or talk (an I/O error or a timeout).
        None => {
            StdError::source(error).is_some_and(|cause| cause.is::<std::io::Error>())
                || error.to_string().contains("timed out")
        }
    }
}

/// Whether the boxed source of a `Backend` error of this crate is worth retrying.
pub(crate) fn is_transient_source(source: &(dyn StdError + Send + Sync + 'static)) -> bool {
    if let Some(e) = source.downcast_ref::<PostgresError>() {
        e.is_transient()
    } else if let Some(e) = source.downcast_ref::<StoreError>() {
        e.is_transient()
    } else if let Some(e) = source.downcast_ref::<crate::PostgresWriteError>() {
        is_transient_db(&e.source)
    } else if let Some(e) = source.downcast_ref::<tokio_postgres::Error>() {
        is_transient_db(e)
    } else {
        false
    }
}

/// A driver error as a store error.
pub(crate) fn db(e: tokio_postgres::Error) -> StoreError {
    PostgresError::Database(e).into()
}

/// A pool error as a store error.
pub(crate) fn pool(e: deadpool_postgres::PoolError) -> StoreError {
    PostgresError::Pool(e).into()
}

/// A driver error with what the server said, if it said something (the driver's own
/// `Display` shows only `db error`): its severity, message, detail and hint, and the SQLSTATE.
pub(crate) fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{error}: {db} (SQLSTATE {})", db.code().code()),
        None => match StdError::source(error) {
            Some(cause) => format!("{error}: {cause}"),
            None => error.to_string(),
        },
    }
}

/// A pool error, with the server's or the driver's own words when making a connection failed
/// (deadpool's `Display` ends in the driver's bare `db error`).
fn describe_pool(error: &deadpool_postgres::PoolError) -> String {
    match error {
        deadpool_postgres::PoolError::Backend(e) => {
            format!("creating a new connection failed: {}", describe(e))
        }
        other => other.to_string(),
    }
}

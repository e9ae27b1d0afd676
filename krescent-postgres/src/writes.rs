//! [`PostgresWrites`]: projection statements a read model buffers between checkpoints, which
//! [`PostgresCheckpointStorage`](crate::PostgresCheckpointStorage) commits in the same
//! transaction as the checkpoint; and [`PostgresWriteError`], the failure of one of them.

use std::fmt;

use tokio_postgres::types::ToSql;

use crate::error::{describe, of_backend};
use krescent_core::checkpoint::{CheckpointStorageError, PendingWrites};

/// One parameter of a statement in [`PostgresWrites`]: any owned value `tokio_postgres` can
/// bind (`i64`, `String`, `Vec<u8>`, `bool`, `f64`, `Option<T>` for `NULL`, `uuid::Uuid`,
/// `chrono::DateTime<Utc>`, …). Its type must match the parameter's SQL type (`i64` for
/// `bigint`, `i32` for `integer`), or the statement fails.
pub type PostgresParam = Box<dyn ToSql + Send + Sync>;

/// Projection statements a read model buffers between checkpoints, committed by
/// [`PostgresCheckpointStorage::store_with_writes`](crate::PostgresCheckpointStorage) together with the checkpoint, in one
/// transaction: after a crash the projection tables and the checkpoint always agree.
///
/// Hold it in a field of the model (`#[krescent(writes = field)]` on a derived read model, with
/// `#[krescent(skip)]` on the field) and queue statements in the handlers with
/// [`execute`](Self::execute). Statements run in the order they were queued, then the
/// checkpoint is upserted, then the transaction commits and the buffer is cleared. When a
/// statement fails, nothing is committed, the error names the statement
/// ([`PostgresWriteError`]) and the buffer is kept as it was.
///
/// Every value is a bind parameter (`$1`, `$2`, …): never format values into the SQL text.
/// Each distinct SQL text is prepared once per commit, so a handler should queue the same
/// text with different parameters rather than texts that differ per event.
///
/// ```
/// use krescent_postgres::{PostgresParam, PostgresWrites};
///
/// let mut writes = PostgresWrites::new();
/// let params: Vec<PostgresParam> = vec![Box::new(42_i64), Box::new("W-1".to_owned())];
/// writes.execute("INSERT INTO stock (position, product) VALUES ($1, $2)", params);
/// writes.execute(
///     "UPDATE totals SET count = count + 1 WHERE product = $1",
///     vec![Box::new("W-1".to_owned())],
/// );
/// assert_eq!(writes.len(), 2);
/// assert_eq!(writes.sql().next(), Some("INSERT INTO stock (position, product) VALUES ($1, $2)"));
/// ```
#[derive(Default)]
pub struct PostgresWrites {
    pub(crate) statements: Vec<PendingStatement>,
}

/// One queued statement.
pub(crate) struct PendingStatement {
    pub sql: String,
    pub params: Vec<PostgresParam>,
}

impl PostgresWrites {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues `sql` with its parameters `params` (`$1` is `params[0]`). Nothing runs until the
    /// next checkpoint.
    pub fn execute(&mut self, sql: impl Into<String>, params: Vec<PostgresParam>) -> &mut Self {
        self.statements.push(PendingStatement {
            sql: sql.into(),
            params,
        });
        self
    }

    /// How many statements are queued.
    pub fn len(&self) -> usize {
        self.statements.len()
    }

    /// Whether no statement is queued.
    pub fn is_empty(&self) -> bool {
        self.statements.is_empty()
    }

    /// Drops every queued statement.
    pub fn clear(&mut self) {
        self.statements.clear();
    }

    /// The SQL texts of the queued statements, in order.
    pub fn sql(&self) -> impl Iterator<Item = &str> + '_ {
        self.statements.iter().map(|s| s.sql.as_str())
    }
}

impl fmt::Debug for PostgresWrites {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(
                self.statements
                    .iter()
                    .map(|s| (s.sql.as_str(), s.params.as_slice())),
            )
            .finish()
    }
}

impl PendingWrites for PostgresWrites {
    fn is_empty(&self) -> bool {
        self.statements.is_empty()
    }

    fn as_any(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

/// A statement of [`PostgresWrites`] failed, so the transaction with the checkpoint was rolled
/// back. Found as the `source` of [`CheckpointStorageError::Backend`] (see
/// [`PostgresWriteError::of`]).
#[derive(Debug, thiserror::Error)]
#[error(
    "pending write {index} of model `{model}` failed ({}); nothing was committed; the \
     statement: {sql}",
    describe(.source)
)]
#[non_exhaustive]
pub struct PostgresWriteError {
    /// The model whose checkpoint was being stored.
    pub model: String,
    /// The statement's index in the buffer (0 is the first queued).
    pub index: usize,
    /// The statement's SQL text.
    pub sql: String,
    /// What PostgreSQL or the driver said (a constraint violation, a parameter of the wrong
    /// type, a lost connection, …).
    #[source]
    pub source: tokio_postgres::Error,
}

impl PostgresWriteError {
    /// The failed statement inside `error`, when it is a [`CheckpointStorageError::Backend`] of
    /// this backend caused by one.
    pub fn of(error: &CheckpointStorageError) -> Option<&PostgresWriteError> {
        match error {
            CheckpointStorageError::Backend {
                backend, source, ..
            } => of_backend(backend, source.as_ref()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_keep_their_order_and_clear() {
        let mut writes = PostgresWrites::new();
        assert!(PendingWrites::is_empty(&writes));
        writes
            .execute("INSERT INTO a VALUES ($1)", vec![Box::new(1_i64)])
            .execute("DELETE FROM b", Vec::new());
        assert_eq!(writes.len(), 2);
        assert_eq!(
            writes.sql().collect::<Vec<_>>(),
            ["INSERT INTO a VALUES ($1)", "DELETE FROM b"]
        );
        assert!(format!("{writes:?}").contains("INSERT INTO a"));
        assert!(
            PendingWrites::as_any(&mut writes)
                .downcast_mut::<PostgresWrites>()
                .is_some()
        );
        writes.clear();
        assert!(writes.is_empty());
    }
}

//! [`SqliteWrites`]: the projection writes a read model commits in the same transaction as
//! its checkpoint, and running them inside that transaction.

use std::borrow::Cow;
use std::fmt;
use std::panic::{AssertUnwindSafe, Location};
use std::sync::Arc;

use rusqlite::Transaction;
use rusqlite::types::Value;

use crate::error::SqliteError;
use krescent_core::checkpoint::PendingWrites;

/// The longest SQL text quoted in an error message, in characters.
const MAX_QUOTED_SQL: usize = 200;

/// A closure run inside the checkpoint's transaction.
type WriteFn = Box<dyn FnOnce(&Transaction<'_>) -> rusqlite::Result<()> + Send + 'static>;

/// One buffered write.
pub(crate) enum Op {
    /// A parameterised statement.
    Statement {
        sql: Cow<'static, str>,
        params: Vec<Value>,
    },
    /// A closure, with where it was added (for error messages).
    Closure {
        f: WriteFn,
        at: &'static Location<'static>,
    },
}

fn describe_sql(sql: &str) -> String {
    let sql = sql.trim();
    if sql.chars().count() > MAX_QUOTED_SQL {
        let head: String = sql.chars().take(MAX_QUOTED_SQL).collect();
        format!("statement `{head}…`")
    } else {
        format!("statement `{sql}`")
    }
}

fn describe_closure(at: &Location<'_>) -> String {
    format!("closure added at {at}")
}

/// The projection writes of a read model that keeps its tables in the SQLite file of its
/// checkpoints: a buffer of parameterised statements and closures, committed together with
/// the model's checkpoint in ONE transaction by
/// [`SqliteCheckpointStorage`](crate::SqliteCheckpointStorage)'s
/// [`store_with_writes`](krescent_core::checkpoint::CheckpointStorage::store_with_writes).
///
/// A model keeps a `SqliteWrites` as a field, pushes its writes from its handlers, and
/// returns it from [`ReadModel::pending_writes`](krescent_core::model::ReadModel::pending_writes).
/// The runner hands it to the storage at every checkpoint: the writes run in the order they
/// were added, then the checkpoint is upserted, then the transaction commits and the buffer
/// is emptied. After a crash the tables therefore always agree with the checkpoint: a
/// restarted model continues after the checkpoint's position and writes the rows of the
/// events after it again, exactly once.
///
/// Write SQL with parameters (`?1`, `?2`, …) for every value; the parameters are owned
/// [`Value`]s (`rusqlite` is re-exported as [`krescent_sqlite::rusqlite`](crate::rusqlite),
/// so a model needs no `rusqlite` dependency of its own, and never one of another version).
/// Each statement is prepared once per connection and cached.
///
/// # Failures
///
/// If a write fails (an SQL error, a closure returning an error or panicking), the
/// transaction is rolled back: neither the writes nor the checkpoint are committed, and the
/// error ([`SqliteError::WriteFailed`] or [`SqliteError::WritePanicked`] inside
/// [`CheckpointStorageError::Backend`](krescent_core::checkpoint::CheckpointStorageError::Backend))
/// names the failing write by its index and SQL text or by where its closure was added.
///
/// Closures run at most once, so the buffer is emptied once its writes started to run,
/// whether they commit or not. When the transaction cannot even begin (the file stayed locked
/// by another process beyond the busy timeout), the buffer is left as it was, so that a later
/// checkpoint retries it. After a failed write the model's state is ahead of its tables: stop
/// the model and restart it from its checkpoint, which replays the events since and buffers
/// their writes again.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use krescent_core::checkpoint::{
///     CheckpointBucket, CheckpointStorage, CheckpointVersion, StoredCheckpoint,
/// };
/// use krescent_sqlite::rusqlite::types::Value;
/// use krescent_sqlite::{SqliteEventStore, SqliteWrites};
///
/// let store = SqliteEventStore::open_in_memory()?;
/// let storage = store.checkpoint_storage();
///
/// let mut writes = SqliteWrites::new();
/// writes.run(|tx| {
///     tx.execute_batch("CREATE TABLE IF NOT EXISTS titles (isbn TEXT PRIMARY KEY, title TEXT)")
/// });
/// writes.execute(
///     "INSERT INTO titles (isbn, title) VALUES (?1, ?2)",
///     [Value::from("978-0".to_owned()), Value::from("Dune".to_owned())],
/// );
/// let checkpoint =
///     StoredCheckpoint::new("titles", CheckpointVersion::new(1, 1, 0), 1, CheckpointBucket::new());
/// storage.store_with_writes(&checkpoint, &mut writes).await?;
/// assert!(writes.is_empty());
/// # Ok(())
/// # }
/// ```
#[derive(Default)]
pub struct SqliteWrites {
    pub(crate) ops: Vec<Op>,
}

impl SqliteWrites {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a statement: `sql` (one statement, with parameters `?1`, `?2`, … or `?`) and its
    /// parameter values. The statement must not return rows.
    ///
    /// ```
    /// use krescent_sqlite::SqliteWrites;
    /// use krescent_sqlite::rusqlite::types::Value;
    ///
    /// let mut writes = SqliteWrites::new();
    /// writes
    ///     .execute("UPDATE stock SET level = level + ?1 WHERE product = ?2", [
    ///         Value::from(5_i64),
    ///         Value::from("WIDGET".to_owned()),
    ///     ])
    ///     .execute("DELETE FROM reservations WHERE expired = ?1", [true]);
    /// assert_eq!(writes.len(), 2);
    /// ```
    pub fn execute<P>(&mut self, sql: impl Into<Cow<'static, str>>, params: P) -> &mut Self
    where
        P: IntoIterator,
        P::Item: Into<Value>,
    {
        self.ops.push(Op::Statement {
            sql: sql.into(),
            params: params.into_iter().map(Into::into).collect(),
        });
        self
    }

    /// Adds a closure that runs inside the transaction, in order with the statements: for
    /// writes that depend on what the database holds, or many statements at once. An error it
    /// returns, or a panic, rolls everything back (see [Failures](Self#failures)); errors name
    /// it by where it was added.
    #[track_caller]
    pub fn run<F>(&mut self, f: F) -> &mut Self
    where
        F: FnOnce(&Transaction<'_>) -> rusqlite::Result<()> + Send + 'static,
    {
        self.ops.push(Op::Closure {
            f: Box::new(f),
            at: Location::caller(),
        });
        self
    }

    /// How many writes are buffered.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether no write is buffered.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Drops every buffered write (for a model that resets itself).
    pub fn clear(&mut self) {
        self.ops.clear();
    }
}

impl fmt::Debug for SqliteWrites {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Writes<'a>(&'a [Op]);
        impl fmt::Debug for Writes<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_list()
                    .entries(self.0.iter().map(|op| match op {
                        Op::Statement { sql, params } => format!("{sql} {params:?}"),
                        Op::Closure { at, .. } => describe_closure(at),
                    }))
                    .finish()
            }
        }
        f.debug_struct("SqliteWrites")
            .field("writes", &Writes(&self.ops))
            .finish()
    }
}

impl PendingWrites for SqliteWrites {
    fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    fn as_any(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

/// Runs the buffered writes in order; the first failure stops them.
pub(crate) fn run_ops(tx: &Transaction<'_>, model: &str, ops: Vec<Op>) -> Result<(), SqliteError> {
    for (index, op) in ops.into_iter().enumerate() {
        match op {
            Op::Statement { sql, params } => {
                let executed = tx
                    .prepare_cached(&sql)
                    .and_then(|mut stmt| stmt.execute(rusqlite::params_from_iter(params.iter())));
                if let Err(source) = executed {
                    return Err(SqliteError::WriteFailed {
                        model: model.to_owned(),
                        index,
                        write: describe_sql(&sql),
                        source: Arc::new(source),
                    });
                }
            }
            Op::Closure { f, at } => match std::panic::catch_unwind(AssertUnwindSafe(|| f(tx))) {
                Ok(Ok(())) => {}
                Ok(Err(source)) => {
                    return Err(SqliteError::WriteFailed {
                        model: model.to_owned(),
                        index,
                        write: describe_closure(at),
                        source: Arc::new(source),
                    });
                }
                Err(panic) => {
                    let message = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "a panic without a message".to_owned());
                    return Err(SqliteError::WritePanicked {
                        model: model.to_owned(),
                        index,
                        write: describe_closure(at),
                        message,
                    });
                }
            },
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_sql_is_shortened_in_messages() {
        let sql = format!("INSERT INTO t VALUES ({})", "?, ".repeat(200));
        let described = describe_sql(&sql);
        assert!(described.ends_with("…`"), "{described}");
        assert!(described.chars().count() < MAX_QUOTED_SQL + 20);
        assert_eq!(
            describe_sql("  DELETE FROM t "),
            "statement `DELETE FROM t`"
        );
    }
}

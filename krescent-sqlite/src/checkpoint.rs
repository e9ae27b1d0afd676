//! [`SqliteCheckpointStorage`]: checkpoints in the `krescent_checkpoints` table of a SQLite
//! store's file, and [`SqliteWrites`], the projection writes a read model commits in the same
//! transaction as its checkpoint.

use std::borrow::Cow;
use std::fmt;
use std::panic::{AssertUnwindSafe, Location};
use std::path::Path;

use async_trait::async_trait;
use rusqlite::types::{Value, ValueRef};
use rusqlite::{Transaction, TransactionBehavior};
use tokio::sync::oneshot;

use super::conn::Conn;
use super::writer::Job;
use super::{SqliteEventStore, SqliteStoreError};
use krescent_core::__backend::continues_chain;
use krescent_core::checkpoint::{
    CheckpointDelta, CheckpointInfo, CheckpointStorage, CheckpointStorageError, PendingWrites,
    StoredCheckpoint, validate_model_name,
};
use krescent_core::store::StoreError;

/// The `backend` of the errors of the SQLite storages.
pub(super) const BACKEND: &str = "sqlite";

/// The longest SQL text quoted in an error message, in characters.
const MAX_QUOTED_SQL: usize = 200;

const LOAD: &str = "SELECT bytes FROM krescent_checkpoints WHERE model = ?1";
const LIST: &str = "SELECT model, bytes FROM krescent_checkpoints ORDER BY model";
const DELETE: &str = "DELETE FROM krescent_checkpoints WHERE model = ?1";
const LOAD_DELTAS: &str = "SELECT base_position, bytes FROM krescent_checkpoint_deltas WHERE model = ?1 ORDER BY position";
const LAST_DELTAS: &str = "SELECT d.model, d.bytes FROM krescent_checkpoint_deltas AS d \
     WHERE d.position = (SELECT max(position) FROM krescent_checkpoint_deltas WHERE model = d.model)";
const DELETE_DELTAS: &str = "DELETE FROM krescent_checkpoint_deltas WHERE model = ?1";
const BASE_POSITION: &str = "SELECT position FROM krescent_checkpoints WHERE model = ?1";
const TIP: &str = "SELECT max(position) FROM krescent_checkpoint_deltas WHERE model = ?1";
const INSERT_DELTA: &str = "INSERT INTO krescent_checkpoint_deltas (model, position, base_position, bytes) \
     VALUES (?1, ?2, ?3, ?4)";
const UPSERT: &str = "INSERT INTO krescent_checkpoints (model, position, bytes) VALUES (?1, ?2, ?3) \
     ON CONFLICT (model) DO UPDATE SET position = excluded.position, bytes = excluded.bytes";

/// Why a SQLite checkpoint or bookmark storage failed: the `source` of
/// [`CheckpointStorageError::Backend`] and [`BookmarkError::Backend`](krescent_core::BookmarkError)
/// with backend `"sqlite"`. Find it with `error.source()` and
/// `downcast_ref::<SqliteStorageError>()`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SqliteStorageError {
    /// A pending write of a [`SqliteWrites`] buffer failed, so the transaction was rolled
    /// back: neither the projection writes nor the checkpoint were committed.
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
        source: rusqlite::Error,
    },
    /// A closure of a [`SqliteWrites`] buffer panicked, so the transaction was rolled back:
    /// neither the projection writes nor the checkpoint were committed.
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
    /// The database failed: SQLite reported an error, the file is not a krescent store, the
    /// writer thread stopped.
    #[error(transparent)]
    Store(#[from] SqliteStoreError),
}

impl From<rusqlite::Error> for SqliteStorageError {
    fn from(e: rusqlite::Error) -> Self {
        SqliteStorageError::Store(e.into())
    }
}

impl From<StoreError> for SqliteStorageError {
    /// The [`SqliteStoreError`] inside an error of the SQLite event store.
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Backend { source, .. } => match source.downcast::<SqliteStoreError>() {
                Ok(inner) => SqliteStorageError::Store(*inner),
                Err(other) => {
                    SqliteStorageError::Store(SqliteStoreError::Thread(other.to_string()))
                }
            },
            other => SqliteStorageError::Store(SqliteStoreError::Thread(other.to_string())),
        }
    }
}

impl From<SqliteStorageError> for CheckpointStorageError {
    fn from(e: SqliteStorageError) -> Self {
        CheckpointStorageError::Backend {
            backend: BACKEND,
            source: Box::new(e),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// SqliteWrites

/// A closure run inside the checkpoint's transaction.
type WriteFn = Box<dyn FnOnce(&Transaction<'_>) -> rusqlite::Result<()> + Send + 'static>;

/// Why a commit failed, and the writes when none of them ran (to be put back).
type Failure = (Box<SqliteStorageError>, Option<Vec<Op>>);

/// One buffered write.
enum Op {
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
/// [`SqliteCheckpointStorage`]'s [`store_with_writes`](CheckpointStorage::store_with_writes).
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
/// [`Value`]s (`rusqlite` is re-exported as [`krescent_sqlite::rusqlite`](super::rusqlite),
/// so a model needs no `rusqlite` dependency of its own, and never one of another version).
/// Each statement is prepared once per connection and cached.
///
/// # Failures
///
/// If a write fails (an SQL error, a closure returning an error or panicking), the
/// transaction is rolled back: neither the writes nor the checkpoint are committed, and the
/// error ([`SqliteStorageError::WriteFailed`] or [`SqliteStorageError::WritePanicked`] inside
/// [`CheckpointStorageError::Backend`]) names the failing write by its index and SQL text or
/// by where its closure was added.
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
    ops: Vec<Op>,
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

// ---------------------------------------------------------------------------------------------
// SqliteCheckpointStorage

/// Checkpoints in the `krescent_checkpoints` table of a SQLite store's file (see the
/// [module documentation](super) for the schema): one row per model, holding the
/// [encoding](StoredCheckpoint::encode) of its [`StoredCheckpoint`] (whose checksum covers
/// every byte) and, for people reading the table, its position.
///
/// Get one from an open store with [`SqliteEventStore::checkpoint_storage`], so that the
/// checkpoints live in the store's file and share its connections, or open a file of its own
/// with [`open`](Self::open). Either way it is a [`SqliteEventStore`] underneath: stores run
/// on the store's writer thread, loads on tokio's blocking pool, never on the runtime's
/// workers. Several storages and stores, in one process or several, may use one file: SQLite
/// serialises their writes, and a connection waits up to 5 seconds for another one's
/// transaction before failing with a `SQLITE_BUSY` error.
///
/// Storing replaces the row in one transaction, so a load sees the old or the new checkpoint,
/// completely. [Deltas](CheckpointStorage::supports_deltas) are rows of
/// `krescent_checkpoint_deltas` (model, position, base position, encoded delta), appended in a
/// transaction that checks they build on the latest state; storing a checkpoint deletes its
/// model's deltas in the same transaction, and a load reads both in one read transaction. [`store_with_writes`](CheckpointStorage::store_with_writes) takes a
/// [`SqliteWrites`] buffer and commits it in the same transaction as the checkpoint; any other
/// buffer is refused with [`WritesMismatch`](CheckpointStorageError::WritesMismatch) before
/// anything is written. A store whose future is dropped may still commit in the background.
///
/// A row whose bytes do not decode is reported as [`Corrupt`](CheckpointStorageError::Corrupt)
/// (by `load` of its model, and by `list`), one whose checkpoint names another model as
/// [`ModelMismatch`](CheckpointStorageError::ModelMismatch); nothing of either is returned.
/// Cloning gives another handle to the same storage.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = std::env::temp_dir().join(format!("krescent-doc-{}", uuid::Uuid::now_v7()));
/// # std::fs::create_dir_all(&dir)?;
/// use krescent_core::checkpoint::{
///     CheckpointBucket, CheckpointStorage, CheckpointVersion, StoredCheckpoint,
/// };
/// use krescent_sqlite::SqliteEventStore;
///
/// let store = SqliteEventStore::open(dir.join("books.db")).await?;
/// let storage = store.checkpoint_storage();
/// let checkpoint = StoredCheckpoint::new(
///     "book.available",
///     CheckpointVersion::new(1, 1, 0),
///     42,
///     CheckpointBucket::new().with("copies", 3_u64),
/// );
/// storage.store(&checkpoint).await?;
/// assert_eq!(storage.load("book.available").await?, Some(checkpoint));
/// # drop((store, storage));
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct SqliteCheckpointStorage {
    store: SqliteEventStore,
}

impl SqliteEventStore {
    /// A checkpoint storage in this store's file (or, for an in-memory store, its database),
    /// sharing the store's connections.
    pub fn checkpoint_storage(&self) -> SqliteCheckpointStorage {
        SqliteCheckpointStorage {
            store: self.clone(),
        }
    }
}

impl SqliteCheckpointStorage {
    /// Opens the checkpoints in the SQLite file at `path`, creating the file and the krescent
    /// schema (event and checkpoint tables alike) if needed. Opening is idempotent.
    ///
    /// # Errors
    ///
    /// [`CheckpointStorageError::Backend`] with a [`SqliteStorageError::Store`]: the file
    /// cannot be opened or created, is not a SQLite database, or has a newer krescent schema.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, CheckpointStorageError> {
        let store = SqliteEventStore::open(path)
            .await
            .map_err(|e| CheckpointStorageError::from(SqliteStorageError::from(e)))?;
        Ok(store.checkpoint_storage())
    }

    /// A new, empty storage in memory, lost when the last handle is dropped. For tests; a
    /// model's projection tables must then live in the same in-memory database, reachable
    /// only through [`SqliteWrites`] closures.
    ///
    /// # Errors
    ///
    /// [`CheckpointStorageError::Backend`] if SQLite cannot open an in-memory database.
    pub fn open_in_memory() -> Result<Self, CheckpointStorageError> {
        let store = SqliteEventStore::open_in_memory()
            .map_err(|e| CheckpointStorageError::from(SqliteStorageError::from(e)))?;
        Ok(store.checkpoint_storage())
    }

    /// The event store whose file (and connections) the checkpoints share.
    pub fn event_store(&self) -> &SqliteEventStore {
        &self.store
    }

    /// The file of the storage; `None` in memory.
    pub fn path(&self) -> Option<&Path> {
        self.store.path()
    }

    /// Where the checkpoint of `model` lives, for error messages.
    fn location(&self, model: &str) -> String {
        location(self.store.path(), model)
    }

    /// Upserts the encoded checkpoint `bytes` of `model` after running `ops`, in one
    /// transaction on the writer thread.
    async fn commit(
        &self,
        model: &str,
        position: u64,
        bytes: Vec<u8>,
        ops: Vec<Op>,
    ) -> Result<(), Failure> {
        let model = model.to_owned();
        let position = to_db(position);
        match on_writer(&self.store, move |conn| {
            commit_blocking(conn, &model, position, &bytes, ops)
        })
        .await
        {
            Ok(result) => result,
            Err(stopped) => Err((Box::new(stopped.into()), None)),
        }
    }
}

/// Encodes `checkpoint`, or says why it cannot be.
fn encode(checkpoint: &StoredCheckpoint) -> Result<Vec<u8>, CheckpointStorageError> {
    checkpoint
        .encode()
        .map_err(|source| CheckpointStorageError::encode(&checkpoint.model, source))
}

#[async_trait]
impl CheckpointStorage for SqliteCheckpointStorage {
    async fn load(&self, model: &str) -> Result<Option<StoredCheckpoint>, CheckpointStorageError> {
        validate_model_name(model)?;
        let owned = model.to_owned();
        let rows = self
            .store
            .with_reader(move |conn| {
                // One read transaction: the checkpoint and its deltas as of one moment.
                let tx = conn.conn.transaction()?;
                let base = {
                    let mut stmt = tx.prepare_cached(LOAD)?;
                    let mut rows = stmt.query([owned.as_str()])?;
                    match rows.next()? {
                        Some(row) => blob_of(row.get_ref(0)?),
                        None => return Ok(None),
                    }
                };
                let mut deltas = Vec::new();
                {
                    let mut stmt = tx.prepare_cached(LOAD_DELTAS)?;
                    let mut rows = stmt.query([owned.as_str()])?;
                    while let Some(row) = rows.next()? {
                        deltas.push((from_db(row.get(0)?), blob_of(row.get_ref(1)?)));
                    }
                }
                tx.finish()?;
                Ok(Some((base, deltas)))
            })
            .await
            .map_err(|e| CheckpointStorageError::from(SqliteStorageError::from(e)))?;
        let Some((base, deltas)) = rows else {
            return Ok(None);
        };
        let location = self.location(model);
        let mut checkpoint = decode_row(model, &base, &location)?;
        if deltas
            .first()
            .is_some_and(|(base_position, _)| *base_position != checkpoint.position)
        {
            // Left by a writer that replaced the checkpoint without knowing of deltas.
            tracing::warn!(model, "ignoring checkpoint deltas of an older checkpoint");
            return Ok(Some(checkpoint));
        }
        for (_, bytes) in deltas {
            let delta = CheckpointDelta::decode(&bytes)
                .map_err(|source| CheckpointStorageError::corrupt(model, &location, source))?;
            checkpoint
                .push_delta(delta)
                .map_err(|source| CheckpointStorageError::BrokenChain {
                    model: model.to_owned(),
                    location: location.clone(),
                    source: Box::new(source),
                })?;
        }
        Ok(Some(checkpoint))
    }

    async fn store(&self, checkpoint: &StoredCheckpoint) -> Result<(), CheckpointStorageError> {
        validate_model_name(&checkpoint.model)?;
        let bytes = encode(checkpoint)?;
        self.commit(&checkpoint.model, checkpoint.position, bytes, Vec::new())
            .await
            .map_err(|(e, _)| (*e).into())
    }

    async fn delete(&self, model: &str) -> Result<bool, CheckpointStorageError> {
        validate_model_name(model)?;
        let owned = model.to_owned();
        let deleted = on_writer(&self.store, move |conn| {
            let tx = conn
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.prepare_cached(DELETE_DELTAS)?
                .execute([owned.as_str()])?;
            let deleted = tx.prepare_cached(DELETE)?.execute([owned.as_str()])?;
            tx.commit()?;
            Ok::<_, rusqlite::Error>(deleted)
        })
        .await
        .map_err(SqliteStorageError::from)?
        .map_err(SqliteStorageError::from)?;
        Ok(deleted > 0)
    }

    async fn list(&self) -> Result<Vec<CheckpointInfo>, CheckpointStorageError> {
        let (rows, last) = self
            .store
            .with_reader(|conn| {
                let tx = conn.conn.transaction()?;
                let read = |sql: &str| -> rusqlite::Result<Vec<(String, Vec<u8>)>> {
                    let mut stmt = tx.prepare_cached(sql)?;
                    let mut rows = stmt.query([])?;
                    let mut out = Vec::new();
                    while let Some(row) = rows.next()? {
                        out.push((text_of(row.get_ref(0)?), blob_of(row.get_ref(1)?)));
                    }
                    Ok(out)
                };
                let rows = read(LIST)?;
                let last = read(LAST_DELTAS)?;
                tx.finish()?;
                Ok((rows, last))
            })
            .await
            .map_err(|e| CheckpointStorageError::from(SqliteStorageError::from(e)))?;
        let last: std::collections::HashMap<String, Vec<u8>> = last.into_iter().collect();
        let mut infos = rows
            .iter()
            .map(|(model, bytes)| {
                let location = self.location(model);
                let mut info = CheckpointInfo::from(decode_row(model, bytes, &location)?);
                if let Some(bytes) = last.get(model) {
                    let delta = CheckpointDelta::decode(bytes).map_err(|source| {
                        CheckpointStorageError::corrupt(model, &location, source)
                    })?;
                    if delta.position > info.position {
                        info.position = delta.position;
                        info.timestamp = delta.timestamp;
                    }
                }
                Ok(info)
            })
            .collect::<Result<Vec<_>, CheckpointStorageError>>()?;
        infos.sort_by(|a, b| a.model.cmp(&b.model));
        Ok(infos)
    }

    async fn store_with_writes(
        &self,
        checkpoint: &StoredCheckpoint,
        writes: &mut (dyn PendingWrites + '_),
    ) -> Result<(), CheckpointStorageError> {
        validate_model_name(&checkpoint.model)?;
        let found = writes.type_name();
        let Some(buffer) = writes.as_any().downcast_mut::<SqliteWrites>() else {
            return Err(CheckpointStorageError::WritesMismatch {
                model: checkpoint.model.clone(),
                found,
            });
        };
        let bytes = encode(checkpoint)?;
        let ops = std::mem::take(&mut buffer.ops);
        match self
            .commit(&checkpoint.model, checkpoint.position, bytes, ops)
            .await
        {
            Ok(()) => Ok(()),
            Err((error, unused)) => {
                if let Some(ops) = unused {
                    buffer.ops = ops;
                }
                Err((*error).into())
            }
        }
    }

    fn supports_deltas(&self) -> bool {
        true
    }

    async fn store_delta(&self, delta: &CheckpointDelta) -> Result<(), CheckpointStorageError> {
        self.append_delta(delta).await
    }
}

impl SqliteCheckpointStorage {
    /// `supports_deltas` and `store_delta` of [`CheckpointStorage`], kept apart from the
    /// trait's block for reading.
    async fn append_delta(&self, delta: &CheckpointDelta) -> Result<(), CheckpointStorageError> {
        let bytes = krescent_core::__backend::encode_delta(delta)?;
        let model = delta.model.clone();
        let (base_position, position) = (delta.base_position, delta.position);
        let outcome = on_writer(&self.store, move |conn| {
            let result = append_delta_blocking(conn, &model, base_position, position, &bytes);
            if result.is_err() {
                conn.rollback_quietly();
            }
            result
        })
        .await
        .map_err(SqliteStorageError::from)?;
        match outcome {
            Ok(None) => Ok(()),
            Ok(Some(latest)) => Err(CheckpointStorageError::DeltaBaseMismatch {
                model: delta.model.clone(),
                base_position,
                latest,
            }),
            Err(e) => Err(SqliteStorageError::from(e).into()),
        }
    }
}

/// Appends a delta in one `BEGIN IMMEDIATE` transaction if it builds on the latest stored
/// state; otherwise writes nothing and returns that state's position (`Some(None)`: there is
/// no checkpoint).
fn append_delta_blocking(
    conn: &mut Conn,
    model: &str,
    base_position: u64,
    position: u64,
    bytes: &[u8],
) -> rusqlite::Result<Option<Option<u64>>> {
    let tx = conn
        .conn
        .transaction_with_behavior(TransactionBehavior::Immediate)?;
    let base: Option<i64> = {
        let mut stmt = tx.prepare_cached(BASE_POSITION)?;
        let mut rows = stmt.query([model])?;
        match rows.next()? {
            Some(row) => Some(row.get(0)?),
            None => None,
        }
    };
    let Some(base) = base.map(from_db) else {
        return Ok(Some(None));
    };
    let tip: Option<i64> = tx
        .prepare_cached(TIP)?
        .query_row([model], |row| row.get(0))?;
    let latest = tip.map(from_db).filter(|&t| t > base).unwrap_or(base);
    if !continues_chain(latest, base_position, position) {
        return Ok(Some(Some(latest)));
    }
    tx.prepare_cached(INSERT_DELTA)?.execute(rusqlite::params![
        model,
        to_db(position),
        to_db(base_position),
        bytes
    ])?;
    tx.commit()?;
    Ok(None)
}

// ---------------------------------------------------------------------------------------------
// Helpers shared with the bookmark storage

/// Runs `f` on the store's writer thread (which owns the write connection) and waits for its
/// result without blocking the async runtime.
pub(super) async fn on_writer<T, F>(store: &SqliteEventStore, f: F) -> Result<T, SqliteStoreError>
where
    T: Send + 'static,
    F: FnOnce(&mut Conn) -> T + Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    let job = Job::Run(Box::new(move |conn: &mut Conn| {
        // The caller may have stopped waiting; the outcome stands either way.
        let _ = tx.send(f(conn));
    }));
    store
        .inner
        .writer
        .send(job)
        .map_err(|_| SqliteStoreError::WriterStopped)?;
    rx.await.map_err(|_| SqliteStoreError::WriterStopped)
}

/// A `u64` as SQLite stores it: the same 64 bits as an `i64` (values above `i64::MAX` become
/// negative), so that every `u64` round-trips.
pub(super) fn to_db(value: u64) -> i64 {
    i64::from_ne_bytes(value.to_ne_bytes())
}

/// The `u64` stored by [`to_db`].
pub(super) fn from_db(value: i64) -> u64 {
    u64::from_ne_bytes(value.to_ne_bytes())
}

// ---------------------------------------------------------------------------------------------
// Blocking work

/// Runs `ops`, then upserts the checkpoint, in one `BEGIN IMMEDIATE` transaction. On failure
/// everything is rolled back; the ops come back only when none of them ran.
fn commit_blocking(
    conn: &mut Conn,
    model: &str,
    position: i64,
    bytes: &[u8],
    ops: Vec<Op>,
) -> Result<(), Failure> {
    let result = {
        let tx = match conn
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
        {
            Ok(tx) => tx,
            Err(e) => return Err((Box::new(e.into()), Some(ops))),
        };
        run_ops(&tx, model, ops)
            .and_then(|()| {
                tx.prepare_cached(DELETE_DELTAS)
                    .and_then(|mut stmt| stmt.execute([model]))
                    .and_then(|_| tx.prepare_cached(UPSERT))
                    .and_then(|mut stmt| stmt.execute(rusqlite::params![model, position, bytes]))
                    .map_err(SqliteStorageError::from)
            })
            .and_then(|_| tx.commit().map_err(SqliteStorageError::from))
        // Dropping an uncommitted transaction rolls it back.
    };
    if let Err(e) = result {
        // Leaves no transaction open, and forgets cached type names a write may have touched.
        conn.rollback_quietly();
        tracing::warn!(model, error = %e, "SQLite checkpoint with projection writes rolled back");
        return Err((Box::new(e), None));
    }
    tracing::debug!(model, bytes = bytes.len(), "checkpoint stored in SQLite");
    Ok(())
}

/// Runs the buffered writes in order; the first failure stops them.
fn run_ops(tx: &Transaction<'_>, model: &str, ops: Vec<Op>) -> Result<(), SqliteStorageError> {
    for (index, op) in ops.into_iter().enumerate() {
        match op {
            Op::Statement { sql, params } => {
                let executed = tx
                    .prepare_cached(&sql)
                    .and_then(|mut stmt| stmt.execute(rusqlite::params_from_iter(params.iter())));
                if let Err(source) = executed {
                    return Err(SqliteStorageError::WriteFailed {
                        model: model.to_owned(),
                        index,
                        write: describe_sql(&sql),
                        source,
                    });
                }
            }
            Op::Closure { f, at } => match std::panic::catch_unwind(AssertUnwindSafe(|| f(tx))) {
                Ok(Ok(())) => {}
                Ok(Err(source)) => {
                    return Err(SqliteStorageError::WriteFailed {
                        model: model.to_owned(),
                        index,
                        write: describe_closure(at),
                        source,
                    });
                }
                Err(panic) => {
                    let message = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "a panic without a message".to_owned());
                    return Err(SqliteStorageError::WritePanicked {
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

/// The bytes of a `bytes` cell. A cell of another type (written by hand) gives bytes that do
/// not decode: text keeps its bytes, anything else is empty.
fn blob_of(value: ValueRef<'_>) -> Vec<u8> {
    match value {
        ValueRef::Blob(b) | ValueRef::Text(b) => b.to_vec(),
        ValueRef::Null | ValueRef::Integer(_) | ValueRef::Real(_) => Vec::new(),
    }
}

/// The text of a `model` cell, whatever its type.
fn text_of(value: ValueRef<'_>) -> String {
    match value {
        ValueRef::Text(t) | ValueRef::Blob(t) => String::from_utf8_lossy(t).into_owned(),
        ValueRef::Integer(i) => i.to_string(),
        ValueRef::Real(r) => r.to_string(),
        ValueRef::Null => String::new(),
    }
}

/// Decodes the checkpoint stored under `model` and checks that it belongs to `model`.
fn decode_row(
    model: &str,
    bytes: &[u8],
    location: &str,
) -> Result<StoredCheckpoint, CheckpointStorageError> {
    let checkpoint = StoredCheckpoint::decode(bytes)
        .map_err(|source| CheckpointStorageError::corrupt(model, location, source))?;
    if checkpoint.model != model {
        return Err(CheckpointStorageError::ModelMismatch {
            expected: model.to_owned(),
            found: checkpoint.model,
            location: location.to_owned(),
        });
    }
    Ok(checkpoint)
}

/// `<file>: krescent_checkpoints row for model `x``.
fn location(path: Option<&Path>, model: &str) -> String {
    let file = path.map_or_else(|| ":memory:".to_owned(), |p| p.display().to_string());
    format!("{file}: krescent_checkpoints row of model `{model}`")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_through_i64() {
        for value in [
            0,
            1,
            i64::MAX as u64,
            i64::MAX as u64 + 1,
            u64::MAX - 1,
            u64::MAX,
        ] {
            assert_eq!(from_db(to_db(value)), value);
        }
        assert_eq!(to_db(42), 42);
        assert_eq!(to_db(u64::MAX), -1);
    }

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

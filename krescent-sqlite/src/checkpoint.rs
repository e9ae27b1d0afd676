//! [`SqliteCheckpointStorage`]: checkpoints and checkpoint deltas in the
//! `krescent_checkpoints` and `krescent_checkpoint_deltas` tables of a SQLite store's file,
//! committed together with a model's [`SqliteWrites`].

use std::path::Path;

use async_trait::async_trait;
use rusqlite::TransactionBehavior;
use rusqlite::types::ValueRef;

use crate::connection::Conn;
use crate::error::SqliteError;
use crate::schema::{from_db, to_db};
use crate::store::SqliteEventStore;
use crate::writes::{Op, SqliteWrites, run_ops};
use krescent_core::__backend::continues_chain;
use krescent_core::checkpoint::{
    CheckpointDelta, CheckpointInfo, CheckpointStorage, CheckpointStorageError, PendingWrites,
    StoredCheckpoint, validate_model_name,
};

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

/// Why a commit failed, and the writes when none of them ran (to be put back).
type Failure = (Box<SqliteError>, Option<Vec<Op>>);

/// Checkpoints in the `krescent_checkpoints` table of a SQLite store's file (see the
/// [crate documentation](crate) for the schema): one row per model, holding the
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
    /// [`CheckpointStorageError::Backend`] with a [`SqliteError`]: the file
    /// cannot be opened or created, is not a SQLite database, or has a newer krescent schema.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, CheckpointStorageError> {
        let store = SqliteEventStore::open_file(path.as_ref()).await?;
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
        let store = SqliteEventStore::in_memory()?;
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
        match self
            .store
            .on_writer(move |conn| commit_blocking(conn, &model, position, &bytes, ops))
            .await
        {
            Ok(result) => result,
            Err(stopped) => Err((Box::new(stopped), None)),
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
            .await?;
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
        let deleted = self
            .store
            .on_writer(move |conn| {
                let tx = conn
                    .conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)?;
                tx.prepare_cached(DELETE_DELTAS)?
                    .execute([owned.as_str()])?;
                let deleted = tx.prepare_cached(DELETE)?.execute([owned.as_str()])?;
                tx.commit()?;
                Ok::<_, rusqlite::Error>(deleted)
            })
            .await?
            .map_err(SqliteError::from)?;
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
            .await?;
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
        let buffer = writes.downcast::<SqliteWrites>(&checkpoint.model)?;
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
        let outcome = self
            .store
            .on_writer(move |conn| {
                let result = append_delta_blocking(conn, &model, base_position, position, &bytes);
                if result.is_err() {
                    conn.rollback_quietly();
                }
                result
            })
            .await?;
        match outcome {
            Ok(None) => Ok(()),
            Ok(Some(latest)) => Err(CheckpointStorageError::DeltaBaseMismatch {
                model: delta.model.clone(),
                base_position,
                latest,
            }),
            Err(e) => Err(SqliteError::from(e).into()),
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
                    .map_err(SqliteError::from)
            })
            .and_then(|_| tx.commit().map_err(SqliteError::from))
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

//! [`PostgresCheckpointStorage`]: checkpoints in `<prefix>checkpoints`, and [`PostgresWrites`],
//! projection statements committed in the same transaction as a checkpoint.
//!
//! Also the connection handling both PostgreSQL storages share: opening a pool of their own,
//! and running an operation again on another connection when the pooled one turns out to be
//! dead.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{Object, Pool};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{FromSql, ToSql, Type};

use super::sql::{self, CheckpointSql, Tables};
use super::{BACKEND, PostgresError, PostgresEventStore, PostgresOptions};
use krescent_core::__backend::continues_chain;
use krescent_core::checkpoint::{
    BucketError, CheckpointDelta, CheckpointInfo, CheckpointStorage, CheckpointStorageError,
    CheckpointVersion, PendingWrites, StoredCheckpoint, validate_model_name,
};
use krescent_core::store::StoreError;

/// One parameter of a statement in [`PostgresWrites`]: any owned value `tokio_postgres` can
/// bind (`i64`, `String`, `Vec<u8>`, `bool`, `f64`, `Option<T>` for `NULL`, `uuid::Uuid`,
/// `chrono::DateTime<Utc>`, …). Its type must match the parameter's SQL type (`i64` for
/// `bigint`, `i32` for `integer`), or the statement fails.
pub type PostgresParam = Box<dyn ToSql + Send + Sync>;

/// Projection statements a read model buffers between checkpoints, committed by
/// [`PostgresCheckpointStorage::store_with_writes`] together with the checkpoint, in one
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
    statements: Vec<PendingStatement>,
}

/// One queued statement.
struct PendingStatement {
    sql: String,
    params: Vec<PostgresParam>,
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
            CheckpointStorageError::Backend { backend, source } if *backend == BACKEND => {
                source.downcast_ref::<PostgresWriteError>()
            }
            _ => None,
        }
    }
}

impl PostgresError {
    /// The PostgreSQL error inside `error`, when it is a [`CheckpointStorageError::Backend`] of
    /// this backend (a failed [`PostgresWrites`] statement is a [`PostgresWriteError`]
    /// instead).
    pub fn of_checkpoint_error(error: &CheckpointStorageError) -> Option<&PostgresError> {
        match error {
            CheckpointStorageError::Backend { backend, source } if *backend == BACKEND => {
                source.downcast_ref::<PostgresError>()
            }
            _ => None,
        }
    }
}

/// A driver error with what the server said, if it said something (the driver's own
/// `Display` shows only `db error`).
pub(super) fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{error}: {db}"),
        None => match StdError::source(error) {
            Some(cause) => format!("{error}: {cause}"),
            None => error.to_string(),
        },
    }
}

/// Checkpoints in PostgreSQL, in the table `<prefix>checkpoints` next to the event store's
/// tables. Cloning gives another handle to the same pool.
///
/// Get one from an open store with [`PostgresEventStore::checkpoint_storage`] (sharing its
/// pool and table prefix), or open one on its own with [`connect`](Self::connect).
///
/// # Table
///
/// One row per model: `model text` (the primary key, byte order), `catalog_revision`,
/// `model_version`, `shape`, `position`, `taken_at timestamptz` and `checkpoint bytea`, the
/// [encoded](StoredCheckpoint::encode) checkpoint whose checksum covers everything.
/// [`load`](CheckpointStorage::load) reads only `checkpoint`; the other columns are a copy of
/// its metadata for [`list`](CheckpointStorage::list) and for people reading the table. `shape`
/// and `position` are `u64` values kept in `bigint` with the same 64 bits, so values of 2^63
/// and more read as negative numbers in SQL.
///
/// [`store`](CheckpointStorage::store) is one `INSERT … ON CONFLICT (model) DO UPDATE` in a
/// transaction that also drops the model's deltas: a concurrent load sees the old or the new
/// row, complete, and the last write wins.
///
/// [Deltas](CheckpointStorage::supports_deltas) are rows of `<prefix>checkpoint_deltas`
/// (`model`, `position`, `base_position`, `taken_at`, `delta bytea`; primary key
/// `(model, position)`). A delta is inserted in a transaction that locks the checkpoint's row
/// and checks that the delta builds on the latest stored position; a load reads the
/// checkpoint and its deltas in one statement, and `list` reports the last delta's position
/// and time. A row whose
/// `checkpoint` does not decode is reported as [`Corrupt`](CheckpointStorageError::Corrupt),
/// one whose `checkpoint` names another model as
/// [`ModelMismatch`](CheckpointStorageError::ModelMismatch).
///
/// # Projection writes
///
/// [`store_with_writes`](CheckpointStorage::store_with_writes) takes a [`PostgresWrites`]
/// buffer: its statements and the checkpoint upsert run in one transaction. Any other buffer
/// type is refused with [`WritesMismatch`](CheckpointStorageError::WritesMismatch) before
/// anything is written.
///
/// # Lost connections
///
/// Every failure of the database or the pool is a [`Backend`](CheckpointStorageError::Backend)
/// error holding a [`PostgresError`] (or a [`PostgresWriteError`]). A pooled connection that
/// turns out to be dead (the server restarted, the backend was terminated) is dropped and the
/// operation runs again on another connection when that is safe: reads and plain stores
/// always, deletes and [`store_with_writes`](CheckpointStorage::store_with_writes) only when
/// the connection failed on their first request (`BEGIN`), before anything was changed.
///
/// If the connection is lost while a `COMMIT` is under way, whether it committed is unknown;
/// the error is that of a lost connection. The [`PostgresWrites`] buffer is kept, so
/// calling [`store_with_writes`](CheckpointStorage::store_with_writes) again could apply its
/// statements twice: after a storage error, restart the model (it restores the committed
/// checkpoint, which agrees with the tables) rather than retrying the same runner.
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// use krescent_core::checkpoint::{
///     CheckpointBucket, CheckpointStorage, CheckpointVersion, StoredCheckpoint,
/// };
/// use krescent_postgres::{PostgresCheckpointStorage, PostgresOptions};
///
/// let storage = PostgresCheckpointStorage::connect(
///     "postgres://app@localhost/app",
///     PostgresOptions::default().table_prefix("warehouse_"),
/// )
/// .await?;
/// let checkpoint =
///     StoredCheckpoint::new("stock.levels", CheckpointVersion::new(1, 1, 0), 42, CheckpointBucket::new());
/// storage.store(&checkpoint).await?;
/// assert_eq!(storage.load("stock.levels").await?, Some(checkpoint));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PostgresCheckpointStorage {
    pool: Pool,
    prefix: Arc<str>,
    sql: Arc<CheckpointSql>,
}

impl fmt::Debug for PostgresCheckpointStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresCheckpointStorage")
            .field("table", &self.sql.table)
            .finish_non_exhaustive()
    }
}

impl PostgresEventStore {
    /// A checkpoint storage in this store's database, in `<prefix>checkpoints`, sharing the
    /// store's connection pool.
    pub fn checkpoint_storage(&self) -> PostgresCheckpointStorage {
        PostgresCheckpointStorage::from_pool(self.inner.pool.clone(), &self.inner.tables.prefix)
    }
}

impl PostgresCheckpointStorage {
    /// Connects to the database at `url` with a pool of its own (see [`PostgresOptions`];
    /// `poll_interval` does not apply) and creates the tables of `options.table_prefix` if
    /// needed: the event store's and the storages', one versioned schema.
    ///
    /// # Errors
    ///
    /// [`CheckpointStorageError::Backend`] holding a [`PostgresError`]: an invalid prefix,
    /// pool size or URL, a database that cannot be reached, or tables of a newer schema
    /// version.
    pub async fn connect(
        url: &str,
        options: PostgresOptions,
    ) -> Result<Self, CheckpointStorageError> {
        let pool =
            open_pool(url, &options)
                .await
                .map_err(|source| CheckpointStorageError::Backend {
                    backend: BACKEND,
                    source,
                })?;
        Ok(Self::from_pool(pool, &options.table_prefix))
    }

    /// A storage on `pool` for a prefix whose schema exists.
    fn from_pool(pool: Pool, prefix: &str) -> Self {
        PostgresCheckpointStorage {
            pool,
            prefix: prefix.into(),
            sql: Arc::new(CheckpointSql::new(prefix)),
        }
    }

    /// The table prefix.
    pub fn table_prefix(&self) -> &str {
        &self.prefix
    }

    /// The name of the checkpoint table, `<prefix>checkpoints`.
    pub fn table(&self) -> &str {
        &self.sql.table
    }

    /// Where the checkpoint of `model` lives, for errors.
    fn location(&self, model: &str) -> String {
        format!("table {}, row `{model}`", self.sql.table)
    }

    /// Decodes the `checkpoint` column of `model`'s row.
    fn decode(
        &self,
        model: &str,
        bytes: &[u8],
    ) -> Result<StoredCheckpoint, CheckpointStorageError> {
        let checkpoint = StoredCheckpoint::decode(bytes).map_err(|source| {
            CheckpointStorageError::corrupt(model, self.location(model), source)
        })?;
        if checkpoint.model != model {
            return Err(CheckpointStorageError::ModelMismatch {
                expected: model.to_owned(),
                found: checkpoint.model,
                location: self.location(model),
            });
        }
        Ok(checkpoint)
    }

    /// Upserts `checkpoint` (already `bytes`) inside `txn`, dropping the deltas of the one
    /// it replaces.
    async fn upsert_in(
        &self,
        txn: &deadpool_postgres::Transaction<'_>,
        checkpoint: &StoredCheckpoint,
        bytes: &[u8],
    ) -> Result<(), tokio_postgres::Error> {
        let deltas = txn.prepare_cached(&self.sql.delete_deltas).await?;
        txn.execute(&deltas, &[&checkpoint.model]).await?;
        let row = UpsertRow::new(checkpoint, bytes);
        let statement = txn.prepare_cached(&self.sql.upsert).await?;
        txn.execute(&statement, &row.params()).await.map(drop)
    }

    /// Appends `delta` (already `bytes`) if it builds on the latest stored state; otherwise
    /// returns that state's position (`Some(None)`: no checkpoint).
    async fn append_delta(
        &self,
        delta: &CheckpointDelta,
        bytes: &[u8],
    ) -> Result<Option<Option<u64>>, CheckpointStorageError> {
        let model = delta.model.as_str();
        let position = sql::u64_to_sql(delta.position);
        let base_position = sql::u64_to_sql(delta.base_position);
        let micros = delta.timestamp.timestamp_micros();
        let taken_at = DateTime::from_timestamp_micros(micros).unwrap_or(delta.timestamp);
        with_retry!(&self.pool, checkpoint_backend, |client| {
            // Repeated only when BEGIN fails: a lost COMMIT may have stored the delta, and a
            // repeat would then find it and refuse, which is the safe answer.
            let txn = client.transaction().await.map_err(lost)?;
            let lock = txn
                .prepare_cached(&self.sql.lock_position)
                .await
                .map_err(failed)?;
            // Locks the checkpoint's row: a full store of the same model waits, or wins.
            let Some(row) = txn.query_opt(&lock, &[&model]).await.map_err(failed)? else {
                return Ok(Some(None));
            };
            let base: i64 = row.try_get(0).map_err(failed)?;
            let last = txn
                .prepare_cached(&self.sql.last_delta)
                .await
                .map_err(failed)?;
            let tip: Option<i64> = txn
                .query_one(&last, &[&model])
                .await
                .and_then(|r| r.try_get(0))
                .map_err(failed)?;
            let latest = sql::u64_from_sql(tip.unwrap_or(base));
            if !continues_chain(latest, delta.base_position, delta.position) {
                return Ok(Some(Some(latest)));
            }
            let insert = txn
                .prepare_cached(&self.sql.insert_delta)
                .await
                .map_err(failed)?;
            txn.execute(
                &insert,
                &[&model, &position, &base_position, &taken_at, &bytes],
            )
            .await
            .map_err(failed)?;
            txn.commit().await.map_err(failed)?;
            Ok(None)
        })
    }
}

/// The parameters of an upsert.
struct UpsertRow<'a> {
    model: &'a str,
    catalog_revision: i64,
    model_version: i64,
    shape: i64,
    position: i64,
    taken_at: DateTime<Utc>,
    bytes: &'a [u8],
}

impl<'a> UpsertRow<'a> {
    fn new(checkpoint: &'a StoredCheckpoint, bytes: &'a [u8]) -> Self {
        let micros = checkpoint.timestamp.timestamp_micros();
        UpsertRow {
            model: &checkpoint.model,
            catalog_revision: i64::from(checkpoint.version.catalog_revision),
            model_version: i64::from(checkpoint.version.model_version),
            shape: sql::u64_to_sql(checkpoint.version.shape),
            position: sql::u64_to_sql(checkpoint.position),
            // The precision of the encoded checkpoint, so that the columns agree with it.
            taken_at: DateTime::from_timestamp_micros(micros).unwrap_or(checkpoint.timestamp),
            bytes,
        }
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 7] {
        [
            &self.model,
            &self.catalog_revision,
            &self.model_version,
            &self.shape,
            &self.position,
            &self.taken_at,
            &self.bytes,
        ]
    }
}

#[async_trait]
impl CheckpointStorage for PostgresCheckpointStorage {
    async fn load(&self, model: &str) -> Result<Option<StoredCheckpoint>, CheckpointStorageError> {
        validate_model_name(model)?;
        // One statement: the checkpoint and its deltas as of one snapshot.
        let rows: Vec<(i32, Vec<u8>)> = with_retry!(&self.pool, checkpoint_backend, |client| {
            let statement = client.prepare_cached(&self.sql.load).await.map_err(lost)?;
            let rows = client.query(&statement, &[&model]).await.map_err(lost)?;
            rows.iter()
                .map(|r| Ok((r.try_get::<_, i32>(0)?, r.try_get::<_, Vec<u8>>(2)?)))
                .collect::<Result<Vec<_>, tokio_postgres::Error>>()
                .map_err(failed)
        })?;
        let mut rows = rows.into_iter();
        let Some((0, bytes)) = rows.next() else {
            // No checkpoint (deltas without one cannot be stored).
            return Ok(None);
        };
        let mut checkpoint = self.decode(model, &bytes)?;
        for (_, bytes) in rows {
            let delta = CheckpointDelta::decode(&bytes).map_err(|source| {
                CheckpointStorageError::corrupt(model, self.location(model), source)
            })?;
            checkpoint
                .push_delta(delta)
                .map_err(|source| CheckpointStorageError::BrokenChain {
                    model: model.to_owned(),
                    location: self.location(model),
                    source: Box::new(source),
                })?;
        }
        Ok(Some(checkpoint))
    }

    async fn store(&self, checkpoint: &StoredCheckpoint) -> Result<(), CheckpointStorageError> {
        validate_model_name(&checkpoint.model)?;
        let bytes = checkpoint
            .encode()
            .map_err(|source| CheckpointStorageError::encode(&checkpoint.model, source))?;
        // Drops the deltas of the old checkpoint and writes the same row whenever it runs:
        // safe to repeat.
        with_retry!(&self.pool, checkpoint_backend, |client| {
            let txn = client.transaction().await.map_err(lost)?;
            self.upsert_in(&txn, checkpoint, &bytes)
                .await
                .map_err(lost)?;
            txn.commit().await.map_err(lost)
        })
    }

    async fn delete(&self, model: &str) -> Result<bool, CheckpointStorageError> {
        validate_model_name(model)?;
        with_retry!(&self.pool, checkpoint_backend, |client| {
            // Repeated only when BEGIN fails: a lost DELETE may have committed.
            let statement = client
                .prepare_cached(&self.sql.delete)
                .await
                .map_err(lost)?;
            let deltas = client
                .prepare_cached(&self.sql.delete_deltas)
                .await
                .map_err(lost)?;
            let txn = client.transaction().await.map_err(lost)?;
            txn.execute(&deltas, &[&model]).await.map_err(failed)?;
            let deleted = txn.execute(&statement, &[&model]).await.map_err(failed)?;
            txn.commit().await.map_err(failed)?;
            Ok(deleted > 0)
        })
    }

    async fn list(&self) -> Result<Vec<CheckpointInfo>, CheckpointStorageError> {
        let rows = with_retry!(&self.pool, checkpoint_backend, |client| {
            let statement = client.prepare_cached(&self.sql.list).await.map_err(lost)?;
            client.query(&statement, &[]).await.map_err(lost)
        })?;
        rows.iter().map(|row| self.info(row)).collect()
    }

    async fn store_with_writes(
        &self,
        checkpoint: &StoredCheckpoint,
        writes: &mut (dyn PendingWrites + '_),
    ) -> Result<(), CheckpointStorageError> {
        validate_model_name(&checkpoint.model)?;
        let found = writes.type_name();
        let Some(buffer) = writes.as_any().downcast_mut::<PostgresWrites>() else {
            return Err(CheckpointStorageError::WritesMismatch {
                model: checkpoint.model.clone(),
                found,
            });
        };
        let bytes = checkpoint
            .encode()
            .map_err(|source| CheckpointStorageError::encode(&checkpoint.model, source))?;
        let statements = &buffer.statements;
        with_retry!(&self.pool, checkpoint_backend, |client| {
            let txn = client.transaction().await.map_err(lost)?;
            // Each distinct text is prepared once, within this transaction's connection.
            let mut prepared: Vec<(&str, tokio_postgres::Statement)> = Vec::new();
            for (index, statement) in statements.iter().enumerate() {
                let write_error = |source| {
                    Attempt::Failed(Box::new(PostgresWriteError {
                        model: checkpoint.model.clone(),
                        index,
                        sql: statement.sql.clone(),
                        source,
                    }))
                };
                let found = prepared
                    .iter()
                    .find(|(sql, _)| *sql == statement.sql)
                    .map(|(_, s)| s.clone());
                let prepared_statement = match found {
                    Some(s) => s,
                    None => {
                        let s = txn.prepare(&statement.sql).await.map_err(write_error)?;
                        prepared.push((statement.sql.as_str(), s.clone()));
                        s
                    }
                };
                let params: Vec<&(dyn ToSql + Sync)> = statement
                    .params
                    .iter()
                    .map(|p| &**p as &(dyn ToSql + Sync))
                    .collect();
                txn.execute(&prepared_statement, &params)
                    .await
                    .map_err(write_error)?;
            }
            self.upsert_in(&txn, checkpoint, &bytes)
                .await
                .map_err(failed)?;
            txn.commit().await.map_err(failed)
        })?;
        buffer.clear();
        Ok(())
    }

    fn supports_deltas(&self) -> bool {
        true
    }

    async fn store_delta(&self, delta: &CheckpointDelta) -> Result<(), CheckpointStorageError> {
        let bytes = krescent_core::__backend::encode_delta(delta)?;
        match self.append_delta(delta, &bytes).await? {
            None => Ok(()),
            Some(latest) => Err(CheckpointStorageError::DeltaBaseMismatch {
                model: delta.model.clone(),
                base_position: delta.base_position,
                latest,
            }),
        }
    }
}

/// A failure of this backend as a checkpoint storage error.
fn checkpoint_backend(source: Box<dyn StdError + Send + Sync>) -> CheckpointStorageError {
    CheckpointStorageError::Backend {
        backend: BACKEND,
        source,
    }
}

impl PostgresCheckpointStorage {
    /// The [`CheckpointInfo`] of a `list` row.
    fn info(&self, row: &tokio_postgres::Row) -> Result<CheckpointInfo, CheckpointStorageError> {
        let backend = |e| CheckpointStorageError::Backend {
            backend: BACKEND,
            source: Box::new(PostgresError::Database(e)),
        };
        let model: String = row.try_get(0).map_err(backend)?;
        let revision: i64 = row.try_get(1).map_err(backend)?;
        let version: i64 = row.try_get(2).map_err(backend)?;
        let shape: i64 = row.try_get(3).map_err(backend)?;
        let position: i64 = row.try_get(4).map_err(backend)?;
        let taken_at: RawTimestamp = row.try_get(5).map_err(backend)?;
        let corrupt = |column: &str, what: String| {
            CheckpointStorageError::corrupt(
                &model,
                self.location(&model),
                BucketError::Json {
                    key: column.to_owned(),
                    source: serde::de::Error::custom(what),
                },
            )
        };
        let catalog_revision = u32::try_from(revision).map_err(|_| {
            corrupt(
                "catalog_revision",
                format!("column catalog_revision holds {revision}, not a u32"),
            )
        })?;
        let model_version = u32::try_from(version).map_err(|_| {
            corrupt(
                "model_version",
                format!("column model_version holds {version}, not a u32"),
            )
        })?;
        let timestamp = taken_at.to_utc().ok_or_else(|| {
            corrupt(
                "taken_at",
                "column taken_at holds a time outside the range of DateTime<Utc>".to_owned(),
            )
        })?;
        Ok(CheckpointInfo {
            version: CheckpointVersion::new(
                catalog_revision,
                model_version,
                sql::u64_from_sql(shape),
            ),
            position: sql::u64_from_sql(position),
            timestamp,
            model,
        })
    }
}

/// A `timestamptz` as PostgreSQL sends it: microseconds since 2000-01-01 UTC (`infinity` is
/// `i64::MAX`). Read without the driver's conversion so that a time outside the range of
/// `DateTime<Utc>` is reported as a corrupt row, naming the model, rather than as a decoding
/// failure of the driver.
struct RawTimestamp(i64);

impl RawTimestamp {
    fn to_utc(&self) -> Option<DateTime<Utc>> {
        super::decode::utc_from_pg_micros(self.0)
    }
}

impl<'a> FromSql<'a> for RawTimestamp {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn StdError + Sync + Send>> {
        let bytes: [u8; 8] = raw
            .try_into()
            .map_err(|_| format!("a timestamptz of {} bytes, not 8", raw.len()))?;
        Ok(RawTimestamp(i64::from_be_bytes(bytes)))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::TIMESTAMPTZ
    }
}

// ---------------------------------------------------------------------------------------------
// Connections shared by the PostgreSQL storages

/// How one attempt of an operation failed.
pub(super) enum Attempt {
    /// The connection failed at a point where the operation may run again: if it was lost,
    /// the operation runs again on another connection.
    Lost(tokio_postgres::Error),
    /// The operation failed for good; the error becomes the backend error's source.
    Failed(Box<dyn StdError + Send + Sync>),
}

/// A database error at a point where the operation may safely run again.
pub(super) fn lost(error: tokio_postgres::Error) -> Attempt {
    Attempt::Lost(error)
}

/// A database error after which the operation must not run again.
pub(super) fn failed(error: tokio_postgres::Error) -> Attempt {
    Attempt::Failed(Box::new(PostgresError::Database(error)))
}

/// Whether `error` means the connection is gone (rather than a statement failing on a live
/// connection).
fn connection_lost(error: &tokio_postgres::Error, client: &Object) -> bool {
    if error.is_closed() || client.is_closed() {
        return true;
    }
    if let Some(code) = error.code() {
        return *code == SqlState::ADMIN_SHUTDOWN
            || *code == SqlState::CRASH_SHUTDOWN
            || *code == SqlState::CANNOT_CONNECT_NOW;
    }
    StdError::source(error).is_some_and(|cause| cause.is::<std::io::Error>())
}

/// Runs `$body` (an expression giving `Result<T, Attempt>`, using the pooled connection
/// `$client`) and evaluates to `Result<T, E>`. When the body fails with [`Attempt::Lost`]
/// because the connection is gone, the connection is removed from the pool and the body runs
/// again on another one, as many times as the pool has connections (each may be dead) plus
/// one. `$backend` turns the source of a failure into `E`.
///
/// A macro rather than a function taking a closure: the body's future borrows the
/// connection, and a future returned by a closure for any borrow cannot be shown to be `Send`.
macro_rules! with_retry {
    ($pool:expr, $backend:expr, |$client:ident| $body:expr) => {{
        let pool: &::deadpool_postgres::Pool = $pool;
        let mut retry = $crate::checkpoint::Retry::new(pool);
        loop {
            #[allow(unused_mut)]
            let mut $client = match pool.get().await {
                Ok(client) => client,
                Err(e) => break Err(($backend)(retry.pool_error(e))),
            };
            let outcome: Result<_, $crate::checkpoint::Attempt> = async { $body }.await;
            match retry.next(outcome, $client) {
                $crate::checkpoint::Next::Done(value) => break Ok(value),
                $crate::checkpoint::Next::Again => {}
                $crate::checkpoint::Next::Fail(source) => {
                    break Err(($backend)(source));
                }
            }
        }
    }};
}
pub(super) use with_retry;

/// The attempts of one operation run by [`with_retry!`].
pub(super) struct Retry {
    attempt: usize,
    attempts: usize,
}

/// What [`with_retry!`] does after an attempt.
pub(super) enum Next<T> {
    /// Return the value.
    Done(T),
    /// Run the operation again on another connection.
    Again,
    /// Fail with this source.
    Fail(Box<dyn StdError + Send + Sync>),
}

impl Retry {
    /// Attempts for an operation on `pool`: one per connection it may hold, plus one.
    pub(super) fn new(pool: &Pool) -> Self {
        Retry {
            attempt: 0,
            attempts: pool.status().max_size + 1,
        }
    }

    /// No connection could be had.
    pub(super) fn pool_error(
        &self,
        error: deadpool_postgres::PoolError,
    ) -> Box<dyn StdError + Send + Sync> {
        Box::new(PostgresError::Pool(error))
    }

    /// What to do after an attempt on `client` ended with `outcome`.
    pub(super) fn next<T>(&mut self, outcome: Result<T, Attempt>, client: Object) -> Next<T> {
        self.attempt += 1;
        match outcome {
            Ok(value) => Next::Done(value),
            Err(Attempt::Lost(error))
                if self.attempt < self.attempts && connection_lost(&error, &client) =>
            {
                tracing::debug!(
                    error = %describe(&error),
                    attempt = self.attempt,
                    "a pooled PostgreSQL connection was lost; running the operation again on \
                     another"
                );
                // Out of the pool: the next `get` recycles or opens another connection.
                drop(Object::take(client));
                Next::Again
            }
            Err(Attempt::Lost(error)) => Next::Fail(Box::new(PostgresError::Database(error))),
            Err(Attempt::Failed(source)) => Next::Fail(source),
        }
    }
}

/// Opens a pool of its own for a storage (the settings of [`PostgresEventStore::connect`])
/// and creates or checks the schema of the prefix.
pub(super) async fn open_pool(
    url: &str,
    options: &PostgresOptions,
) -> Result<Pool, Box<dyn StdError + Send + Sync>> {
    let (pool, _) = super::pool_for(url, options)?;
    let tables = Tables::new(&options.table_prefix);
    super::init_schema(&pool, &tables)
        .await
        .map_err(backend_source)?;
    Ok(pool)
}

/// The PostgreSQL error inside a store error of this backend (the error itself otherwise).
fn backend_source(error: StoreError) -> Box<dyn StdError + Send + Sync> {
    match error {
        StoreError::Backend { source, .. } => source,
        other => Box::new(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_timestamps_convert_without_panicking() {
        assert_eq!(
            RawTimestamp(0).to_utc(),
            DateTime::from_timestamp(946_684_800, 0)
        );
        assert_eq!(RawTimestamp(i64::MAX).to_utc(), None);
        assert_eq!(RawTimestamp(i64::MIN).to_utc(), None);
        assert!(RawTimestamp::from_sql(&Type::TIMESTAMPTZ, &[0; 7]).is_err());
        let parsed = RawTimestamp::from_sql(&Type::TIMESTAMPTZ, &5_i64.to_be_bytes()).unwrap();
        assert_eq!(parsed.0, 5);
    }

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

    #[test]
    fn types_are_send_and_sync() {
        fn assert<T: Send + Sync + 'static>() {}
        assert::<PostgresCheckpointStorage>();
        assert::<PostgresWrites>();
        assert::<PostgresWriteError>();
    }
}

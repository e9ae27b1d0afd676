//! [`PostgresCheckpointStorage`]: checkpoints in `<prefix>checkpoints` and their deltas in
//! `<prefix>checkpoint_deltas`, with the statements on them ([`CheckpointSql`]).

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use tokio_postgres::types::ToSql;

use crate::error::{BACKEND, PostgresError, is_transient_source};
use crate::options::open_pool;
use crate::record::RawTimestamp;
use crate::retry::{Attempt, failed, lost, with_retry};
use crate::schema::{u64_from_sql, u64_to_sql};
use crate::{PostgresEventStore, PostgresOptions, PostgresWriteError, PostgresWrites};
use krescent_core::__backend::continues_chain;
use krescent_core::checkpoint::{
    BucketError, CheckpointDelta, CheckpointInfo, CheckpointStorage, CheckpointStorageError,
    CheckpointVersion, PendingWrites, StoredCheckpoint, validate_model_name,
};

/// The statements of the checkpoint storage on `<prefix>checkpoints` and
/// `<prefix>checkpoint_deltas`.
#[derive(Debug)]
pub(crate) struct CheckpointSql {
    /// The table name.
    pub table: String,
    /// `$1` model → the encoded checkpoint (kind 0), then its deltas (kind 1) by position.
    pub load: String,
    /// `$1` model, `$2` catalog revision, `$3` model version, `$4` shape, `$5` position,
    /// `$6` time, `$7` the encoded checkpoint: insert or replace.
    pub upsert: String,
    /// `$1` model → one row if it was deleted.
    pub delete: String,
    /// `$1` model: drops the model's deltas.
    pub delete_deltas: String,
    /// `$1` model → the checkpoint's position, locking its row.
    pub lock_position: String,
    /// `$1` model → the position of the last delta (NULL: none).
    pub last_delta: String,
    /// `$1` model, `$2` position, `$3` base position, `$4` time, `$5` the encoded delta.
    pub insert_delta: String,
    /// Every checkpoint's metadata, in byte order of the model names, with the position and
    /// time of its last delta if it has one.
    pub list: String,
}

impl CheckpointSql {
    /// The statements for a prefix that [`is_valid_prefix`] accepted.
    pub fn new(prefix: &str) -> Self {
        let table = format!("{prefix}checkpoints");
        let deltas = format!("{prefix}checkpoint_deltas");
        CheckpointSql {
            load: format!(
                "SELECT 0 AS kind, position, checkpoint FROM {table} WHERE model = $1 \
                 UNION ALL SELECT 1, position, delta FROM {deltas} WHERE model = $1 \
                 ORDER BY 1, 2"
            ),
            upsert: format!(
                "INSERT INTO {table} \
                 (model, catalog_revision, model_version, shape, position, taken_at, checkpoint) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (model) DO UPDATE SET \
                 catalog_revision = EXCLUDED.catalog_revision, \
                 model_version = EXCLUDED.model_version, shape = EXCLUDED.shape, \
                 position = EXCLUDED.position, taken_at = EXCLUDED.taken_at, \
                 checkpoint = EXCLUDED.checkpoint"
            ),
            delete: format!("DELETE FROM {table} WHERE model = $1 RETURNING true"),
            delete_deltas: format!("DELETE FROM {deltas} WHERE model = $1"),
            lock_position: format!("SELECT position FROM {table} WHERE model = $1 FOR UPDATE"),
            last_delta: format!("SELECT max(position) FROM {deltas} WHERE model = $1"),
            insert_delta: format!(
                "INSERT INTO {deltas} (model, position, base_position, taken_at, delta) \
                 VALUES ($1, $2, $3, $4, $5)"
            ),
            list: format!(
                "SELECT c.model, c.catalog_revision, c.model_version, c.shape, \
                 coalesce(d.position, c.position), coalesce(d.taken_at, c.taken_at) \
                 FROM {table} AS c LEFT JOIN LATERAL (\
                 SELECT position, taken_at FROM {deltas} WHERE model = c.model \
                 ORDER BY position DESC LIMIT 1) AS d ON true \
                 ORDER BY c.model"
            ),
            table,
        }
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
        let pool = open_pool(url, &options).await.map_err(checkpoint_backend)?;
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
        let position = u64_to_sql(delta.position);
        let base_position = u64_to_sql(delta.base_position);
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
            let latest = u64_from_sql(tip.unwrap_or(base));
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
            shape: u64_to_sql(checkpoint.version.shape),
            position: u64_to_sql(checkpoint.position),
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
        let buffer = writes.downcast::<PostgresWrites>(&checkpoint.model)?;
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
        transient: is_transient_source(source.as_ref()),
        source,
    }
}

impl PostgresCheckpointStorage {
    /// The [`CheckpointInfo`] of a `list` row.
    fn info(&self, row: &tokio_postgres::Row) -> Result<CheckpointInfo, CheckpointStorageError> {
        let backend = |e| checkpoint_backend(Box::new(PostgresError::Database(e)));
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
            version: CheckpointVersion::new(catalog_revision, model_version, u64_from_sql(shape)),
            position: u64_from_sql(position),
            timestamp,
            model,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_are_send_and_sync() {
        fn assert<T: Send + Sync + 'static>() {}
        assert::<PostgresCheckpointStorage>();
        assert::<PostgresWrites>();
        assert::<PostgresWriteError>();
    }
}

//! The PostgreSQL backend (feature `postgres`): the event store ([`PostgresEventStore`]),
//! checkpoint storage ([`PostgresCheckpointStorage`], with [`PostgresWrites`] for projection
//! writes committed in the same transaction as a checkpoint) and bookmark storage
//! ([`PostgresBookmarkStorage`]).
//!
//! The storages live in the event store's database next to its tables; get them from an open
//! store ([`PostgresEventStore::checkpoint_storage`], [`PostgresEventStore::bookmark_storage`])
//! to share its pool, or connect them on their own. [`tokio_postgres`] is re-exported, so
//! that users bind [`PostgresWrites`] parameters ([`ToSql`] values) with the same version of
//! the driver.
//!
//! # Schema
//!
//! Every table name starts with the configured prefix (default `krescent_`):
//!
//! | table | content |
//! | --- | --- |
//! | `<prefix>meta` | `(name, value)`: the `schema_version` |
//! | `<prefix>head` | one row: the position of the last committed event |
//! | `<prefix>events` | `position` (primary key), `id uuid`, `type`, `tags json` (an array of `key:value` strings), `recorded_at`, `payload bytea`; index `(type, position)` |
//! | `<prefix>event_tags` | one row per tag of each event: primary key `(tag, type, position)` |
//! | `<prefix>checkpoints` | one row per read model: `model` (primary key), `catalog_revision`, `model_version`, `shape`, `position`, `taken_at`, `checkpoint bytea` (see [`PostgresCheckpointStorage`]) |
//! | `<prefix>bookmarks` | one row per projector: `reader` (primary key), `position` |
//!
//! The schema is created on first use, idempotently, under an advisory lock; a schema written
//! by a newer version of krescent is refused ([`PostgresError::UnsupportedSchemaVersion`]).
//!
//! # Positions under concurrency
//!
//! An append locks the counter row of `<prefix>head` (`UPDATE … RETURNING`), checks the append
//! condition, inserts the batch (`UNNEST` arrays, 1000 rows per statement) and commits, which
//! releases the lock. Positions are therefore assigned in commit order: a reader never sees
//! position `p + 1` before `p` is visible, so it never skips an event that commits late, and a
//! failed or rolled back append gives its positions back (no gaps). The condition is checked
//! after the lock is taken, so the database enforces it atomically.
//!
//! # Subscriptions
//!
//! Each append notifies `<prefix>events` with the new head. A background task per store
//! (shared by its clones) listens on a dedicated connection, with a polling fallback (every
//! [`PostgresOptions::poll_interval`]) and reconnection with backoff when the connection is
//! lost; subscriptions read in batches whenever the head moves. The task ends when the last
//! handle of the store (and the last subscription, which holds one) is dropped.

mod bookmark;
mod checkpoint;
mod listener;
mod sql;

pub use bookmark::PostgresBookmarkStorage;
pub use checkpoint::{
    PostgresCheckpointStorage, PostgresParam, PostgresWriteError, PostgresWrites,
};
/// The PostgreSQL driver, re-exported: bind [`PostgresWrites`] parameters with its
/// [`ToSql`] types.
pub use tokio_postgres;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use parking_lot::RwLock;
use tokio::sync::watch;
use tokio_postgres::NoTls;
use tokio_postgres::types::{FromSql, ToSql, Type};
use tokio_util::sync::{CancellationToken, DropGuard};
use uuid::Uuid;

use super::{EventStore, StoreError, Subscription};
use crate::event::{NewEvent, RecordedEvent, Tag, Tags, validate_type_name};
use crate::query::{AppendCondition, EventQuery};
use sql::{Output, Params, Shape, Tables};

/// The backend name in [`StoreError::Backend`].
const BACKEND: &str = "postgres";

/// Rows per `INSERT … SELECT FROM UNNEST(…)` statement.
const INSERT_CHUNK: usize = 1000;

/// Why the PostgreSQL store failed: the `source` of [`StoreError::Backend`] for this backend.
///
/// ```no_run
/// # async fn f() {
/// use krescent_core::{PostgresError, PostgresEventStore, PostgresOptions};
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
    /// The tables were created by a newer version of krescent.
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
    #[error("{}", checkpoint::describe(.0))]
    Database(#[from] tokio_postgres::Error),
    /// No connection could be taken from the pool (the database is unreachable, or every
    /// connection stayed busy past the timeout).
    #[error("no database connection: {0}")]
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
            StoreError::Backend { backend, source } if *backend == BACKEND => {
                source.downcast_ref::<PostgresError>()
            }
            _ => None,
        }
    }
}

impl From<PostgresError> for StoreError {
    fn from(e: PostgresError) -> Self {
        StoreError::Backend {
            backend: BACKEND,
            source: Box::new(e),
        }
    }
}

fn db(e: tokio_postgres::Error) -> StoreError {
    PostgresError::Database(e).into()
}

fn pool(e: deadpool_postgres::PoolError) -> StoreError {
    PostgresError::Pool(e).into()
}

/// Settings of a [`PostgresEventStore`].
///
/// ```
/// use std::time::Duration;
/// use krescent_core::PostgresOptions;
///
/// let options = PostgresOptions::default()
///     .table_prefix("warehouse_")
///     .pool_size(4)
///     .poll_interval(Duration::from_secs(1));
/// assert_eq!(options.table_prefix, "warehouse_");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PostgresOptions {
    /// Prefix of every table name: `^[a-z_][a-z0-9_]{0,40}$`. Default `krescent_`.
    pub table_prefix: String,
    /// The most connections the pool opens (the listener uses one more). Default 8.
    pub pool_size: usize,
    /// `application_name` of the pool's connections; the listening connection uses
    /// `<application_name> listener`. Default `krescent`.
    pub application_name: String,
    /// How often the head is polled in case a notification was missed. Default 500 ms.
    pub poll_interval: Duration,
    /// How long opening a connection or waiting for a free one may take. Default 10 s.
    pub connect_timeout: Duration,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            table_prefix: "krescent_".to_owned(),
            pool_size: 8,
            application_name: "krescent".to_owned(),
            poll_interval: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

impl PostgresOptions {
    /// Sets [`table_prefix`](Self::table_prefix).
    pub fn table_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.table_prefix = prefix.into();
        self
    }

    /// Sets [`pool_size`](Self::pool_size).
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = size;
        self
    }

    /// Sets [`application_name`](Self::application_name).
    pub fn application_name(mut self, name: impl Into<String>) -> Self {
        self.application_name = name.into();
        self
    }

    /// Sets [`poll_interval`](Self::poll_interval).
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Sets [`connect_timeout`](Self::connect_timeout).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }
}

/// An event store in PostgreSQL: shared by any number of processes, safe under concurrent
/// appenders and subscribers. Cloning gives another handle to the same pool and listener.
///
/// See the [module documentation](self) for the schema and the concurrency design. TLS is not
/// supported yet (connections use `NoTls`).
///
/// ```no_run
/// # async fn f() -> Result<(), krescent_core::StoreError> {
/// use krescent_core::EventStore;
/// use krescent_core::{PostgresEventStore, PostgresOptions};
///
/// let store = PostgresEventStore::connect(
///     "postgres://app@localhost/app",
///     PostgresOptions::default().table_prefix("warehouse_"),
/// )
/// .await?;
/// let head = store.head().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PostgresEventStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    /// The settings of the pool's connections.
    config: tokio_postgres::Config,
    tables: Tables,
    head: Arc<watch::Sender<u64>>,
    /// SQL text per query shape; the statements themselves are prepared once per connection.
    shapes: RwLock<HashMap<Shape, Compiled>>,
    listener_application_name: String,
    /// Stops the listener task when the last handle is dropped.
    _listener: DropGuard,
}

impl fmt::Debug for PostgresEventStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresEventStore")
            .field("table_prefix", &self.inner.tables.prefix)
            .field("head", &*self.inner.head.borrow())
            .finish_non_exhaustive()
    }
}

impl PostgresEventStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/database`, or
    /// the `key=value` form), creates the tables if needed and starts the listener.
    ///
    /// Fails with [`StoreError::Backend`] holding a [`PostgresError`]: an invalid prefix,
    /// pool size or URL, a database that cannot be reached, or tables of a newer schema
    /// version.
    pub async fn connect(url: &str, options: PostgresOptions) -> Result<Self, StoreError> {
        if !sql::is_valid_prefix(&options.table_prefix) {
            return Err(PostgresError::InvalidTablePrefix {
                prefix: options.table_prefix,
            }
            .into());
        }
        if options.pool_size == 0 {
            return Err(PostgresError::InvalidPoolSize.into());
        }
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|source| PostgresError::InvalidUrl { source })?;
        config.connect_timeout(options.connect_timeout);
        config.keepalives_idle(Duration::from_secs(30));
        let mut listener_config = config.clone();
        config.application_name(options.application_name.as_str());
        let listener_application_name = format!("{} listener", options.application_name);
        listener_config.application_name(listener_application_name.as_str());

        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(options.connect_timeout))
            .create_timeout(Some(options.connect_timeout))
            .build()
            .map_err(PostgresError::from)?;

        let tables = Tables::new(&options.table_prefix);
        let head = init_schema(&pool, &tables).await?;

        let head = Arc::new(watch::channel(head).0);
        let cancel = CancellationToken::new();
        let listener = listener::Listener {
            config: listener_config,
            pool: pool.clone(),
            channel: tables.channel.clone(),
            select_head: tables.select_head.clone(),
            head: Arc::clone(&head),
            poll_interval: options.poll_interval.max(Duration::from_millis(1)),
            cancel: cancel.clone(),
        };
        tokio::spawn(listener.run());
        Ok(PostgresEventStore {
            inner: Arc::new(Inner {
                pool,
                config,
                tables,
                head,
                shapes: RwLock::new(HashMap::new()),
                listener_application_name,
                _listener: cancel.drop_guard(),
            }),
        })
    }

    /// The table prefix.
    pub fn table_prefix(&self) -> &str {
        &self.inner.tables.prefix
    }

    /// The `application_name` of the listening connection.
    pub fn listener_application_name(&self) -> &str {
        &self.inner.listener_application_name
    }

    /// The plans PostgreSQL chooses for `query`: `EXPLAIN` of the statement the store runs,
    /// first with the query's values bound (a custom plan), then as the generic plan a
    /// prepared statement may switch to after a few executions. Runs on a connection of its
    /// own. For tests and diagnostics.
    #[doc(hidden)]
    pub async fn explain(&self, query: &EventQuery) -> Result<String, StoreError> {
        let sql = self.sql(query, Output::Rows).sql;
        let params = Params::of(query);
        let (client, connection) = self.inner.config.connect(NoTls).await.map_err(db)?;
        let driver = tokio::spawn(connection);
        let result = async {
            let mut out = format!(
                "-- {}\n-- custom plan\n",
                if self.sql(query, Output::Rows).per_execution {
                    "the store plans this shape at each execution (the custom plan)"
                } else {
                    "the store prepares this shape once per connection (PostgreSQL may switch \
                     to the generic plan after five executions)"
                }
            );
            for row in client
                .query_typed(&format!("EXPLAIN {sql}"), &params.typed())
                .await?
            {
                out.push_str(row.try_get::<_, &str>(0)?);
                out.push('\n');
            }
            // PostgreSQL 15 has no EXPLAIN (GENERIC_PLAN): prepare the statement, force the
            // generic plan and explain an execution. The server quotes the values.
            let typed = params.typed();
            let types: Vec<&str> = typed.iter().map(|(_, t)| t.name()).collect();
            client
                .batch_execute(&format!(
                    "SET plan_cache_mode = force_generic_plan; \
                     PREPARE krescent_explain ({}) AS {sql}",
                    types.join(", ")
                ))
                .await?;
            let values = params.texts();
            let explain: String = client
                .query_one(
                    "SELECT 'EXPLAIN EXECUTE krescent_explain(' || \
                     array_to_string(ARRAY(SELECT quote_literal(v) FROM unnest($1::text[]) v), ', ') \
                     || ')'",
                    &[&values],
                )
                .await?
                .try_get(0)?;
            out.push_str("-- generic plan\n");
            for message in client.simple_query(&explain).await? {
                if let tokio_postgres::SimpleQueryMessage::Row(row) = message {
                    out.push_str(row.get(0).unwrap_or_default());
                    out.push('\n');
                }
            }
            Ok::<_, tokio_postgres::Error>(out)
        }
        .await;
        drop(client);
        driver.abort();
        result.map_err(db)
    }

    /// Drops every table of this store. For tests and tools; the store is unusable after.
    #[doc(hidden)]
    pub async fn drop_tables(&self) -> Result<(), StoreError> {
        let client = self.inner.pool.get().await.map_err(pool)?;
        client
            .batch_execute(&self.inner.tables.drop_schema())
            .await
            .map_err(db)
    }

    /// The statement for `query`'s shape, generated once per shape.
    fn sql(&self, query: &EventQuery, output: Output) -> Compiled {
        let shape = Shape::of(query, output);
        if let Some(c) = self.inner.shapes.read().get(&shape) {
            return c.clone();
        }
        let compiled = Compiled {
            sql: sql::build(&self.inner.tables, &shape).into(),
            per_execution: shape.is_value_sensitive(),
        };
        self.inner
            .shapes
            .write()
            .entry(shape)
            .or_insert(compiled)
            .clone()
    }

    /// The first position at which `condition` fails, read inside the append transaction
    /// after the head lock.
    async fn conflict(
        &self,
        txn: &tokio_postgres::Transaction<'_>,
        statement: Option<&tokio_postgres::Statement>,
        compiled: &Compiled,
        query: &EventQuery,
    ) -> Result<Option<u64>, StoreError> {
        let params = Params::of(query);
        let row = match statement {
            Some(stmt) => txn.query_opt(stmt, &params.untyped()).await,
            None => txn.query_typed_opt(&compiled.sql, &params.typed()).await,
        }
        .map_err(db)?;
        row.map(|r| r.try_get::<_, i64>(0).map_err(db).and_then(to_position))
            .transpose()
    }

    /// Runs a query on a pooled connection.
    async fn query(
        &self,
        query: &EventQuery,
        output: Output,
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        let compiled = self.sql(query, output);
        let params = Params::of(query);
        let client = self.inner.pool.get().await.map_err(pool)?;
        if compiled.per_execution {
            client.query_typed(&compiled.sql, &params.typed()).await
        } else {
            let stmt = client.prepare_cached(&compiled.sql).await.map_err(db)?;
            client.query(&stmt, &params.untyped()).await
        }
        .map_err(db)
    }
}

/// The SQL of a query shape, and how to run it.
#[derive(Clone)]
struct Compiled {
    sql: Arc<str>,
    /// Planned at each execution (unnamed statement) rather than prepared once.
    per_execution: bool,
}

/// Creates or checks the schema under an advisory lock; returns the head.
async fn init_schema(pool: &Pool, tables: &Tables) -> Result<u64, StoreError> {
    let mut client = pool.get().await.map_err(pool_err)?;
    let txn = client.transaction().await.map_err(db)?;
    txn.execute(
        "SELECT pg_advisory_xact_lock($1)",
        &[&lock_key(&tables.prefix)],
    )
    .await
    .map_err(db)?;
    txn.batch_execute(&tables.create_meta()).await.map_err(db)?;
    let found: Option<i64> = txn
        .query_opt(&tables.select_version(), &[])
        .await
        .map_err(db)?
        .map(|r| r.try_get(0))
        .transpose()
        .map_err(db)?;
    if let Some(found) = found {
        if found > sql::SCHEMA_VERSION {
            return Err(PostgresError::UnsupportedSchemaVersion {
                prefix: tables.prefix.clone(),
                found,
                supported: sql::SCHEMA_VERSION,
            }
            .into());
        }
    }
    txn.batch_execute(&tables.create_schema())
        .await
        .map_err(db)?;
    let head: i64 = txn
        .query_one(&tables.select_head, &[])
        .await
        .map_err(db)?
        .try_get(0)
        .map_err(db)?;
    txn.commit().await.map_err(db)?;
    to_position(head)
}

fn pool_err(e: deadpool_postgres::PoolError) -> StoreError {
    pool(e)
}

/// The advisory lock key of a prefix's schema (FNV-1a of a namespaced name).
fn lock_key(prefix: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in "krescent.schema:".bytes().chain(prefix.bytes()) {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}

fn to_position(p: i64) -> Result<u64, StoreError> {
    u64::try_from(p).map_err(|_| {
        PostgresError::Corrupt {
            position: p,
            what: "negative position".to_owned(),
        }
        .into()
    })
}

/// The raw text of a `json` value.
struct JsonText<'a>(&'a [u8]);

impl<'a> FromSql<'a> for JsonText<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(JsonText(raw))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSON
    }
}

/// Tags from the JSON array of the `tags` column.
fn parse_tags(json: &[u8]) -> Result<Tags, String> {
    let tags: Result<Tags, _> = match serde_json::from_slice::<Vec<&str>>(json) {
        Ok(texts) => texts.into_iter().map(Tag::parse).collect(),
        // Escaped characters cannot be borrowed.
        Err(_) => serde_json::from_slice::<Vec<String>>(json)
            .map_err(|e| format!("tags are not a JSON array of strings: {e}"))?
            .iter()
            .map(|t| Tag::parse(t))
            .collect(),
    };
    tags.map_err(|e| e.to_string())
}

/// Decodes rows of [`sql::EVENT_COLUMNS`], sharing one `Arc<str>` per type name.
fn decode_rows(rows: &[tokio_postgres::Row]) -> Result<Vec<RecordedEvent>, StoreError> {
    let mut types: Vec<Arc<str>> = Vec::new();
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let position: i64 = row.try_get(0).map_err(db)?;
        let id: Uuid = row.try_get(1).map_err(db)?;
        let type_name: &str = row.try_get(2).map_err(db)?;
        let tags_json: JsonText<'_> = row.try_get(3).map_err(db)?;
        let timestamp: DateTime<Utc> = row.try_get(4).map_err(db)?;
        let payload: &[u8] = row.try_get(5).map_err(db)?;
        let event_type = match types.iter().find(|t| &***t == type_name) {
            Some(t) => Arc::clone(t),
            None => {
                let t: Arc<str> = Arc::from(type_name);
                types.push(Arc::clone(&t));
                t
            }
        };
        let tags =
            parse_tags(tags_json.0).map_err(|what| PostgresError::Corrupt { position, what })?;
        out.push(RecordedEvent {
            position: to_position(position)?,
            id,
            event_type,
            tags,
            timestamp,
            data: bytes::Bytes::copy_from_slice(payload),
        });
    }
    Ok(out)
}

#[async_trait]
impl EventStore for PostgresEventStore {
    async fn append(
        &self,
        events: Vec<NewEvent>,
        condition: Option<AppendCondition>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        for (index, e) in events.iter().enumerate() {
            validate_type_name(&e.event_type)
                .map_err(|source| StoreError::InvalidEvent { index, source })?;
        }
        let conflict_query = condition.as_ref().map(AppendCondition::conflict_query);
        if events.is_empty() {
            // Nothing to write: only report a failing condition.
            if let Some(query) = &conflict_query {
                if let Some(&position) = self.positions(query).await?.first() {
                    return Err(StoreError::Conflict { position });
                }
            }
            return Ok(Vec::new());
        }

        // Everything that does not need the lock is prepared before taking it.
        let n = events.len();
        let ids: Vec<Uuid> = crate::event::ids::new_ids(n);
        let mut literals = Vec::with_capacity(n);
        for e in &events {
            let mut s = String::with_capacity(
                2 + e.tags.iter().map(|t| t.as_str().len() + 3).sum::<usize>(),
            );
            sql::json_array(e.tags.iter().map(Tag::as_str), &mut s);
            literals.push(s);
        }
        let tables = &self.inner.tables;
        let conflict_sql = conflict_query
            .as_ref()
            .map(|q| self.sql(q, Output::Positions));

        let mut client = self.inner.pool.get().await.map_err(pool)?;
        let lock = client.prepare_cached(&tables.lock_head).await.map_err(db)?;
        let insert_events = client
            .prepare_cached(&tables.insert_events)
            .await
            .map_err(db)?;
        let insert_tags = client
            .prepare_cached(&tables.insert_tags)
            .await
            .map_err(db)?;
        let conflict_stmt = match &conflict_sql {
            Some(c) if !c.per_execution => Some(client.prepare_cached(&c.sql).await.map_err(db)?),
            _ => None,
        };
        let notify = client
            .prepare_cached("SELECT pg_notify($1, $2)")
            .await
            .map_err(db)?;

        let txn = client.transaction().await.map_err(db)?;
        let n_i64 = i64::try_from(n).unwrap_or(i64::MAX);
        // The lock and the condition are pipelined; the condition runs after the lock.
        let lock_params: [&(dyn ToSql + Sync); 1] = [&n_i64];
        let locked = txn.query_one(&lock, &lock_params);
        let (row, conflict) = match (&conflict_sql, &conflict_query) {
            (Some(compiled), Some(query)) => {
                futures::join!(
                    locked,
                    self.conflict(&txn, conflict_stmt.as_ref(), compiled, query)
                )
            }
            _ => (locked.await, Ok(None)),
        };
        let row = row.map_err(db)?;
        if let Some(position) = conflict? {
            // Dropping the transaction rolls it back.
            return Err(StoreError::Conflict { position });
        }
        let head: i64 = row.try_get(0).map_err(db)?;
        let timestamp: DateTime<Utc> = row.try_get(1).map_err(db)?;
        let first = head - n_i64 + 1;
        let positions: Vec<i64> = (first..=head).collect();

        let mut tag_rows: (Vec<&str>, Vec<&str>, Vec<i64>) = Default::default();
        for (e, &p) in events.iter().zip(&positions) {
            for tag in e.tags.iter() {
                tag_rows.0.push(tag.as_str());
                tag_rows.1.push(&e.event_type);
                tag_rows.2.push(p);
            }
        }
        let chunks: Vec<_> = (0..n).step_by(INSERT_CHUNK).collect();
        let event_params: Vec<(Vec<i64>, Vec<Uuid>, Vec<&str>, Vec<&str>, Vec<&[u8]>)> = chunks
            .iter()
            .map(|&start| {
                let end = (start + INSERT_CHUNK).min(n);
                (
                    positions[start..end].to_vec(),
                    ids[start..end].to_vec(),
                    events[start..end].iter().map(|e| &*e.event_type).collect(),
                    literals[start..end].iter().map(String::as_str).collect(),
                    events[start..end].iter().map(|e| &e.payload[..]).collect(),
                )
            })
            .collect();
        let tag_params: Vec<(&[&str], &[&str], &[i64])> = (0..tag_rows.0.len())
            .step_by(INSERT_CHUNK)
            .map(|start| {
                let end = (start + INSERT_CHUNK).min(tag_rows.0.len());
                (
                    &tag_rows.0[start..end],
                    &tag_rows.1[start..end],
                    &tag_rows.2[start..end],
                )
            })
            .collect();
        let head_text = head.to_string();
        let inserts: Vec<_> = event_params
            .iter()
            .map(|(p, i, t, g, d)| {
                let params: [&(dyn ToSql + Sync); 6] = [p, i, t, g, d, &timestamp];
                txn.execute_raw(&insert_events, params)
            })
            .collect();
        let tag_futures: Vec<_> = tag_params
            .iter()
            .map(|(g, t, p)| {
                let params: [&(dyn ToSql + Sync); 3] = [g, t, p];
                txn.execute_raw(&insert_tags, params)
            })
            .collect();
        // All inserts and the notification are pipelined.
        let notify_params: [&(dyn ToSql + Sync); 2] = [&tables.channel, &head_text];
        let (inserted, tagged, notified) = futures::join!(
            futures::future::try_join_all(inserts),
            futures::future::try_join_all(tag_futures),
            txn.execute(&notify, &notify_params),
        );
        inserted.map_err(db)?;
        tagged.map_err(db)?;
        notified.map_err(db)?;
        txn.commit().await.map_err(db)?;
        let head = to_position(head)?;
        listener::publish(&self.inner.head, head);

        let first = to_position(first)?;
        Ok(events
            .into_iter()
            .zip(ids)
            .enumerate()
            .map(|(k, (e, id))| RecordedEvent {
                position: first + k as u64,
                id,
                event_type: e.event_type,
                tags: e.tags,
                timestamp,
                data: e.payload,
            })
            .collect())
    }

    async fn read(&self, query: &EventQuery) -> Result<Vec<RecordedEvent>, StoreError> {
        if query.is_empty() {
            return Ok(Vec::new());
        }
        let rows = self.query(query, Output::Rows).await?;
        decode_rows(&rows)
    }

    async fn head(&self) -> Result<u64, StoreError> {
        let client = self.inner.pool.get().await.map_err(pool)?;
        let stmt = client
            .prepare_cached(&self.inner.tables.select_head)
            .await
            .map_err(db)?;
        let row = client.query_one(&stmt, &[]).await.map_err(db)?;
        let head = to_position(row.try_get(0).map_err(db)?)?;
        listener::publish(&self.inner.head, head);
        Ok(head)
    }

    fn subscribe(&self, query: EventQuery, after: u64, cancel: CancellationToken) -> Subscription {
        Subscription::polling(
            self.clone(),
            query,
            after,
            self.inner.head.subscribe(),
            cancel,
        )
    }
}

impl PostgresEventStore {
    /// The positions `query` selects (for conditions checked outside an append).
    async fn positions(&self, query: &EventQuery) -> Result<Vec<u64>, StoreError> {
        if query.is_empty() {
            return Ok(Vec::new());
        }
        let rows = self.query(query, Output::Positions).await?;
        rows.iter()
            .map(|r| r.try_get::<_, i64>(0).map_err(db).and_then(to_position))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip_through_json() {
        let tags = Tags::parse(["a:x\"y", "b:c\\d", "c:{,}", "d:\u{1}\n", "e:grüße"]).unwrap();
        let mut s = String::new();
        sql::json_array(tags.iter().map(Tag::as_str), &mut s);
        let parsed: Vec<String> = serde_json::from_str(&s).unwrap();
        assert_eq!(
            parsed,
            tags.iter()
                .map(|t| t.as_str().to_owned())
                .collect::<Vec<_>>()
        );
        assert_eq!(parse_tags(s.as_bytes()).unwrap(), tags);
        assert_eq!(parse_tags(b"[]").unwrap(), Tags::empty());
        assert_eq!(
            parse_tags(br#"["p:1","q:2"]"#).unwrap(),
            Tags::parse(["p:1", "q:2"]).unwrap()
        );
        assert!(parse_tags(b"{}").is_err());
        assert!(parse_tags(br#"["no separator"]"#).is_err());
    }

    #[test]
    fn array_literals_escape_quotes_and_backslashes() {
        let tags = Tags::parse(["a:x\"y", "b:c\\d", "c:{,}"]).unwrap();
        let mut s = String::new();
        sql::array_literal(tags.iter().map(Tag::as_str), &mut s);
        assert_eq!(s, r#"{"a:x\"y","b:c\\d","c:{,}"}"#);
        let mut s = String::new();
        sql::array_literal(std::iter::empty(), &mut s);
        assert_eq!(s, "{}");
    }

    #[test]
    fn store_and_options_are_send_sync() {
        fn assert<T: Send + Sync + Clone + fmt::Debug>() {}
        assert::<PostgresEventStore>();
        assert::<PostgresOptions>();
        fn error<T: std::error::Error + Send + Sync + 'static>() {}
        error::<PostgresError>();
    }
}

//! The PostgreSQL backend (the facade's feature `postgres`): the event store ([`PostgresEventStore`]),
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
//! # Schema (version 1)
//!
//! Every table name starts with the configured prefix (default `krescent_`):
//!
//! | table | content |
//! | --- | --- |
//! | `<prefix>meta` | `(name, value)`: the `schema_version` |
//! | `<prefix>head` | one row: the position and time of the last append |
//! | `<prefix>events` | `position` (primary key), `id uuid`, `type`, `tags bytea` (each tag's length and text), `recorded_at`, `payload bytea`, `tag` (the event's smallest tag, NULL without tags), `type_id` (the type's id in `<prefix>types`); index `(type_id, position)`; index `(position >> 15, tag, type_id, position)` of the events with a tag |
//! | `<prefix>types` | one row per stored type name: `id` (primary key), `name` (unique) |
//! | `<prefix>extra_tags` | one row per further tag of each event: `tag`, `type`, `position`, `seg` (`position >> 15`, checked); primary key `(seg, tag, type, position)` |
//! | `<prefix>tag_starts` | one row per (tag, type) pair ever stored: `seg`, the first segment holding it; primary key `(tag, type)`, including `seg` |
//! | `<prefix>checkpoints` | one row per read model: `model` (primary key), `catalog_revision`, `model_version`, `shape`, `position`, `taken_at`, `checkpoint bytea` (see [`PostgresCheckpointStorage`]) |
//! | `<prefix>checkpoint_deltas` | checkpoint deltas: primary key `(model, position)`, `base_position`, `taken_at`, `delta bytea` |
//! | `<prefix>bookmarks` | one row per projector: `reader` (primary key), `position` |
//!
//! An event's smallest tag (in byte order, the order of [`Tags`](krescent_core::Tags)) is a column
//! of its row, and only its further tags are rows of `extra_tags`: with one tag per event,
//! the most common case, an append writes no tag row at all, only the entry of the tag index
//! on `events` (at 1M events, about 20% less server CPU per batch of 1,000 than one row per
//! tag in a table of their own). A tag query reads both indexes, which have the same key.
//! The tags of a query item are sorted too, so an event carrying all of them has either the
//! item's smallest tag in `events.tag` or all of them in `extra_tags`: the query drives from
//! the smallest tag in each index and checks the others in `extra_tags` alone.
//!
//! The indexes of `events` hold each type as a 4-byte id rather than its name: an insertion
//! compares integers instead of strings, and the keys are shorter (a batch of 1,000 appended
//! 0.5% to 7% faster than with names, in three A/B pairs). Ids are given by the append that stores a name's
//! first event, under the head's lock and in its transaction, so a name has an id exactly
//! when an event of it is committed. Queries name types, and each statement maps the names
//! to ids itself (`type_id = (SELECT id FROM <prefix>types WHERE name = $n)`), in its own
//! snapshot: a reader never misses a type created after it last looked.
//!
//! Both tag indexes are cut into *segments* of 32,768 positions, and their key starts with
//! the segment. An append's tag entries therefore all land in the pages of the newest
//! segment (a few hundred, which stay in memory), instead of one page per event anywhere in
//! an index that grows with the store: a key starting with the tag dirties about one page per
//! event (and, after each checkpoint, writes a full-page image of it to the WAL), which made
//! the tag insert the costliest statement of a batched append. A tag query walks the
//! segments in its direction, one probe of each tag index per segment (`generate_series` in
//! a nested loop that stops at the limit), from the pair's first segment, read in
//! `tag_starts`, to the head's; a pair never stored costs a single probe of `tag_starts` and
//! visits no segment. An append inserts into `tag_starts` only the pairs the store handle has
//! not seen committed before (`ON CONFLICT DO NOTHING`, under the head's lock, so the first
//! segment is the earliest). The costs that remain: a tag stored long ago and rarely since,
//! for which a backward query visits every segment down to its latest event (at 1M events,
//! 31 segments); and a fixed cost per query, as PostgreSQL starts the walk's plan of about a
//! dozen nodes at every execution (at 1M events the init query took 1.55 to 1.6 times a prepared
//! `SELECT 1` on one machine, 2.3 to 2.4 times on a slower one, where a single index probe
//! took 1.3 times).
//!
//! Type names and tags are compared bytewise (`COLLATE "C"`), whatever the database's locale.
//! The schema is created on first use, idempotently, under an advisory lock. Until 1.0 a
//! change of the schema edits version 1 in place: there are no migrations. Tables of any
//! other version are refused
//! ([`PostgresError::UnsupportedSchemaVersion`]).
//!
//! # Positions under concurrency
//!
//! An append locks the counter row of `<prefix>head` (`UPDATE … RETURNING`), checks the append
//! condition, inserts the batch (`UNNEST` arrays, 1000 rows per statement: events, tag rows,
//! new (tag, type) pairs) and commits, which releases the lock. Positions are therefore
//! assigned in commit order: a reader never sees position `p + 1` before `p` is visible, so it
//! never skips an event that commits late, and a failed or rolled back append gives its
//! positions back (no gaps). The condition is checked after the lock is taken, so the database
//! enforces it atomically.
//!
//! The statements of an append are pipelined: the inserts take their positions and time from
//! the locked counter row rather than from the client, so an append without a condition is
//! one round trip (`BEGIN`, lock, inserts, notification, `COMMIT`); one with a condition is
//! two, as the condition's result decides whether the inserts are sent.
//!
//! # Reads
//!
//! Paged forward reads are read ahead (see [`EventStore::read`]): once a reader has asked for
//! the page that continues its previous full page, each further full page it gets starts the
//! read of the next one on another pooled connection, while the caller handles this one. A
//! page read ahead is used only if it is full (a full page never changes); a short one is
//! read again. When the next page selects every position it spans (a query that selects every
//! event there, below), the page after it is read at the same time on a third connection,
//! starting one page size further: positions have no gaps, so that is where the next page
//! ends. Were a gap there (rows deleted by hand), that page would go unused.
//!
//! A query whose untagged items name every type stored up to the last position the store
//! has looked at (a read model's query usually does) is read as a plain position range up to
//! there, and with its type filter beyond; the stored types are looked up in `<prefix>types`
//! on the first such read and again once the store has grown well past that position
//! (see `coverage.rs`). A query with an item of no types and no tags is read as a range.
//!
//! Rows are decoded as they arrive from their binary values, without the driver's
//! conversions: type names once per page, tag lists once and cached by their stored bytes,
//! the time once per append; the payloads of a page share one buffer. A row that cannot be
//! decoded is a [`PostgresError::Corrupt`] naming its position.
//!
//! # Subscriptions
//!
//! Each append notifies `<prefix>events` with the new head. A background task per store
//! (shared by its clones) listens on a dedicated connection, with a polling fallback (every
//! [`PostgresOptions::poll_interval`]) and reconnection with backoff when the connection is
//! lost; subscriptions read in batches whenever the head moves. The task ends when the last
//! handle of the store (and the last subscription, which holds one) is dropped.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod bookmark;
mod checkpoint;
mod coverage;
mod decode;
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
use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, QueueMode, RecyclingMethod, Runtime};
use futures::FutureExt as _;
use parking_lot::{Mutex, RwLock};

use krescent_core::__backend::FastState;
use krescent_core::__backend::{ReadAhead, read_pages_ahead};
use tokio::sync::watch;
use tokio_postgres::NoTls;
use tokio_postgres::types::ToSql;
use tokio_util::sync::{CancellationToken, DropGuard};
use uuid::Uuid;

use coverage::{Coverage, StoredTypes};
use decode::{Decoding, Page};
use krescent_core::event::{NewEvent, RecordedEvent, Tag};
use krescent_core::query::{AppendCondition, EventQuery};
use krescent_core::store::{EventStore, StoreError, Subscription};
use sql::{Output, Params, Shape, Tables};

/// The backend name in [`StoreError::Backend`].
const BACKEND: &str = "postgres";

/// The most rows a read allocates room for before it sees them.
const EXPECTED_ROWS: usize = 1000;

/// Rows per `INSERT … SELECT FROM UNNEST(…)` statement.
const INSERT_CHUNK: usize = 1000;

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
/// use krescent_postgres::PostgresOptions;
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
    /// Connections are opened on demand and handed out most recently returned first, so a
    /// single caller keeps reusing one warm connection and server process.
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
/// use krescent_postgres::{PostgresEventStore, PostgresOptions};
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
    decoding: Mutex<Decoding>,
    ahead: Mutex<ReadAhead>,
    /// The (type, tag) pairs this handle saw committed to `<prefix>tag_starts`, which an
    /// append need not send again ([`KnownStarts`]).
    starts: Mutex<KnownStarts>,
    /// The type names this handle saw committed to `<prefix>types` (names are never removed),
    /// whose ids an append need not ask for.
    types: Mutex<std::collections::HashSet<Box<str>, FastState>>,
    /// The statement reading the stored types ([`sql::stored_types`]).
    stored_types_sql: String,
    /// The stored types, once read ([`coverage`]).
    stored_types: RwLock<Option<Arc<StoredTypes>>>,
    /// Held while the stored types are read, so that concurrent reads do not all read them.
    reading_types: tokio::sync::Mutex<()>,
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
        let (pool, config) = pool_for(url, &options)?;
        let mut listener_config = config.clone();
        let listener_application_name = format!("{} listener", options.application_name);
        listener_config.application_name(listener_application_name.as_str());
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
        let stored_types_sql = sql::stored_types(&tables);
        Ok(PostgresEventStore {
            inner: Arc::new(Inner {
                pool,
                config,
                tables,
                head,
                shapes: RwLock::new(HashMap::new()),
                decoding: Mutex::new(Decoding::default()),
                ahead: Mutex::new(ReadAhead::default()),
                starts: Mutex::new(KnownStarts::default()),
                types: Mutex::new(std::collections::HashSet::default()),
                stored_types_sql,
                stored_types: RwLock::new(None),
                reading_types: tokio::sync::Mutex::new(()),
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
    /// prepared statement may switch to after a few executions; for a query read as a
    /// position range up to some position and with its filter beyond (see the module
    /// documentation), both statements. Runs on a connection of its own. For tests and
    /// diagnostics.
    #[doc(hidden)]
    pub async fn explain(&self, query: &EventQuery) -> Result<String, StoreError> {
        let parts: Vec<(String, EventQuery)> = match self.coverage(query).await? {
            Coverage::Everything if query.items().len() > 1 => vec![(
                "-- read as a range: an item selects every event\n".to_owned(),
                coverage::as_range(query, None),
            )],
            Coverage::Through(through) => {
                let mut parts = vec![(
                    format!(
                        "-- up to position {through} every event has one of the query's \
                         types: read as a range\n"
                    ),
                    coverage::as_range(query, Some(through)),
                )];
                if let Some(rest) = coverage::rest(query, through, 0) {
                    parts.push((format!("-- after position {through}\n"), rest));
                }
                parts
            }
            _ => vec![(String::new(), query.clone())],
        };
        let (client, connection) = self.inner.config.connect(NoTls).await.map_err(db)?;
        let driver = tokio::spawn(connection);
        let result = async {
            let mut out = String::new();
            for (k, (note, part)) in parts.iter().enumerate() {
                out.push_str(note);
                self.explain_statement(&client, part, k, &mut out).await?;
            }
            Ok::<_, tokio_postgres::Error>(out)
        }
        .await;
        drop(client);
        driver.abort();
        result.map_err(db)
    }

    /// Appends the custom and the generic plan of the statement of `query` to `out`, using
    /// the prepared statement name `krescent_explain_<k>`.
    async fn explain_statement(
        &self,
        client: &tokio_postgres::Client,
        query: &EventQuery,
        k: usize,
        out: &mut String,
    ) -> Result<(), tokio_postgres::Error> {
        let compiled = self.sql(query, Output::Rows);
        let sql = &compiled.sql;
        let params = Params::of(query);
        out.push_str(&format!(
            "-- {}\n-- custom plan\n",
            if compiled.per_execution {
                "the store plans this shape at each execution (the custom plan)"
            } else {
                "the store prepares this shape once per connection (PostgreSQL may switch \
                 to the generic plan after five executions)"
            }
        ));
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
                 PREPARE krescent_explain_{k} ({}) AS {sql}",
                types.join(", ")
            ))
            .await?;
        let values = params.texts();
        let explain: String = client
            .query_one(
                &format!(
                    "SELECT 'EXPLAIN EXECUTE krescent_explain_{k}(' || \
                     array_to_string(ARRAY(SELECT quote_literal(v) FROM unnest($1::text[]) v), \
                     ', ') || ')'"
                ),
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
        client.batch_execute("RESET plan_cache_mode").await
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

/// One statement of an append's pipeline: a row for the counter row's lock and the
/// condition, nothing for the others.
type Step<'a> = std::pin::Pin<
    Box<
        dyn Future<Output = Result<Option<tokio_postgres::Row>, tokio_postgres::Error>> + Send + 'a,
    >,
>;

/// Runs `steps` concurrently on one connection, which pipelines them: each is polled for the
/// first time in order, and a statement is sent when first polled, so the server receives
/// them in this order (the transaction's `BEGIN` first, its `COMMIT` last). The results come
/// back in the same order.
async fn in_order(
    mut steps: Vec<Step<'_>>,
) -> Vec<Result<Option<tokio_postgres::Row>, tokio_postgres::Error>> {
    let mut results: Vec<Option<Result<_, _>>> = steps.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (step, result) in steps.iter_mut().zip(results.iter_mut()) {
            if result.is_none() {
                match step.as_mut().poll(cx) {
                    Poll::Ready(r) => *result = Some(r),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    results.into_iter().flatten().collect()
}

/// Rolls back the transaction of an append that did not see it end (a failed round trip, a
/// conflict, or the append's future dropped midway) before the connection returns to the
/// pool: the `ROLLBACK` is queued behind the statements already sent, without waiting.
struct OpenTransaction<'a> {
    client: &'a tokio_postgres::Client,
    open: bool,
}

impl Drop for OpenTransaction<'_> {
    fn drop(&mut self) {
        if self.open {
            // One poll sends the statement; its reply is discarded.
            let _ = self.client.batch_execute("ROLLBACK").now_or_never();
        }
    }
}

/// The first position at which an append's condition fails (the row of its conflict
/// query), read inside the append's transaction after the counter row's lock.
async fn conflict(
    client: &tokio_postgres::Client,
    statement: Option<&tokio_postgres::Statement>,
    compiled: &Compiled,
    query: &EventQuery,
) -> Result<Option<tokio_postgres::Row>, tokio_postgres::Error> {
    let params = Params::of(query);
    match statement {
        Some(stmt) => client.query_opt(stmt, &params.untyped()).await,
        None => client.query_typed_opt(&compiled.sql, &params.typed()).await,
    }
}

/// Rows of `(tag, type, position relative to the new head)` in slices of at most
/// [`INSERT_CHUNK`], one statement each.
#[allow(clippy::type_complexity)]
fn chunks<'a>(
    rows: &'a (Vec<&'a str>, Vec<&'a str>, Vec<i64>),
) -> Vec<(&'a [&'a str], &'a [&'a str], &'a [i64])> {
    (0..rows.0.len())
        .step_by(INSERT_CHUNK)
        .map(|start| {
            let end = (start + INSERT_CHUNK).min(rows.0.len());
            (
                &rows.0[start..end],
                &rows.1[start..end],
                &rows.2[start..end],
            )
        })
        .collect()
}

/// The most (type, tag) pairs [`KnownStarts`] holds; it starts over when full.
const KNOWN_STARTS: usize = 1 << 18;

/// The (type, tag) pairs known to have their row in `<prefix>tag_starts`: recorded after the
/// append that sent them committed. A row is never deleted, so a pair known here needs no
/// row; an append sends only the pairs it does not know (usually none, once the store's tags
/// have been seen), which spares the server a conflicting insert per tag.
#[derive(Default)]
struct KnownStarts {
    /// `type`, a NUL byte (which no stored text holds), then the tag.
    pairs: std::collections::HashSet<String, FastState>,
}

impl KnownStarts {
    /// Writes the key of a pair into `out` (cleared first).
    fn write_key(event_type: &str, tag: &str, out: &mut String) {
        out.clear();
        out.push_str(event_type);
        out.push('\0');
        out.push_str(tag);
    }

    fn contains(&self, key: &str) -> bool {
        self.pairs.contains(key)
    }

    fn extend(&mut self, keys: impl ExactSizeIterator<Item = String>) {
        if self.pairs.len() + keys.len() > KNOWN_STARTS {
            self.pairs.clear();
        }
        self.pairs.extend(keys);
    }
}

/// The SQL of a query shape, and how to run it.
#[derive(Clone)]
struct Compiled {
    sql: Arc<str>,
    /// Planned at each execution (unnamed statement) rather than prepared once.
    per_execution: bool,
}

/// `sql` prepared on `client` (once per connection) if `needed`.
async fn prepare_if(
    client: &deadpool_postgres::ClientWrapper,
    needed: bool,
    sql: &str,
) -> Result<Option<tokio_postgres::Statement>, StoreError> {
    if !needed {
        return Ok(None);
    }
    client.prepare_cached(sql).await.map(Some).map_err(db)
}

/// Checks the options and builds the connection pool (connections are opened on demand):
/// reused most recently returned first, so that a lone reader keeps one warm connection and
/// server process; returns the pool and its connection settings.
fn pool_for(
    url: &str,
    options: &PostgresOptions,
) -> Result<(Pool, tokio_postgres::Config), PostgresError> {
    if !sql::is_valid_prefix(&options.table_prefix) {
        return Err(PostgresError::InvalidTablePrefix {
            prefix: options.table_prefix.clone(),
        });
    }
    if options.pool_size == 0 {
        return Err(PostgresError::InvalidPoolSize);
    }
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|source| PostgresError::InvalidUrl { source })?;
    config.connect_timeout(options.connect_timeout);
    config.keepalives_idle(Duration::from_secs(30));
    config.application_name(options.application_name.as_str());
    let manager = Manager::from_config(
        config.clone(),
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(options.pool_size)
        .queue_mode(QueueMode::Lifo)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(options.connect_timeout))
        .create_timeout(Some(options.connect_timeout))
        .build()?;
    Ok((pool, config))
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
    match found {
        None | Some(sql::SCHEMA_VERSION) => {}
        Some(found) => {
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

#[async_trait]
impl EventStore for PostgresEventStore {
    async fn append(
        &self,
        events: Vec<NewEvent>,
        condition: Option<AppendCondition>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
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

        // Everything is encoded before the connection is taken. Positions are not known
        // yet: the statements compute them from the counter row they follow in the
        // transaction, relative to the new head.
        let n = events.len();
        let n_i64 = i64::try_from(n).unwrap_or(i64::MAX);
        let ids: Vec<Uuid> = krescent_core::__backend::new_ids(n);
        let mut encoded_tags: Vec<Vec<u8>> = Vec::with_capacity(n);
        // Each event's first (smallest) tag goes to `events.tag`, the others to `extra_tags`.
        let mut first_tags: Vec<Option<&str>> = Vec::with_capacity(n);
        let mut tag_rows: (Vec<&str>, Vec<&str>, Vec<i64>) = Default::default();
        // The pairs this handle does not know to be in `tag_starts`, at their first occurrence.
        let mut start_rows: (Vec<&str>, Vec<&str>, Vec<i64>) = Default::default();
        let mut new_starts = std::collections::HashSet::<String, FastState>::default();
        // The batch's type names, each once, and each event's place (from 1) among them; the
        // statement maps them to ids.
        let mut names: Vec<&str> = Vec::new();
        let mut type_index: Vec<i32> = Vec::with_capacity(n);
        {
            let mut places = HashMap::<&str, i32, FastState>::default();
            for e in &events {
                let next = i32::try_from(names.len() + 1).unwrap_or(i32::MAX);
                let place = *places.entry(&e.event_type).or_insert_with(|| {
                    names.push(&e.event_type);
                    next
                });
                type_index.push(place);
            }
        }
        let new_types: Vec<&str> = {
            let known = self.inner.types.lock();
            names
                .iter()
                .copied()
                .filter(|name| !known.contains(*name))
                .collect()
        };
        {
            let known = self.inner.starts.lock();
            // The key of the pair at hand; allocated anew only for a pair not known.
            let mut key = String::new();
            for (k, e) in events.iter().enumerate() {
                let mut encoded =
                    Vec::with_capacity(e.tags.iter().map(|t| t.as_str().len() + 4).sum::<usize>());
                sql::encode_tags(e.tags.iter().map(Tag::as_str), &mut encoded);
                encoded_tags.push(encoded);
                first_tags.push(e.tags.iter().next().map(Tag::as_str));
                // k < n, so the difference fits.
                let delta = i64::try_from(k).unwrap_or(i64::MAX) - (n_i64 - 1);
                for (i, tag) in e.tags.iter().enumerate() {
                    let tag = tag.as_str();
                    if i > 0 {
                        tag_rows.0.push(tag);
                        tag_rows.1.push(&e.event_type);
                        tag_rows.2.push(delta);
                    }
                    KnownStarts::write_key(&e.event_type, tag, &mut key);
                    if known.contains(&key) || new_starts.contains(&key) {
                        continue;
                    }
                    new_starts.insert(key.clone());
                    start_rows.0.push(tag);
                    start_rows.1.push(&e.event_type);
                    start_rows.2.push(delta);
                }
            }
        }
        type EventChunk<'a> = (
            i64,
            &'a [Uuid],
            &'a [i32],
            &'a [Vec<u8>],
            Vec<&'a [u8]>,
            &'a [Option<&'a str>],
        );
        let event_chunks: Vec<EventChunk<'_>> = (0..n)
            .step_by(INSERT_CHUNK)
            .map(|start| {
                let end = (start + INSERT_CHUNK).min(n);
                (
                    i64::try_from(start).unwrap_or(i64::MAX) - n_i64,
                    &ids[start..end],
                    &type_index[start..end],
                    &encoded_tags[start..end],
                    events[start..end].iter().map(|e| &e.payload[..]).collect(),
                    &first_tags[start..end],
                )
            })
            .collect();
        let tag_chunks = chunks(&tag_rows);
        let start_chunks = chunks(&start_rows);
        let tables = &self.inner.tables;
        let conflict_sql = conflict_query
            .as_ref()
            .map(|q| self.sql(q, Output::Positions));

        let client = self.inner.pool.get().await.map_err(pool)?;
        let lock = client.prepare_cached(&tables.lock_head).await.map_err(db)?;
        let insert_events = client
            .prepare_cached(&tables.insert_events)
            .await
            .map_err(db)?;
        let insert_tags = client
            .prepare_cached(&tables.insert_tags)
            .await
            .map_err(db)?;
        let insert_types = prepare_if(&client, !new_types.is_empty(), &tables.insert_types).await?;
        let insert_starts =
            prepare_if(&client, !start_chunks.is_empty(), &tables.insert_starts).await?;
        let notify = client.prepare_cached(&tables.notify).await.map_err(db)?;
        let conflict_stmt = match &conflict_sql {
            Some(c) if !c.per_execution => Some(client.prepare_cached(&c.sql).await.map_err(db)?),
            _ => None,
        };

        // From here the connection may be inside a transaction: unless it is seen to leave
        // it, the guard rolls it back before the connection returns to the pool.
        let client: &tokio_postgres::Client = &client;
        let mut guard = OpenTransaction { client, open: true };
        let lock_params = [n_i64];
        let mut steps: Vec<Step<'_>> = vec![
            Box::pin(async move { client.batch_execute("BEGIN").await.map(|()| None) }),
            Box::pin(async { client.query_one(&lock, &[&lock_params[0]]).await.map(Some) }),
        ];
        // Where the counter row's result is among the steps of the last round trip.
        let mut lock_step = Some(1);
        let mut locked_row = None;
        if let (Some(compiled), Some(query)) = (&conflict_sql, &conflict_query) {
            // The condition is read after the lock is granted, in a statement of its own
            // (so with a snapshot that sees every append committed before it): its result
            // decides whether to write, which costs a second round trip.
            steps.push(Box::pin(conflict(
                client,
                conflict_stmt.as_ref(),
                compiled,
                query,
            )));
            let mut first = Vec::with_capacity(3);
            for result in in_order(steps).await {
                first.push(result.map_err(db)?);
            }
            if let Some(Some(found)) = first.get(2) {
                let position = to_position(found.try_get(0).map_err(db)?)?;
                return Err(StoreError::Conflict { position });
            }
            locked_row = first.into_iter().nth(1).flatten();
            lock_step = None;
            steps = Vec::new();
        }
        if let Some(insert) = &insert_types {
            // Names not known to be stored get their ids first (in the same transaction).
            let new_types = &new_types;
            steps.push(Box::pin(async move {
                client.execute(insert, &[new_types]).await.map(|_| None)
            }));
        }
        let names = &names;
        for (offset, chunk_ids, types, tags, payloads, first) in &event_chunks {
            let insert = &insert_events;
            steps.push(Box::pin(async move {
                let params: [&(dyn ToSql + Sync); 7] =
                    [offset, chunk_ids, types, tags, payloads, first, names];
                client.execute(insert, &params).await.map(|_| None)
            }));
        }
        let tag_inserts = tag_chunks.iter().map(|c| (c, &insert_tags));
        let start_inserts = insert_starts
            .iter()
            .flat_map(|insert| start_chunks.iter().map(move |c| (c, insert)));
        for ((texts, types, deltas), insert) in tag_inserts.chain(start_inserts) {
            steps.push(Box::pin(async move {
                let params: [&(dyn ToSql + Sync); 3] = [texts, types, deltas];
                client.execute(insert, &params).await.map(|_| None)
            }));
        }
        let channel = &tables.channel;
        let notify = &notify;
        steps.push(Box::pin(async move {
            client.execute(notify, &[channel]).await.map(|_| None)
        }));
        // COMMIT ends the transaction in any case: if a statement failed, it rolls back.
        steps.push(Box::pin(async move {
            client.batch_execute("COMMIT").await.map(|()| None)
        }));
        let results = in_order(steps).await;
        if matches!(results.last(), Some(Ok(_))) {
            guard.open = false;
        }
        for (k, result) in results.into_iter().enumerate() {
            // The first error is the cause; later statements only saw an aborted transaction.
            let row = result.map_err(db)?;
            if Some(k) == lock_step {
                locked_row = row;
            }
        }
        let Some(row) = locked_row else {
            // `query_one` returns a row or an error.
            return Err(PostgresError::Corrupt {
                position: 0,
                what: format!("the counter row of `{}` is missing", tables.head),
            }
            .into());
        };
        let head: i64 = row.try_get(0).map_err(db)?;
        let timestamp: DateTime<Utc> = row.try_get(1).map_err(db)?;
        if !new_starts.is_empty() {
            // Committed: the pairs have their rows now.
            self.inner.starts.lock().extend(new_starts.into_iter());
        }
        if !new_types.is_empty() {
            // Committed: the names have their ids now.
            self.inner
                .types
                .lock()
                .extend(new_types.iter().map(|name| Box::<str>::from(*name)));
        }
        let first = to_position(head - n_i64 + 1)?;
        listener::publish(&self.inner.head, to_position(head)?);

        Ok(events
            .into_iter()
            .zip(ids)
            .enumerate()
            .map(|(k, (e, id))| RecordedEvent {
                position: first + k as u64,
                id,
                event_type: e.event_type.into_arc(),
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
        let Some(page_size) = ReadAhead::page_size(query) else {
            return self.read_now(query).await;
        };
        let size = u64::try_from(page_size).unwrap_or(u64::MAX);
        read_pages_ahead(
            &self.inner.ahead,
            query,
            page_size,
            |query| {
                let store = self.clone();
                async move { store.read_now(&query).await }
            },
            |next| self.consecutive(next, size),
        )
        .await
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
    /// Reads `query` now: as a position range as far as it selects every event (see
    /// [`coverage`]), with its own filter beyond.
    async fn read_now(&self, query: &EventQuery) -> Result<Vec<RecordedEvent>, StoreError> {
        match self.coverage(query).await? {
            Coverage::Everything if query.items().len() > 1 => {
                self.events(&coverage::as_range(query, None)).await
            }
            Coverage::Through(through) => {
                let mut events = self
                    .events(&coverage::as_range(query, Some(through)))
                    .await?;
                if let Some(rest) = coverage::rest(query, through, events.len()) {
                    events.extend(self.events(&rest).await?);
                }
                Ok(events)
            }
            _ => self.events(query).await,
        }
    }

    /// Whether the page `query` (`size` events) holds every position after its start: it
    /// selects every event there, and positions have no gaps (an append takes its positions
    /// under the counter row's lock and gives them back if it fails).
    fn consecutive(&self, query: &EventQuery, size: u64) -> bool {
        let head = *self.inner.head.borrow();
        let known = self.inner.stored_types.read().clone();
        match coverage::coverage(query, known.as_deref(), head) {
            Coverage::Everything => true,
            Coverage::Through(through) => query
                .after_position()
                .checked_add(size)
                .is_some_and(|end| end <= through),
            Coverage::Unknown | Coverage::Refresh => false,
        }
    }

    /// The coverage of `query`, reading the stored types if that may widen it.
    async fn coverage(&self, query: &EventQuery) -> Result<Coverage, StoreError> {
        let head = *self.inner.head.borrow();
        let known = self.inner.stored_types.read().clone();
        let found = coverage::coverage(query, known.as_deref(), head);
        if found != Coverage::Refresh {
            return Ok(found);
        }
        // One reader reads them; the others meanwhile read as if they were not known.
        let Ok(_reading) = self.inner.reading_types.try_lock() else {
            return Ok(Coverage::Unknown);
        };
        let fresh = Arc::new(self.read_stored_types().await?);
        let known = {
            let mut known = self.inner.stored_types.write();
            if known.as_ref().is_none_or(|k| k.through < fresh.through) {
                *known = Some(Arc::clone(&fresh));
            }
            known.clone()
        };
        Ok(match coverage::coverage(query, known.as_deref(), head) {
            // Read just now: not again for this read.
            Coverage::Refresh => Coverage::Unknown,
            found => found,
        })
    }

    /// Reads the distinct stored types and the last position they cover.
    async fn read_stored_types(&self) -> Result<StoredTypes, StoreError> {
        let client = self.inner.pool.get().await.map_err(pool)?;
        let stmt = client
            .prepare_cached(&self.inner.stored_types_sql)
            .await
            .map_err(db)?;
        let most = i64::try_from(coverage::MAX_TYPES + 1).unwrap_or(i64::MAX);
        let row = client.query_one(&stmt, &[&most]).await.map_err(db)?;
        let through: Option<i64> = row.try_get(0).map_err(db)?;
        let mut types: Vec<String> = row.try_get(1).map_err(db)?;
        let complete = types.len() <= coverage::MAX_TYPES;
        types.truncate(coverage::MAX_TYPES);
        Ok(StoredTypes {
            through: through.map_or(Ok(0), to_position)?,
            types,
            complete,
        })
    }

    /// Reads the events `query` selects on a pooled connection, decoding each row as it
    /// arrives.
    async fn events(&self, query: &EventQuery) -> Result<Vec<RecordedEvent>, StoreError> {
        use futures::TryStreamExt as _;
        let compiled = self.sql(query, Output::Rows);
        let params = Params::of(query);
        let expected = query
            .limit_value()
            .map_or(EXPECTED_ROWS, |l| {
                usize::try_from(l.get()).unwrap_or(usize::MAX)
            })
            .min(EXPECTED_ROWS);
        let client = self.inner.pool.get().await.map_err(pool)?;
        let rows = if compiled.per_execution {
            client
                .query_typed_raw(&compiled.sql, params.typed())
                .await
                .map_err(db)?
        } else {
            let stmt = client.prepare_cached(&compiled.sql).await.map_err(db)?;
            client
                .query_raw(&stmt, params.untyped())
                .await
                .map_err(db)?
        };
        let mut rows = std::pin::pin!(rows);
        let mut page = Page::new(expected);
        while let Some(row) = rows.try_next().await.map_err(db)? {
            page.push(&row)?;
        }
        page.finish(&self.inner.decoding)
    }

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
    use krescent_core::event::Tags;

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

//! [`PostgresEventStore`]: the handle (a pool, the head's watcher, what reads and appends
//! share), connecting, and the [`EventStore`] implementation: reads (paged reads read ahead),
//! the head and subscriptions. Appends are in `append.rs`.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::Pool;
use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::append::Appends;
use crate::coverage::{self, Coverage, StoredTypes};
use crate::error::{db, pool};
use crate::options::pool_for;
use crate::query::{Compiled, Output, Params, Shape};
use crate::record::{Decoding, Page, to_position};
use crate::schema::{Tables, init_schema};
use crate::{PostgresOptions, listener};
use krescent_core::__backend::{PageFuture, PageReader, pages_ahead};
use krescent_core::event::{NewEvent, RecordedEvent};
use krescent_core::query::{AppendCondition, EventQuery, Limit};
use krescent_core::store::{EventStore, Pages, StoreError, Subscription};

/// The most rows a read allocates room for before it sees them.
const EXPECTED_ROWS: usize = 1000;

/// An event store in PostgreSQL: shared by any number of processes, safe under concurrent
/// appenders and subscribers. Cloning gives another handle to the same pool and listener.
///
/// See the [crate documentation](crate) for the schema and the concurrency design. TLS is not
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
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub pool: Pool,
    /// The settings of the pool's connections.
    pub config: tokio_postgres::Config,
    pub tables: Tables,
    pub head: Arc<watch::Sender<u64>>,
    /// The statements and the knowledge of appends ([`Appends`]).
    pub appends: Appends,
    /// SQL text per query shape; the statements themselves are prepared once per connection.
    shapes: RwLock<HashMap<Shape, Compiled>>,
    decoding: Mutex<Decoding>,
    /// The statement reading the stored types ([`coverage::stored_types`]).
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
    /// On existing tables a connect only reads the schema version and the head: it runs no
    /// DDL and takes no lock, so it never waits for appends in progress nor makes them wait.
    ///
    /// Fails with [`StoreError::Backend`] holding a [`PostgresError`](crate::PostgresError): an invalid prefix,
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
        let stored_types_sql = coverage::stored_types(&tables);
        let appends = Appends::new(&tables);
        Ok(PostgresEventStore {
            inner: Arc::new(Inner {
                pool,
                config,
                tables,
                head,
                appends,
                shapes: RwLock::new(HashMap::new()),
                decoding: Mutex::new(Decoding::default()),
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

    /// The statement for `query`'s shape, generated once per shape.
    pub(crate) fn sql(&self, query: &EventQuery, output: Output) -> Compiled {
        let shape = Shape::of(query, output);
        if let Some(c) = self.inner.shapes.read().get(&shape) {
            return c.clone();
        }
        let compiled = Compiled::of(&self.inner.tables, &shape);
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

#[async_trait]
impl EventStore for PostgresEventStore {
    async fn append(
        &self,
        events: Vec<NewEvent>,
        condition: Option<AppendCondition>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.append_batch(events, condition).await
    }

    async fn read(&self, query: &EventQuery) -> Result<Vec<RecordedEvent>, StoreError> {
        if query.is_empty() {
            return Ok(Vec::new());
        }
        self.read_now(query).await
    }

    fn read_pages(&self, query: EventQuery, page_size: Limit) -> Pages<'_> {
        pages_ahead(self.clone(), query, page_size)
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
    pub(crate) async fn read_now(
        &self,
        query: &EventQuery,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
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

    /// Whether the page `query` holds every position after its start, as far as its limit
    /// goes: it selects every event there, and positions have no gaps (an append takes its
    /// positions under the counter row's lock and gives them back if it fails).
    fn consecutive(&self, query: &EventQuery) -> bool {
        let size = query.limit_value().map_or(u64::MAX, Limit::get);
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
    pub(crate) async fn coverage(&self, query: &EventQuery) -> Result<Coverage, StoreError> {
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
    pub(crate) async fn positions(&self, query: &EventQuery) -> Result<Vec<u64>, StoreError> {
        if query.is_empty() {
            return Ok(Vec::new());
        }
        let rows = self.query(query, Output::Positions).await?;
        rows.iter()
            .map(|r| r.try_get::<_, i64>(0).map_err(db).and_then(to_position))
            .collect()
    }
}

/// Pages for [`pages_ahead`]: each read on a pooled connection of its own, up to two pages
/// ahead when a page holds every position after its start.
impl PageReader for PostgresEventStore {
    fn read_page(&self, query: EventQuery) -> PageFuture {
        let store = self.clone();
        Box::pin(async move {
            if query.is_empty() {
                return Ok(Vec::new());
            }
            store.read_now(&query).await
        })
    }

    fn consecutive(&self, query: &EventQuery) -> bool {
        PostgresEventStore::consecutive(self, query)
    }
}

//! [`PostgresOptions`], and the connection pool built from them.

use std::error::Error as StdError;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, QueueMode, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use crate::PostgresError;
use crate::schema::{self, Tables};
use krescent_core::store::StoreError;

/// Settings of a [`PostgresEventStore`](crate::PostgresEventStore).
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

/// Checks the options and builds the connection pool (connections are opened on demand):
/// reused most recently returned first, so that a lone reader keeps one warm connection and
/// server process; returns the pool and its connection settings.
pub(crate) fn pool_for(
    url: &str,
    options: &PostgresOptions,
) -> Result<(Pool, tokio_postgres::Config), PostgresError> {
    if !schema::is_valid_prefix(&options.table_prefix) {
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

/// Opens a pool of its own for a storage (the settings of [`PostgresEventStore::connect`])
/// and creates or checks the schema of the prefix.
pub(crate) async fn open_pool(
    url: &str,
    options: &PostgresOptions,
) -> Result<Pool, Box<dyn StdError + Send + Sync>> {
    let (pool, _) = pool_for(url, options)?;
    let tables = Tables::new(&options.table_prefix);
    schema::init_schema(&pool, &tables)
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

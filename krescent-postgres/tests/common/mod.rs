//! What the PostgreSQL test files share: the URL, the runtime, fresh table prefixes, a plain
//! client and dropping a prefix's tables.

#![allow(dead_code)]

use std::future::Future;

use krescent_postgres::{PostgresEventStore, PostgresOptions};

/// The variable naming the test database.
pub const URL_VAR: &str = "KRESCENT_POSTGRES_URL";

/// Runs `test` with the database URL on a two-worker runtime, or reports the skip.
pub fn with_database<F, Fut>(test: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()>,
{
    let Ok(url) = std::env::var(URL_VAR) else {
        println!("skipped: {URL_VAR} not set");
        return;
    };
    runtime().block_on(test(url));
}

/// A two-worker multi-thread runtime.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A fresh, unique table prefix.
pub fn fresh_prefix() -> String {
    format!("t_{}_", uuid::Uuid::now_v7().simple())
}

/// A store with `options`, or a panic naming the URL.
pub async fn connect_with(url: &str, options: PostgresOptions) -> PostgresEventStore {
    match PostgresEventStore::connect(url, options).await {
        Ok(store) => store,
        Err(e) => panic!("cannot connect to {url}: {e}"),
    }
}

/// A plain client for statements the store does not offer.
pub async fn raw_client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("raw connection");
    tokio::spawn(connection);
    client
}

/// Drops every table of `prefix` (the event store's, the storages', a test's own).
pub async fn drop_tables(url: &str, prefix: &str) {
    let client = raw_client(url).await;
    let tables: Vec<String> = client
        .query(
            "SELECT tablename::text FROM pg_tables \
             WHERE schemaname = current_schema() AND starts_with(tablename, $1)",
            &[&prefix],
        )
        .await
        .expect("tables of the prefix")
        .iter()
        .map(|row| row.get(0))
        .collect();
    if !tables.is_empty() {
        client
            .batch_execute(&format!("DROP TABLE IF EXISTS {}", tables.join(", ")))
            .await
            .expect("drop tables");
    }
}

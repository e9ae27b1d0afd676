//! The head watcher: subscriptions that survive a lost listening connection, and a listener
//! that ends with the last store handle.
//!
//! They run against the database named by `KRESCENT_POSTGRES_URL` (for example
//! `postgres://postgres@127.0.0.1:5432/test`). Without that variable every test prints that it
//! was skipped and passes. Each test works in tables of its own (a random prefix) and drops
//! them at the end.

use std::time::Duration;

use krescent_core::{EventQuery, EventStore};
use krescent_postgres::PostgresOptions;
use tokio_util::sync::CancellationToken;

mod common;
use common::{
    backends, collect, connect, connect_with, drop_tables, event, fresh_prefix, positions,
    raw_client, wait_for_backends, with_database,
};

/// The listening connection is terminated by the server; the store reconnects and a
/// subscription sees an event appended afterwards by another store instance (the polling
/// fallback is set to an hour, so only the new LISTEN connection can deliver it).
#[test]
fn subscription_survives_a_forced_disconnect() {
    with_database(|url| async move {
        let prefix = fresh_prefix();
        let app = format!("krescent test {prefix}");
        let store = connect_with(
            &url,
            PostgresOptions::default()
                .table_prefix(&prefix)
                .application_name(&app)
                .poll_interval(Duration::from_secs(3600)),
        )
        .await;
        let other = connect(&url, &prefix).await;
        let admin = raw_client(&url).await;
        let listener = store.listener_application_name().to_owned();
        let cancel = CancellationToken::new();
        let mut sub = store.subscribe(EventQuery::match_all(), 0, cancel.clone());

        let before =
            wait_for_backends(&admin, &listener, "listener started", |p| p.len() == 1).await;
        other
            .append(vec![event("pg.before", &[], "{}".into())], None)
            .await
            .expect("append");
        assert_eq!(
            positions(&collect(&mut sub, 1, "before the disconnect").await),
            [1]
        );

        let terminated: bool = admin
            .query_one("SELECT pg_terminate_backend($1)", &[&before[0]])
            .await
            .expect("terminate")
            .get(0);
        assert!(terminated);
        wait_for_backends(&admin, &listener, "listener reconnected", |p| {
            p.len() == 1 && p[0] != before[0]
        })
        .await;
        other
            .append(vec![event("pg.after", &[], "{}".into())], None)
            .await
            .expect("append after the disconnect");
        let got = collect(&mut sub, 1, "after the disconnect").await;
        assert_eq!(positions(&got), [2]);
        assert_eq!(&*got[0].event_type, "pg.after");
        cancel.cancel();
        drop(sub);
        drop(store);
        drop(other);
        drop_tables(&url, &prefix).await;
    });
}

/// When the last handle (and subscription) of a store is dropped, its listener and pool
/// connections close.
#[test]
fn listener_ends_with_the_last_store_handle() {
    with_database(|url| async move {
        let prefix = fresh_prefix();
        let app = format!("krescent test {prefix}");
        let store = connect_with(
            &url,
            PostgresOptions::default()
                .table_prefix(&prefix)
                .application_name(&app),
        )
        .await;
        let admin = raw_client(&url).await;
        let listener = store.listener_application_name().to_owned();
        wait_for_backends(&admin, &listener, "listener started", |p| p.len() == 1).await;
        let clone = store.clone();
        let cancel = CancellationToken::new();
        let sub = clone.subscribe(EventQuery::match_all(), 0, cancel.clone());
        drop(store);
        drop(clone);
        // The subscription still holds the store: the listener stays.
        assert_eq!(backends(&admin, &listener).await.len(), 1);
        drop(sub);
        wait_for_backends(&admin, &listener, "listener ended", |p| p.is_empty()).await;
        wait_for_backends(&admin, &app, "pool closed", |p| p.is_empty()).await;
        drop_tables(&url, &prefix).await;
    });
}

//! Connecting to an existing schema disturbs nothing: a connect (of the store or of a
//! storage) reads the schema version and the head, takes no lock an append holds, and never
//! makes an append or itself fail.
//!
//! They run against the database named by `KRESCENT_POSTGRES_URL` (for example
//! `postgres://postgres@127.0.0.1:5432/test`). Without that variable every test prints that it
//! was skipped and passes. Each test works in tables of its own (a random prefix) and drops
//! them at the end.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use krescent_core::{EventQuery, EventStore};
use krescent_postgres::{PostgresBookmarkStorage, PostgresCheckpointStorage, PostgresEventStore};

mod common;
use common::{
    WAIT, connect_with, drop_tables, event, fresh_prefix, options, raw_client, with_database,
};

/// Connects of the store during an append loop.
const CONNECTS: usize = 100;
/// Events per append.
const BATCH: usize = 10;

/// Handle A appends batches of 10 in a loop while handle B connects 100 times to the same
/// prefix (and every tenth time connects a checkpoint and a bookmark storage too): no append
/// and no connect fails, every acknowledged event is read back, and the head is their total.
#[test]
fn connects_during_an_append_loop_disturb_no_append() {
    with_database(|url| async move {
        let prefix = fresh_prefix();
        let store = connect_with(&url, options(&prefix)).await;
        let stop = Arc::new(AtomicBool::new(false));
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let appender = tokio::spawn({
            let (store, stop) = (store.clone(), Arc::clone(&stop));
            async move {
                let mut started = Some(started_tx);
                let (mut acknowledged, mut errors) = (Vec::new(), Vec::new());
                let mut batch = 0;
                while !stop.load(Ordering::Acquire) {
                    let events = (0..BATCH)
                        .map(|i| event("pg.connect", &["loop:a"], format!("{batch}.{i}")))
                        .collect();
                    match store.append(events, None).await {
                        Ok(recorded) => {
                            acknowledged.extend(recorded.iter().map(|e| e.position));
                            if let Some(tx) = started.take() {
                                let _ = tx.send(());
                            }
                        }
                        Err(e) => errors.push(e.to_string()),
                    }
                    batch += 1;
                }
                (acknowledged, errors)
            }
        });
        started_rx.await.expect("the first append succeeds");

        let mut connect_errors = Vec::new();
        for i in 0..CONNECTS {
            match PostgresEventStore::connect(&url, options(&prefix)).await {
                Ok(other) => drop(other),
                Err(e) => connect_errors.push(format!("store connect {i}: {e}")),
            }
            if i % 10 == 0 {
                if let Err(e) = PostgresCheckpointStorage::connect(&url, options(&prefix)).await {
                    connect_errors.push(format!("checkpoint storage connect {i}: {e}"));
                }
                if let Err(e) = PostgresBookmarkStorage::connect(&url, options(&prefix)).await {
                    connect_errors.push(format!("bookmark storage connect {i}: {e}"));
                }
            }
        }
        stop.store(true, Ordering::Release);
        let (acknowledged, append_errors) = appender.await.expect("appender task");

        assert!(
            connect_errors.is_empty() && append_errors.is_empty(),
            "{} connects and {} appends failed (of {} acknowledged events); connects: {:?}; \
             appends: {:?}",
            connect_errors.len(),
            append_errors.len(),
            acknowledged.len(),
            connect_errors,
            append_errors
        );
        let total = acknowledged.len() as u64;
        assert!(total >= BATCH as u64);
        assert_eq!(total % BATCH as u64, 0, "whole batches only");
        let read: Vec<u64> = store
            .read(&EventQuery::match_all())
            .await
            .expect("read back")
            .iter()
            .map(|e| e.position)
            .collect();
        assert_eq!(
            read,
            (1..=total).collect::<Vec<_>>(),
            "every appended event"
        );
        assert_eq!(acknowledged, read, "acknowledged in position order");
        assert_eq!(store.head().await.expect("head"), total);
        drop(store);
        drop_tables(&url, &prefix).await;
    });
}

/// While a transaction holds what an append holds (the events table's `ROW EXCLUSIVE` lock
/// and the head row), connecting the store and each storage completes without ever waiting
/// for a lock.
#[test]
fn connecting_never_waits_for_an_append_in_progress() {
    with_database(|url| async move {
        let prefix = fresh_prefix();
        let store = connect_with(&url, options(&prefix)).await;
        store
            .append(vec![event("pg.connect", &["held:1"], "{}".into())], None)
            .await
            .expect("append");
        let mut holder = raw_client(&url).await;
        let held = holder.transaction().await.expect("begin");
        held.batch_execute(&format!(
            "LOCK TABLE {prefix}events IN ROW EXCLUSIVE MODE; \
             UPDATE {prefix}head SET position = position"
        ))
        .await
        .expect("hold an append's locks");
        let admin = raw_client(&url).await;
        let name = format!("krescent connect {}", uuid::Uuid::now_v7().simple());
        let opts = || options(&prefix).application_name(name.clone());

        let head = never_waits(&admin, &name, "the store's connect", async {
            let other = PostgresEventStore::connect(&url, opts())
                .await
                .expect("store connect");
            other.head().await.expect("head")
        })
        .await;
        assert_eq!(head, 1);
        never_waits(&admin, &name, "the checkpoint storage's connect", async {
            PostgresCheckpointStorage::connect(&url, opts())
                .await
                .expect("checkpoint storage connect");
        })
        .await;
        never_waits(&admin, &name, "the bookmark storage's connect", async {
            PostgresBookmarkStorage::connect(&url, opts())
                .await
                .expect("bookmark storage connect");
        })
        .await;

        held.rollback().await.expect("rollback");
        drop(store);
        drop_tables(&url, &prefix).await;
    });
}

/// Runs `work`, failing if a backend named `application_name` is seen waiting for a lock
/// meanwhile (polled in `pg_stat_activity`: there is no signal to wait for), or after
/// [`WAIT`].
async fn never_waits<T>(
    admin: &tokio_postgres::Client,
    application_name: &str,
    what: &str,
    work: impl Future<Output = T>,
) -> T {
    let watch = async {
        loop {
            let waiting = admin
                .query(
                    "SELECT query FROM pg_stat_activity \
                     WHERE application_name = $1 AND wait_event_type = 'Lock'",
                    &[&application_name],
                )
                .await
                .expect("pg_stat_activity");
            if let Some(row) = waiting.first() {
                let query: String = row.get(0);
                return query;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::select! {
        done = tokio::time::timeout(WAIT, work) => {
            done.unwrap_or_else(|_| panic!("{what}: not done after {WAIT:?}"))
        }
        query = watch => panic!("{what} waits for a lock an append holds, in: {query}"),
    }
}

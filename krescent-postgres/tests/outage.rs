//! A PostgreSQL outage: a throwaway cluster on a spare port, restarted twice while an appender,
//! a subscriber and a streaming model run. No event is lost or delivered twice, and the
//! subscriber and the model reach the head without the caller resubscribing.
//!
//! Needs `KRESCENT_POSTGRES_URL` (as every PostgreSQL test; the cluster itself is a new one)
//! and Debian's `pg_createcluster` / `pg_ctlcluster` / `pg_dropcluster`, run as root or as the
//! `postgres` user. Without them the test prints that it was skipped. The shared cluster of
//! `KRESCENT_POSTGRES_URL` is never touched.

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use krescent_core::model::ReadModelExt;
use krescent_core::testing::fixtures::StockEvent;
use krescent_core::{EventQuery, EventStore, EventStoreExt};
use krescent_postgres::{PostgresEventStore, PostgresOptions};
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

mod common;
use common::{URL_VAR, runtime};

/// A cluster of the test's own, dropped with it.
struct Cluster {
    version: String,
    name: String,
    port: u16,
}

impl Cluster {
    /// Creates and starts a cluster on a free port; `None` when the tools are missing.
    fn create() -> Option<Cluster> {
        let version = std::fs::read_dir("/etc/postgresql")
            .ok()?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .max()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let name = format!("krescent_outage_{}", std::process::id());
        let port_text = port.to_string();
        let created = Command::new("pg_createcluster")
            .args([&version, &name, "--port", &port_text, "--", "--auth=trust"])
            .output()
            .ok()?;
        if !created.status.success() {
            println!(
                "skipped: pg_createcluster failed: {}",
                String::from_utf8_lossy(&created.stderr)
            );
            return None;
        }
        let cluster = Cluster {
            version,
            name,
            port,
        };
        cluster.ctl("start");
        Some(cluster)
    }

    /// Runs `pg_ctlcluster <action>` and waits until the server accepts connections again.
    fn ctl(&self, action: &str) {
        let status = Command::new("pg_ctlcluster")
            .args([
                "--skip-systemctl-redirect",
                &self.version,
                &self.name,
                action,
            ])
            .status()
            .expect("pg_ctlcluster runs");
        assert!(status.success(), "pg_ctlcluster {action} failed");
        for _ in 0..300 {
            let ready = Command::new("pg_isready")
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q"])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the cluster did not come back after {action}");
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("pg_dropcluster")
            .args(["--stop", &self.version, &self.name])
            .status();
    }
}

/// Counts the events it handles; the count is shared with the test while it runs.
#[derive(krescent_derive::ReadModel, krescent_derive::CheckpointSupport, Default)]
#[krescent(crate = "krescent_core", name = "outage.count", version = 1, events = StockEvent, handles(Added))]
struct Count {
    count: u64,
    #[krescent(skip)]
    progress: Arc<AtomicU64>,
}

impl Count {
    fn on_added(&mut self, _product: &String, _quantity: &i64) {
        self.count += 1;
        self.progress.store(self.count, Ordering::SeqCst);
    }
}

/// Appends `n` events one by one, retrying transient errors; returns the acknowledged
/// positions. `acked` follows the count as it grows.
async fn append_through(store: PostgresEventStore, n: u64, acked: Arc<AtomicU64>) -> Vec<u64> {
    let mut positions = Vec::new();
    for i in 0..n {
        let event = StockEvent::Added {
            product: format!("P-{}", i % 7),
            quantity: 1,
        };
        loop {
            match store
                .append_events(std::slice::from_ref(&event), None)
                .await
            {
                Ok(recorded) => {
                    positions.push(recorded[0].position);
                    acked.fetch_add(1, Ordering::SeqCst);
                    break;
                }
                Err(e) if e.is_transient() => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(e) => panic!("a permanent append error: {e}"),
            }
        }
    }
    positions
}

/// Waits until `value` reaches `target` (a generous timeout: restarts take seconds).
async fn reach(value: &AtomicU64, target: u64, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while value.load(Ordering::SeqCst) < target {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} stopped at {} of {target}",
            value.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn subscriber_and_model_survive_two_server_restarts() {
    if std::env::var(URL_VAR).is_err() {
        println!("skipped: {URL_VAR} not set");
        return;
    }
    let Some(cluster) = Cluster::create() else {
        println!("skipped: no pg_createcluster to make a throwaway cluster");
        return;
    };
    let cluster = Arc::new(cluster);
    runtime().block_on(async {
        let options = PostgresOptions::default()
            .table_prefix("outage_")
            .poll_interval(Duration::from_millis(200))
            .connect_timeout(Duration::from_secs(2));
        let store = PostgresEventStore::connect(&cluster.url(), options)
            .await
            .expect("connect to the throwaway cluster");
        let stop = CancellationToken::new();

        // The subscriber: every position it receives, in order.
        let received = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::new(AtomicU64::new(0));
        let mut subscription = store.subscribe(EventQuery::match_all(), 0, stop.child_token());
        let subscriber = {
            let (received, seen) = (Arc::clone(&received), Arc::clone(&seen));
            tokio::spawn(async move {
                while let Some(batch) = subscription.next().await {
                    let batch = batch.expect("no error reaches the subscriber");
                    received.lock().extend(batch.iter().map(|e| e.position));
                    seen.fetch_add(batch.len() as u64, Ordering::SeqCst);
                }
            })
        };

        // The model, streaming with the default retries.
        let progress = Arc::new(AtomicU64::new(0));
        let model = Count {
            progress: Arc::clone(&progress),
            ..Count::default()
        };
        let model_task = {
            let (store, stop) = (store.clone(), stop.child_token());
            tokio::spawn(async move {
                let mut runner = model.configure(|c| c);
                runner.stream(&store, stop).await
            })
        };

        let acked = Arc::new(AtomicU64::new(0));
        let appender = tokio::spawn(append_through(store.clone(), 600, Arc::clone(&acked)));
        for after in [150, 350] {
            reach(&acked, after, "the appender").await;
            let cluster = Arc::clone(&cluster);
            tokio::task::spawn_blocking(move || cluster.ctl("restart"))
                .await
                .expect("restart");
        }
        let acknowledged = appender.await.expect("appender");
        let head = loop {
            match store.head().await {
                Ok(head) => break head,
                Err(e) if e.is_transient() => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(e) => panic!("head: {e}"),
            }
        };
        assert!(
            head >= 600,
            "every acknowledged event is stored (head {head})"
        );
        reach(&seen, head, "the subscriber").await;
        reach(&progress, head, "the model").await;
        stop.cancel();
        subscriber.await.expect("subscriber");
        let metrics = model_task
            .await
            .expect("model task")
            .expect("transient errors never reach the model's caller");

        let received = received.lock().clone();
        assert_eq!(
            received,
            (1..=head).collect::<Vec<_>>(),
            "every event once, in order"
        );
        assert_eq!(metrics.position, head);
        let stored: BTreeSet<u64> = received.iter().copied().collect();
        assert!(
            acknowledged.iter().all(|p| stored.contains(p)),
            "every acknowledged append was delivered"
        );
        drop(store);
    });
}

//! Subscriptions and streaming models survive transient store errors: they retry under a
//! [`Backoff`] and resume strictly after the last delivered position; permanent errors, and
//! transient ones once the backoff gives up, are returned. The store here fails on demand; the
//! PostgreSQL crate's `outage` test restarts a real server.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use krescent::prelude::*;
use krescent::{Backoff, NewEvent, RecordedEvent, StoreError, Subscription};
use krescent_core::testing::fixtures::StockEvent;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// An in-memory store whose next reads fail, transiently or not, as many times as asked.
#[derive(Clone)]
struct FlakyStore {
    inner: InMemoryEventStore,
    failures: Arc<AtomicU32>,
    transient: bool,
    head: Arc<watch::Sender<u64>>,
    backoff: Backoff,
}

impl FlakyStore {
    fn new(transient: bool, backoff: Backoff) -> Self {
        FlakyStore {
            inner: InMemoryEventStore::new(),
            failures: Arc::new(AtomicU32::new(0)),
            transient,
            head: Arc::new(watch::channel(0).0),
            backoff,
        }
    }

    fn fail_next_reads(&self, n: u32) {
        self.failures.store(n, Ordering::SeqCst);
    }

    async fn add(&self, n: usize) {
        let events: Vec<StockEvent> = (0..n)
            .map(|i| StockEvent::Added {
                product: format!("P-{i}"),
                quantity: 1,
            })
            .collect();
        self.append_events(&events, None).await.expect("append");
    }
}

#[async_trait]
impl EventStore for FlakyStore {
    async fn append(
        &self,
        events: Vec<NewEvent>,
        condition: Option<AppendCondition>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let recorded = self.inner.append(events, condition).await?;
        if let Some(last) = recorded.last() {
            self.head.send_replace(last.position);
        }
        Ok(recorded)
    }

    async fn read(&self, query: &EventQuery) -> Result<Vec<RecordedEvent>, StoreError> {
        let failing = self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return Err(StoreError::Backend {
                backend: "flaky",
                source: "the connection was lost".into(),
                transient: self.transient,
            });
        }
        self.inner.read(query).await
    }

    async fn head(&self) -> Result<u64, StoreError> {
        self.inner.head().await
    }

    fn subscribe(&self, query: EventQuery, after: u64, cancel: CancellationToken) -> Subscription {
        Subscription::polling_with(
            self.clone(),
            query,
            after,
            self.head.subscribe(),
            cancel,
            self.backoff,
        )
    }
}

fn quick(attempts: u32) -> Backoff {
    Backoff::default()
        .initial(Duration::from_millis(1))
        .max_delay(Duration::from_millis(5))
        .max_attempts(attempts)
}

/// Receives batches until `want` positions arrived (or fails after 10 s).
async fn receive(sub: &mut Subscription, want: usize) -> Vec<u64> {
    let mut seen = Vec::new();
    while seen.len() < want {
        let batch = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .expect("a batch within 10 s")
            .expect("the subscription goes on")
            .expect("no error reaches the subscriber");
        seen.extend(batch.iter().map(|e| e.position));
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_retries_transient_errors_and_resumes_after_the_last_position() {
    let store = FlakyStore::new(true, quick(5));
    store.add(10).await;
    store.fail_next_reads(3);
    let cancel = CancellationToken::new();
    let mut sub = store.subscribe(EventQuery::match_all(), 0, cancel.clone());
    let mut seen = receive(&mut sub, 10).await;
    store.fail_next_reads(4);
    store.add(5).await;
    seen.extend(receive(&mut sub, 5).await);
    assert_eq!(seen, (1..=15).collect::<Vec<_>>(), "none lost, none twice");
    cancel.cancel();
    assert!(sub.next().await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_error_or_an_exhausted_backoff_ends_the_subscription() {
    for (transient, failures) in [(false, 1), (true, 3)] {
        let store = FlakyStore::new(transient, quick(2));
        store.add(3).await;
        store.fail_next_reads(failures);
        let mut sub = store.subscribe(EventQuery::match_all(), 0, CancellationToken::new());
        let error = sub
            .next()
            .await
            .expect("an item")
            .expect_err("the error is delivered");
        assert_eq!(error.is_transient(), transient);
        assert!(sub.next().await.is_none(), "the subscription ends after it");
    }
}

#[derive(ReadModel, CheckpointSupport, Default, Debug)]
#[krescent(name = "test.outage", version = 1, events = StockEvent, handles(Added))]
pub struct Arrivals {
    count: u64,
    /// The count, shared with the test while the model runs.
    #[krescent(skip)]
    progress: Arc<std::sync::atomic::AtomicU64>,
}

impl Arrivals {
    fn on_added(&mut self, _product: &String, _quantity: &i64) {
        self.count += 1;
        self.progress.store(self.count, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_model_retries_while_catching_up_and_while_live() {
    let store = FlakyStore::new(true, quick(0));
    store.add(1_200).await;
    // Fails in catch-up (the first page reads), then again live: the subscription itself
    // does not retry (`quick(0)`), so the runner resubscribes.
    store.fail_next_reads(2);
    let shutdown = CancellationToken::new();
    let (model_store, token) = (store.clone(), shutdown.clone());
    let progress = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let model = Arrivals {
        progress: Arc::clone(&progress),
        ..Arrivals::default()
    };
    let task = tokio::spawn(async move {
        let mut runner = model.configure(|c| c.batch_size(500).retry_transient(quick(5)));
        let metrics = runner.stream(&model_store, token).await;
        (metrics, runner.into_model())
    });
    let wait_for = |count: u64| {
        let progress = Arc::clone(&progress);
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while progress.load(Ordering::SeqCst) < count {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the model stopped at {} of {count}",
                    progress.load(Ordering::SeqCst)
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    };
    wait_for(1_200).await;
    store.fail_next_reads(3);
    store.add(300).await;
    wait_for(1_500).await;
    store.add(100).await;
    wait_for(1_600).await;
    shutdown.cancel();
    let (metrics, model) = task.await.unwrap();
    let metrics = metrics.expect("transient errors never reach the caller");
    assert_eq!(
        store.failures.load(Ordering::SeqCst),
        0,
        "every failure was met"
    );
    assert_eq!(metrics.position, 1_600, "the model reached the head");
    assert_eq!(model.count, 1_600, "every event handled exactly once");

    // A permanent error is returned at once.
    let broken = FlakyStore::new(false, quick(0));
    broken.add(3).await;
    broken.fail_next_reads(1);
    let mut runner = Arrivals::default().configure(|c| c.retry_transient(quick(5)));
    let error = runner
        .stream(&broken, CancellationToken::new())
        .await
        .expect_err("a permanent error stops the model");
    assert!(error.to_string().contains("connection was lost"), "{error}");
}

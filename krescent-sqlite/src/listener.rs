//! The wake-ups of subscriptions: the head (the position of the last event) is published on a
//! `watch` channel, and a subscription reads what its query matches up to it.
//!
//! Two sources publish the head. The writer thread publishes it after each commit of this
//! process. For appends of other processes to the same file, a poller task checks the file
//! while at least one subscription of a file store is live: after a delay without a local
//! wake-up, it asks a read connection of its own whether another connection has committed
//! (`PRAGMA data_version`) and, if so, publishes the head it reads. The delay starts at
//! [`FOREIGN_POLL_MIN`], doubles after each check that finds nothing, up to
//! [`FOREIGN_POLL_MAX`], and is reset by any change. The poller starts with the first live
//! subscription and ends when the last one is dropped (or ends); a store nobody subscribes
//! to, and a store in memory, never poll.

use futures::Stream;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::connection::Conn;
use crate::error::SqliteError;
use crate::options::{FOREIGN_POLL_MAX, FOREIGN_POLL_MIN};
use crate::store::SqliteEventStore;
use krescent_core::event::RecordedEvent;
use krescent_core::query::EventQuery;
use krescent_core::store::{StoreError, Subscription};

/// The writer thread's end: publishes the head after each commit.
pub(crate) struct HeadPublisher(watch::Sender<u64>);

/// Where subscriptions wait for appends, and the poller for other processes' appends.
pub(crate) struct Listener {
    head: watch::Sender<u64>,
    /// The file to poll; `None` in memory, where no other process can append.
    path: Option<PathBuf>,
    watch: Arc<watch::Sender<Watch>>,
}

/// The live subscriptions of a store and whether its poller runs. Changed under the `watch`
/// channel's lock; receivers are told when the last subscription ends and when the poller
/// stops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Watch {
    /// Live subscriptions.
    pub(crate) subscriptions: usize,
    /// Whether a poller task runs (or is about to).
    pub(crate) polling: bool,
}

/// A publisher and a listener of the head, starting at `head`; `path` is the store's file.
pub(crate) fn channel(head: u64, path: Option<PathBuf>) -> (HeadPublisher, Listener) {
    let (tx, _) = watch::channel(head);
    let listener = Listener {
        head: tx.clone(),
        path,
        watch: Arc::new(watch::channel(Watch::default()).0),
    };
    (HeadPublisher(tx), listener)
}

/// Publishes `head` unless a higher head is already published (the writer and the poller
/// publish independently), waking the subscriptions.
fn publish(tx: &watch::Sender<u64>, head: u64) {
    tx.send_if_modified(|current| {
        if head > *current {
            *current = head;
            true
        } else {
            false
        }
    });
}

impl HeadPublisher {
    /// Announces `head` once its transaction has committed: every position announced is
    /// readable.
    pub(crate) fn committed(&self, head: u64) {
        publish(&self.0, head);
    }
}

impl Listener {
    /// The last head published.
    pub(crate) fn head(&self) -> u64 {
        *self.head.borrow()
    }

    /// The live subscriptions and the poller's state, for tests.
    #[cfg(test)]
    pub(crate) fn watched(&self) -> watch::Receiver<Watch> {
        self.watch.subscribe()
    }

    /// A subscription to `query` after position `after` on `store`, woken by appends of this
    /// process and, for a file store, by those of other processes.
    pub(crate) fn subscribe(
        &self,
        store: &SqliteEventStore,
        query: EventQuery,
        after: u64,
        cancel: CancellationToken,
    ) -> Subscription {
        let guard = self.watch_one();
        let inner =
            Subscription::polling(store.clone(), query, after, self.head.subscribe(), cancel);
        Subscription::from_stream(Watched {
            inner,
            guard: Some(guard),
        })
    }

    /// Counts one more live subscription, and starts the poller of a file store if it does
    /// not run.
    fn watch_one(&self) -> WatchGuard {
        let mut start = None;
        self.watch.send_if_modified(|w| {
            w.subscriptions += 1;
            if !w.polling {
                if let Some(path) = &self.path {
                    match tokio::runtime::Handle::try_current() {
                        Ok(runtime) => {
                            w.polling = true;
                            start = Some((runtime, path.clone()));
                        }
                        Err(_) => tracing::warn!(
                            path = %path.display(),
                            "subscribed outside a tokio runtime: appends of other processes \
                             wake this subscription only with the next local append"
                        ),
                    }
                }
            }
            false
        });
        if let Some((runtime, path)) = start {
            let poller = Poller {
                path,
                head: self.head.clone(),
                watch: Arc::clone(&self.watch),
                conn: None,
                version: None,
            };
            runtime.spawn(poller.run(Running {
                watch: Arc::clone(&self.watch),
                armed: true,
            }));
        }
        WatchGuard(Arc::clone(&self.watch))
    }
}

/// One live subscription; dropping it lets the poller stop after the last one.
struct WatchGuard(Arc<watch::Sender<Watch>>);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.0.send_if_modified(|w| {
            w.subscriptions -= 1;
            w.subscriptions == 0
        });
    }
}

/// A subscription that counts as live until it ends or is dropped.
struct Watched {
    inner: Subscription,
    guard: Option<WatchGuard>,
}

impl Stream for Watched {
    type Item = Result<Vec<RecordedEvent>, StoreError>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let next = Pin::new(&mut self.inner).poll_next(cx);
        if let Poll::Ready(None) = next {
            self.guard = None;
        }
        next
    }
}

/// Marks the poller stopped if its task is dropped before it returns (a runtime that shuts
/// down), so that the next subscription starts another.
struct Running {
    watch: Arc<watch::Sender<Watch>>,
    armed: bool,
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.armed {
            self.watch.send_modify(|w| w.polling = false);
        }
    }
}

/// The task that notices appends of other processes.
struct Poller {
    path: PathBuf,
    head: watch::Sender<u64>,
    watch: Arc<watch::Sender<Watch>>,
    /// Its own read connection: `data_version` is per connection.
    conn: Option<Conn>,
    /// The `data_version` of the last check.
    version: Option<i64>,
}

impl Poller {
    /// Waits (without a local wake-up) and checks, until no subscription is live.
    async fn run(mut self, mut running: Running) {
        let mut local = self.head.subscribe();
        let mut watched = self.watch.subscribe();
        let mut delay = FOREIGN_POLL_MIN;
        tracing::debug!(path = %self.path.display(), "polling for appends of other processes");
        loop {
            tokio::select! {
                _ = local.changed() => {
                    // A wake-up without polling; the next check waits the shortest delay.
                    delay = FOREIGN_POLL_MIN;
                    continue;
                }
                _ = watched.changed() => {}
                () = tokio::time::sleep(delay) => {}
            }
            let unwatched = self.watch.send_if_modified(|w| {
                let stop = w.subscriptions == 0;
                if stop {
                    w.polling = false;
                }
                stop
            });
            if unwatched {
                running.armed = false;
                break;
            }
            delay = match self.check().await {
                Ok(true) => FOREIGN_POLL_MIN,
                Ok(false) => (delay * 2).min(FOREIGN_POLL_MAX),
                Err(e) => {
                    tracing::warn!(
                        path = %self.path.display(),
                        error = %e,
                        "checking for appends of other processes failed"
                    );
                    FOREIGN_POLL_MAX
                }
            };
        }
        tracing::debug!(path = %self.path.display(), "stopped polling");
        if let Some(conn) = self.conn.take() {
            // Closing a connection may checkpoint the WAL: not on an async worker.
            drop(tokio::task::spawn_blocking(move || drop(conn)));
        }
    }

    /// Checks the file once, off the async workers; publishes the head if another connection
    /// has committed since the last check (or on the first check). Whether it had.
    async fn check(&mut self) -> Result<bool, SqliteError> {
        let conn = self.conn.take();
        let path = self.path.clone();
        let last = self.version;
        let checked = tokio::task::spawn_blocking(move || {
            let mut conn = match conn {
                Some(conn) => conn,
                None => Conn::open_reader(&path)?,
            };
            let result = data_version_and_head(&mut conn, last);
            Ok::<_, SqliteError>((conn, result))
        })
        .await
        .map_err(|e| SqliteError::Thread(e.to_string()))??;
        let (conn, result) = checked;
        // A connection that failed a check is opened anew.
        if result.is_ok() {
            self.conn = Some(conn);
        }
        let (version, head) = result?;
        self.version = Some(version);
        match head {
            Some(head) => {
                publish(&self.head, head);
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

/// The connection's `data_version` and, if it differs from `last`, the head (read after it,
/// so that a commit in between changes the next version).
fn data_version_and_head(
    conn: &mut Conn,
    last: Option<i64>,
) -> Result<(i64, Option<u64>), SqliteError> {
    let version: i64 = conn
        .conn
        .prepare_cached("PRAGMA data_version")?
        .query_row([], |r| r.get(0))?;
    if last == Some(version) {
        return Ok((version, None));
    }
    Ok((version, Some(conn.head()?)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use krescent_core::event::{NewEvent, Tags};
    use krescent_core::store::EventStore;
    use std::time::Duration;

    /// How long a test waits for the poller to stop.
    const STOP_WITHIN: Duration = Duration::from_secs(5);

    fn polling(store: &SqliteEventStore) -> bool {
        store.listener().watched().borrow().polling
    }

    async fn wait_until_stopped(mut watched: watch::Receiver<Watch>) {
        tokio::time::timeout(STOP_WITHIN, watched.wait_for(|w| !w.polling))
            .await
            .expect("the poller should stop")
            .expect("the watch state outlives the poller");
    }

    #[tokio::test]
    async fn a_store_nobody_subscribes_to_never_polls() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteEventStore::open(dir.path().join("idle.db"))
            .await
            .unwrap();
        let event = NewEvent::new("t.local", Tags::empty(), b"{}".to_vec()).unwrap();
        store.append(vec![event], None).await.unwrap();
        let _ = store.head().await.unwrap();
        assert!(!polling(&store));
        assert_eq!(store.listener().watched().borrow().subscriptions, 0);
    }

    #[tokio::test]
    async fn a_store_in_memory_never_polls() {
        let store = SqliteEventStore::open_in_memory().unwrap();
        let _subscription = store.subscribe(EventQuery::match_all(), 0, CancellationToken::new());
        assert_eq!(store.listener().watched().borrow().subscriptions, 1);
        assert!(!polling(&store));
    }

    #[tokio::test]
    async fn polling_stops_with_the_last_subscription() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteEventStore::open(dir.path().join("watched.db"))
            .await
            .unwrap();
        let first = store.subscribe(EventQuery::match_all(), 0, CancellationToken::new());
        let second = store.subscribe(EventQuery::match_all(), 0, CancellationToken::new());
        assert!(polling(&store));
        assert_eq!(store.listener().watched().borrow().subscriptions, 2);
        drop(first);
        assert!(polling(&store), "one subscription is still live");
        drop(second);
        wait_until_stopped(store.listener().watched()).await;

        // A new subscription starts it again; dropping the store first, then the
        // subscription, stops it too.
        let third = store.subscribe(EventQuery::match_all(), 0, CancellationToken::new());
        assert!(polling(&store));
        let watched = store.listener().watched();
        drop(store);
        assert!(watched.borrow().polling, "the subscription is still live");
        drop(third);
        wait_until_stopped(watched).await;
    }

    #[tokio::test]
    async fn a_subscription_that_ends_stops_counting() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteEventStore::open(dir.path().join("ended.db"))
            .await
            .unwrap();
        let cancel = CancellationToken::new();
        let mut subscription = store.subscribe(EventQuery::match_all(), 0, cancel.clone());
        cancel.cancel();
        assert!(subscription.next_batch().await.is_none());
        assert_eq!(store.listener().watched().borrow().subscriptions, 0);
        wait_until_stopped(store.listener().watched()).await;
    }
}

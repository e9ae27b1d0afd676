//! The wake-ups of subscriptions: the writer thread publishes the head (the position of the
//! last event) after each commit, and a subscription reads what its query matches up to it.
//!
//! Only appends made through this process's store are published: events appended to the file
//! by another process reach a subscription with the next local append.

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::store::SqliteEventStore;
use krescent_core::query::EventQuery;
use krescent_core::store::Subscription;

/// The writer thread's end: publishes the head after each commit.
pub(crate) struct HeadPublisher(watch::Sender<u64>);

/// Where subscriptions wait for appends.
pub(crate) type HeadListener = watch::Receiver<u64>;

/// A publisher and a listener of the head, starting at `head`.
pub(crate) fn channel(head: u64) -> (HeadPublisher, HeadListener) {
    let (tx, rx) = watch::channel(head);
    (HeadPublisher(tx), rx)
}

impl HeadPublisher {
    /// Announces `head` once its transaction has committed: every position announced is
    /// readable.
    pub(crate) fn committed(&self, head: u64) {
        self.0.send_replace(head);
    }
}

/// A subscription to `query` after position `after` on `store`, woken by `head`.
pub(crate) fn subscribe(
    store: &SqliteEventStore,
    head: &HeadListener,
    query: EventQuery,
    after: u64,
    cancel: CancellationToken,
) -> Subscription {
    Subscription::polling(store.clone(), query, after, head.clone(), cancel)
}

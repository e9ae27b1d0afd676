//! Subscriptions (history, then live), built on [`EventStore::read`].

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::stream::{BoxStream, Stream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Backoff, EventStore, StoreError};
use crate::event::RecordedEvent;
use crate::query::{Direction, EventQuery, Limit};

/// Batches of events from [`EventStore::subscribe`]: the history first, then live events, in
/// position order. Ends (`None`) when its cancellation token fires, or after an error.
pub struct Subscription {
    inner: BoxStream<'static, Result<Vec<RecordedEvent>, StoreError>>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription").finish_non_exhaustive()
    }
}

/// The default number of events per subscription batch.
pub const SUBSCRIPTION_BATCH: Limit = Limit::from_const(500);

impl Subscription {
    /// A subscription from any stream of batches (for store implementations).
    pub fn from_stream(
        stream: impl Stream<Item = Result<Vec<RecordedEvent>, StoreError>> + Send + 'static,
    ) -> Self {
        Subscription {
            inner: Box::pin(stream),
        }
    }

    /// A subscription that reads `store` in batches strictly after `after` and, at the head,
    /// waits until `head` announces a new position (or `cancel` fires). Transient read errors
    /// are retried with the default [`Backoff`] (see [`polling_with`](Self::polling_with)).
    ///
    /// Store implementations publish their head position through a `watch` channel after each
    /// committed append; any position the store publishes must be fully readable.
    pub fn polling<S>(
        store: S,
        query: EventQuery,
        after: u64,
        head: watch::Receiver<u64>,
        cancel: CancellationToken,
    ) -> Self
    where
        S: EventStore + 'static,
    {
        Self::polling_with(store, query, after, head, cancel, Backoff::default())
    }

    /// [`polling`](Self::polling), retrying transient read errors
    /// ([`StoreError::is_transient`]) under `backoff`, strictly after the last delivered
    /// position, so an outage costs a delay, not the subscription. A permanent error, or a
    /// transient one once `backoff` gives up, is delivered and ends the subscription.
    pub fn polling_with<S>(
        store: S,
        query: EventQuery,
        after: u64,
        head: watch::Receiver<u64>,
        cancel: CancellationToken,
        backoff: Backoff,
    ) -> Self
    where
        S: EventStore + 'static,
    {
        let base = EventQuery::from_items(query.items().iter().cloned())
            .direction(Direction::Forward)
            .with_limit(Some(SUBSCRIPTION_BATCH));
        let poller = Poller {
            store,
            base,
            head,
            cancel,
            backoff,
        };
        let stream = futures::stream::unfold(
            (poller, after, false),
            |(mut poller, cursor, done)| async move {
                if done {
                    return None;
                }
                match poller.next_batch(cursor).await? {
                    Ok(events) => {
                        let last = events.last().map_or(cursor, |e| e.position);
                        Some((Ok(events), (poller, last, false)))
                    }
                    Err(e) => Some((Err(e), (poller, cursor, true))),
                }
            },
        );
        Subscription::from_stream(stream)
    }

    /// The next batch; `None` once cancelled or after an error was returned.
    pub async fn next_batch(&mut self) -> Option<Result<Vec<RecordedEvent>, StoreError>> {
        futures::StreamExt::next(&mut self.inner).await
    }
}

impl Stream for Subscription {
    type Item = Result<Vec<RecordedEvent>, StoreError>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// What a polling subscription reads with.
struct Poller<S> {
    store: S,
    base: EventQuery,
    head: watch::Receiver<u64>,
    cancel: CancellationToken,
    backoff: Backoff,
}

impl<S: EventStore> Poller<S> {
    /// The next non-empty batch after `cursor`, waiting at the head for new events and
    /// retrying transient errors; `None` once cancelled or when the store is gone.
    async fn next_batch(&mut self, cursor: u64) -> Option<Result<Vec<RecordedEvent>, StoreError>> {
        let mut failed = 0;
        loop {
            if self.cancel.is_cancelled() {
                return None;
            }
            // Mark the current head as seen before reading, so that an append landing after
            // the read still wakes us.
            let _ = self.head.borrow_and_update();
            match self.store.read(&self.base.clone().after(cursor)).await {
                Ok(events) if !events.is_empty() => return Some(Ok(events)),
                Ok(_) => {
                    failed = 0;
                    tokio::select! {
                        _ = self.cancel.cancelled() => return None,
                        changed = self.head.changed() => {
                            // The store is gone: nothing more will arrive.
                            changed.ok()?;
                        }
                    }
                }
                Err(e) if e.is_transient() && !self.backoff.gives_up_after(failed + 1) => {
                    failed += 1;
                    let delay = self.backoff.delay(failed);
                    tracing::warn!(error = %e, attempt = failed, ?delay, "subscription read failed; retrying");
                    tokio::select! {
                        _ = self.cancel.cancelled() => return None,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

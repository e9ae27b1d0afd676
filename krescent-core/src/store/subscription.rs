//! Subscriptions (history, then live), built on [`EventStore::read`].

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::stream::{BoxStream, Stream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{EventStore, StoreError};
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
    /// waits until `head` announces a new position (or `cancel` fires).
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
        let batch = SUBSCRIPTION_BATCH;
        let base = EventQuery::from_items(query.items().iter().cloned())
            .direction(Direction::Forward)
            .with_limit(Some(batch));
        let stream =
            futures::stream::unfold((store, after, false), move |(store, cursor, done)| {
                let base = base.clone();
                let cancel = cancel.clone();
                let mut head = head.clone();
                async move {
                    if done {
                        return None;
                    }
                    loop {
                        if cancel.is_cancelled() {
                            return None;
                        }
                        // Mark the current head as seen before reading, so that an append
                        // landing after the read still wakes us.
                        let _ = head.borrow_and_update();
                        match store.read(&base.clone().after(cursor)).await {
                            Err(e) => return Some((Err(e), (store, cursor, true))),
                            Ok(events) if !events.is_empty() => {
                                let last = events.last().map_or(cursor, |e| e.position);
                                return Some((Ok(events), (store, last, false)));
                            }
                            Ok(_) => {
                                tokio::select! {
                                    _ = cancel.cancelled() => return None,
                                    changed = head.changed() => {
                                        if changed.is_err() {
                                            // The store is gone: nothing more will arrive.
                                            return None;
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            });
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

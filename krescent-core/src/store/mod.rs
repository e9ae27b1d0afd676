//! Event stores: the [`EventStore`] trait and the [`InMemoryEventStore`].

mod backoff;
pub(crate) mod fast_hash;
mod memory;
pub(crate) mod pages_ahead;
mod paging;
mod subscription;

use std::error::Error as StdError;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::event::{DecodeError, EncodeError, Event, NewEvent, Recorded, RecordedEvent};
use crate::query::{AppendCondition, EventQuery, Limit};

pub use backoff::Backoff;
pub use memory::InMemoryEventStore;
pub(crate) use paging::PageLoop;
pub use paging::Pages;
pub use subscription::{SUBSCRIPTION_BATCH, Subscription};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The append condition failed: an event matching its query is stored at `position`,
    /// after the position the writer expected. Nothing was appended.
    #[error("append condition failed: a matching event is stored at position {position}")]
    Conflict {
        /// The first conflicting position.
        position: u64,
    },
    /// An event could not be encoded. Nothing was appended.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// A stored event could not be decoded.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The backend (a database, a file) failed or went away.
    #[error("{backend} event store failed: {source}")]
    Backend {
        /// Which backend.
        backend: &'static str,
        /// What it said.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
        /// Whether trying again may succeed: the connection was lost, the server is shutting
        /// down or starting, the database was busy, or a transaction lost a serialization or
        /// deadlock race. Set by the backend.
        transient: bool,
    },
}

impl StoreError {
    /// Whether trying the operation again may succeed: a [`Backend`](Self::Backend) error its
    /// backend marks transient (a lost connection, a server shutting down or restarting, a
    /// busy database, a serialization or deadlock failure). Invalid input, corrupt data,
    /// conflicts and schema mismatches are permanent: retrying them gives the same error.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StoreError::Backend {
                transient: true,
                ..
            }
        )
    }

    /// The conflicting position, when this is [`StoreError::Conflict`].
    pub fn conflict_position(&self) -> Option<u64> {
        match self {
            StoreError::Conflict { position } => Some(*position),
            _ => None,
        }
    }
}

/// A store of events at global, strictly increasing positions starting at 1.
///
/// Object safe: use it as `Arc<dyn EventStore>` where the backend is chosen at run time. Reads
/// return whole pages (`Vec`s) of events so that the per-event path is a loop, not a future.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Appends `events` atomically, at consecutive new positions, if `condition` holds (no
    /// event matching its query stored after its position). All or nothing: on any error
    /// nothing is stored. Returns the recorded events.
    async fn append(
        &self,
        events: Vec<NewEvent>,
        condition: Option<AppendCondition>,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// The events `query` selects, in its direction, at most its limit.
    async fn read(&self, query: &EventQuery) -> Result<Vec<RecordedEvent>, StoreError>;

    /// The position of the last stored event; 0 when the store is empty.
    async fn head(&self) -> Result<u64, StoreError>;

    /// Every event matching `query` strictly after `after`: first the history, then live
    /// events as they are appended, in position order, none skipped and none twice. The
    /// query's direction, limit and range are ignored. The subscription ends when `cancel`
    /// fires.
    fn subscribe(&self, query: EventQuery, after: u64, cancel: CancellationToken) -> Subscription;

    /// The events `query` selects, in its direction, as a stream of pages of at most
    /// `page_size` events (the query's own limit still caps the total). Pages are never empty;
    /// the stream ends after the first page that is not full, or when a read finds nothing.
    /// It is how catch-ups read: [`ModelRunner`](crate::model::ModelRunner) and
    /// [`Projector`](crate::projection::Projector) consume their event queries through it.
    ///
    /// The default reads each page with [`read`](Self::read) when the stream is polled for
    /// it. The SQLite and PostgreSQL stores override it to read the next page while the caller
    /// handles this one.
    fn read_pages(&self, query: EventQuery, page_size: Limit) -> Pages<'_> {
        Box::pin(paging::pages(self, query, page_size))
    }
}

/// Typed conveniences over any [`EventStore`].
#[async_trait]
pub trait EventStoreExt: EventStore {
    /// Encodes and appends domain events (see [`EventStore::append`]).
    async fn append_events<E: Event>(
        &self,
        events: &[E],
        condition: Option<AppendCondition>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let new = events
            .iter()
            .map(NewEvent::from_event)
            .collect::<Result<Vec<_>, _>>()?;
        self.append(new, condition).await
    }

    /// Reads and decodes events (see [`EventStore::read`]). An event whose type the enum does
    /// not know is an [`DecodeError::UnknownEventType`] error naming its position.
    async fn read_events<E: Event>(
        &self,
        query: &EventQuery,
    ) -> Result<Vec<Recorded<E>>, StoreError> {
        let raw = self.read(query).await?;
        raw.iter()
            .map(|r| r.decode::<E>().map_err(StoreError::from))
            .collect()
    }
}

impl<S: EventStore + ?Sized> EventStoreExt for S {}

/// A shared store is a store: `Arc<InMemoryEventStore>` and `Arc<dyn EventStore>` work
/// wherever an [`EventStore`] is expected.
#[async_trait]
impl<S: EventStore + ?Sized> EventStore for std::sync::Arc<S> {
    async fn append(
        &self,
        events: Vec<NewEvent>,
        condition: Option<AppendCondition>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        (**self).append(events, condition).await
    }

    async fn read(&self, query: &EventQuery) -> Result<Vec<RecordedEvent>, StoreError> {
        (**self).read(query).await
    }

    async fn head(&self) -> Result<u64, StoreError> {
        (**self).head().await
    }

    fn subscribe(&self, query: EventQuery, after: u64, cancel: CancellationToken) -> Subscription {
        (**self).subscribe(query, after, cancel)
    }

    fn read_pages(&self, query: EventQuery, page_size: Limit) -> Pages<'_> {
        (**self).read_pages(query, page_size)
    }
}

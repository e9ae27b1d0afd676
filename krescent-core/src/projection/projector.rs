//! The [`Projector`]: runs a [`Projection`]'s init query once, then its event query in
//! batches, and keeps a cursor, metrics and optionally a bookmark.

use std::fmt;

use crate::event::RecordedEvent;
use crate::query::{EventQuery, Limit};
use crate::store::{EventStore, PageLoop};

use super::Projection;
use super::bookmark::{BookmarkReader, ReadPolicy, reader_name_problem};
use super::error::ProjectorError;
use super::metrics::ProjectorMetrics;

/// The number of events a projector asks the store for per query, unless
/// [`ProjectorBuilder::batch_size`] says otherwise.
pub const DEFAULT_BATCH_SIZE: usize = 500;

/// The type name of a projection, for errors and logs.
pub(crate) fn projection_name<P: ?Sized>() -> &'static str {
    std::any::type_name::<P>()
}

/// Runs a [`Projection`] against an [`EventStore`].
///
/// A run has two phases:
///
/// 1. **Init.** Only while the projector has no cursor (no
///    [`starting_after`](ProjectorBuilder::starting_after), no earlier run that set one) and
///    no bookmark reader: the projection's [`init_query`](Projection::init_query) runs once and
///    every event it returns is handled. The cursor becomes the highest position returned;
///    when nothing is returned the cursor stays unset. Either way later runs skip this phase.
/// 2. **Events.** The projection's [`event_query`](Projection::event_query), forward, strictly
///    after the cursor, in batches of [`batch_size`](ProjectorBuilder::batch_size) events,
///    until a batch comes back shorter than the batch size. The cursor moves to the end of
///    each batch once all its events are handled.
///
/// Each event is decoded as the projection's event type and passed to
/// [`Projection::when`]. The first error ends the run; the cursor then stays at the end of the
/// last batch handled completely (for the init phase: unset, and the init phase is not done),
/// so the next run handles that batch again: a projection sees an event more than once only
/// after its handler failed on a later event of the same batch.
///
/// With a [`BookmarkReader`] the init query is never run, the cursor is read from the
/// bookmark as its [`ReadPolicy`] says, and after every run that moved the cursor (also one
/// that failed part way) the bookmark is placed at the new cursor.
///
/// ```
/// # use krescent_core::{EventQuery, HandlerError, InMemoryEventStore, Projection, Recorded};
/// # use krescent_core::projection::Projector;
/// # #[derive(Debug)] enum Never {}
/// # impl krescent_core::Event for Never {
/// #     const CATALOG: &'static str = "none";
/// #     const REVISION: u32 = 1;
/// #     const TYPES: &'static [krescent_core::EventType] = &[];
/// #     fn event_type(&self) -> krescent_core::EventType { match *self {} }
/// #     fn tags(&self) -> krescent_core::Tags { match *self {} }
/// #     fn encode(&self) -> Result<krescent_core::Payload, krescent_core::EncodeError> { match *self {} }
/// #     fn decode(t: &str, _: &[u8]) -> Result<Self, krescent_core::DecodeError> {
/// #         Err(krescent_core::DecodeError::unknown(t))
/// #     }
/// # }
/// # struct Nothing;
/// # impl Projection for Nothing {
/// #     type Event = Never;
/// #     fn event_query(&self) -> EventQuery { EventQuery::of::<Never>() }
/// #     fn when(&mut self, _: &Recorded<Never>) -> Result<(), HandlerError> { Ok(()) }
/// # }
/// # async fn demo() -> Result<(), krescent_core::projection::ProjectorError> {
/// let store = InMemoryEventStore::new();
/// let mut projection = Nothing;
/// let mut projector = Projector::from(&store)
///     .towards(&mut projection)
///     .batch_size(100)
///     .build()
///     .await?;
/// let metrics = projector.run().await?;
/// assert_eq!(metrics.events_handled, 0);
/// # Ok(()) }
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(demo()).unwrap();
/// ```
pub struct Projector<'a, S: ?Sized, P> {
    store: &'a S,
    projection: &'a mut P,
    batch_size: usize,
    limit: Limit,
    starting_after: Option<u64>,
    cursor: Option<u64>,
    init_done: bool,
    bookmark: Option<BookmarkReader>,
    /// The cursor the bookmark storage is known to hold (or that needs no placing).
    synced: Option<u64>,
    first_run_read: bool,
    total: ProjectorMetrics,
}

/// Configures a [`Projector`]; made by [`Projector::from`], finished by
/// [`build`](ProjectorBuilder::build).
///
/// `P` is `()` until [`towards`](ProjectorBuilder::towards) names the projection, then
/// `&'a mut P`.
#[must_use = "a projector builder does nothing until `build` is awaited"]
pub struct ProjectorBuilder<'a, S: ?Sized, P> {
    store: &'a S,
    projection: P,
    batch_size: usize,
    starting_after: Option<u64>,
    bookmark: Option<BookmarkReader>,
}

impl<'a, S: EventStore + ?Sized> Projector<'a, S, ()> {
    /// Starts configuring a projector that reads `store`.
    pub fn from(store: &'a S) -> ProjectorBuilder<'a, S, ()> {
        ProjectorBuilder {
            store,
            projection: (),
            batch_size: DEFAULT_BATCH_SIZE,
            starting_after: None,
            bookmark: None,
        }
    }
}

impl<'a, S: EventStore + ?Sized, T> ProjectorBuilder<'a, S, T> {
    /// The projection the events go to.
    pub fn towards<P: Projection>(
        self,
        projection: &'a mut P,
    ) -> ProjectorBuilder<'a, S, &'a mut P> {
        ProjectorBuilder {
            store: self.store,
            projection,
            batch_size: self.batch_size,
            starting_after: self.starting_after,
            bookmark: self.bookmark,
        }
    }

    /// How many events to ask the store for per query ([`DEFAULT_BATCH_SIZE`] unless set).
    /// Zero makes [`build`](ProjectorBuilder::build) fail with
    /// [`ProjectorError::ZeroBatchSize`].
    pub fn batch_size(mut self, events: usize) -> Self {
        self.batch_size = events;
        self
    }

    /// Starts strictly after `position` instead of from the beginning; the init query is then
    /// not run. With a bookmark reader this is where the projector starts while the reader has
    /// no bookmark.
    pub fn starting_after(mut self, position: u64) -> Self {
        self.starting_after = Some(position);
        self
    }

    /// Reads the cursor from, and saves it to, a bookmark. The projection's init query is then
    /// ignored.
    pub fn bookmark_progress(mut self, reader: BookmarkReader) -> Self {
        self.bookmark = Some(reader);
        self
    }
}

impl<'a, S: EventStore + ?Sized, P: Projection> ProjectorBuilder<'a, S, &'a mut P> {
    /// Checks the configuration and makes the projector; with
    /// [`ReadPolicy::AtCreation`] this also reads the bookmark.
    ///
    /// Fails with [`ProjectorError::ZeroBatchSize`], [`ProjectorError::InvalidBookmarkName`]
    /// or [`ProjectorError::BookmarkLoad`]. Logs a warning when the projection has an init
    /// query that the bookmark makes the projector ignore.
    pub async fn build(self) -> Result<Projector<'a, S, P>, ProjectorError> {
        let limit = u64::try_from(self.batch_size)
            .ok()
            .and_then(|n| Limit::new(n).ok())
            .ok_or(ProjectorError::ZeroBatchSize)?;
        if let Some(reader) = &self.bookmark {
            if let Some(reason) = reader_name_problem(reader.name()) {
                return Err(ProjectorError::InvalidBookmarkName {
                    name: reader.name().to_owned(),
                    reason,
                });
            }
            if self.projection.init_query().is_some() {
                tracing::warn!(
                    projection = projection_name::<P>(),
                    reader = reader.name(),
                    "the projection has an init query, but the projector reads a bookmark: \
                     the init query is ignored"
                );
            }
        }
        let at_creation = self
            .bookmark
            .as_ref()
            .is_some_and(|r| r.policy() == ReadPolicy::AtCreation);
        let mut projector = Projector {
            store: self.store,
            projection: self.projection,
            batch_size: self.batch_size,
            limit,
            starting_after: self.starting_after,
            cursor: self.starting_after,
            init_done: false,
            bookmark: self.bookmark,
            synced: self.starting_after,
            first_run_read: false,
            total: ProjectorMetrics::default(),
        };
        if at_creation {
            projector.read_bookmark().await?;
        }
        Ok(projector)
    }
}

impl<'a, S: EventStore + ?Sized, P: Projection> Projector<'a, S, P> {
    /// Runs the init phase if it is due, then the event query until the store has no more
    /// events. Returns what this run did.
    pub async fn run(&mut self) -> Result<ProjectorMetrics, ProjectorError> {
        self.run_with(None, false).await
    }

    /// Like [`run`](Projector::run), but handles no event after `position` (inclusive): both
    /// queries are limited to positions up to `position`.
    pub async fn run_until(&mut self, position: u64) -> Result<ProjectorMetrics, ProjectorError> {
        self.run_with(Some(position), false).await
    }

    /// Runs the init phase if it is due, then at most one batch of the event query.
    pub async fn run_single_batch(&mut self) -> Result<ProjectorMetrics, ProjectorError> {
        self.run_with(None, true).await
    }

    /// Reads the bookmark and moves the cursor to it (to the
    /// [`starting_after`](ProjectorBuilder::starting_after) position, or the beginning, when
    /// the reader has no bookmark). This is the trigger of [`ReadPolicy::OnManualTrigger`]; it
    /// works under every policy. Returns the bookmark read.
    ///
    /// Fails with [`ProjectorError::NoBookmarkReader`] when the projector has no reader.
    pub async fn read_bookmark(&mut self) -> Result<Option<u64>, ProjectorError> {
        let Some(reader) = &self.bookmark else {
            return Err(ProjectorError::no_bookmark_reader::<P>());
        };
        let loaded = reader
            .load()
            .await
            .map_err(|source| ProjectorError::BookmarkLoad {
                reader: reader.name().to_owned(),
                source,
            })?;
        tracing::debug!(
            projection = projection_name::<P>(),
            reader = reader.name(),
            bookmark = ?loaded,
            "read bookmark"
        );
        self.cursor = loaded.or(self.starting_after);
        self.synced = self.cursor;
        Ok(loaded)
    }

    /// The position of the last event handled, as far as the next run is concerned: the next
    /// run reads strictly after it. `None`: from the beginning.
    pub fn cursor(&self) -> Option<u64> {
        self.cursor
    }

    /// What all runs of this projector did together, failed runs included.
    pub fn total_metrics(&self) -> ProjectorMetrics {
        self.total
    }

    /// The projection, to look at its state between runs.
    pub fn projection(&self) -> &P {
        self.projection
    }

    /// The number of events asked for per query.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// The bookmark reader, if any.
    pub fn bookmark_reader(&self) -> Option<&BookmarkReader> {
        self.bookmark.as_ref()
    }

    async fn run_with(
        &mut self,
        until: Option<u64>,
        single_batch: bool,
    ) -> Result<ProjectorMetrics, ProjectorError> {
        let read_due = self.bookmark.as_ref().is_some_and(|r| match r.policy() {
            ReadPolicy::BeforeEachRun => true,
            ReadPolicy::BeforeFirstRun => !self.first_run_read,
            ReadPolicy::OnManualTrigger | ReadPolicy::AtCreation => false,
        });
        if read_due {
            self.read_bookmark().await?;
            self.first_run_read = true;
        }
        let mut run = ProjectorMetrics::default();
        let outcome = self.run_phases(until, single_batch, &mut run).await;
        let placed = self.place_bookmark().await;
        tracing::debug!(
            projection = projection_name::<P>(),
            handled = run.events_handled,
            streamed = run.events_streamed,
            queries = run.queries_done,
            cursor = ?self.cursor,
            failed = outcome.is_err(),
            "projector run finished"
        );
        match (outcome, placed) {
            (Ok(()), Ok(())) => Ok(run),
            (Err(e), Ok(())) | (Ok(()), Err(e)) => Err(e),
            (Err(e), Err(place_error)) => {
                tracing::warn!(
                    projection = projection_name::<P>(),
                    error = %place_error,
                    "could not place the bookmark after a failed run"
                );
                Err(e)
            }
        }
    }

    async fn run_phases(
        &mut self,
        until: Option<u64>,
        single_batch: bool,
        run: &mut ProjectorMetrics,
    ) -> Result<(), ProjectorError> {
        if !self.init_done && self.cursor.is_none() && self.bookmark.is_none() {
            if let Some(query) = self.projection.init_query() {
                let query = match until {
                    Some(position) => query.until(position),
                    None => query,
                };
                let page = self.read(&query, run).await?;
                self.handle(&page, run)?;
                self.cursor = page.iter().map(|e| e.position).max();
            }
            self.init_done = true;
        }

        let mut query = self
            .projection
            .event_query()
            .after(self.cursor.unwrap_or(0));
        if let Some(position) = until {
            query = query.until(position);
        }
        let mut pages = PageLoop::new(self.store, query, self.limit);
        while let Some(page) = pages.next().await {
            let page = page?;
            self.count_reads(run, 1, page.len());
            self.handle(&page, run)?;
            if let Some(last) = page.last().map(|e| e.position) {
                self.cursor = Some(self.cursor.map_or(last, |c| c.max(last)));
            }
            if single_batch {
                return Ok(());
            }
        }
        // The read that found nothing after the last full page is a query too.
        self.count_reads(run, pages.empty_reads(), 0);
        Ok(())
    }

    /// One query (the init query), counted.
    async fn read(
        &mut self,
        query: &EventQuery,
        run: &mut ProjectorMetrics,
    ) -> Result<Vec<RecordedEvent>, ProjectorError> {
        let page = self.store.read(query).await?;
        self.count_reads(run, 1, page.len());
        Ok(page)
    }

    /// Counts `queries` reads that returned `events` events, in the run and in the totals.
    fn count_reads(&mut self, run: &mut ProjectorMetrics, queries: u64, events: usize) {
        let done = ProjectorMetrics {
            events_streamed: events as u64,
            queries_done: queries,
            ..ProjectorMetrics::default()
        };
        run.absorb(&done);
        self.total.absorb(&done);
    }

    /// Hands one page to the projection, counting what was handled even when it fails.
    fn handle(
        &mut self,
        page: &[RecordedEvent],
        run: &mut ProjectorMetrics,
    ) -> Result<(), ProjectorError> {
        let mut done = ProjectorMetrics::default();
        let outcome = handle_page(&mut *self.projection, page, &mut done);
        run.absorb(&done);
        self.total.absorb(&done);
        outcome
    }

    /// Places the bookmark at the cursor if the cursor moved since it was last read or placed.
    async fn place_bookmark(&mut self) -> Result<(), ProjectorError> {
        let (Some(reader), Some(cursor)) = (&self.bookmark, self.cursor) else {
            return Ok(());
        };
        if self.synced == Some(cursor) {
            return Ok(());
        }
        reader
            .place(cursor)
            .await
            .map_err(|source| ProjectorError::BookmarkPlace {
                reader: reader.name().to_owned(),
                position: cursor,
                source,
            })?;
        self.synced = Some(cursor);
        Ok(())
    }
}

/// The per-event path: a plain loop, no future or box per event.
fn handle_page<P: Projection>(
    projection: &mut P,
    page: &[RecordedEvent],
    done: &mut ProjectorMetrics,
) -> Result<(), ProjectorError> {
    for raw in page {
        let event = raw
            .decode::<P::Event>()
            .map_err(|source| ProjectorError::Decode {
                position: raw.position,
                event_type: raw.event_type.as_ref().to_owned(),
                projection: projection_name::<P>(),
                source,
            })?;
        projection
            .when(&event)
            .map_err(|source| ProjectorError::Handler {
                position: raw.position,
                event_type: raw.event_type.as_ref().to_owned(),
                projection: projection_name::<P>(),
                source,
            })?;
        done.events_handled += 1;
        done.last_position = Some(raw.position);
    }
    Ok(())
}

impl<S: ?Sized, P> fmt::Debug for Projector<'_, S, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Projector")
            .field("projection", &projection_name::<P>())
            .field("batch_size", &self.batch_size)
            .field("cursor", &self.cursor)
            .field("init_done", &self.init_done)
            .field("bookmark", &self.bookmark)
            .field("total", &self.total)
            .finish_non_exhaustive()
    }
}

impl<S: ?Sized, P> fmt::Debug for ProjectorBuilder<'_, S, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProjectorBuilder")
            .field("projection", &projection_name::<P>())
            .field("batch_size", &self.batch_size)
            .field("starting_after", &self.starting_after)
            .field("bookmark", &self.bookmark)
            .finish_non_exhaustive()
    }
}

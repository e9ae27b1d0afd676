//! Paged reads: the [`Pages`] stream of [`EventStore::read_pages`], its default built on
//! [`EventStore::read`], and the one loop that consumes pages for the model runner and the
//! projector.

use futures::StreamExt as _;
use futures::stream::{BoxStream, Stream};

use super::{EventStore, StoreError};
use crate::event::RecordedEvent;
use crate::query::{Direction, EventQuery, Limit};

/// The pages of [`EventStore::read_pages`]: non-empty pages of events in the query's
/// direction; the last one is short, or the stream ends when a read finds nothing. The stream
/// ends after yielding an error.
pub type Pages<'a> = BoxStream<'a, Result<Vec<RecordedEvent>, StoreError>>;

/// Where a paged read stands: the query of the next page and how many events the query's
/// own limit still allows.
#[derive(Debug, Clone)]
pub(crate) struct Cursor {
    query: EventQuery,
    page_size: u64,
    remaining: Option<u64>,
    done: bool,
}

impl Cursor {
    /// The first page of `query` (whose limit caps the total) in pages of `page_size`.
    pub(crate) fn new(query: EventQuery, page_size: Limit) -> Self {
        Cursor {
            remaining: query.limit_value().map(Limit::get),
            query,
            page_size: page_size.get(),
            done: false,
        }
    }

    /// The query of the next page, or `None` when the read is over.
    pub(crate) fn next_page(&self) -> Option<EventQuery> {
        if self.done || self.remaining == Some(0) {
            return None;
        }
        let size = self
            .remaining
            .map_or(self.page_size, |r| r.min(self.page_size));
        // `size` is at least 1: `remaining` is not 0 and a page size never is.
        Some(self.query.clone().with_limit(Limit::new(size).ok()))
    }

    /// Moves past `page`, which the query of [`next_page`](Self::next_page) returned, and
    /// tells whether another page may follow (this one was full and the limit allows more).
    pub(crate) fn advance(&mut self, page: &[RecordedEvent]) -> bool {
        self.step(page.last().map(|e| e.position), page.len() as u64)
    }

    /// Moves past the next page as if it came back full (`read` events, the last at `last`),
    /// to tell the query of the page after it; the same answer as [`advance`](Self::advance).
    pub(crate) fn assume_full(&mut self, last: u64, read: u64) -> bool {
        self.step(Some(last), read)
    }

    fn step(&mut self, last: Option<u64>, read: u64) -> bool {
        let size = self
            .remaining
            .map_or(self.page_size, |r| r.min(self.page_size));
        match last {
            Some(last) => {
                self.query = match self.query.direction_value() {
                    Direction::Forward => self.query.clone().after(last),
                    Direction::Backward => self.query.clone().before(last),
                };
            }
            None => self.done = true,
        }
        self.remaining = self.remaining.map(|r| r.saturating_sub(read));
        if read != size {
            self.done = true;
        }
        !self.done && self.remaining != Some(0)
    }

    /// Ends the read (after an error).
    pub(crate) fn stop(&mut self) {
        self.done = true;
    }
}

/// The default [`EventStore::read_pages`]: each page read with [`EventStore::read`] when it
/// is asked for.
pub(super) fn pages<'a, S: EventStore + ?Sized>(
    store: &'a S,
    query: EventQuery,
    page_size: Limit,
) -> impl Stream<Item = Result<Vec<RecordedEvent>, StoreError>> + Send + 'a {
    futures::stream::unfold(
        Cursor::new(query, page_size),
        move |mut cursor| async move {
            let page_query = cursor.next_page()?;
            match store.read(&page_query).await {
                Err(e) => {
                    cursor.stop();
                    Some((Err(e), cursor))
                }
                Ok(events) if events.is_empty() => None,
                Ok(events) => {
                    cursor.advance(&events);
                    Some((Ok(events), cursor))
                }
            }
        },
    )
}

/// The one read loop of the model runner and the projector: `query` read forward in pages
/// through [`EventStore::read_pages`], handed out one by one.
pub(crate) struct PageLoop<'a> {
    pages: Pages<'a>,
    size: u64,
    last_full: bool,
    ended: bool,
}

impl<'a> PageLoop<'a> {
    /// The pages of `query` (read forward; its limit is replaced by the page size).
    pub(crate) fn new<S: EventStore + ?Sized>(
        store: &'a S,
        query: EventQuery,
        page_size: Limit,
    ) -> Self {
        let query = query.forward().with_limit(None);
        PageLoop {
            pages: store.read_pages(query, page_size),
            size: page_size.get(),
            last_full: true,
            ended: false,
        }
    }

    /// The next page; `None` after the last one.
    pub(crate) async fn next(&mut self) -> Option<Result<Vec<RecordedEvent>, StoreError>> {
        let next = self.pages.next().await;
        match &next {
            Some(Ok(page)) => self.last_full = page.len() as u64 == self.size,
            Some(Err(_)) => {}
            None => self.ended = true,
        }
        next
    }

    /// The reads that found nothing and so handed out no page: one when the loop ended after
    /// a full page or with no page at all, else none. With one read per page handed out, the
    /// number of queries the loop made.
    pub(crate) fn empty_reads(&self) -> u64 {
        u64::from(self.ended && self.last_full)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorded(position: u64) -> RecordedEvent {
        crate::event::Recorded {
            position,
            id: uuid::Uuid::nil(),
            event_type: std::sync::Arc::from("t"),
            tags: crate::event::Tags::empty(),
            timestamp: chrono::DateTime::UNIX_EPOCH,
            data: crate::event::Payload::new(),
        }
    }

    fn page(positions: std::ops::RangeInclusive<u64>) -> Vec<RecordedEvent> {
        positions.map(recorded).collect()
    }

    #[test]
    fn a_cursor_walks_forward_and_stops_after_a_short_page() {
        let mut cursor = Cursor::new(EventQuery::match_all(), Limit::from_const(3));
        let first = cursor.next_page().expect("first page");
        assert_eq!(first.limit_value().map(Limit::get), Some(3));
        assert!(cursor.advance(&page(1..=3)));
        assert_eq!(cursor.next_page().expect("second").after_position(), 3);
        assert!(!cursor.advance(&page(4..=5)));
        assert!(cursor.next_page().is_none());
    }

    #[test]
    fn a_cursor_keeps_to_the_query_limit() {
        let query = EventQuery::match_all().limit(5).expect("limit");
        let mut cursor = Cursor::new(query, Limit::from_const(3));
        assert!(cursor.advance(&page(1..=3)));
        let last = cursor.next_page().expect("the rest");
        assert_eq!(last.limit_value().map(Limit::get), Some(2));
        assert!(!cursor.advance(&page(4..=5)));
        assert!(cursor.next_page().is_none());
    }

    #[test]
    fn an_empty_page_ends_the_read() {
        let mut cursor = Cursor::new(EventQuery::match_all(), Limit::from_const(3));
        assert!(!cursor.advance(&[]));
        assert!(cursor.next_page().is_none());
    }
}

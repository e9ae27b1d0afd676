//! Read-ahead for paged reads, shared by the SQLite and PostgreSQL stores: their
//! [`EventStore::read_pages`](super::EventStore::read_pages) is [`pages_ahead`].
//!
//! A paged read is sequential by construction, so once a forward page comes back full the
//! read of the next one starts in a task of its own while the caller handles this one.
//!
//! A full page never changes: positions are assigned in commit order and events are
//! immutable, so no event can later appear at or before the last position of a page that was
//! full. A page read ahead that is full is therefore what a read at the time of the request
//! would return. One that is short may miss events appended since it was read: it is
//! discarded and the page read afresh.
//!
//! A store may also say that a page's query is *consecutive*: it selects every position after
//! its start, as far as a page goes (a query that selects every event, in a store without
//! gaps between positions). That page then ends `page size` positions later, so the page
//! after it can be read at the same time (on another connection): two pages are read ahead.
//! Were the guess wrong, that page would merely go unused.
//!
//! Backward reads are read one page at a time, as are the reads of a store that says it
//! does not read ahead ([`PageReader::reads_ahead`]).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;

use tokio::task::JoinHandle;

use super::StoreError;
use super::paging::{Cursor, Pages};
use crate::event::RecordedEvent;
use crate::query::{Direction, EventQuery, Limit};

/// The read of one page.
pub type PageFuture = Pin<Box<dyn Future<Output = Result<Vec<RecordedEvent>, StoreError>> + Send>>;

/// A page being read in a task of its own.
pub type PageTask = JoinHandle<Result<Vec<RecordedEvent>, StoreError>>;

/// What a store lends [`pages_ahead`]: a handle (cheap to clone, usually an `Arc`) that
/// reads pages.
pub trait PageReader: Send + Sync + 'static {
    /// Reads the page `query` (a read with a limit: the page size).
    fn read_page(&self, query: EventQuery) -> PageFuture;

    /// Starts reading the page `query` in a task of its own. The default spawns
    /// [`read_page`](Self::read_page) on the runtime; a store whose reads block a thread may
    /// start a blocking task directly (one wake-up less per page).
    fn start(&self, query: EventQuery) -> PageTask {
        tokio::spawn(self.read_page(query))
    }

    /// Whether the page `query` selects every position after its start (see the module
    /// documentation). The default is `false`: one page ahead.
    fn consecutive(&self, _query: &EventQuery) -> bool {
        false
    }

    /// Whether to read pages ahead at all (a store with one connection would gain nothing).
    /// The default is `true`.
    fn reads_ahead(&self) -> bool {
        true
    }
}

/// A page read ahead, cancelled when it is dropped unused.
struct Ahead {
    query: EventQuery,
    task: PageTask,
}

impl Drop for Ahead {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The state of one paged read.
struct Reading<R> {
    reader: R,
    cursor: Cursor,
    forward: bool,
    ahead: VecDeque<Ahead>,
}

impl<R: PageReader> Reading<R> {
    /// The page `query`: the one read ahead for it when that came back full, else read now.
    async fn page(&mut self, query: EventQuery) -> Result<Vec<RecordedEvent>, StoreError> {
        let size = query.limit_value().map_or(0, Limit::get);
        while let Some(mut ahead) = self.ahead.pop_front() {
            if ahead.query != query {
                continue;
            }
            // Short (events may have been appended since), failed or cancelled: read afresh.
            if let Ok(Ok(page)) = (&mut ahead.task).await
                && page.len() as u64 == size
            {
                return Ok(page);
            }
            break;
        }
        self.reader.read_page(query).await
    }

    /// Starts the reads of the next page, and of the one after it when the next is
    /// consecutive, unless they are being read already.
    fn read_ahead(&mut self) {
        let Some(next) = self.cursor.next_page() else {
            return;
        };
        let mut pages = vec![next.clone()];
        if self.reader.consecutive(&next) {
            let mut after = self.cursor.clone();
            let start = next.after_position();
            let span = next.limit_value().map_or(0, Limit::get);
            if let Some(end) = start.checked_add(span)
                && after.assume_full(end, span)
                && let Some(page) = after.next_page()
            {
                pages.push(page);
            }
        }
        for query in pages {
            if self.ahead.iter().all(|a| a.query != query) {
                let task = self.reader.start(query.clone());
                self.ahead.push_back(Ahead { query, task });
            }
        }
    }
}

/// The pages of `query` in pages of `page_size` (the query's own limit caps the total),
/// reading forward pages ahead through `reader` (see the module documentation).
pub fn pages_ahead<R: PageReader>(
    reader: R,
    query: EventQuery,
    page_size: Limit,
) -> Pages<'static> {
    let reading = Reading {
        forward: query.direction_value() == Direction::Forward && reader.reads_ahead(),
        reader,
        cursor: Cursor::new(query, page_size),
        ahead: VecDeque::new(),
    };
    Box::pin(futures::stream::unfold(reading, |mut reading| async move {
        let query = reading.cursor.next_page()?;
        match reading.page(query).await {
            Err(e) => {
                reading.cursor.stop();
                reading.ahead.clear();
                Some((Err(e), reading))
            }
            Ok(page) if page.is_empty() => None,
            Ok(page) => {
                if reading.cursor.advance(&page) && reading.forward {
                    reading.read_ahead();
                }
                Some((Ok(page), reading))
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures::StreamExt as _;
    use parking_lot::Mutex;

    use super::*;
    use crate::event::Tags;

    /// Events at `positions`, and the reads made of them: each read's start, with how many
    /// pages the reader had received when the read began.
    struct Fixture {
        events: Vec<RecordedEvent>,
        reads: Mutex<Vec<(u64, usize)>>,
        handed: Mutex<usize>,
        consecutive: bool,
    }

    #[derive(Clone)]
    struct Reader(Arc<Fixture>);

    impl PageReader for Reader {
        fn read_page(&self, query: EventQuery) -> PageFuture {
            // Noted when the read is started (a task's future is made when spawned).
            let fixture = Arc::clone(&self.0);
            fixture
                .reads
                .lock()
                .push((query.after_position(), *fixture.handed.lock()));
            Box::pin(async move {
                let limit = query.limit_value().map_or(usize::MAX, |l| l.get() as usize);
                Ok(fixture
                    .events
                    .iter()
                    .filter(|e| e.position > query.after_position())
                    .take(limit)
                    .cloned()
                    .collect())
            })
        }

        fn consecutive(&self, _query: &EventQuery) -> bool {
            self.0.consecutive
        }
    }

    impl Fixture {
        fn new(positions: impl IntoIterator<Item = u64>, consecutive: bool) -> Arc<Self> {
            let events = positions
                .into_iter()
                .map(|position| RecordedEvent {
                    position,
                    id: uuid::Uuid::nil(),
                    event_type: Arc::from("t"),
                    tags: Tags::empty(),
                    timestamp: chrono::DateTime::UNIX_EPOCH,
                    data: bytes::Bytes::new(),
                })
                .collect();
            Arc::new(Fixture {
                events,
                reads: Mutex::new(Vec::new()),
                handed: Mutex::new(0),
                consecutive,
            })
        }

        /// Reads every page of `size` (the query's limit `total`); returns the positions
        /// received.
        async fn page_through(self: &Arc<Self>, size: u64, total: Option<u64>) -> Vec<u64> {
            let query = EventQuery::match_all().with_limit(total.and_then(|t| Limit::new(t).ok()));
            let mut pages = pages_ahead(Reader(Arc::clone(self)), query, Limit::new(size).unwrap());
            let mut seen = Vec::new();
            while let Some(page) = pages.next().await {
                let page = page.unwrap();
                assert!(!page.is_empty());
                *self.handed.lock() += 1;
                seen.extend(page.iter().map(|e| e.position));
            }
            seen
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap()
    }

    #[test]
    fn pages_are_read_one_ahead_or_two_when_consecutive() {
        runtime().block_on(async {
            for (consecutive, lead) in [(false, 1), (true, 2)] {
                let fixture = Fixture::new(1..=60, consecutive);
                let seen = fixture.page_through(5, None).await;
                assert_eq!(seen, (1..=60).collect::<Vec<_>>());
                // Page j (from 5 j) was started when page j - lead was received: one page
                // ahead, or two when the pages are consecutive (from the first page on).
                let reads = fixture.reads.lock().clone();
                for j in 2..12_usize {
                    let started: Vec<usize> = reads
                        .iter()
                        .filter(|(after, _)| *after == 5 * j as u64)
                        .map(|(_, handed)| *handed)
                        .collect();
                    assert_eq!(
                        started,
                        [j.saturating_sub(lead)],
                        "page {j} ({consecutive}): {reads:?}"
                    );
                }
            }
        });
    }

    #[test]
    fn wrong_guesses_and_limits_leave_pages_exact() {
        runtime().block_on(async {
            let positions: Vec<u64> = (1..=80).filter(|p| ![23, 41, 42, 57].contains(p)).collect();
            for size in [1, 4, 5, 7] {
                for consecutive in [false, true] {
                    for total in [None, Some(9), Some(30)] {
                        let fixture = Fixture::new(positions.clone(), consecutive);
                        let seen = fixture.page_through(size, total).await;
                        let expected: Vec<u64> = positions
                            .iter()
                            .copied()
                            .take(total.map_or(usize::MAX, |t| t as usize))
                            .collect();
                        assert_eq!(seen, expected, "pages of {size} ({consecutive}, {total:?})");
                    }
                }
            }
        });
    }
}

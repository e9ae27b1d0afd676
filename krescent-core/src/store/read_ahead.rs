//! Sequential read-ahead of paged forward reads, shared by the SQLite and PostgreSQL stores.
//!
//! A forward read with a limit that returns a full page is noted by its continuation (the
//! same query after the page's last position). When a later read asks for a noted
//! continuation, its reader is sequential (a catch-up, a projector working through history),
//! and from then on each full page it receives starts the read of the next page in a task of
//! its own while the caller handles this one.
//!
//! A full page never changes: positions are assigned in commit order and events are
//! immutable, so no event can later appear at or before the last position of a page that was
//! full. A page read ahead that is full is therefore what a read at the time of the request
//! would return. One that is short may miss events appended since it was read: it is
//! discarded and the page read afresh.
//!
//! A store may also say that a continuation is *consecutive*: it selects every position after
//! its start, as far as a page goes (a query that selects every event, in a store without
//! gaps between positions). Its page then ends `page size` positions later, so the page after
//! it can be read at the same time (on another connection), before the first is back: two
//! pages are read ahead. Were the guess wrong, that page would merely go unused.

use std::future::Future;

use parking_lot::Mutex;
use tokio::task::JoinHandle;

use super::StoreError;
use crate::event::RecordedEvent;
use crate::query::{Direction, EventQuery};

/// How many sequential readers are followed at once.
const READERS: usize = 4;

/// How many pages are read ahead at once, for all readers (two per reader at most).
const READING: usize = 2 * READERS;

/// A page being read ahead.
type PageTask = JoinHandle<Result<Vec<RecordedEvent>, StoreError>>;

/// The read-ahead state of one store.
#[derive(Default)]
pub struct ReadAhead {
    /// Continuations of recent full pages: a read equal to one of them is sequential.
    noted: Vec<EventQuery>,
    /// Pages being read ahead, by the query that will ask for them.
    reading: Vec<(EventQuery, PageTask)>,
}

impl ReadAhead {
    /// The page size of `query` if it is a forward read with a limit, the only reads that
    /// are paged.
    pub fn page_size(query: &EventQuery) -> Option<usize> {
        match (query.direction_value(), query.limit_value()) {
            (Direction::Forward, Some(limit)) => usize::try_from(limit.get()).ok(),
            _ => None,
        }
    }
}

/// Reads the page `query` (a forward read of `page_size` events) with `read_now`, taking a
/// page read ahead when there is a full one, and starts reading the next page when the reader
/// is sequential and this page is full; also the page after it when `consecutive` says the
/// next one (the continuation of this page) is consecutive (see the
/// [module documentation](self)).
pub async fn read_pages_ahead<F, Fut, C>(
    ahead: &Mutex<ReadAhead>,
    query: &EventQuery,
    page_size: usize,
    read_now: F,
    consecutive: C,
) -> Result<Vec<RecordedEvent>, StoreError>
where
    F: Fn(EventQuery) -> Fut,
    Fut: Future<Output = Result<Vec<RecordedEvent>, StoreError>> + Send + 'static,
    C: Fn(&EventQuery) -> bool,
{
    let start = |page| tokio::spawn(read_now(page));
    read_pages_with(ahead, query, page_size, &read_now, start, consecutive).await
}

/// [`read_pages_ahead`], with `start` starting the read of a page ahead: for a store whose
/// reads block a thread, a task on the blocking pool directly, rather than an async task that
/// waits for one (one wake-up less per page).
pub async fn read_pages_with<F, Fut, S, C>(
    ahead: &Mutex<ReadAhead>,
    query: &EventQuery,
    page_size: usize,
    read_now: F,
    start: S,
    consecutive: C,
) -> Result<Vec<RecordedEvent>, StoreError>
where
    F: Fn(EventQuery) -> Fut,
    Fut: Future<Output = Result<Vec<RecordedEvent>, StoreError>>,
    S: Fn(EventQuery) -> PageTask,
    C: Fn(&EventQuery) -> bool,
{
    let (task, sequential) = {
        let mut ahead = ahead.lock();
        let task = ahead
            .reading
            .iter()
            .position(|(q, _)| q == query)
            .map(|i| ahead.reading.remove(i).1);
        let noted = ahead.noted.iter().position(|q| q == query);
        if let Some(i) = noted {
            ahead.noted.remove(i);
        }
        let sequential = task.is_some() || noted.is_some();
        (task, sequential)
    };
    let page = match task {
        Some(task) => match task.await {
            Ok(Ok(page)) if page.len() == page_size => page,
            // Short (events may have been appended since), failed or cancelled: read afresh.
            _ => read_now(query.clone()).await?,
        },
        None => read_now(query.clone()).await?,
    };
    if page.len() == page_size
        && let Some(last) = page.last()
    {
        let next = query.clone().after(last.position);
        if sequential {
            let mut pages = vec![next.clone()];
            if consecutive(&next) {
                let size = u64::try_from(page_size).unwrap_or(u64::MAX);
                if let Some(end) = last.position.checked_add(size) {
                    pages.push(query.clone().after(end));
                }
            }
            let mut ahead = ahead.lock();
            for page in pages {
                // Already read ahead when the page before was consecutive.
                if ahead.reading.iter().any(|(q, _)| *q == page) {
                    continue;
                }
                if ahead.reading.len() == READING {
                    // The reader that has waited longest stopped following its pages (or a
                    // guess went unused); its page is dropped when read.
                    ahead.reading.remove(0);
                }
                let task = start(page.clone());
                ahead.reading.push((page, task));
            }
        } else {
            let mut ahead = ahead.lock();
            if ahead.noted.len() == READERS {
                ahead.noted.remove(0);
            }
            ahead.noted.push(next);
        }
    }
    Ok(page)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::event::Tags;

    /// Events at `positions`, and the reads made of them: each read's start, with how many
    /// pages the reader had received when the read began.
    struct Fixture {
        events: Vec<RecordedEvent>,
        reads: Mutex<Vec<(u64, usize)>>,
        handed: Mutex<usize>,
    }

    impl Fixture {
        fn new(positions: impl IntoIterator<Item = u64>) -> Arc<Self> {
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
            })
        }

        /// Reads every page of `size` in order; returns the positions received.
        async fn page_through(self: &Arc<Self>, size: u64, consecutive: bool) -> Vec<u64> {
            let ahead = Mutex::new(ReadAhead::default());
            let read_now = |query: EventQuery| {
                // Noted when the read is started (a task's future is made when spawned).
                self.reads
                    .lock()
                    .push((query.after_position(), *self.handed.lock()));
                let fixture = Arc::clone(self);
                async move {
                    let limit = query.limit_value().map_or(usize::MAX, |l| l.get() as usize);
                    Ok(fixture
                        .events
                        .iter()
                        .filter(|e| e.position > query.after_position())
                        .take(limit)
                        .cloned()
                        .collect())
                }
            };
            let mut seen = Vec::new();
            let mut cursor = 0;
            loop {
                let query = EventQuery::match_all().after(cursor).limit(size).unwrap();
                let page =
                    read_pages_ahead(&ahead, &query, size as usize, read_now, |_| consecutive)
                        .await
                        .unwrap();
                *self.handed.lock() += 1;
                let Some(last) = page.last() else { break };
                cursor = last.position;
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
    fn consecutive_pages_are_read_two_ahead() {
        runtime().block_on(async {
            for (consecutive, lead) in [(false, 1), (true, 2)] {
                let fixture = Fixture::new(1..=60);
                let seen = fixture.page_through(5, consecutive).await;
                assert_eq!(seen, (1..=60).collect::<Vec<_>>());
                // Page j (from 5 j) was started when page j - lead was received: one page
                // ahead, or two when the pages are consecutive.
                let reads = fixture.reads.lock().clone();
                for j in 3..12 {
                    let started: Vec<usize> = reads
                        .iter()
                        .filter(|(after, _)| *after == 5 * j as u64)
                        .map(|(_, handed)| *handed)
                        .collect();
                    assert_eq!(started, [j - lead], "page {j} ({consecutive}): {reads:?}");
                }
            }
        });
    }

    #[test]
    fn wrong_guesses_leave_pages_exact() {
        runtime().block_on(async {
            let positions: Vec<u64> = (1..=80).filter(|p| ![23, 41, 42, 57].contains(p)).collect();
            for size in [1, 4, 5, 7] {
                for consecutive in [false, true] {
                    let fixture = Fixture::new(positions.clone());
                    let seen = fixture.page_through(size, consecutive).await;
                    assert_eq!(seen, positions, "pages of {size} ({consecutive})");
                }
            }
        });
    }
}

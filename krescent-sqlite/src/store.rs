//! [`SqliteEventStore`]: the handle, its connections (the writer thread's and a pool of read
//! connections), and the [`EventStore`] implementation. Paged forward reads
//! ([`EventStore::read_pages`]) are read ahead here, and only here.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::connection::Conn;
use crate::error::SqliteError;
use crate::listener::{self, Listener};
use crate::options::MAX_IDLE_READERS;
use crate::schema::SCHEMA_VERSION;
use crate::writer::{self, Job};
use krescent_core::__backend::{PageFuture, PageReader, PageTask, pages_ahead};
use krescent_core::event::{NewEvent, RecordedEvent};
use krescent_core::query::{AppendCondition, EventQuery, Limit};
use krescent_core::store::{EventStore, Pages, StoreError, Subscription};

/// An [`EventStore`] in one SQLite file (WAL mode), or in memory for tests.
///
/// Cloning gives another handle to the same store. The threads and connections close when
/// the last handle (and the last subscription) is dropped.
///
/// ```no_run
/// # async fn demo() -> Result<(), krescent_core::StoreError> {
/// use krescent_sqlite::SqliteEventStore;
/// use krescent_core::{EventQuery, EventStore};
///
/// let store = SqliteEventStore::open("warehouse.db").await?;
/// let everything = store.read(&EventQuery::match_all()).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SqliteEventStore {
    inner: Arc<Inner>,
}

struct Inner {
    writer: mpsc::Sender<Job>,
    /// Read connections of a file store; `None` in memory, where the writer thread reads.
    readers: Option<Readers>,
    head: Listener,
    path: Option<PathBuf>,
}

struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Conn>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the last connection of a WAL database checkpoints it: let the writer thread
        // do that rather than whichever (possibly async) thread drops the last handle.
        if let Some(readers) = &self.readers {
            let idle = std::mem::take(&mut *readers.idle.lock());
            if !idle.is_empty() {
                let _ = self.writer.send(Job::Close(idle));
            }
        }
    }
}

impl fmt::Debug for SqliteEventStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteEventStore")
            .field("path", &self.inner.path)
            .field("head", &self.inner.head.head())
            .finish()
    }
}

impl SqliteEventStore {
    /// The schema version this crate creates and reads.
    pub const SCHEMA_VERSION: i64 = SCHEMA_VERSION;

    /// Opens the store in the file at `path`, creating the file and the schema if needed.
    ///
    /// Opening is idempotent. A file that is not a SQLite database gives
    /// [`SqliteError::NotADatabase`], one with another schema version
    /// [`SqliteError::UnsupportedSchemaVersion`] (both inside [`StoreError::Backend`]).
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Ok(Self::open_file(path.as_ref()).await?)
    }

    /// A new, empty store in memory, lost when the last handle is dropped. For tests.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        Ok(Self::in_memory()?)
    }

    /// [`open`](Self::open), with this crate's error.
    pub(crate) async fn open_file(path: &Path) -> Result<Self, SqliteError> {
        let path = path.to_path_buf();
        let opening = path.clone();
        let (conn, head) = blocking(move || {
            let mut conn = Conn::open_writer(&opening)?;
            conn.ensure_schema()?;
            let head = conn.head()?;
            Ok((conn, head))
        })
        .await?;
        Self::start(conn, head, Some(path))
    }

    /// [`open_in_memory`](Self::open_in_memory), with this crate's error.
    pub(crate) fn in_memory() -> Result<Self, SqliteError> {
        let mut conn = Conn::open_in_memory()?;
        conn.ensure_schema()?;
        Self::start(conn, 0, None)
    }

    fn start(conn: Conn, head: u64, path: Option<PathBuf>) -> Result<Self, SqliteError> {
        let (publisher, listener) = listener::channel(head, path.clone());
        let writer = writer::spawn(conn, publisher)?;
        let readers = path.as_ref().map(|p| Readers {
            path: p.clone(),
            idle: Mutex::new(Vec::new()),
        });
        Ok(SqliteEventStore {
            inner: Arc::new(Inner {
                writer,
                readers,
                head: listener,
                path,
            }),
        })
    }

    /// Where subscriptions of this store wait for appends.
    #[cfg(test)]
    pub(crate) fn listener(&self) -> &Listener {
        &self.inner.head
    }

    /// The file of the store; `None` in memory.
    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    /// The SQLite query plan (`EXPLAIN QUERY PLAN`) of the statement that
    /// [`read`](EventStore::read) runs for `query` on the store's current contents, one line
    /// per step. For tests of the index design; not a stable format.
    #[doc(hidden)]
    pub async fn explain(&self, query: &EventQuery) -> Result<String, StoreError> {
        let query = query.clone();
        Ok(self.with_reader(move |conn| conn.explain(&query)).await?)
    }

    /// Reads `query` on a read connection.
    async fn read_now(&self, query: EventQuery) -> Result<Vec<RecordedEvent>, StoreError> {
        if query.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self.with_reader(move |conn| conn.read(&query)).await?)
    }

    /// Runs `f` with a read connection, off the async runtime's workers (on the writer
    /// thread in memory).
    pub(crate) async fn with_reader<T, F>(&self, f: F) -> Result<T, SqliteError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Conn) -> Result<T, SqliteError> + Send + 'static,
    {
        if self.inner.readers.is_none() {
            return self.on_writer(f).await?;
        }
        let inner = Arc::clone(&self.inner);
        blocking(move || inner.on_reader(f)).await
    }

    /// Runs `f` on the writer thread (which owns the write connection), between appends, and
    /// waits for its result without blocking the async runtime.
    pub(crate) async fn on_writer<T, F>(&self, f: F) -> Result<T, SqliteError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Conn) -> T + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job = Job::Run(Box::new(move |conn: &mut Conn| {
            // The caller may have stopped waiting; the outcome stands either way.
            let _ = tx.send(f(conn));
        }));
        self.inner
            .writer
            .send(job)
            .map_err(|_| SqliteError::WriterStopped)?;
        rx.await.map_err(|_| SqliteError::WriterStopped)
    }
}

impl Inner {
    /// Runs `f` with an idle read connection (or a new one), on the calling thread.
    fn on_reader<T>(
        &self,
        f: impl FnOnce(&mut Conn) -> Result<T, SqliteError>,
    ) -> Result<T, SqliteError> {
        let Some(readers) = &self.readers else {
            return Err(SqliteError::Thread("no read connections".into()));
        };
        let popped = readers.idle.lock().pop();
        let mut conn = match popped {
            Some(conn) => conn,
            None => Conn::open_reader(&readers.path)?,
        };
        let result = f(&mut conn);
        let mut idle = readers.idle.lock();
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
        result
    }
}

/// Runs blocking SQLite work on tokio's blocking pool.
async fn blocking<T, F>(f: F) -> Result<T, SqliteError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, SqliteError> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(e) => Err(SqliteError::Thread(e.to_string())),
    }
}

#[async_trait]
impl EventStore for SqliteEventStore {
    async fn append(
        &self,
        events: Vec<NewEvent>,
        condition: Option<AppendCondition>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.inner
            .writer
            .send(Job::Append {
                events,
                condition,
                reply,
            })
            .map_err(|_| SqliteError::WriterStopped)?;
        rx.await.map_err(|_| SqliteError::WriterStopped)?
    }

    async fn read(&self, query: &EventQuery) -> Result<Vec<RecordedEvent>, StoreError> {
        self.read_now(query.clone()).await
    }

    fn read_pages(&self, query: EventQuery, page_size: Limit) -> Pages<'_> {
        pages_ahead(self.clone(), query, page_size)
    }

    async fn head(&self) -> Result<u64, StoreError> {
        Ok(self.with_reader(Conn::head).await?)
    }

    fn subscribe(&self, query: EventQuery, after: u64, cancel: CancellationToken) -> Subscription {
        self.inner.head.subscribe(self, query, after, cancel)
    }
}

/// Pages for [`pages_ahead`]: read on a read connection; a page read ahead starts on the
/// blocking pool directly. One page ahead only: a second page read at the same time would
/// take the core the caller folds on. An in-memory store, with its one connection, reads no
/// page ahead.
impl PageReader for SqliteEventStore {
    fn read_page(&self, query: EventQuery) -> PageFuture {
        let store = self.clone();
        Box::pin(async move { store.read_now(query).await })
    }

    fn start(&self, query: EventQuery) -> PageTask {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            if query.is_empty() {
                return Ok(Vec::new());
            }
            Ok(inner.on_reader(|conn| conn.read(&query))?)
        })
    }

    fn reads_ahead(&self) -> bool {
        self.inner.readers.is_some()
    }
}

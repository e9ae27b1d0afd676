//! The SQLite backend: the embedded default, one file in WAL mode (the facade's feature `sqlite`). The
//! event store [`SqliteEventStore`], and in the same file the checkpoints of read models
//! ([`SqliteCheckpointStorage`], with [`SqliteWrites`] for projection tables committed in the
//! checkpoint's transaction) and the bookmarks of projectors ([`SqliteBookmarkStorage`]).
//!
//! # Threads
//!
//! SQLite calls block, so none of them runs on the async runtime's worker threads. One
//! dedicated writer thread owns the write connection and receives appends through a channel;
//! appends that queue up while it works are committed together in one transaction (each in
//! its own savepoint, so a failing condition rolls back only its own batch). Reads run on
//! tokio's blocking pool with a small pool of read connections; in WAL mode they never wait
//! for the writer. An in-memory store has a single connection, so its reads go to the writer
//! thread too.
//!
//! Paged forward reads are read ahead: when a full page continues the previous full page of
//! the same query (a catch-up, a projector working through history), the store starts reading
//! the next page on the blocking pool while the caller handles this one, so reading and
//! handling use both cores. A page read ahead is used only if it is full (a full page never
//! changes); a short one is read again, so events appended meanwhile are not missed.
//!
//! The payloads of the events one read returns share one buffer (one allocation per page,
//! not per event): an event kept after its page is dropped keeps that page's payload bytes
//! alive. Copy `data` (`Bytes::copy_from_slice`) to keep a few events of a large page.
//!
//! The checkpoint and bookmark storages are handles to a store
//! ([`SqliteEventStore::checkpoint_storage`], [`SqliteEventStore::bookmark_storage`], or a
//! store they open themselves): their writes run on its writer thread between appends, their
//! reads on its read connections. A model's [`SqliteWrites`] therefore run on the writer
//! thread too, and appends wait while they do.
//!
//! # Schema (version 1)
//!
//! ```sql
//! CREATE TABLE krescent_meta (key TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL) WITHOUT ROWID;
//! CREATE TABLE events (
//!     position INTEGER PRIMARY KEY,  -- the global position, from 1, without gaps
//!     type INTEGER NOT NULL,         -- event_types.id, for the type index
//!     record BLOB NOT NULL           -- the rest of the event, see below
//! );
//! CREATE INDEX events_type_position ON events (type, position);
//! CREATE TABLE event_segments (seg INTEGER PRIMARY KEY);  -- every segment holding an event
//! CREATE TABLE event_tags (
//!     seg INTEGER NOT NULL,          -- position >> 13: segments of 8,192 positions
//!     tag TEXT NOT NULL, type INTEGER NOT NULL, position INTEGER NOT NULL,
//!     PRIMARY KEY (seg, tag, type, position)
//! ) WITHOUT ROWID;
//! CREATE TABLE event_types (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
//! CREATE TABLE krescent_checkpoints (
//!     model TEXT PRIMARY KEY NOT NULL,   -- the model name
//!     position INTEGER NOT NULL,         -- the checkpoint's position, for people reading
//!     bytes BLOB NOT NULL                -- StoredCheckpoint::encode: metadata and state
//! );
//! CREATE TABLE krescent_checkpoint_deltas (
//!     model TEXT NOT NULL, position INTEGER NOT NULL,
//!     base_position INTEGER NOT NULL,    -- the checkpoint or delta it builds on
//!     bytes BLOB NOT NULL,               -- CheckpointDelta::encode
//!     PRIMARY KEY (model, position)
//! ) WITHOUT ROWID;
//! CREATE TABLE krescent_bookmarks (
//!     reader TEXT PRIMARY KEY NOT NULL,  -- the reader name
//!     position INTEGER NOT NULL
//! ) WITHOUT ROWID;
//! ```
//!
//! An event's `record` holds, in this order: its position and its type id again (8 bytes
//! each, little-endian), its id (a UUID v7, 16 bytes), its time (microseconds since the Unix
//! epoch, UTC, 8 bytes, little-endian), the length of its stored tags (4 bytes,
//! little-endian), its tags (`<byte length>:<tag>` for each tag, concatenated), and its
//! payload. A read decodes one value per event, the record: every further column SQLite and
//! rusqlite hand over costs about as much again per row as the scan itself. The `position` and
//! `type` columns are there for the indexes; a read also selects `position` (which costs
//! little while it is not fetched) to name the row of a damaged record. A record that is too
//! short for what its header says, whose type id is not stored, or whose position is out of
//! the order and range the statement reads in, is a [`SqliteStoreError::CorruptRow`].
//!
//! `krescent_meta` holds the `schema_version`, one for all the tables above; a file with any
//! other version than this crate's is refused with
//! [`SqliteStoreError::UnsupportedSchemaVersion`]. Until 1.0 a schema change edits version 1
//! in place; there are no migrations. Whoever opens a file first (a store or a storage)
//! creates the whole schema; every open runs the `CREATE TABLE IF NOT EXISTS` statements
//! again, so a table or index that is missing is created.
//!
//! `event_types` is the dictionary of the type names stored so far; events and the tag index
//! store its ids. Queries use it to skip types that are not stored, to expand tag-only query
//! items into one index range per type, and to read a query naming every stored type as a
//! plain scan of the primary key.
//!
//! The tag index is clustered by position: its key starts with the *segment* of the position,
//! so the rows of an append all go to the pages of the last one or two segments, whatever
//! their tags (a key starting with the tag would dirty about one page per event once the
//! index is larger than a batch). A query with tags walks the segments in its direction and
//! seeks `(segment, tag, type)` in each, stopping at its limit.
//!
//! Positions in `krescent_checkpoints` and `krescent_bookmarks` are `u64`s stored as the same
//! 64 bits in SQLite's signed integers: those above `i64::MAX` read as negative numbers in
//! SQL, and round-trip exactly. The checkpoint `bytes` are authoritative (their checksum covers
//! the model name, version, position, time and state); `position` is a copy for queries by
//! hand. Delete a model's row (and clear its projection tables) to make it rebuild from the
//! first event.
//!
//! # Queries
//!
//! An [`EventQuery`] becomes one parameterised statement. Each (item, type) pair is an *arm*
//! that yields positions in order from an index: `events_type_position` for an item with types
//! only, `event_tags` for an item with tags (one seek of `(segment, tag, type)` per segment of
//! `event_segments` in the position range; further tags are `EXISTS` look-ups on the same
//! key). One arm is joined with `events` directly; several are combined with `UNION ... ORDER
//! BY segment, position LIMIT n`, which SQLite evaluates as a lazy merge of the ordered arms
//! (type-only arms walk the segments too, so that every arm has the same order), then joined
//! with `events`. A query without items, or whose items match every event, reads the `events`
//! primary key range. So a backwards limit-1 query for the latest event of a type with a tag
//! costs one seek per segment from the newest until the first hit, and a read of a type or tag
//! after a position seeks from the segment of that position on: never a scan or a sort.
//!
//! # Several processes
//!
//! Several processes may open the same file: appends are serialised by SQLite and positions
//! stay dense. A subscription wakes up for appends made through its own store, though; events
//! appended by another process reach it with the next local append.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod bookmark;
mod checkpoint;
mod conn;
mod sql;
mod writer;

pub use bookmark::SqliteBookmarkStorage;
pub use checkpoint::{SqliteCheckpointStorage, SqliteStorageError, SqliteWrites};
/// The `rusqlite` this crate uses, for [`SqliteWrites`]' parameter values and closures: use it
/// instead of a `rusqlite` dependency of your own, so that the versions always match.
pub use rusqlite;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};

use async_trait::async_trait;
use parking_lot::Mutex;

use krescent_core::__backend::{ReadAhead, read_pages_with};
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;

use conn::Conn;
use krescent_core::event::{NewEvent, RecordedEvent};
use krescent_core::query::{AppendCondition, EventQuery};
use krescent_core::store::{EventStore, StoreError, Subscription};
use writer::Job;

/// The schema version this crate writes and reads.
const SCHEMA_VERSION: i64 = 1;

/// A segment of the tag index holds the positions `seg << SEGMENT_BITS ..
/// (seg + 1) << SEGMENT_BITS` (8,192 events). Smaller segments make an append dirty fewer
/// index pages: a batch of 1,000 events lands in random places of its segment's part of the
/// index, so it rewrites nearly every page of it (32,768-event segments cost the writer about
/// 20% more CPU per event than 8,192; 4,096 saved little more). Larger ones make a query for a
/// rare or absent tag seek fewer segments: at 1M events 123 of 8,192 against 31 of 32,768.
/// Part of the schema: a file's tag index is only valid for the size it was written with.
const SEGMENT_BITS: u32 = 13;

/// How many idle read connections a store keeps open.
const MAX_IDLE_READERS: usize = 4;

/// Why the SQLite backend failed; the `source` of [`StoreError::Backend`] with backend
/// `"sqlite"`. Find it with `error.source()` and `downcast_ref::<SqliteStoreError>()`.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SqliteStoreError {
    /// The file exists but is not a SQLite database.
    #[error("`{path}` is not a SQLite database")]
    NotADatabase {
        /// The file.
        path: String,
    },
    /// The file has a schema version this krescent does not know (written by a newer one).
    #[error(
        "`{path}` has krescent schema version {found}; this krescent supports only version \
         {supported}"
    )]
    UnsupportedSchemaVersion {
        /// The file.
        path: String,
        /// The version stored in `krescent_meta`.
        found: i64,
        /// The newest version this crate knows.
        supported: i64,
    },
    /// The file has a `krescent_meta` table without a usable schema version.
    #[error("`{path}` has a krescent_meta table without a schema version")]
    MissingSchemaVersion {
        /// The file.
        path: String,
    },
    /// A stored event row could not be read back (a damaged file, or a row written by
    /// something other than krescent).
    #[error("corrupt event row{}: {what}", at(*.position))]
    CorruptRow {
        /// The position of the row, when it could be read.
        position: Option<u64>,
        /// What is wrong with it.
        what: String,
    },
    /// SQLite reported an error.
    #[error("SQLite error: {0}")]
    Sqlite(#[source] Arc<rusqlite::Error>),
    /// The writer thread stopped, so nothing can be appended any more.
    #[error("the SQLite writer thread has stopped")]
    WriterStopped,
    /// A thread for SQLite work could not be started, or a blocking task failed.
    #[error("cannot run SQLite work on a blocking thread: {0}")]
    Thread(String),
}

fn at(position: Option<u64>) -> String {
    position.map_or_else(String::new, |p| format!(" at position {p}"))
}

impl From<rusqlite::Error> for SqliteStoreError {
    fn from(e: rusqlite::Error) -> Self {
        SqliteStoreError::Sqlite(Arc::new(e))
    }
}

impl From<SqliteStoreError> for StoreError {
    fn from(e: SqliteStoreError) -> Self {
        StoreError::Backend {
            backend: "sqlite",
            source: Box::new(e),
        }
    }
}

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
    head: watch::Receiver<u64>,
    path: Option<PathBuf>,
    /// Sequential read-ahead of paged forward reads (file stores only).
    ahead: Mutex<ReadAhead>,
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
            .field("head", &*self.inner.head.borrow())
            .finish()
    }
}

impl SqliteEventStore {
    /// The schema version this crate creates and reads.
    pub const SCHEMA_VERSION: i64 = SCHEMA_VERSION;

    /// Opens the store in the file at `path`, creating the file and the schema if needed.
    ///
    /// Opening is idempotent. A file that is not a SQLite database gives
    /// [`SqliteStoreError::NotADatabase`], one written by a newer krescent
    /// [`SqliteStoreError::UnsupportedSchemaVersion`] (both inside [`StoreError::Backend`]).
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
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

    /// A new, empty store in memory, lost when the last handle is dropped. For tests.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        let mut conn = Conn::open_in_memory()?;
        conn.ensure_schema()?;
        Self::start(conn, 0, None)
    }

    fn start(conn: Conn, head: u64, path: Option<PathBuf>) -> Result<Self, StoreError> {
        let (head_tx, head_rx) = watch::channel(head);
        let writer = writer::spawn(conn, head_tx)?;
        let readers = path.as_ref().map(|p| Readers {
            path: p.clone(),
            idle: Mutex::new(Vec::new()),
        });
        Ok(SqliteEventStore {
            inner: Arc::new(Inner {
                writer,
                readers,
                head: head_rx,
                path,
                ahead: Mutex::new(ReadAhead::default()),
            }),
        })
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
        self.with_reader(move |conn| conn.explain(&query)).await
    }

    /// Reads `query` on a read connection.
    async fn read_now(&self, query: EventQuery) -> Result<Vec<RecordedEvent>, StoreError> {
        self.with_reader(move |conn| conn.read(&query)).await
    }

    /// Runs `f` with a read connection, off the async runtime's workers.
    async fn with_reader<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Conn) -> Result<T, SqliteStoreError> + Send + 'static,
    {
        if self.inner.readers.is_none() {
            let (tx, rx) = oneshot::channel();
            let job = Job::Run(Box::new(move |conn: &mut Conn| {
                let _ = tx.send(f(conn));
            }));
            self.inner
                .writer
                .send(job)
                .map_err(|_| SqliteStoreError::WriterStopped)?;
            return Ok(rx.await.map_err(|_| SqliteStoreError::WriterStopped)??);
        }
        let inner = Arc::clone(&self.inner);
        blocking(move || inner.on_reader(f)).await
    }
}

impl Inner {
    /// Runs `f` with an idle read connection (or a new one), on the calling thread.
    fn on_reader<T>(
        &self,
        f: impl FnOnce(&mut Conn) -> Result<T, SqliteStoreError>,
    ) -> Result<T, SqliteStoreError> {
        let Some(readers) = &self.readers else {
            return Err(SqliteStoreError::Thread("no read connections".into()));
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
async fn blocking<T, F>(f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, SqliteStoreError> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => Ok(result?),
        Err(e) => Err(SqliteStoreError::Thread(e.to_string()).into()),
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
            .map_err(|_| SqliteStoreError::WriterStopped)?;
        rx.await.map_err(|_| SqliteStoreError::WriterStopped)?
    }

    async fn read(&self, query: &EventQuery) -> Result<Vec<RecordedEvent>, StoreError> {
        if query.is_empty() {
            return Ok(Vec::new());
        }
        // Read-ahead for file stores only: an in-memory store has one connection.
        let page_size = ReadAhead::page_size(query).filter(|_| self.inner.readers.is_some());
        let Some(page_size) = page_size else {
            return self.read_now(query.clone()).await;
        };
        // A page read ahead runs on the blocking pool directly.
        let start = |next: EventQuery| {
            let inner = Arc::clone(&self.inner);
            tokio::task::spawn_blocking(move || Ok(inner.on_reader(|conn| conn.read(&next))?))
        };
        // One page ahead: a second page read at the same time would take the core the caller
        // folds on.
        read_pages_with(
            &self.inner.ahead,
            query,
            page_size,
            |q| self.read_now(q),
            start,
            |_| false,
        )
        .await
    }

    async fn head(&self) -> Result<u64, StoreError> {
        self.with_reader(Conn::head).await
    }

    fn subscribe(&self, query: EventQuery, after: u64, cancel: CancellationToken) -> Subscription {
        Subscription::polling(self.clone(), query, after, self.inner.head.clone(), cancel)
    }
}

//! The SQLite backend: the embedded default, one file in WAL mode (the facade's feature `sqlite`). The
//! event store [`SqliteEventStore`], and in the same file the checkpoints of read models
//! ([`SqliteCheckpointStorage`], with [`SqliteWrites`] for projection tables committed in the
//! checkpoint's transaction) and the bookmarks of projectors ([`SqliteBookmarkStorage`]).
//! Every failure of the backend is a [`SqliteError`].
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
//! An event's `record` holds its position and type id again, its id (a UUID v7), its time
//! (microseconds since the Unix epoch), its tags and its payload; a read decodes that one
//! value per event. A record that cannot be decoded, or whose position is out of the order and
//! range the statement reads in, is a [`SqliteError::CorruptRow`] naming the row's position.
//!
//! `krescent_meta` holds the `schema_version`, one for all the tables above; a file with
//! another version is refused with [`SqliteError::UnsupportedSchemaVersion`]. Until 1.0 a
//! schema change edits version 1 in place; there are no migrations. Every open creates the
//! tables and indexes that are missing.
//!
//! `event_types` is the dictionary of the type names stored so far; events and the tag index
//! store its ids. The tag index is clustered by position: its key starts with the *segment* of
//! the position, so the rows of an append all go to the pages of the last one or two
//! segments, whatever their tags.
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
//! An [`EventQuery`](krescent_core::EventQuery) becomes one parameterised statement. Each
//! (item, type) pair is an *arm* that yields positions in order from an index:
//! `events_type_position` for an item with types only, `event_tags` for an item with tags (one
//! seek of `(segment, tag, type)` per segment in the position range). Several arms are merged
//! lazily in order, then joined with `events`; a query without items, or whose items match
//! every event, reads the `events` primary key range. So a backwards limit-1 query for the
//! latest event of a type with a tag costs one seek per segment from the newest until the
//! first hit, and a read of a type or tag after a position seeks from the segment of that
//! position on: never a scan or a sort.
//!
//! # Several processes
//!
//! Several processes may open the same file: appends are serialised by SQLite and positions
//! stay dense. A subscription wakes up at once for appends made through its own store; while
//! any subscription of a file store is live, the store also watches the file
//! (`PRAGMA data_version`, every 10 ms backing off to 250 ms while nothing changes) so that
//! events another process appends reach it within about a quarter of a second.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod append;
mod bookmark;
mod checkpoint;
mod connection;
mod error;
mod listener;
mod options;
mod query;
mod read;
mod record;
mod schema;
mod store;
mod writer;
mod writes;

pub use bookmark::SqliteBookmarkStorage;
pub use checkpoint::SqliteCheckpointStorage;
pub use error::SqliteError;
/// The `rusqlite` this crate uses, for [`SqliteWrites`]' parameter values and closures: use it
/// instead of a `rusqlite` dependency of your own, so that the versions always match.
pub use rusqlite;
pub use store::SqliteEventStore;
pub use writes::SqliteWrites;

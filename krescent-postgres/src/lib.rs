//! The PostgreSQL backend (the facade's feature `postgres`): the event store ([`PostgresEventStore`]),
//! checkpoint storage ([`PostgresCheckpointStorage`], with [`PostgresWrites`] for projection
//! writes committed in the same transaction as a checkpoint) and bookmark storage
//! ([`PostgresBookmarkStorage`]).
//!
//! The storages live in the event store's database next to its tables; get them from an open
//! store ([`PostgresEventStore::checkpoint_storage`], [`PostgresEventStore::bookmark_storage`])
//! to share its pool, or connect them on their own. [`tokio_postgres`] is re-exported, so
//! that users bind [`PostgresWrites`] parameters ([`ToSql`](tokio_postgres::types::ToSql)
//! values) with the same version of the driver.
//!
//! # Schema (version 1)
//!
//! Every table name starts with the configured prefix (default `krescent_`):
//!
//! | table | content |
//! | --- | --- |
//! | `<prefix>meta` | `(name, value)`: the `schema_version` |
//! | `<prefix>head` | one row: the position and time of the last append |
//! | `<prefix>events` | `position` (primary key), `id uuid`, `type`, `tags bytea` (each tag's length and text), `recorded_at`, `payload bytea`, `tag` (the event's smallest tag, NULL without tags), `type_id` (the type's id in `<prefix>types`); index `(type_id, position)`; index `(position >> 15, tag, type_id, position)` of the events with a tag |
//! | `<prefix>types` | one row per stored type name: `id` (primary key), `name` (unique) |
//! | `<prefix>extra_tags` | one row per further tag of each event: `tag`, `type`, `position`, `seg` (`position >> 15`, checked); primary key `(seg, tag, type, position)` |
//! | `<prefix>tag_starts` | one row per (tag, type) pair ever stored: `seg`, the first segment holding it; primary key `(tag, type)`, including `seg` |
//! | `<prefix>checkpoints` | one row per read model: `model` (primary key), `catalog_revision`, `model_version`, `shape`, `position`, `taken_at`, `checkpoint bytea` (see [`PostgresCheckpointStorage`]) |
//! | `<prefix>checkpoint_deltas` | checkpoint deltas: primary key `(model, position)`, `base_position`, `taken_at`, `delta bytea` |
//! | `<prefix>bookmarks` | one row per projector: `reader` (primary key), `position` |
//!
//! An event's smallest tag (in byte order, the order of [`Tags`](krescent_core::Tags)) is a column
//! of its row, and only its further tags are rows of `extra_tags`: with one tag per event,
//! the most common case, an append writes no tag row at all, only the entry of the tag index
//! on `events`. A tag query reads both indexes, which have the same key.
//! The tags of a query item are sorted too, so an event carrying all of them has either the
//! item's smallest tag in `events.tag` or all of them in `extra_tags`: the query drives from
//! the smallest tag in each index and checks the others in `extra_tags` alone.
//!
//! The indexes of `events` hold each type as a 4-byte id rather than its name: an insertion
//! compares integers instead of strings, and the keys are shorter. Ids are given by the append that stores a name's
//! first event, under the head's lock and in its transaction, so a name has an id exactly
//! when an event of it is committed. Queries name types, and each statement maps the names
//! to ids itself (`type_id = (SELECT id FROM <prefix>types WHERE name = $n)`), in its own
//! snapshot: a reader never misses a type created after it last looked.
//!
//! Both tag indexes are cut into *segments* of 32,768 positions, and their key starts with
//! the segment. An append's tag entries therefore all land in the pages of the newest
//! segment (a few hundred, which stay in memory), instead of one page per event anywhere in
//! an index that grows with the store (a key starting with the tag would dirty about one page
//! per event and, after each checkpoint, write a full-page image of it to the WAL). A tag query walks the
//! segments in its direction, one probe of each tag index per segment (`generate_series` in
//! a nested loop that stops at the limit), from the pair's first segment, read in
//! `tag_starts`, to the head's; a pair never stored costs a single probe of `tag_starts` and
//! visits no segment. An append inserts into `tag_starts` only the pairs the store handle has
//! not seen committed before (`ON CONFLICT DO NOTHING`, under the head's lock, so the first
//! segment is the earliest). The costs that remain: a tag stored long ago and rarely since,
//! for which a backward query visits every segment down to its latest event (at 1M events,
//! 31 segments); and a fixed cost per query, as PostgreSQL starts the walk's plan of about a
//! dozen nodes at every execution.
//!
//! Type names and tags are compared bytewise (`COLLATE "C"`), whatever the database's locale.
//! Connecting (the store or a storage) reads the schema version in `<prefix>meta` and the
//! head, with plain `SELECT`s: on an existing schema it runs no DDL and takes no lock, so
//! connects never wait for appends nor make them wait. Only a missing schema is created,
//! under an advisory lock of the prefix, after reading the version again under it (so that
//! concurrent first uses create it once). Until 1.0 a change of the schema edits version 1
//! in place: there are no migrations. Tables of any other version are refused
//! ([`PostgresError::UnsupportedSchemaVersion`]).
//!
//! # Positions under concurrency
//!
//! An append locks the counter row of `<prefix>head` (`UPDATE … RETURNING`), checks the append
//! condition, inserts the batch (`UNNEST` arrays, 1000 rows per statement: events, tag rows,
//! new (tag, type) pairs) and commits, which releases the lock. Positions are therefore
//! assigned in commit order: a reader never sees position `p + 1` before `p` is visible, so it
//! never skips an event that commits late, and a failed or rolled back append gives its
//! positions back (no gaps). The condition is checked after the lock is taken, so the database
//! enforces it atomically.
//!
//! The statements of an append are pipelined: the inserts take their positions and time from
//! the locked counter row rather than from the client, so an append without a condition is
//! one round trip (`BEGIN`, lock, inserts, notification, `COMMIT`); one with a condition is
//! two, as the condition's result decides whether the inserts are sent.
//!
//! # Reads
//!
//! Paged forward reads are read ahead (see [`EventStore::read`](krescent_core::store::EventStore::read)): once a reader has asked for
//! the page that continues its previous full page, each further full page it gets starts the
//! read of the next one on another pooled connection, while the caller handles this one. A
//! page read ahead is used only if it is full (a full page never changes); a short one is
//! read again. When the next page selects every position it spans (a query that selects every
//! event there, below), the page after it is read at the same time on a third connection,
//! starting one page size further: positions have no gaps, so that is where the next page
//! ends. Were a gap there (rows deleted by hand), that page would go unused.
//!
//! A query whose untagged items name every type stored up to the last position the store
//! has looked at (a read model's query usually does) is read as a plain position range up to
//! there, and with its type filter beyond; the stored types are looked up in `<prefix>types`
//! on the first such read and again once the store has grown well past that position. A query with an item of no types and no tags is read as a range.
//!
//! Rows are decoded as they arrive from their binary values, without the driver's
//! conversions: type names once per page, tag lists once and cached by their stored bytes,
//! the time once per append; the payloads of a page share one buffer. A row that cannot be
//! decoded is a [`PostgresError::Corrupt`] naming its position.
//!
//! # Subscriptions
//!
//! Each append notifies `<prefix>events` with the new head. A background task per store
//! (shared by its clones) listens on a dedicated connection, with a polling fallback (every
//! [`PostgresOptions::poll_interval`]) and reconnection with backoff when the connection is
//! lost; subscriptions read in batches whenever the head moves. The task ends when the last
//! handle of the store (and the last subscription, which holds one) is dropped.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod append;
mod bookmark;
mod checkpoint;
mod coverage;
mod error;
mod event_store;
mod explain;
mod listener;
mod options;
mod query;
mod record;
mod retry;
mod schema;
mod writes;

pub use bookmark::PostgresBookmarkStorage;
pub use checkpoint::PostgresCheckpointStorage;
pub use error::PostgresError;
pub use event_store::PostgresEventStore;
pub use options::PostgresOptions;
/// The PostgreSQL driver, re-exported: bind [`PostgresWrites`] parameters with its
/// [`ToSql`](tokio_postgres::types::ToSql) types.
pub use tokio_postgres;
pub use writes::{PostgresParam, PostgresWriteError, PostgresWrites};

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt;

    #[test]
    fn store_and_options_are_send_sync() {
        fn assert<T: Send + Sync + Clone + fmt::Debug>() {}
        assert::<PostgresEventStore>();
        assert::<PostgresOptions>();
        fn error<T: std::error::Error + Send + Sync + 'static>() {}
        error::<PostgresError>();
    }
}

//! The schema: its DDL, its version, and the check of a file's version when it is opened.
//!
//! One version, [`SCHEMA_VERSION`], covers every table (the events, their tag index, the
//! checkpoints and the bookmarks); `krescent_meta` stores it. A file with another version is
//! refused with [`SqliteError::UnsupportedSchemaVersion`], one with a `krescent_meta` table
//! but no version with [`SqliteError::MissingSchemaVersion`].
//!
//! Until 1.0 a schema change edits version 1 in place; there are no migrations.
//!
//! Whoever opens a file first (a store or a storage) creates the whole schema; every open runs
//! the `CREATE TABLE IF NOT EXISTS` statements again, so a missing table or index is created.

use crate::connection::{Conn, open_error};
use crate::error::SqliteError;

/// The schema version this crate writes and reads.
pub(crate) const SCHEMA_VERSION: i64 = 1;

/// A segment of the tag index holds the positions `seg << SEGMENT_BITS ..
/// (seg + 1) << SEGMENT_BITS` (8,192 events). Smaller segments make an append dirty fewer
/// index pages: a batch of 1,000 events lands in random places of its segment's part of the
/// index, so it rewrites nearly every page of it (32,768-event segments cost the writer about
/// 20% more CPU per event than 8,192; 4,096 saved little more). Larger ones make a query for a
/// rare or absent tag seek fewer segments: at 1M events 123 of 8,192 against 31 of 32,768.
/// Part of the schema: a file's tag index is only valid for the size it was written with.
pub(crate) const SEGMENT_BITS: u32 = 13;

/// Every table and index but `krescent_meta`; idempotent.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    position INTEGER PRIMARY KEY,
    type INTEGER NOT NULL,
    record BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS events_type_position ON events (type, position);
CREATE TABLE IF NOT EXISTS event_segments (seg INTEGER PRIMARY KEY);
CREATE TABLE IF NOT EXISTS event_tags (
    seg INTEGER NOT NULL,
    tag TEXT NOT NULL,
    type INTEGER NOT NULL,
    position INTEGER NOT NULL,
    PRIMARY KEY (seg, tag, type, position)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS event_types (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS krescent_checkpoints (
    model TEXT PRIMARY KEY NOT NULL,
    position INTEGER NOT NULL,
    bytes BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS krescent_checkpoint_deltas (
    model TEXT NOT NULL,
    position INTEGER NOT NULL,
    base_position INTEGER NOT NULL,
    bytes BLOB NOT NULL,
    PRIMARY KEY (model, position)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS krescent_bookmarks (
    reader TEXT PRIMARY KEY NOT NULL,
    position INTEGER NOT NULL
) WITHOUT ROWID;
";

impl Conn {
    /// Creates the schema if the file has none; checks its version otherwise.
    pub(crate) fn ensure_schema(&mut self) -> Result<(), SqliteError> {
        let path = self.path.clone();
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| open_error(e, &path))?;
        let result = self.ensure_schema_in_txn();
        match result {
            Ok(()) => self.exec("COMMIT"),
            Err(e) => {
                self.rollback_quietly();
                Err(e)
            }
        }
    }

    fn ensure_schema_in_txn(&mut self) -> Result<(), SqliteError> {
        let has_meta: bool = self.conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'krescent_meta')",
            [],
            |r| r.get(0),
        )?;
        if has_meta {
            let version: Option<i64> = self
                .conn
                .query_row(
                    "SELECT value FROM krescent_meta WHERE key = 'schema_version'",
                    [],
                    |r| r.get::<_, Option<i64>>(0),
                )
                .or_else(|e| match e {
                    rusqlite::Error::QueryReturnedNoRows => Ok(None),
                    rusqlite::Error::InvalidColumnType(..) => Ok(None),
                    e => Err(e),
                })?;
            check_version(&self.path, version)?;
        } else {
            self.conn.execute_batch(
                "CREATE TABLE krescent_meta (key TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL) WITHOUT ROWID;",
            )?;
            self.conn.execute(
                "INSERT INTO krescent_meta (key, value) VALUES ('schema_version', ?1)",
                [SCHEMA_VERSION],
            )?;
        }
        // Idempotent; also restores an index someone dropped.
        self.conn.execute_batch(SCHEMA)?;
        Ok(())
    }
}

/// Accepts the stored `version` of the file at `path` if it is [`SCHEMA_VERSION`].
fn check_version(path: &str, version: Option<i64>) -> Result<(), SqliteError> {
    match version {
        Some(SCHEMA_VERSION) => Ok(()),
        Some(found) => Err(SqliteError::UnsupportedSchemaVersion {
            path: path.to_owned(),
            found,
            supported: SCHEMA_VERSION,
        }),
        None => Err(SqliteError::MissingSchemaVersion {
            path: path.to_owned(),
        }),
    }
}

/// A `u64` as SQLite stores it in the checkpoint and bookmark tables: the same 64 bits as an
/// `i64` (values above `i64::MAX` become negative), so that every `u64` round-trips.
pub(crate) fn to_db(value: u64) -> i64 {
    i64::from_ne_bytes(value.to_ne_bytes())
}

/// The `u64` stored by [`to_db`].
pub(crate) fn from_db(value: i64) -> u64 {
    u64::from_ne_bytes(value.to_ne_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_through_i64() {
        for value in [
            0,
            1,
            i64::MAX as u64,
            i64::MAX as u64 + 1,
            u64::MAX - 1,
            u64::MAX,
        ] {
            assert_eq!(from_db(to_db(value)), value);
        }
        assert_eq!(to_db(42), 42);
        assert_eq!(to_db(u64::MAX), -1);
    }

    #[test]
    fn only_the_current_version_is_accepted() {
        assert!(check_version("a.db", Some(SCHEMA_VERSION)).is_ok());
        for other in [0, SCHEMA_VERSION + 1, -1, i64::MAX] {
            match check_version("a.db", Some(other)) {
                Err(SqliteError::UnsupportedSchemaVersion {
                    path,
                    found,
                    supported,
                }) => assert_eq!((path.as_str(), found, supported), ("a.db", other, 1)),
                other => panic!("expected UnsupportedSchemaVersion, got {other:?}"),
            }
        }
        assert!(matches!(
            check_version("a.db", None),
            Err(SqliteError::MissingSchemaVersion { path }) if path == "a.db"
        ));
    }

    #[test]
    fn a_new_database_gets_the_current_version_and_every_table() {
        let mut conn = Conn::open_in_memory().unwrap();
        conn.ensure_schema().unwrap();
        conn.ensure_schema().unwrap();
        let version: i64 = conn
            .conn
            .query_row(
                "SELECT value FROM krescent_meta WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        for table in [
            "events",
            "event_segments",
            "event_tags",
            "event_types",
            "krescent_checkpoints",
            "krescent_checkpoint_deltas",
            "krescent_bookmarks",
        ] {
            let found: bool = conn
                .conn
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE name = ?1)",
                    [table],
                    |r| r.get(0),
                )
                .unwrap();
            assert!(found, "{table}");
        }
    }
}

//! One SQLite connection and what it remembers between statements: the stored type names
//! (the `event_types` dictionary) and the decoding caches of tag lists and timestamps.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use rusqlite::config::DbConfig;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, ErrorCode, OpenFlags};

use crate::error::{SqliteError, corrupt};
use crate::options::{self, Role, STATEMENT_CACHE, TAG_CACHE};
use crate::record::decode_tags;
use krescent_core::__backend::FastState;
use krescent_core::event::Tags;

/// Type ids below this are decoded through a table indexed by id (ids are handed out from 1).
const MAX_TYPE_ID_SLOTS: usize = 1 << 16;

/// A connection and what it remembers between statements.
pub(crate) struct Conn {
    pub(crate) conn: Connection,
    pub(crate) cache: Cache,
    /// The file, for error messages (`:memory:` in memory).
    pub(crate) path: String,
}

/// The id of each stored type name.
pub(crate) type TypeIds = HashMap<Arc<str>, i64, FastState>;

/// The types stored (from `event_types`), and interned tag lists for decoding.
#[derive(Default)]
pub(crate) struct Cache {
    /// The largest `event_types.id` loaded; 0 when nothing is loaded.
    known_max_id: i64,
    /// The stored types, ids and names in id order.
    pub(crate) known: Vec<(i64, Arc<str>)>,
    /// The id of each stored type name.
    pub(crate) ids: TypeIds,
    /// The name of each id (`None` where no type has that id), for decoding rows.
    by_id: Vec<Option<Arc<str>>>,
    /// Tag lists by their stored text.
    tags: HashMap<Box<[u8]>, Tags, FastState>,
    /// The last timestamp decoded, in microseconds and as a time.
    last_timestamp: Option<(i64, DateTime<Utc>)>,
    /// The average payload size of the last read, for the next read's buffer; 0 before the
    /// first.
    pub(crate) payload_per_event: usize,
}

impl Cache {
    /// Forgets the stored type names (after a rollback, which may have removed some).
    pub(crate) fn forget_known(&mut self) {
        self.known_max_id = 0;
        self.known.clear();
        self.ids.clear();
        self.by_id.clear();
    }

    /// Remembers a stored type.
    fn learn(&mut self, id: i64, name: &str) {
        if self.ids.contains_key(name) {
            return;
        }
        let name: Arc<str> = Arc::from(name);
        self.ids.insert(Arc::clone(&name), id);
        if let Ok(slot) = usize::try_from(id) {
            if slot < MAX_TYPE_ID_SLOTS {
                if self.by_id.len() <= slot {
                    self.by_id.resize(slot + 1, None);
                }
                self.by_id[slot] = Some(Arc::clone(&name));
            }
        }
        self.known.push((id, name));
    }

    /// The name of type `id`, if loaded.
    #[inline]
    pub(crate) fn type_name(&self, id: i64) -> Option<&Arc<str>> {
        match usize::try_from(id) {
            Ok(slot) if slot < MAX_TYPE_ID_SLOTS => self.by_id.get(slot)?.as_ref(),
            _ => self.known.iter().find(|(i, _)| *i == id).map(|(_, n)| n),
        }
    }

    /// The tags stored as `text`; UTF-8 is checked only for text not seen before (a cached
    /// key is valid text).
    pub(crate) fn tags(&mut self, text: &[u8], position: u64) -> Result<Tags, SqliteError> {
        if let Some(tags) = self.tags.get(text) {
            return Ok(tags.clone());
        }
        let valid =
            std::str::from_utf8(text).map_err(|_| corrupt(Some(position), "tags are not UTF-8"))?;
        let tags = decode_tags(valid).map_err(|what| SqliteError::CorruptRow {
            position: Some(position),
            what,
        })?;
        if self.tags.len() >= TAG_CACHE {
            self.tags.clear();
        }
        self.tags.insert(Box::from(text), tags.clone());
        Ok(tags)
    }

    /// The time of `micros`; consecutive events of one append share it, so the last one is
    /// remembered.
    #[inline]
    pub(crate) fn timestamp(
        &mut self,
        micros: i64,
        position: u64,
    ) -> Result<DateTime<Utc>, SqliteError> {
        if let Some((m, t)) = self.last_timestamp {
            if m == micros {
                return Ok(t);
            }
        }
        let t = DateTime::from_timestamp_micros(micros)
            .ok_or_else(|| corrupt(Some(position), "timestamp out of range"))?;
        self.last_timestamp = Some((micros, t));
        Ok(t)
    }
}

impl Conn {
    /// The write connection of a file store: creates the file, sets WAL mode.
    pub(crate) fn open_writer(path: &Path) -> Result<Self, SqliteError> {
        let display = path.display().to_string();
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| open_error(e, &display))?;
        let conn = Conn::new(conn, display)?;
        options::configure(&conn.conn, Role::Writer, &conn.path)
            .map_err(|e| open_error(e, &conn.path))?;
        Ok(conn)
    }

    /// A read connection of a file store.
    pub(crate) fn open_reader(path: &Path) -> Result<Self, SqliteError> {
        let display = path.display().to_string();
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| open_error(e, &display))?;
        let conn = Conn::new(conn, display)?;
        options::configure(&conn.conn, Role::Reader, &conn.path)
            .map_err(|e| open_error(e, &conn.path))?;
        Ok(conn)
    }

    /// The single connection of an in-memory store.
    pub(crate) fn open_in_memory() -> Result<Self, SqliteError> {
        let conn = Connection::open_in_memory()?;
        Conn::new(conn, ":memory:".into())
    }

    fn new(conn: Connection, path: String) -> Result<Self, SqliteError> {
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        // Plans are fixed by the statements' shape (INDEXED BY, CROSS JOIN); without this,
        // SQLite's STAT4 build re-prepares a statement whenever a parameter is rebound.
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
        Ok(Conn {
            conn,
            cache: Cache::default(),
            path,
        })
    }

    /// Runs a statement without parameters or results, prepared once per connection.
    pub(crate) fn exec(&self, sql: &str) -> Result<(), SqliteError> {
        self.conn.prepare_cached(sql)?.execute([])?;
        Ok(())
    }

    /// Rolls back the open transaction, if any; used on error paths.
    pub(crate) fn rollback_quietly(&mut self) {
        if !self.conn.is_autocommit() {
            if let Err(e) = self.conn.execute_batch("ROLLBACK") {
                tracing::warn!(path = %self.path, error = %e, "SQLite rollback failed");
            }
        }
        self.cache.forget_known();
    }

    /// The position of the last event.
    pub(crate) fn head(&mut self) -> Result<u64, SqliteError> {
        let max: Option<i64> = self
            .conn
            .prepare_cached("SELECT max(position) FROM events")?
            .query_row([], |r| r.get(0))?;
        position_of(max.unwrap_or(0))
    }

    /// Loads type names added to `event_types` since the last call.
    pub(crate) fn refresh_known(&mut self) -> Result<(), SqliteError> {
        let max: Option<i64> = self
            .conn
            .prepare_cached("SELECT max(id) FROM event_types")?
            .query_row([], |r| r.get(0))?;
        let max = max.unwrap_or(0);
        if max == self.cache.known_max_id {
            return Ok(());
        }
        if max < self.cache.known_max_id {
            // Rows went away (a rollback elsewhere cannot do this, but be safe): reload.
            self.cache.forget_known();
        }
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id, name FROM event_types WHERE id > ?1 ORDER BY id")?;
        let mut rows = stmt.query([self.cache.known_max_id])?;
        while let Some(row) = rows.next()? {
            let id: i64 = row.get(0)?;
            let name = match row.get_ref(1)? {
                ValueRef::Text(t) => std::str::from_utf8(t).map_err(|_| corrupt_type(id))?,
                _ => return Err(corrupt_type(id)),
            };
            self.cache.learn(id, name);
            self.cache.known_max_id = id;
        }
        Ok(())
    }
}

fn position_of(p: i64) -> Result<u64, SqliteError> {
    u64::try_from(p).map_err(|_| corrupt(None, format!("negative position {p}")))
}

fn corrupt_type(id: i64) -> SqliteError {
    corrupt(None, format!("event_types row {id} has no text name"))
}

/// The error for a failure while opening `path`, typed where the cause is known.
pub(crate) fn open_error(e: rusqlite::Error, path: &str) -> SqliteError {
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => SqliteError::NotADatabase { path: path.into() },
        _ => e.into(),
    }
}

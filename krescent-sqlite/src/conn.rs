//! One SQLite connection with its caches: opening, schema, reads and row decoding.

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::config::DbConfig;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, ErrorCode, OpenFlags, Row};
use uuid::Uuid;

use super::sql::{self, Kind};
use super::{SCHEMA_VERSION, SqliteStoreError};
use krescent_core::__backend::FastState;
use krescent_core::event::{Payload, RecordedEvent, Tag, Tags};
use krescent_core::query::{Direction, EventQuery};

/// How long a connection waits for a lock held by another connection.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Prepared statements kept per connection (query shapes differ by item count and tags).
const STATEMENT_CACHE: usize = 128;

/// Type ids below this are decoded through a table indexed by id (ids are handed out from 1).
const MAX_TYPE_ID_SLOTS: usize = 1 << 16;

/// Distinct tag lists remembered per connection for decoding without allocating.
const TAG_CACHE: usize = 65_536;

/// The payload bytes per event assumed by a connection's first read (later reads assume the
/// average of the read before).
const PAYLOAD_GUESS: usize = 128;

/// At most this many payload bytes are reserved before the first row (the buffer grows as
/// needed).
const PAYLOAD_RESERVE: usize = 8 << 20;

/// The page size of new files, in bytes.
const PAGE_SIZE: u32 = 4096;

/// Memory-mapped I/O for reads of file stores, in bytes.
const MMAP_SIZE: u64 = 1 << 30;

/// WAL pages after which a commit copies the WAL back into the database file.
const WAL_AUTOCHECKPOINT_PAGES: i64 = 16_384;

/// The page cache of each connection, in KiB (negative `cache_size`).
const CACHE_KIB: i64 = 32 * 1024;

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

/// A connection and what it remembers between statements.
pub(super) struct Conn {
    pub(super) conn: Connection,
    pub(super) cache: Cache,
    /// The file, for error messages (`:memory:` in memory).
    path: String,
}

/// The id of each stored type name.
pub(super) type TypeIds = HashMap<Arc<str>, i64, FastState>;

/// The types stored (from `event_types`), and interned tag lists for decoding.
#[derive(Default)]
pub(super) struct Cache {
    /// The largest `event_types.id` loaded; 0 when nothing is loaded.
    known_max_id: i64,
    /// The stored types, ids and names in id order.
    pub(super) known: Vec<(i64, Arc<str>)>,
    /// The id of each stored type name.
    pub(super) ids: TypeIds,
    /// The name of each id (`None` where no type has that id), for decoding rows.
    by_id: Vec<Option<Arc<str>>>,
    /// Tag lists by their stored text.
    tags: HashMap<Box<[u8]>, Tags, FastState>,
    /// The last timestamp decoded, in microseconds and as a time.
    last_timestamp: Option<(i64, DateTime<Utc>)>,
    /// The average payload size of the last read, for the next read's buffer; 0 before the
    /// first.
    payload_per_event: usize,
}

impl Cache {
    /// Forgets the stored type names (after a rollback, which may have removed some).
    pub(super) fn forget_known(&mut self) {
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
    fn type_name(&self, id: i64) -> Option<&Arc<str>> {
        match usize::try_from(id) {
            Ok(slot) if slot < MAX_TYPE_ID_SLOTS => self.by_id.get(slot)?.as_ref(),
            _ => self.known.iter().find(|(i, _)| *i == id).map(|(_, n)| n),
        }
    }

    /// The tags stored as `text`; UTF-8 is checked only for text not seen before (a cached
    /// key is valid text).
    fn tags(&mut self, text: &[u8], position: u64) -> Result<Tags, SqliteStoreError> {
        if let Some(tags) = self.tags.get(text) {
            return Ok(tags.clone());
        }
        let valid =
            std::str::from_utf8(text).map_err(|_| corrupt(Some(position), "tags are not UTF-8"))?;
        let tags = decode_tags(valid).map_err(|what| SqliteStoreError::CorruptRow {
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
    fn timestamp(&mut self, micros: i64, position: u64) -> Result<DateTime<Utc>, SqliteStoreError> {
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
    pub(super) fn open_writer(path: &Path) -> Result<Self, SqliteStoreError> {
        let display = path.display().to_string();
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| open_error(e, &display))?;
        let conn = Conn::new(conn, display)?;
        conn.configure(true)
            .map_err(|e| open_error(e, &conn.path))?;
        Ok(conn)
    }

    /// A read connection of a file store.
    pub(super) fn open_reader(path: &Path) -> Result<Self, SqliteStoreError> {
        let display = path.display().to_string();
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| open_error(e, &display))?;
        let conn = Conn::new(conn, display)?;
        conn.configure(false)
            .map_err(|e| open_error(e, &conn.path))?;
        Ok(conn)
    }

    /// The single connection of an in-memory store.
    pub(super) fn open_in_memory() -> Result<Self, SqliteStoreError> {
        let conn = Connection::open_in_memory()?;
        Conn::new(conn, ":memory:".into())
    }

    fn new(conn: Connection, path: String) -> Result<Self, SqliteStoreError> {
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

    fn configure(&self, writer: bool) -> rusqlite::Result<()> {
        let c = &self.conn;
        c.busy_timeout(BUSY_TIMEOUT)?;
        if writer {
            // Only takes effect while the file is still empty.
            c.pragma_update(None, "page_size", PAGE_SIZE)?;
            // The first statement that reads the file: a non-database fails here.
            let mode: String = c.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
            if !mode.eq_ignore_ascii_case("wal") {
                tracing::warn!(path = %self.path, mode, "SQLite refused WAL mode");
            }
            c.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)?;
            // The statement journals of multi-row inserts stay in memory.
            c.pragma_update(None, "temp_store", "MEMORY")?;
            c.pragma_update(None, "mmap_size", MMAP_SIZE)?;
        } else {
            c.pragma_update(None, "query_only", true)?;
            c.pragma_update(None, "mmap_size", MMAP_SIZE)?;
        }
        c.pragma_update(None, "synchronous", "NORMAL")?;
        c.pragma_update(None, "cache_size", -CACHE_KIB)?;
        Ok(())
    }

    /// Creates the schema if the file has none; checks its version otherwise.
    pub(super) fn ensure_schema(&mut self) -> Result<(), SqliteStoreError> {
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

    fn ensure_schema_in_txn(&mut self) -> Result<(), SqliteStoreError> {
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
            match version {
                Some(SCHEMA_VERSION) => {}
                Some(found) => {
                    return Err(SqliteStoreError::UnsupportedSchemaVersion {
                        path: self.path.clone(),
                        found,
                        supported: SCHEMA_VERSION,
                    });
                }
                None => {
                    return Err(SqliteStoreError::MissingSchemaVersion {
                        path: self.path.clone(),
                    });
                }
            }
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

    /// Runs a statement without parameters or results, prepared once per connection.
    pub(super) fn exec(&self, sql: &str) -> Result<(), SqliteStoreError> {
        self.conn.prepare_cached(sql)?.execute([])?;
        Ok(())
    }

    /// Rolls back the open transaction, if any; used on error paths.
    pub(super) fn rollback_quietly(&mut self) {
        if !self.conn.is_autocommit() {
            if let Err(e) = self.conn.execute_batch("ROLLBACK") {
                tracing::warn!(path = %self.path, error = %e, "SQLite rollback failed");
            }
        }
        self.cache.forget_known();
    }

    /// The position of the last event.
    pub(super) fn head(&mut self) -> Result<u64, SqliteStoreError> {
        let max: Option<i64> = self
            .conn
            .prepare_cached("SELECT max(position) FROM events")?
            .query_row([], |r| r.get(0))?;
        position_of(max.unwrap_or(0))
    }

    /// Loads type names added to `event_types` since the last call.
    pub(super) fn refresh_known(&mut self) -> Result<(), SqliteStoreError> {
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

    /// The events `query` selects, in one read transaction.
    pub(super) fn read(
        &mut self,
        query: &EventQuery,
    ) -> Result<Vec<RecordedEvent>, SqliteStoreError> {
        self.in_read_txn(|c| c.select(query))
    }

    /// `EXPLAIN QUERY PLAN` of the statement for `query`.
    pub(super) fn explain(&mut self, query: &EventQuery) -> Result<String, SqliteStoreError> {
        self.in_read_txn(|c| {
            c.refresh_known()?;
            let sql = sql::translate(query, &c.cache.known, &c.cache.ids);
            if let Kind::Empty = sql.kind {
                return Ok("EMPTY (no statement: the query matches nothing stored)".to_owned());
            }
            let mut stmt = c
                .conn
                .prepare(&format!("EXPLAIN QUERY PLAN {}", sql.text))?;
            sql.bind(&mut stmt)?;
            let mut rows = stmt.raw_query();
            let mut depth: HashMap<i64, usize> = HashMap::new();
            let mut out = String::new();
            while let Some(row) = rows.next()? {
                let id: i64 = row.get(0)?;
                let parent: i64 = row.get(1)?;
                let detail: String = row.get(3)?;
                let d = depth.get(&parent).map_or(0, |d| d + 1);
                depth.insert(id, d);
                out.push_str(&"  ".repeat(d));
                out.push_str(&detail);
                out.push('\n');
            }
            Ok(out)
        })
    }

    fn in_read_txn<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, SqliteStoreError>,
    ) -> Result<T, SqliteStoreError> {
        if !self.conn.is_autocommit() {
            self.rollback_quietly();
        }
        self.exec("BEGIN")?;
        let result = f(self);
        if let Err(e) = self.exec("COMMIT") {
            self.rollback_quietly();
            result?;
            return Err(e);
        }
        result
    }

    /// The events `query` selects, in the current transaction.
    pub(super) fn select(
        &mut self,
        query: &EventQuery,
    ) -> Result<Vec<RecordedEvent>, SqliteStoreError> {
        if query.is_empty() {
            return Ok(Vec::new());
        }
        self.refresh_known()?;
        let Conn { conn, cache, .. } = self;
        let (mut stmt, kind) = {
            let sql = sql::translate(query, &cache.known, &cache.ids);
            if let Kind::Empty = sql.kind {
                return Ok(Vec::new());
            }
            let mut stmt = conn.prepare_cached(&sql.text)?;
            sql.bind(&mut stmt)?;
            (stmt, sql.kind)
        };
        let limit = query.limit_value().map_or(usize::MAX, |l| {
            usize::try_from(l.get()).unwrap_or(usize::MAX)
        });
        let mut out = Vec::with_capacity(limit.min(1024));
        // The payloads of the page go into one buffer that the events share (one allocation
        // per page instead of one per event).
        // Sized from the previous read's payloads, with an eighth to spare, so that a page
        // of similar events fills it without growing (and copying) it.
        let per_event = match cache.payload_per_event {
            0 => PAYLOAD_GUESS,
            n => n + n / 8,
        };
        let mut payloads = Vec::with_capacity(
            out.capacity()
                .saturating_mul(per_event)
                .min(PAYLOAD_RESERVE),
        );
        let mut ranges = Vec::with_capacity(out.capacity());
        let mut order = Order::of(query);
        let mut types = PageTypes::default();
        let mut rows = stmt.raw_query();
        while let Some(row) = rows.next()? {
            let (event, payload) = decode_row(row, cache, &mut types, &mut order, &mut payloads)?;
            if let Kind::Filter = kind {
                if !query.matches_filter(&event.event_type, &event.tags) {
                    payloads.truncate(payload.start);
                    continue;
                }
            }
            ranges.push(payload);
            out.push(event);
            if out.len() >= limit {
                break;
            }
        }
        if !out.is_empty() {
            cache.payload_per_event = payloads.len().div_ceil(out.len());
        }
        let payloads = Payload::from(payloads);
        for (event, range) in out.iter_mut().zip(ranges) {
            event.data = payloads.slice(range);
        }
        Ok(out)
    }
}

/// Type names for the events of one read, each a new `Arc` for this read alone.
///
/// Every event holds its type name as an `Arc<str>`. Were they clones of the connection's
/// cached names, the thread reading the next page ahead would increment the same few reference
/// counts that the thread handling (and dropping) this page decrements, and the counts' cache
/// line would move between the two cores for nearly every event. Names copied per read keep
/// each count on one core at a time, for a few allocations per page.
#[derive(Default)]
struct PageTypes {
    names: Vec<(i64, Arc<str>)>,
}

/// A read with more distinct types than this shares the connection's names beyond them.
const PAGE_TYPES: usize = 16;

impl PageTypes {
    /// The name of type `id` for this read; `None` if the type is not stored.
    #[inline]
    fn name(&mut self, cache: &Cache, id: i64) -> Option<Arc<str>> {
        if let Some((_, name)) = self.names.iter().find(|(i, _)| *i == id) {
            return Some(Arc::clone(name));
        }
        let cached = cache.type_name(id)?;
        if self.names.len() >= PAGE_TYPES {
            return Some(Arc::clone(cached));
        }
        let name: Arc<str> = Arc::from(&**cached);
        self.names.push((id, Arc::clone(&name)));
        Some(name)
    }
}

/// The positions a statement's rows must have, in their order: strictly after the last one
/// (backwards: before), within the query's range.
struct Order {
    forward: bool,
    /// The last position seen, or the bound the first one must be beyond.
    last: u64,
    /// The bound on the other side (inclusive).
    end: u64,
}

impl Order {
    fn of(query: &EventQuery) -> Self {
        let until = query.until_position().unwrap_or(u64::MAX);
        match query.direction_value() {
            Direction::Forward => Order {
                forward: true,
                last: query.after_position(),
                end: until,
            },
            Direction::Backward => Order {
                forward: false,
                last: until.saturating_add(1),
                end: query.after_position().saturating_add(1),
            },
        }
    }

    /// Takes `position` as the next row's; false if it is out of order or out of range.
    #[inline]
    fn next(&mut self, position: u64) -> bool {
        let ok = if self.forward {
            position > self.last && position <= self.end
        } else {
            position < self.last && position >= self.end
        };
        self.last = position;
        ok
    }
}

/// Decodes `record, position` (the position only to name a row whose record is damaged),
/// appending the payload to `payloads`; the event (with an empty payload) and the payload's
/// range in `payloads`.
#[inline]
fn decode_row(
    row: &Row<'_>,
    cache: &mut Cache,
    types: &mut PageTypes,
    order: &mut Order,
    payloads: &mut Vec<u8>,
) -> Result<(RecordedEvent, Range<usize>), SqliteStoreError> {
    let rowid = || match row.get_ref(1) {
        Ok(ValueRef::Integer(p)) => u64::try_from(p).ok(),
        _ => None,
    };
    let ValueRef::Blob(record) = row.get_ref(0)? else {
        return Err(corrupt(rowid(), "record is not a blob"));
    };
    let parts = decode_record(record).map_err(|what| corrupt(rowid(), what))?;
    let position = parts.position;
    if !order.next(position) {
        let at = rowid();
        return Err(corrupt(
            at,
            format!("record says position {position}, out of the order of the rows"),
        ));
    }
    let event_type = types.name(cache, parts.type_id).ok_or_else(|| {
        corrupt(
            Some(position),
            format!("type id {} is not stored", parts.type_id),
        )
    })?;
    let tags = cache.tags(parts.tags, position)?;
    let timestamp = cache.timestamp(parts.micros, position)?;
    let start = payloads.len();
    payloads.extend_from_slice(parts.payload);
    let event = RecordedEvent {
        position,
        id: parts.id,
        event_type,
        tags,
        timestamp,
        data: Payload::new(),
    };
    Ok((event, start..payloads.len()))
}

/// The bytes of a record before its tags: the position (8), the type id (8), the event id
/// (16), the time (8) and the length of the tags (4).
const RECORD_HEADER: usize = 44;

/// Writes the stored `record` of an event into `out` (appended): its position and its type
/// id (8 bytes each, little-endian; the `position` and `type` columns repeat them for the
/// indexes), its id (16 bytes), its time in microseconds since the Unix epoch (8 bytes,
/// little-endian), the length of its stored tags (4 bytes, little-endian), the tags as
/// [`encode_tags`] writes them, then the payload. Fails only for tags longer than 4 GiB.
pub(super) fn encode_record(
    position: i64,
    type_id: i64,
    id: &Uuid,
    micros: i64,
    tags: &[u8],
    payload: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let tags_len = u32::try_from(tags.len())
        .map_err(|_| format!("the stored tags are {} bytes, over 4 GiB", tags.len()))?;
    out.reserve(RECORD_HEADER + tags.len() + payload.len());
    out.extend_from_slice(&position.to_le_bytes());
    out.extend_from_slice(&type_id.to_le_bytes());
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(&micros.to_le_bytes());
    out.extend_from_slice(&tags_len.to_le_bytes());
    out.extend_from_slice(tags);
    out.extend_from_slice(payload);
    Ok(())
}

/// The parts of a stored record (see [`encode_record`]).
struct RecordParts<'a> {
    position: u64,
    type_id: i64,
    id: Uuid,
    micros: i64,
    tags: &'a [u8],
    payload: &'a [u8],
}

/// Splits a stored record; what is wrong with it if it is too short for its header or tags.
#[inline]
fn decode_record(record: &[u8]) -> Result<RecordParts<'_>, String> {
    let short = || {
        format!(
            "record of {} bytes is shorter than its {RECORD_HEADER}-byte header",
            record.len()
        )
    };
    let (position, rest) = record.split_first_chunk::<8>().ok_or_else(short)?;
    let position = u64::try_from(i64::from_le_bytes(*position)).map_err(|_| {
        format!(
            "record's position {} is negative",
            i64::from_le_bytes(*position)
        )
    })?;
    let (type_id, rest) = rest.split_first_chunk::<8>().ok_or_else(short)?;
    let (id, rest) = rest.split_first_chunk::<16>().ok_or_else(short)?;
    let (micros, rest) = rest.split_first_chunk::<8>().ok_or_else(short)?;
    let (tags_len, rest) = rest.split_first_chunk::<4>().ok_or_else(short)?;
    let tags_len = usize::try_from(u32::from_le_bytes(*tags_len)).unwrap_or(usize::MAX);
    if tags_len > rest.len() {
        return Err(format!(
            "record's tags of {tags_len} bytes run past its end ({} bytes left)",
            rest.len()
        ));
    }
    let (tags, payload) = rest.split_at(tags_len);
    Ok(RecordParts {
        position,
        type_id: i64::from_le_bytes(*type_id),
        id: Uuid::from_bytes(*id),
        micros: i64::from_le_bytes(*micros),
        tags,
        payload,
    })
}

fn position_of(p: i64) -> Result<u64, SqliteStoreError> {
    u64::try_from(p).map_err(|_| corrupt(None, format!("negative position {p}")))
}

fn corrupt(position: Option<u64>, what: impl Into<String>) -> SqliteStoreError {
    SqliteStoreError::CorruptRow {
        position,
        what: what.into(),
    }
}

fn corrupt_type(id: i64) -> SqliteStoreError {
    corrupt(None, format!("event_types row {id} has no text name"))
}

/// The error for a failure while opening `path`, typed where the cause is known.
fn open_error(e: rusqlite::Error, path: &str) -> SqliteStoreError {
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => SqliteStoreError::NotADatabase { path: path.into() },
        _ => e.into(),
    }
}

/// Writes the stored form of `tags` into `out` (cleared first): `<byte length>:<tag>` for each
/// tag.
pub(super) fn encode_tags(tags: &Tags, out: &mut String) {
    out.clear();
    for tag in tags {
        let tag = tag.as_str();
        push_decimal(out, tag.len());
        out.push(':');
        out.push_str(tag);
    }
}

/// Appends `n` in decimal, without the formatting machinery (this runs for every event).
fn push_decimal(out: &mut String, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        // A digit is below 10, so the cast cannot truncate.
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[at..] {
        out.push(char::from(d));
    }
}

/// Parses the stored form of a tag list.
fn decode_tags(mut text: &str) -> Result<Tags, String> {
    let mut tags = Vec::new();
    while !text.is_empty() {
        let (len, rest) = text
            .split_once(':')
            .ok_or_else(|| format!("tags `{text}` lack a length prefix"))?;
        let len: usize = len
            .parse()
            .map_err(|_| format!("tags have a bad length prefix `{len}`"))?;
        let tag = rest
            .get(..len)
            .ok_or_else(|| format!("tags `{rest}` are shorter than their length prefix {len}"))?;
        tags.push(Tag::parse(tag).map_err(|e| format!("bad tag `{tag}`: {e}"))?);
        text = &rest[len..];
    }
    Ok(Tags::from_tags(tags))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip() {
        let tags = Tags::parse(["product:P-1", "note:with:colons", "x:1"]).unwrap();
        let mut text = String::new();
        encode_tags(&tags, &mut text);
        assert_eq!(decode_tags(&text).unwrap(), tags);
        encode_tags(&Tags::empty(), &mut text);
        assert_eq!(text, "");
        let long = Tags::parse([format!("k:{}", "v".repeat(120)).as_str()]).unwrap();
        encode_tags(&long, &mut text);
        assert!(text.starts_with("122:k:vv"), "{text}");
        assert_eq!(decode_tags(&text).unwrap(), long);
        assert_eq!(decode_tags("").unwrap(), Tags::empty());
    }

    #[test]
    fn corrupt_tags_are_errors() {
        for bad in ["x", "3:ab", "zz:abc", "3:abc", "99:a:b"] {
            assert!(decode_tags(bad).is_err(), "{bad}");
        }
    }
}

//! The writer thread: owns the write connection, commits appends (grouping the ones that
//! queue up into one transaction) and publishes the head after each commit.

use std::sync::{Arc, mpsc};

use chrono::{DateTime, Utc};
use tokio::sync::{oneshot, watch};

use super::conn::{Conn, encode_record, encode_tags};
use super::{SEGMENT_BITS, SqliteStoreError};
use krescent_core::__backend::new_ids;
use krescent_core::event::{NewEvent, RecordedEvent};
use krescent_core::query::AppendCondition;
use krescent_core::store::StoreError;

/// At most this many appends share one transaction.
const MAX_GROUP: usize = 256;

/// A group stops taking appends once it holds this many events.
const MAX_GROUP_EVENTS: usize = 100_000;

type Reply = oneshot::Sender<Result<Vec<RecordedEvent>, StoreError>>;

/// Work for the writer thread.
pub(super) enum Job {
    /// Append a batch if its condition holds.
    Append {
        events: Vec<NewEvent>,
        condition: Option<AppendCondition>,
        reply: Reply,
    },
    /// Run a closure with the connection (the reads of an in-memory store).
    Run(Box<dyn FnOnce(&mut Conn) + Send>),
    /// Close these (read) connections.
    Close(Vec<Conn>),
}

struct Append {
    events: Vec<NewEvent>,
    condition: Option<AppendCondition>,
    reply: Reply,
}

/// Starts the writer thread; it ends when every sender is dropped.
pub(super) fn spawn(
    conn: Conn,
    head: watch::Sender<u64>,
) -> Result<mpsc::Sender<Job>, SqliteStoreError> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("krescent-sqlite-writer".into())
        .spawn(move || run(conn, &rx, &head))
        .map_err(|e| SqliteStoreError::Thread(e.to_string()))?;
    Ok(tx)
}

fn run(mut conn: Conn, rx: &mpsc::Receiver<Job>, head: &watch::Sender<u64>) {
    let mut next: Option<Job> = None;
    loop {
        let job = match next.take() {
            Some(job) => job,
            None => match rx.recv() {
                Ok(job) => job,
                Err(_) => break,
            },
        };
        match job {
            Job::Run(f) => f(&mut conn),
            Job::Close(conns) => drop(conns),
            Job::Append {
                events,
                condition,
                reply,
            } => {
                let mut total = events.len();
                let mut group = vec![Append {
                    events,
                    condition,
                    reply,
                }];
                while group.len() < MAX_GROUP && total < MAX_GROUP_EVENTS {
                    match rx.try_recv() {
                        Ok(Job::Append {
                            events,
                            condition,
                            reply,
                        }) => {
                            total += events.len();
                            group.push(Append {
                                events,
                                condition,
                                reply,
                            });
                        }
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                commit_group(&mut conn, group, head);
            }
        }
    }
}

/// Appends a group in one transaction and answers each append.
fn commit_group(conn: &mut Conn, group: Vec<Append>, head: &watch::Sender<u64>) {
    let (batches, replies): (Vec<_>, Vec<_>) = group
        .into_iter()
        .map(|a| ((a.events, a.condition), a.reply))
        .unzip();
    let results = match append_group(conn, batches, head) {
        Ok(results) => results,
        Err(e) => {
            conn.rollback_quietly();
            tracing::warn!(error = %e, appends = replies.len(), "SQLite append failed");
            replies.iter().map(|_| Err(e.clone().into())).collect()
        }
    };
    for (reply, result) in replies.into_iter().zip(results) {
        // The caller may have stopped waiting; the outcome stands either way.
        let _ = reply.send(result);
    }
}

type Batch = (Vec<NewEvent>, Option<AppendCondition>);

fn append_group(
    conn: &mut Conn,
    batches: Vec<Batch>,
    head: &watch::Sender<u64>,
) -> Result<Vec<Result<Vec<RecordedEvent>, StoreError>>, SqliteStoreError> {
    let single = batches.len() == 1;
    conn.exec("BEGIN IMMEDIATE")?;
    let start = conn.head()?;
    let mut last = start;
    let mut results = Vec::with_capacity(batches.len());
    for (events, condition) in batches {
        if !single {
            conn.exec("SAVEPOINT krescent_append")?;
        }
        match append_one(conn, events, condition.as_ref(), last) {
            Ok(recorded) => {
                last += recorded.len() as u64;
                if !single {
                    conn.exec("RELEASE krescent_append")?;
                }
                results.push(Ok(recorded));
            }
            Err(e) if conn.conn.is_autocommit() => {
                // An `INSERT OR ROLLBACK` met a constraint the store never violates (a damaged
                // file) and rolled back the whole transaction: no append of the group is stored.
                return Err(SqliteStoreError::CorruptRow {
                    position: None,
                    what: format!("an append violated a constraint of the event tables: {e}"),
                });
            }
            Err(e) => {
                if !single {
                    conn.exec("ROLLBACK TO krescent_append")?;
                    conn.exec("RELEASE krescent_append")?;
                }
                // The rollback may have removed type names the cache holds.
                conn.cache.forget_known();
                results.push(Err(e));
            }
        }
    }
    if last == start {
        conn.exec("ROLLBACK")?;
        return Ok(results);
    }
    conn.exec("COMMIT")?;
    // Published after the commit: every position announced is readable.
    head.send_replace(last);
    Ok(results)
}

/// Checks the condition and inserts the events after position `head`.
fn append_one(
    conn: &mut Conn,
    events: Vec<NewEvent>,
    condition: Option<&AppendCondition>,
    head: u64,
) -> Result<Vec<RecordedEvent>, StoreError> {
    if let Some(condition) = condition {
        let conflict = conn.select(&condition.conflict_query())?;
        if let Some(first) = conflict.first() {
            return Err(StoreError::Conflict {
                position: first.position,
            });
        }
    }
    Ok(insert(conn, events, head)?)
}

fn insert(
    conn: &mut Conn,
    events: Vec<NewEvent>,
    head: u64,
) -> Result<Vec<RecordedEvent>, SqliteStoreError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let micros = Utc::now().timestamp_micros();
    // Stored in microseconds, so returned in microseconds too.
    let timestamp = DateTime::from_timestamp_micros(micros).unwrap_or_default();
    conn.refresh_known()?;
    let first = i64::try_from(head + 1)
        .ok()
        .filter(|f| f.checked_add(events.len() as i64).is_some())
        .ok_or_else(|| SqliteStoreError::CorruptRow {
            position: Some(head + 1),
            what: "position beyond the SQLite integer range".into(),
        })?;
    for e in &events {
        if !conn.cache.ids.contains_key(&*e.event_type) {
            conn.conn
                .prepare_cached(
                    "INSERT INTO event_types (name) VALUES (?1) ON CONFLICT DO NOTHING",
                )?
                .execute([&*e.event_type])?;
            conn.refresh_known()?;
        }
    }
    // The type id of each event; a batch has few distinct types, so remember the last one.
    let mut type_ids = Vec::with_capacity(events.len());
    let mut last_type: Option<(&Arc<str>, i64)> = None;
    for e in &events {
        let id = match last_type {
            Some((name, id))
                if Arc::ptr_eq(name, e.event_type.as_arc()) || **name == *e.event_type =>
            {
                id
            }
            _ => {
                let id = conn.cache.ids.get(&*e.event_type).copied().ok_or_else(|| {
                    SqliteStoreError::CorruptRow {
                        position: None,
                        what: format!("event type `{}` is missing from event_types", e.event_type),
                    }
                })?;
                last_type = Some((e.event_type.as_arc(), id));
                id
            }
        };
        type_ids.push(id);
    }
    let ids = new_ids(events.len());
    // Every event's record (id, time, tags, payload) in one buffer, each a range of it.
    let mut records = Vec::with_capacity(events.iter().map(|e| e.payload.len() + 64).sum());
    let mut tags_text = String::new();
    let mut rows = Vec::with_capacity(events.len());
    for (k, ((e, id), ty)) in events.iter().zip(&ids).zip(&type_ids).enumerate() {
        let position = first + k as i64;
        encode_tags(&e.tags, &mut tags_text);
        let start = records.len();
        encode_record(
            position,
            *ty,
            id,
            micros,
            tags_text.as_bytes(),
            &e.payload,
            &mut records,
        )
        .map_err(|what| SqliteStoreError::CorruptRow {
            position: u64::try_from(position).ok(),
            what,
        })?;
        rows.push((position, *ty, start..records.len()));
    }
    insert_chunked(
        &conn.conn,
        EVENT_INSERT,
        EVENT_ROW,
        ROWS_PER_INSERT,
        &rows,
        |stmt, at, (position, ty, record)| {
            stmt.raw_bind_parameter(at + 1, *position)?;
            stmt.raw_bind_parameter(at + 2, *ty)?;
            stmt.raw_bind_parameter(at + 3, &records[record.clone()])
        },
    )?;

    // The segments the batch reaches, for the queries that walk them.
    let last = first + events.len() as i64 - 1;
    let mut segments = conn
        .conn
        .prepare_cached("INSERT OR IGNORE INTO event_segments (seg) VALUES (?1)")?;
    for seg in (first >> SEGMENT_BITS)..=(last >> SEGMENT_BITS) {
        segments.execute([seg])?;
    }
    drop(segments);

    // The tag index, in key order: all in the batch's one or two segments, so that only the
    // pages of those segments change.
    let mut tag_rows: Vec<(i64, &str, i64, i64)> = events
        .iter()
        .zip(&type_ids)
        .enumerate()
        .flat_map(|(k, (e, ty))| {
            let position = first + k as i64;
            e.tags
                .iter()
                .map(move |t| (position >> SEGMENT_BITS, t.as_str(), *ty, position))
        })
        .collect();
    tag_rows.sort_unstable();

    insert_chunked(
        &conn.conn,
        TAG_INSERT,
        TAG_ROW,
        TAG_ROWS_PER_INSERT,
        &tag_rows,
        |stmt, at, (seg, tag, ty, position)| {
            stmt.raw_bind_parameter(at + 1, *seg)?;
            stmt.raw_bind_parameter(at + 2, *tag)?;
            stmt.raw_bind_parameter(at + 3, *ty)?;
            stmt.raw_bind_parameter(at + 4, *position)
        },
    )?;

    Ok(events
        .into_iter()
        .zip(ids)
        .enumerate()
        .map(|(k, (e, id))| RecordedEvent {
            position: head + 1 + k as u64,
            id,
            event_type: e.event_type.into_arc(),
            tags: e.tags,
            timestamp,
            data: e.payload,
        })
        .collect())
}

// The inserts are `OR ROLLBACK`: a constraint violation ends the transaction instead of undoing
// one statement, so SQLite keeps no statement journal for them (`append_group` then fails the
// whole group). Positions come from the head read in the same write transaction and tags are
// distinct, so only a damaged file can violate a constraint.

/// Events inserted by one statement (3 parameters each).
const ROWS_PER_INSERT: usize = 64;
/// Tag rows inserted by one statement (4 parameters each).
const TAG_ROWS_PER_INSERT: usize = 128;
const EVENT_INSERT: &str = "INSERT OR ROLLBACK INTO events (position, type, record) VALUES ";
const EVENT_ROW: &str = "(?, ?, ?)";
const TAG_INSERT: &str = "INSERT OR ROLLBACK INTO event_tags (seg, tag, type, position) VALUES ";
const TAG_ROW: &str = "(?, ?, ?, ?)";

/// Inserts `rows`, `per_statement` of them per statement (the rest one by one); `bind` binds
/// one row's parameters after the first `at` of the statement.
fn insert_chunked<T>(
    conn: &rusqlite::Connection,
    insert: &str,
    row: &str,
    per_statement: usize,
    rows: &[T],
    bind: impl Fn(&mut rusqlite::Statement<'_>, usize, &T) -> rusqlite::Result<()>,
) -> rusqlite::Result<()> {
    let width = row.matches('?').count();
    let (full, rest) = rows.split_at(rows.len() - rows.len() % per_statement);
    if !full.is_empty() {
        // One statement for every full chunk: its bindings are replaced, never cleared.
        let mut stmt = conn.prepare_cached(&multi_row_insert(insert, row, per_statement))?;
        for chunk in full.chunks_exact(per_statement) {
            for (k, r) in chunk.iter().enumerate() {
                bind(&mut stmt, k * width, r)?;
            }
            stmt.raw_execute()?;
        }
    }
    if !rest.is_empty() {
        let mut stmt = conn.prepare_cached(&multi_row_insert(insert, row, 1))?;
        for r in rest {
            bind(&mut stmt, 0, r)?;
            stmt.raw_execute()?;
        }
    }
    Ok(())
}

/// `INSERT ... VALUES (row), (row), ...` with `rows` rows of anonymous parameters.
fn multi_row_insert(insert: &str, row: &str, rows: usize) -> String {
    let mut sql = String::with_capacity(insert.len() + rows * (row.len() + 2));
    sql.push_str(insert);
    for k in 0..rows {
        if k > 0 {
            sql.push_str(", ");
        }
        sql.push_str(row);
    }
    sql
}

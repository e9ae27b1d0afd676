//! Appends: a batch is encoded into its rows as a pure step ([`encode_batch`]), then the
//! pipeline on the writer thread checks each batch's condition and inserts its rows, all the
//! batches of a group in one transaction.
//!
//! The inserts are `OR ROLLBACK`: a constraint violation ends the transaction instead of
//! undoing one statement, so SQLite keeps no statement journal for them ([`append_group`]
//! then fails the whole group). Positions come from the head read in the same write
//! transaction and tags are distinct, so only a damaged file can violate a constraint.

use std::ops::{Range, RangeInclusive};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::connection::Conn;
use crate::error::SqliteError;
use crate::listener::HeadPublisher;
use crate::record::{encode_record, encode_tags};
use crate::schema::SEGMENT_BITS;
use krescent_core::__backend::new_ids;
use krescent_core::event::{NewEvent, RecordedEvent};
use krescent_core::query::AppendCondition;
use krescent_core::store::StoreError;

/// Events inserted by one statement (3 parameters each).
const ROWS_PER_INSERT: usize = 64;
/// Tag rows inserted by one statement (4 parameters each).
const TAG_ROWS_PER_INSERT: usize = 128;
const EVENT_INSERT: &str = "INSERT OR ROLLBACK INTO events (position, type, record) VALUES ";
const EVENT_ROW: &str = "(?, ?, ?)";
const TAG_INSERT: &str = "INSERT OR ROLLBACK INTO event_tags (seg, tag, type, position) VALUES ";
const TAG_ROW: &str = "(?, ?, ?, ?)";

/// One append: its events and the condition they are appended under.
pub(crate) type Batch = (Vec<NewEvent>, Option<AppendCondition>);

/// The rows of a batch, ready to insert.
#[derive(Debug)]
pub(crate) struct EncodedBatch<'a> {
    /// Every event's record, one after the other.
    records: Vec<u8>,
    /// `(position, type id, the record's range in records)` of each event.
    rows: Vec<(i64, i64, Range<usize>)>,
    /// The tag index rows `(segment, tag, type id, position)`, in key order: all in the
    /// batch's one or two segments, so that only the pages of those segments change.
    tags: Vec<(i64, &'a str, i64, i64)>,
    /// The segments the batch reaches, for the queries that walk them.
    segments: RangeInclusive<i64>,
}

/// The position of the first event of a batch of `len` events appended after `head`, if
/// every position of the batch fits SQLite's integers.
fn first_position(head: u64, len: usize) -> Result<i64, SqliteError> {
    i64::try_from(head + 1)
        .ok()
        .filter(|f| f.checked_add(len as i64).is_some())
        .ok_or_else(|| SqliteError::CorruptRow {
            position: Some(head + 1),
            what: "position beyond the SQLite integer range".into(),
        })
}

/// Encodes `events` (not empty) as rows from position `first` on: their records (with the
/// type ids, event ids and time in microseconds given), their tag index rows in key order and
/// the segments they reach. Fails only for tags longer than 4 GiB.
pub(crate) fn encode_batch<'a>(
    events: &'a [NewEvent],
    type_ids: &[i64],
    ids: &[Uuid],
    first: i64,
    micros: i64,
) -> Result<EncodedBatch<'a>, SqliteError> {
    let mut records = Vec::with_capacity(events.iter().map(|e| e.payload.len() + 64).sum());
    let mut tags_text = String::new();
    let mut rows = Vec::with_capacity(events.len());
    for (k, ((e, id), ty)) in events.iter().zip(ids).zip(type_ids).enumerate() {
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
        .map_err(|what| SqliteError::CorruptRow {
            position: u64::try_from(position).ok(),
            what,
        })?;
        rows.push((position, *ty, start..records.len()));
    }
    let last = first + events.len() as i64 - 1;
    let mut tags: Vec<(i64, &str, i64, i64)> = events
        .iter()
        .zip(type_ids)
        .enumerate()
        .flat_map(|(k, (e, ty))| {
            let position = first + k as i64;
            e.tags
                .iter()
                .map(move |t| (position >> SEGMENT_BITS, t.as_str(), *ty, position))
        })
        .collect();
    tags.sort_unstable();
    Ok(EncodedBatch {
        records,
        rows,
        tags,
        segments: (first >> SEGMENT_BITS)..=(last >> SEGMENT_BITS),
    })
}

/// Appends a group of batches in one transaction and publishes the new head after the
/// commit; the outcome of each batch. An error fails the whole group (the caller rolls back).
pub(crate) fn append_group(
    conn: &mut Conn,
    batches: Vec<Batch>,
    head: &HeadPublisher,
) -> Result<Vec<Result<Vec<RecordedEvent>, StoreError>>, SqliteError> {
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
                return Err(SqliteError::CorruptRow {
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
    head.committed(last);
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

/// Inserts the events after position `head`, in the open transaction.
fn insert(
    conn: &mut Conn,
    events: Vec<NewEvent>,
    head: u64,
) -> Result<Vec<RecordedEvent>, SqliteError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let micros = Utc::now().timestamp_micros();
    // Stored in microseconds, so returned in microseconds too.
    let timestamp = DateTime::from_timestamp_micros(micros).unwrap_or_default();
    conn.refresh_known()?;
    let first = first_position(head, events.len())?;
    let type_ids = type_ids(conn, &events)?;
    let ids = new_ids(events.len());
    let batch = encode_batch(&events, &type_ids, &ids, first, micros)?;
    insert_rows(conn, &batch)?;
    drop(batch);
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

/// The type id of each event, adding the type names not stored yet to `event_types`.
fn type_ids(conn: &mut Conn, events: &[NewEvent]) -> Result<Vec<i64>, SqliteError> {
    for e in events {
        if !conn.cache.ids.contains_key(&*e.event_type) {
            conn.conn
                .prepare_cached(
                    "INSERT INTO event_types (name) VALUES (?1) ON CONFLICT DO NOTHING",
                )?
                .execute([&*e.event_type])?;
            conn.refresh_known()?;
        }
    }
    // A batch has few distinct types, so remember the last one.
    let mut type_ids = Vec::with_capacity(events.len());
    let mut last_type: Option<(&Arc<str>, i64)> = None;
    for e in events {
        let id = match last_type {
            Some((name, id))
                if Arc::ptr_eq(name, e.event_type.as_arc()) || **name == *e.event_type =>
            {
                id
            }
            _ => {
                let id = conn.cache.ids.get(&*e.event_type).copied().ok_or_else(|| {
                    SqliteError::CorruptRow {
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
    Ok(type_ids)
}

/// Inserts the events, the segments and the tag index rows of an encoded batch.
fn insert_rows(conn: &Conn, batch: &EncodedBatch<'_>) -> Result<(), SqliteError> {
    let records = &batch.records;
    insert_chunked(
        &conn.conn,
        EVENT_INSERT,
        EVENT_ROW,
        ROWS_PER_INSERT,
        &batch.rows,
        |stmt, at, (position, ty, record)| {
            stmt.raw_bind_parameter(at + 1, *position)?;
            stmt.raw_bind_parameter(at + 2, *ty)?;
            stmt.raw_bind_parameter(at + 3, &records[record.clone()])
        },
    )?;
    let mut segments = conn
        .conn
        .prepare_cached("INSERT OR IGNORE INTO event_segments (seg) VALUES (?1)")?;
    for seg in batch.segments.clone() {
        segments.execute([seg])?;
    }
    drop(segments);
    insert_chunked(
        &conn.conn,
        TAG_INSERT,
        TAG_ROW,
        TAG_ROWS_PER_INSERT,
        &batch.tags,
        |stmt, at, (seg, tag, ty, position)| {
            stmt.raw_bind_parameter(at + 1, *seg)?;
            stmt.raw_bind_parameter(at + 2, *tag)?;
            stmt.raw_bind_parameter(at + 3, *ty)?;
            stmt.raw_bind_parameter(at + 4, *position)
        },
    )?;
    Ok(())
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use krescent_core::event::Tags;

    fn event(ty: &str, tags: &[&str], payload: &str) -> NewEvent {
        NewEvent::new(
            ty,
            Tags::parse(tags.iter().copied()).unwrap(),
            payload.as_bytes().to_vec(),
        )
        .unwrap()
    }

    #[test]
    fn a_batch_encodes_into_records_tag_rows_and_segments() {
        let events = [
            event("t.b", &["k:2", "a:1"], "{\"n\":1}"),
            event("t.a", &[], ""),
            event("t.b", &["k:1"], "x"),
        ];
        let ids = [1, 2, 3].map(Uuid::from_u128);
        // The batch crosses from segment 0 into segment 1.
        let first = (1 << SEGMENT_BITS) - 2;
        let batch = encode_batch(&events, &[5, 4, 5], &ids, first, 99).unwrap();
        assert_eq!(batch.segments, 0..=1);
        let positions: Vec<i64> = batch.rows.iter().map(|(p, _, _)| *p).collect();
        assert_eq!(positions, [first, first + 1, first + 2]);
        for ((position, ty, range), (e, id)) in batch.rows.iter().zip(events.iter().zip(&ids)) {
            let parts = crate::record::decode_record(&batch.records[range.clone()]).unwrap();
            assert_eq!(parts.position, *position as u64);
            assert_eq!(parts.type_id, *ty);
            assert_eq!(parts.id, *id);
            assert_eq!(parts.micros, 99);
            assert_eq!(parts.payload, &e.payload[..]);
        }
        let seg = |p: i64| p >> SEGMENT_BITS;
        assert_eq!(
            batch.tags,
            vec![
                (seg(first), "a:1", 5, first),
                (seg(first), "k:2", 5, first),
                (seg(first + 2), "k:1", 5, first + 2),
            ]
        );
    }

    #[test]
    fn positions_beyond_sqlite_integers_are_refused() {
        assert_eq!(first_position(0, 3).unwrap(), 1);
        assert!(matches!(
            first_position(i64::MAX as u64 - 1, 2),
            Err(SqliteError::CorruptRow { .. })
        ));
        assert!(first_position(u64::MAX - 1, 1).is_err());
    }

    #[test]
    fn multi_row_inserts_repeat_the_row() {
        assert_eq!(
            multi_row_insert(TAG_INSERT, TAG_ROW, 2),
            format!("{TAG_INSERT}(?, ?, ?, ?), (?, ?, ?, ?)")
        );
    }
}

//! The writer thread: owns the write connection, commits appends (grouping the ones that
//! queue up into one transaction) and publishes the head after each commit.

use std::sync::mpsc;

use chrono::{DateTime, Utc};
use tokio::sync::{oneshot, watch};
use uuid::Uuid;

use super::SqliteStoreError;
use super::conn::{Conn, encode_tags};
use crate::event::{NewEvent, RecordedEvent};
use crate::query::AppendCondition;
use crate::store::StoreError;

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
    let mut recorded = Vec::with_capacity(events.len());
    let mut tags_text = String::new();
    for (offset, e) in (1u64..).zip(events) {
        let position = head + offset;
        let db_position = i64::try_from(position).map_err(|_| SqliteStoreError::CorruptRow {
            position: Some(position),
            what: "position beyond the SQLite integer range".into(),
        })?;
        if !conn.cache.known_set.contains(&*e.event_type) {
            conn.conn
                .prepare_cached(
                    "INSERT INTO event_types (name) VALUES (?1) ON CONFLICT DO NOTHING",
                )?
                .execute([&*e.event_type])?;
            conn.refresh_known()?;
        }
        let id = Uuid::now_v7();
        encode_tags(&e.tags, &mut tags_text);
        conn.conn
            .prepare_cached(
                "INSERT INTO events (position, id, type, tags, ts, payload) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(rusqlite::params![
                db_position,
                id.as_bytes().as_slice(),
                &*e.event_type,
                tags_text.as_str(),
                micros,
                &e.payload[..],
            ])?;
        if !e.tags.is_empty() {
            let mut stmt = conn.conn.prepare_cached(
                "INSERT INTO event_tags (tag, type, position) VALUES (?1, ?2, ?3)",
            )?;
            for tag in &e.tags {
                stmt.execute(rusqlite::params![tag.as_str(), &*e.event_type, db_position])?;
            }
        }
        recorded.push(RecordedEvent {
            position,
            id,
            event_type: e.event_type,
            tags: e.tags,
            timestamp,
            data: e.payload,
        });
    }
    Ok(recorded)
}

//! The writer thread: owns the write connection, runs the work sent to it in order, and
//! commits the appends that queue up while it works together, in one transaction (see
//! [`append_group`]).

use std::sync::mpsc;

use tokio::sync::oneshot;

use crate::append::{Batch, append_group};
use crate::connection::Conn;
use crate::error::SqliteError;
use crate::listener::HeadPublisher;
use krescent_core::event::{NewEvent, RecordedEvent};
use krescent_core::query::AppendCondition;
use krescent_core::store::StoreError;

/// At most this many appends share one transaction.
const MAX_GROUP: usize = 256;

/// A group stops taking appends once it holds this many events.
const MAX_GROUP_EVENTS: usize = 100_000;

type Reply = oneshot::Sender<Result<Vec<RecordedEvent>, StoreError>>;

/// Work for the writer thread.
pub(crate) enum Job {
    /// Append a batch if its condition holds.
    Append {
        events: Vec<NewEvent>,
        condition: Option<AppendCondition>,
        reply: Reply,
    },
    /// Run a closure with the connection (the reads of an in-memory store, the writes of the
    /// storages).
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
pub(crate) fn spawn(conn: Conn, head: HeadPublisher) -> Result<mpsc::Sender<Job>, SqliteError> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("krescent-sqlite-writer".into())
        .spawn(move || run(conn, &rx, &head))
        .map_err(|e| SqliteError::Thread(e.to_string()))?;
    Ok(tx)
}

fn run(mut conn: Conn, rx: &mpsc::Receiver<Job>, head: &HeadPublisher) {
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
fn commit_group(conn: &mut Conn, group: Vec<Append>, head: &HeadPublisher) {
    let (batches, replies): (Vec<Batch>, Vec<_>) = group
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

//! The transaction of an append, pipelined on one connection: `BEGIN`, the counter row's
//! lock (and the condition, whose result costs a round trip of its own), the inserts, the
//! notification and `COMMIT`.

use std::future::Future;
use std::task::Poll;

use chrono::{DateTime, Utc};
use futures::FutureExt as _;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row, Statement};
use uuid::Uuid;

use super::{AppendSql, Batch, EventChunk, TagChunk, chunks};
use crate::PostgresEventStore;
use crate::error::{PostgresError, db, pool};
use crate::query::{Compiled, Params};
use crate::record::to_position;
use krescent_core::event::NewEvent;
use krescent_core::query::EventQuery;
use krescent_core::store::StoreError;

/// The condition of an append, compiled.
pub(super) type Condition<'a> = Option<(Compiled, &'a EventQuery)>;

/// The statements of one append, prepared on its connection (once per connection).
struct Prepared {
    lock: Statement,
    insert_events: Statement,
    insert_tags: Statement,
    /// Only when the batch has type names not known to have an id.
    insert_types: Option<Statement>,
    /// Only when the batch has pairs not known to be in `tag_starts`.
    insert_starts: Option<Statement>,
    notify: Statement,
    /// The condition's statement, unless it is planned per execution.
    conflict: Option<Statement>,
}

impl Prepared {
    async fn new(
        client: &deadpool_postgres::ClientWrapper,
        sql: &AppendSql,
        batch: &Batch<'_>,
        conflict: Option<&Compiled>,
    ) -> Result<Self, StoreError> {
        let new_types = !batch.new_types.is_empty();
        let new_starts = !batch.start_rows.0.is_empty();
        Ok(Prepared {
            lock: prepare(client, &sql.lock_head).await?,
            insert_events: prepare(client, &sql.insert_events).await?,
            insert_tags: prepare(client, &sql.insert_tags).await?,
            insert_types: prepare_if(client, new_types, &sql.insert_types).await?,
            insert_starts: prepare_if(client, new_starts, &sql.insert_starts).await?,
            notify: prepare(client, &sql.notify).await?,
            conflict: match conflict {
                Some(c) => prepare_if(client, !c.per_execution, &c.sql).await?,
                None => None,
            },
        })
    }
}

/// `sql` prepared on `client` (once per connection).
async fn prepare(
    client: &deadpool_postgres::ClientWrapper,
    sql: &str,
) -> Result<Statement, StoreError> {
    client.prepare_cached(sql).await.map_err(db)
}

/// `sql` prepared on `client` (once per connection) if `needed`.
async fn prepare_if(
    client: &deadpool_postgres::ClientWrapper,
    needed: bool,
    sql: &str,
) -> Result<Option<Statement>, StoreError> {
    if !needed {
        return Ok(None);
    }
    prepare(client, sql).await.map(Some)
}

/// One statement of an append's pipeline: a row for the counter row's lock and the
/// condition, nothing for the others.
type Step<'a> =
    std::pin::Pin<Box<dyn Future<Output = Result<Option<Row>, tokio_postgres::Error>> + Send + 'a>>;

/// Runs `steps` concurrently on one connection, which pipelines them: each is polled for the
/// first time in order, and a statement is sent when first polled, so the server receives
/// them in this order (the transaction's `BEGIN` first, its `COMMIT` last). The results come
/// back in the same order.
async fn in_order(mut steps: Vec<Step<'_>>) -> Vec<Result<Option<Row>, tokio_postgres::Error>> {
    let mut results: Vec<Option<Result<_, _>>> = steps.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (step, result) in steps.iter_mut().zip(results.iter_mut()) {
            if result.is_none() {
                match step.as_mut().poll(cx) {
                    Poll::Ready(r) => *result = Some(r),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    results.into_iter().flatten().collect()
}

/// Rolls back the transaction of an append that did not see it end (a failed round trip, a
/// conflict, or the append's future dropped midway) before the connection returns to the
/// pool: the `ROLLBACK` is queued behind the statements already sent, without waiting.
struct OpenTransaction<'a> {
    client: &'a Client,
    open: bool,
}

impl Drop for OpenTransaction<'_> {
    fn drop(&mut self) {
        if self.open {
            // One poll sends the statement; its reply is discarded.
            let _ = self.client.batch_execute("ROLLBACK").now_or_never();
        }
    }
}

/// The first position at which an append's condition fails (the row of its conflict
/// query), read inside the append's transaction after the counter row's lock.
async fn conflict(
    client: &Client,
    statement: Option<&Statement>,
    compiled: &Compiled,
    query: &EventQuery,
) -> Result<Option<Row>, tokio_postgres::Error> {
    let params = Params::of(query);
    match statement {
        Some(stmt) => client.query_opt(stmt, &params.untyped()).await,
        None => client.query_typed_opt(&compiled.sql, &params.typed()).await,
    }
}

/// The round trip of `BEGIN`, the lock and the condition (the steps so far): the counter
/// row, or the conflict the condition found.
async fn check_condition(steps: Vec<Step<'_>>) -> Result<Option<Row>, StoreError> {
    let mut first = Vec::with_capacity(3);
    for result in in_order(steps).await {
        first.push(result.map_err(db)?);
    }
    if let Some(Some(found)) = first.get(2) {
        let position = to_position(found.try_get(0).map_err(db)?)?;
        return Err(StoreError::Conflict { position });
    }
    Ok(first.into_iter().nth(1).flatten())
}

/// Adds the inserts of a batch to `steps`: the new type names first, then the events, the
/// tag rows and the new pairs.
fn push_inserts<'a>(
    steps: &mut Vec<Step<'a>>,
    client: &'a Client,
    prepared: &'a Prepared,
    batch: &'a Batch<'a>,
    events: &'a [EventChunk<'a>],
    tags: &'a [TagChunk<'a>],
    starts: &'a [TagChunk<'a>],
) {
    if let Some(insert) = &prepared.insert_types {
        // Names not known to be stored get their ids first (in the same transaction).
        let new_types = &batch.new_types;
        steps.push(Box::pin(async move {
            client.execute(insert, &[new_types]).await.map(|_| None)
        }));
    }
    let names = &batch.names;
    for (offset, chunk_ids, types, tags, payloads, first) in events {
        let insert = &prepared.insert_events;
        steps.push(Box::pin(async move {
            let params: [&(dyn ToSql + Sync); 7] =
                [offset, chunk_ids, types, tags, payloads, first, names];
            client.execute(insert, &params).await.map(|_| None)
        }));
    }
    let tag_inserts = tags.iter().map(|c| (c, &prepared.insert_tags));
    let start_inserts =
        (prepared.insert_starts.iter()).flat_map(|insert| starts.iter().map(move |c| (c, insert)));
    for ((texts, types, deltas), insert) in tag_inserts.chain(start_inserts) {
        steps.push(Box::pin(async move {
            let params: [&(dyn ToSql + Sync); 3] = [texts, types, deltas];
            client.execute(insert, &params).await.map(|_| None)
        }));
    }
}

impl PostgresEventStore {
    /// Writes an encoded batch in one transaction; returns the new head and the append's
    /// time.
    pub(super) async fn write(
        &self,
        events: &[NewEvent],
        ids: &[Uuid],
        batch: &Batch<'_>,
        condition: &Condition<'_>,
    ) -> Result<(i64, DateTime<Utc>), StoreError> {
        let event_chunks = batch.event_chunks(events, ids);
        let (tag_chunks, start_chunks) = (chunks(&batch.tag_rows), chunks(&batch.start_rows));
        let sql = &self.inner.appends.sql;
        let client = self.inner.pool.get().await.map_err(pool)?;
        let compiled = condition.as_ref().map(|(c, _)| c);
        let prepared = Prepared::new(&client, sql, batch, compiled).await?;

        // From here the connection may be inside a transaction: unless it is seen to leave
        // it, the guard rolls it back before the connection returns to the pool.
        let client: &Client = &client;
        let mut guard = OpenTransaction { client, open: true };
        let n = [i64::try_from(events.len()).unwrap_or(i64::MAX)];
        let lock = &prepared.lock;
        let mut steps: Vec<Step<'_>> = vec![
            Box::pin(async move { client.batch_execute("BEGIN").await.map(|()| None) }),
            Box::pin(async { client.query_one(lock, &[&n[0]]).await.map(Some) }),
        ];
        // Where the counter row's result is among the steps of the last round trip.
        let mut lock_step = Some(1);
        let mut locked_row = None;
        if let Some((compiled, query)) = condition {
            // The condition is read after the lock is granted, in a statement of its own
            // (so with a snapshot that sees every append committed before it): its result
            // decides whether to write, which costs a second round trip.
            let statement = prepared.conflict.as_ref();
            steps.push(Box::pin(conflict(client, statement, compiled, query)));
            locked_row = check_condition(std::mem::take(&mut steps)).await?;
            lock_step = None;
        }
        push_inserts(
            &mut steps,
            client,
            &prepared,
            batch,
            &event_chunks,
            &tag_chunks,
            &start_chunks,
        );
        let (channel, notify) = (&sql.channel, &prepared.notify);
        steps.push(Box::pin(async move {
            client.execute(notify, &[channel]).await.map(|_| None)
        }));
        // COMMIT ends the transaction in any case: if a statement failed, it rolls back.
        steps.push(Box::pin(async move {
            client.batch_execute("COMMIT").await.map(|()| None)
        }));
        let results = in_order(steps).await;
        if matches!(results.last(), Some(Ok(_))) {
            guard.open = false;
        }
        for (k, result) in results.into_iter().enumerate() {
            // The first error is the cause; later statements only saw an aborted transaction.
            let row = result.map_err(db)?;
            if Some(k) == lock_step {
                locked_row = row;
            }
        }
        let Some(row) = locked_row else {
            // `query_one` returns a row or an error.
            return Err(PostgresError::Corrupt {
                position: 0,
                what: format!("the counter row of `{}` is missing", self.inner.tables.head),
            }
            .into());
        };
        Ok((row.try_get(0).map_err(db)?, row.try_get(1).map_err(db)?))
    }
}

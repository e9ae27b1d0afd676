//! Appends: a batch is first encoded for the inserts ([`Batch::encode`], a pure step), then
//! written in one pipelined transaction.
//!
//! An append locks the counter row of `<prefix>head` (`UPDATE … RETURNING`), checks the append
//! condition, inserts the batch (`UNNEST` arrays, [`INSERT_CHUNK`] rows per statement: new type
//! names, events, tag rows, new (tag, type) pairs), notifies the new head and commits, which
//! releases the lock. Positions are therefore assigned in commit order, and a failed or rolled
//! back append gives its positions back.
//!
//! The inserts take their positions and time from the locked counter row rather than from
//! the client, so an append without a condition is one round trip; one with a condition is
//! two, as the condition's result decides whether the inserts are sent.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use uuid::Uuid;

use crate::query::Output;
use crate::record::{encode_tags, to_position};
use crate::schema::{SEGMENT_BITS, Tables};
use crate::{PostgresEventStore, listener};
use krescent_core::__backend::FastState;
use krescent_core::event::{NewEvent, RecordedEvent, Tag};
use krescent_core::query::AppendCondition;
use krescent_core::store::StoreError;

mod pipeline;

use pipeline::Condition;

/// Rows per `INSERT … SELECT FROM UNNEST(…)` statement.
pub(crate) const INSERT_CHUNK: usize = 1000;

/// The most (type, tag) pairs [`KnownStarts`] holds; it starts over when full.
const KNOWN_STARTS: usize = 1 << 18;

/// The statements of an append on one store's tables.
#[derive(Debug)]
pub(crate) struct AppendSql {
    /// `$1` the batch's size: moves the head, returning the new head and the append's time.
    lock_head: String,
    insert_events: String,
    /// `$1` type names: gives the names not stored yet their ids (the next ones).
    insert_types: String,
    insert_tags: String,
    /// `$1` tags, `$2` types, `$3` positions relative to the new head: records the segment
    /// of each pair not recorded yet (the first one it appears in, as positions only grow).
    insert_starts: String,
    /// `$1` the channel: notifies the new head, read from the locked counter row.
    notify: String,
    /// The LISTEN/NOTIFY channel.
    channel: String,
}

impl AppendSql {
    /// The statements on `tables`.
    pub fn new(tables: &Tables) -> Self {
        let Tables {
            events,
            extra_tags,
            starts,
            types,
            head,
            ..
        } = tables;
        AppendSql {
            // The row lock on the single counter row serialises appenders: positions are
            // assigned in commit order and a rolled back append gives its positions back. The
            // row also holds the new head and the append's time for the statements that follow
            // in the same transaction, so that they need not wait for this one's result.
            lock_head: format!(
                "UPDATE {head} SET position = position + $1, recorded_at = clock_timestamp() \
                 RETURNING position, recorded_at"
            ),
            // `$1`: the first position of the chunk minus 1, relative to the new head (so the
            // event at ordinality k gets `head + $1 + k`); `$3`: each event's type as its
            // place (from 1) in `$7`, the append's type names, whose ids are looked up once;
            // `$6`: each event's first tag (NULL: none). A name without an id leaves
            // `type_id` NULL, which the table refuses.
            insert_events: format!(
                "INSERT INTO {events} (position, id, type, type_id, tag, tags, recorded_at, \
                 payload) \
                 SELECT h.position + $1 + u.ord, u.id, ($7::text[])[u.ti], (x.ids)[u.ti], u.tag, \
                 u.tags, h.recorded_at, u.payload FROM {head} h, \
                 (SELECT ARRAY(SELECT t.id FROM UNNEST($7::text[]) WITH ORDINALITY AS d(name, k) \
                 LEFT JOIN {types} t ON t.name = d.name ORDER BY d.k) AS ids) x, \
                 UNNEST($2::uuid[], $3::int4[], $4::bytea[], $5::bytea[], $6::text[]) \
                 WITH ORDINALITY AS u(id, ti, tags, payload, tag, ord)"
            ),
            // Run after the counter row is locked, which serialises the appenders that could
            // add the same name.
            insert_types: format!(
                "INSERT INTO {types} (id, name) \
                 SELECT (SELECT coalesce(max(id), 0) FROM {types}) + row_number() OVER (), n.name \
                 FROM (SELECT DISTINCT name FROM UNNEST($1::text[]) AS d(name)) n \
                 WHERE NOT EXISTS (SELECT 1 FROM {types} t WHERE t.name = n.name) \
                 ON CONFLICT (name) DO NOTHING"
            ),
            // The rows of `extra_tags`; `$3`: each tag's position relative to the new head (0
            // for the last event).
            insert_tags: format!(
                "INSERT INTO {extra_tags} (seg, tag, type, position) \
                 SELECT (h.position + u.delta) >> {SEGMENT_BITS}, u.tag, u.type, \
                 h.position + u.delta FROM {head} h, \
                 UNNEST($1::text[], $2::text[], $3::int8[]) AS u(tag, type, delta)"
            ),
            insert_starts: format!(
                "INSERT INTO {starts} (tag, type, seg) \
                 SELECT u.tag, u.type, min((h.position + u.delta) >> {SEGMENT_BITS}) \
                 FROM {head} h, UNNEST($1::text[], $2::text[], $3::int8[]) AS u(tag, type, delta) \
                 GROUP BY u.tag, u.type ON CONFLICT DO NOTHING"
            ),
            notify: format!("SELECT pg_notify($1, position::text) FROM {head}"),
            channel: tables.channel.clone(),
        }
    }
}

/// What the appends of one store handle share: their statements, and the type names and
/// (type, tag) pairs the handle saw committed, which an append need not send again.
pub(crate) struct Appends {
    sql: AppendSql,
    /// The (type, tag) pairs this handle saw committed to `<prefix>tag_starts`.
    starts: Mutex<KnownStarts>,
    /// The type names this handle saw committed to `<prefix>types` (names are never removed),
    /// whose ids an append need not ask for.
    types: Mutex<HashSet<Box<str>, FastState>>,
}

impl Appends {
    /// Nothing known yet.
    pub fn new(tables: &Tables) -> Self {
        Appends {
            sql: AppendSql::new(tables),
            starts: Mutex::new(KnownStarts::default()),
            types: Mutex::new(HashSet::default()),
        }
    }

    /// Records what a committed batch stored.
    fn remember(&self, new_starts: HashSet<String, FastState>, new_types: &[&str]) {
        if !new_starts.is_empty() {
            self.starts.lock().extend(new_starts.into_iter());
        }
        if !new_types.is_empty() {
            self.types
                .lock()
                .extend(new_types.iter().map(|name| Box::<str>::from(*name)));
        }
    }
}

/// The (type, tag) pairs known to have their row in `<prefix>tag_starts`: recorded after the
/// append that sent them committed. A row is never deleted, so a pair known here needs no
/// row; an append sends only the pairs it does not know (usually none, once the store's tags
/// have been seen), which spares the server a conflicting insert per tag.
#[derive(Default)]
struct KnownStarts {
    /// `type`, a NUL byte (which no stored text holds), then the tag.
    pairs: HashSet<String, FastState>,
}

impl KnownStarts {
    /// Writes the key of a pair into `out` (cleared first).
    fn write_key(event_type: &str, tag: &str, out: &mut String) {
        out.clear();
        out.push_str(event_type);
        out.push('\0');
        out.push_str(tag);
    }

    fn contains(&self, key: &str) -> bool {
        self.pairs.contains(key)
    }

    fn extend(&mut self, keys: impl ExactSizeIterator<Item = String>) {
        if self.pairs.len() + keys.len() > KNOWN_STARTS {
            self.pairs.clear();
        }
        self.pairs.extend(keys);
    }
}

/// Rows of `(tag, type, position relative to the new head)`.
type TagRows<'a> = (Vec<&'a str>, Vec<&'a str>, Vec<i64>);

/// A slice of [`TagRows`], one statement's parameters.
type TagChunk<'a> = (&'a [&'a str], &'a [&'a str], &'a [i64]);

/// One statement's events: the first position minus 1 relative to the new head, ids, type
/// places, encoded tags, payloads, first tags.
type EventChunk<'a> = (
    i64,
    &'a [Uuid],
    &'a [i32],
    &'a [Vec<u8>],
    Vec<&'a [u8]>,
    &'a [Option<&'a str>],
);

/// A batch encoded for the inserts, before a connection is taken. Positions are not known
/// yet: the statements compute them from the counter row they follow in the transaction,
/// relative to the new head.
#[derive(Debug, Default, PartialEq)]
struct Batch<'a> {
    /// The batch's type names, each once; the statement maps them to ids.
    names: Vec<&'a str>,
    /// Each event's type as its place (from 1) in `names`.
    type_index: Vec<i32>,
    /// The names not known to have an id.
    new_types: Vec<&'a str>,
    /// Each event's tags ([`encode_tags`]).
    encoded_tags: Vec<Vec<u8>>,
    /// Each event's first (smallest) tag, for `events.tag`.
    first_tags: Vec<Option<&'a str>>,
    /// The further tags of each event, for `extra_tags`.
    tag_rows: TagRows<'a>,
    /// The pairs not known to be in `tag_starts`, at their first occurrence.
    start_rows: TagRows<'a>,
    /// The keys of those pairs ([`KnownStarts::write_key`]).
    new_starts: HashSet<String, FastState>,
}

impl<'a> Batch<'a> {
    /// Encodes `events`, leaving out the type names in `known_types` and the pairs in
    /// `known_starts`.
    fn encode(
        events: &'a [NewEvent],
        known_types: &HashSet<Box<str>, FastState>,
        known_starts: &KnownStarts,
    ) -> Self {
        let mut batch = Batch::default();
        let mut places = HashMap::<&str, i32, FastState>::default();
        for e in events {
            let next = i32::try_from(batch.names.len() + 1).unwrap_or(i32::MAX);
            let place = *places.entry(&e.event_type).or_insert_with(|| {
                batch.names.push(&e.event_type);
                next
            });
            batch.type_index.push(place);
        }
        batch.new_types = (batch.names.iter().copied())
            .filter(|name| !known_types.contains(*name))
            .collect();
        batch.encode_tags(events, known_starts);
        batch
    }

    /// Encodes the tags of `events`: the stored lists, the first tags, the rows of
    /// `extra_tags` and of `tag_starts`.
    fn encode_tags(&mut self, events: &'a [NewEvent], known: &KnownStarts) {
        let n = i64::try_from(events.len()).unwrap_or(i64::MAX);
        self.encoded_tags.reserve(events.len());
        self.first_tags.reserve(events.len());
        // The key of the pair at hand; allocated anew only for a pair not known.
        let mut key = String::new();
        for (k, e) in events.iter().enumerate() {
            let mut encoded =
                Vec::with_capacity(e.tags.iter().map(|t| t.as_str().len() + 4).sum::<usize>());
            encode_tags(e.tags.iter().map(Tag::as_str), &mut encoded);
            self.encoded_tags.push(encoded);
            self.first_tags.push(e.tags.iter().next().map(Tag::as_str));
            // k < n, so the difference fits.
            let delta = i64::try_from(k).unwrap_or(i64::MAX) - (n - 1);
            for (i, tag) in e.tags.iter().enumerate() {
                let tag = tag.as_str();
                if i > 0 {
                    push_row(&mut self.tag_rows, tag, &e.event_type, delta);
                }
                KnownStarts::write_key(&e.event_type, tag, &mut key);
                if known.contains(&key) || self.new_starts.contains(&key) {
                    continue;
                }
                self.new_starts.insert(key.clone());
                push_row(&mut self.start_rows, tag, &e.event_type, delta);
            }
        }
    }

    /// The events in statements of at most [`INSERT_CHUNK`] rows.
    fn event_chunks<'b>(&'b self, events: &'b [NewEvent], ids: &'b [Uuid]) -> Vec<EventChunk<'b>> {
        let n = events.len();
        let n_i64 = i64::try_from(n).unwrap_or(i64::MAX);
        (0..n)
            .step_by(INSERT_CHUNK)
            .map(|start| {
                let end = (start + INSERT_CHUNK).min(n);
                (
                    i64::try_from(start).unwrap_or(i64::MAX) - n_i64,
                    &ids[start..end],
                    &self.type_index[start..end],
                    &self.encoded_tags[start..end],
                    events[start..end].iter().map(|e| &e.payload[..]).collect(),
                    &self.first_tags[start..end],
                )
            })
            .collect()
    }
}

/// Adds the row `(tag, type, delta)` to `rows`.
fn push_row<'a>(rows: &mut TagRows<'a>, tag: &'a str, event_type: &'a str, delta: i64) {
    rows.0.push(tag);
    rows.1.push(event_type);
    rows.2.push(delta);
}

/// Rows of `(tag, type, position relative to the new head)` in slices of at most
/// [`INSERT_CHUNK`], one statement each.
fn chunks<'a>(rows: &'a TagRows<'a>) -> Vec<TagChunk<'a>> {
    (0..rows.0.len())
        .step_by(INSERT_CHUNK)
        .map(|start| {
            let end = (start + INSERT_CHUNK).min(rows.0.len());
            (
                &rows.0[start..end],
                &rows.1[start..end],
                &rows.2[start..end],
            )
        })
        .collect()
}

impl PostgresEventStore {
    /// Appends `events` under `condition` (see [`EventStore::append`]).
    ///
    /// [`EventStore::append`]: krescent_core::store::EventStore::append
    pub(crate) async fn append_batch(
        &self,
        events: Vec<NewEvent>,
        condition: Option<AppendCondition>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let conflict_query = condition.as_ref().map(AppendCondition::conflict_query);
        if events.is_empty() {
            // Nothing to write: only report a failing condition.
            if let Some(query) = &conflict_query {
                if let Some(&position) = self.positions(query).await?.first() {
                    return Err(StoreError::Conflict { position });
                }
            }
            return Ok(Vec::new());
        }
        // Everything is encoded before the connection is taken.
        let appends = &self.inner.appends;
        let ids: Vec<Uuid> = krescent_core::__backend::new_ids(events.len());
        let batch = {
            let types = appends.types.lock();
            let starts = appends.starts.lock();
            Batch::encode(&events, &types, &starts)
        };
        let condition: Condition<'_> = conflict_query
            .as_ref()
            .map(|q| (self.sql(q, Output::Positions), q));
        let (head, timestamp) = self.write(&events, &ids, &batch, &condition).await?;
        appends.remember(batch.new_starts, &batch.new_types);
        let n = i64::try_from(events.len()).unwrap_or(i64::MAX);
        let first = to_position(head - n + 1)?;
        listener::publish(&self.inner.head, to_position(head)?);
        Ok(recorded(events, ids, first, timestamp))
    }
}

/// The recorded events of a committed batch, the first at position `first`.
fn recorded(
    events: Vec<NewEvent>,
    ids: Vec<Uuid>,
    first: u64,
    timestamp: DateTime<Utc>,
) -> Vec<RecordedEvent> {
    events
        .into_iter()
        .zip(ids)
        .enumerate()
        .map(|(k, (e, id))| RecordedEvent {
            position: first + k as u64,
            id,
            event_type: e.event_type.into_arc(),
            tags: e.tags,
            timestamp,
            data: e.payload,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use krescent_core::event::Tags;

    fn event(event_type: &str, tags: &[&str]) -> NewEvent {
        NewEvent::new(
            event_type,
            Tags::parse(tags.iter().copied()).unwrap(),
            b"{}".to_vec(),
        )
        .unwrap()
    }

    #[test]
    fn a_batch_is_encoded_for_the_inserts() {
        let events = [
            event("a", &["k:2", "k:1"]),
            event("b", &[]),
            event("a", &["k:1"]),
            event("c", &["k:3"]),
        ];
        let known_types: HashSet<Box<str>, FastState> = [Box::from("b")].into_iter().collect();
        let mut known_starts = KnownStarts::default();
        let mut key = String::new();
        KnownStarts::write_key("c", "k:3", &mut key);
        known_starts.extend([key].into_iter());

        let batch = Batch::encode(&events, &known_types, &known_starts);
        assert_eq!(batch.names, ["a", "b", "c"]);
        assert_eq!(batch.type_index, [1, 2, 1, 3]);
        assert_eq!(batch.new_types, ["a", "c"]);
        // Tags are sorted: the smallest is the first, in `events.tag`; the others are rows.
        assert_eq!(
            batch.first_tags,
            [Some("k:1"), None, Some("k:1"), Some("k:3")]
        );
        assert_eq!(batch.encoded_tags[0], b"\0\0\0\x03k:1\0\0\0\x03k:2");
        assert!(batch.encoded_tags[1].is_empty());
        // Positions relative to the new head: the last event is 0.
        assert_eq!(batch.tag_rows, (vec!["k:2"], vec!["a"], vec![-3]));
        // Each unknown pair once, at its first event.
        assert_eq!(
            batch.start_rows,
            (vec!["k:1", "k:2"], vec!["a", "a"], vec![-3, -3])
        );
        assert_eq!(batch.new_starts.len(), 2);
    }

    #[test]
    fn batches_are_cut_into_statements_of_at_most_a_chunk() {
        let events: Vec<NewEvent> = (0..INSERT_CHUNK + 1)
            .map(|i| event("a", &[&format!("k:{i}"), "z:z"]))
            .collect();
        let ids = krescent_core::__backend::new_ids(events.len());
        let batch = Batch::encode(&events, &HashSet::default(), &KnownStarts::default());
        let event_chunks = batch.event_chunks(&events, &ids);
        assert_eq!(event_chunks.len(), 2);
        // The first position of each chunk minus 1, relative to the new head.
        let n = i64::try_from(events.len()).unwrap();
        assert_eq!(event_chunks[0].0, -n);
        assert_eq!(event_chunks[1].0, i64::try_from(INSERT_CHUNK).unwrap() - n);
        assert_eq!(event_chunks[1].1.len(), 1);
        let tag_chunks = chunks(&batch.tag_rows);
        assert_eq!(
            tag_chunks.iter().map(|c| c.0.len()).collect::<Vec<_>>(),
            [INSERT_CHUNK, 1]
        );
        assert!(chunks(&TagRows::default()).is_empty());
    }
}

//! The in-memory event store, indexed by event type and by tag.

use std::collections::HashMap;
use std::iter::Peekable;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use parking_lot::RwLock;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{EventStore, StoreError, Subscription};
use crate::event::{NewEvent, RecordedEvent, Tag};
use crate::query::{AppendCondition, Direction, EventQuery, QueryItem};

/// An event store in memory: safe under concurrent appenders and subscribers, lost when the
/// process ends. Cloning gives another handle to the same store.
///
/// Reads use an index by event type and by tag, so a query for a rare type or tag, or a
/// backwards limit-1 query whose match lies far back, touches only the matching events
/// (binary searches into per-type and per-tag position lists) instead of scanning history.
#[derive(Clone)]
pub struct InMemoryEventStore {
    inner: Arc<Inner>,
}

struct Inner {
    state: RwLock<State>,
    head: watch::Sender<u64>,
}

#[derive(Default)]
struct State {
    /// Event at position `p` is `events[p - 1]`.
    events: Vec<RecordedEvent>,
    by_type: HashMap<Arc<str>, Vec<u64>>,
    by_tag: HashMap<Tag, Vec<u64>>,
}

impl Default for InMemoryEventStore {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for InMemoryEventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryEventStore")
            .field("head", &*self.inner.head.borrow())
            .finish()
    }
}

impl InMemoryEventStore {
    /// An empty store.
    pub fn new() -> Self {
        InMemoryEventStore {
            inner: Arc::new(Inner {
                state: RwLock::new(State::default()),
                head: watch::channel(0).0,
            }),
        }
    }

    /// How many events are stored.
    pub fn len(&self) -> usize {
        self.inner.state.read().events.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl State {
    fn head(&self) -> u64 {
        self.events.len() as u64
    }

    fn event(&self, position: u64) -> &RecordedEvent {
        &self.events[(position - 1) as usize]
    }

    /// Positions `query` selects, in its direction, at most its limit.
    fn select(&self, query: &EventQuery) -> Vec<u64> {
        if query.is_empty() {
            return Vec::new();
        }
        let lo = query.after_position();
        let hi = query
            .until_position()
            .map_or(self.head(), |u| u.min(self.head()));
        if hi <= lo {
            return Vec::new();
        }
        let dir = query.direction_value();
        let limit = query.limit_value().map_or(usize::MAX, |l| {
            usize::try_from(l.get()).unwrap_or(usize::MAX)
        });
        let sources: Vec<Positions<'_>> = query
            .items()
            .iter()
            .map(|item| self.item_positions(item, lo, hi, dir))
            .collect();
        merge(sources, dir).take(limit).collect()
    }

    /// Positions in `(lo, hi]` that `item` selects, in direction order, from the smallest index
    /// list that covers the item.
    fn item_positions<'a>(
        &'a self,
        item: &'a QueryItem,
        lo: u64,
        hi: u64,
        dir: Direction,
    ) -> Positions<'a> {
        let candidates: Positions<'a> = if !item.required_tags().is_empty() {
            let mut shortest: Option<&[u64]> = None;
            for tag in item.required_tags() {
                let Some(list) = self.by_tag.get(tag) else {
                    return Box::new(std::iter::empty());
                };
                let list = range_of(list, lo, hi);
                if shortest.is_none_or(|s| list.len() < s.len()) {
                    shortest = Some(list);
                }
            }
            slice_iter(shortest.unwrap_or(&[]), dir)
        } else if !item.type_names().is_empty() {
            let lists: Vec<Positions<'a>> = item
                .type_names()
                .iter()
                .filter_map(|t| self.by_type.get(t.as_ref()))
                .map(|list| slice_iter(range_of(list, lo, hi), dir))
                .collect();
            merge(lists, dir)
        } else {
            match dir {
                Direction::Forward => Box::new(lo + 1..=hi),
                Direction::Backward => Box::new((lo + 1..=hi).rev()),
            }
        };
        // The index narrowed the candidates; check the whole item on each.
        Box::new(candidates.filter(move |&p| {
            let e = self.event(p);
            item.matches(&e.event_type, &e.tags)
        }))
    }
}

type Positions<'a> = Box<dyn Iterator<Item = u64> + 'a>;

/// The part of an ascending position list within `(lo, hi]`.
fn range_of(list: &[u64], lo: u64, hi: u64) -> &[u64] {
    let start = list.partition_point(|&p| p <= lo);
    let end = list.partition_point(|&p| p <= hi);
    &list[start..end.max(start)]
}

fn slice_iter(list: &[u64], dir: Direction) -> Positions<'_> {
    match dir {
        Direction::Forward => Box::new(list.iter().copied()),
        Direction::Backward => Box::new(list.iter().rev().copied()),
    }
}

/// Merges sorted position streams (all in `dir` order) into one, without duplicates.
fn merge<'a>(mut sources: Vec<Positions<'a>>, dir: Direction) -> Positions<'a> {
    match sources.len() {
        0 => Box::new(std::iter::empty()),
        1 => sources
            .pop()
            .unwrap_or_else(|| Box::new(std::iter::empty())),
        _ => Box::new(Merge {
            sources: sources.into_iter().map(Iterator::peekable).collect(),
            dir,
        }),
    }
}

struct Merge<'a> {
    sources: Vec<Peekable<Positions<'a>>>,
    dir: Direction,
}

impl Iterator for Merge<'_> {
    type Item = u64;
    fn next(&mut self) -> Option<u64> {
        let mut best: Option<u64> = None;
        for s in &mut self.sources {
            if let Some(&p) = s.peek() {
                best = Some(match (best, self.dir) {
                    (None, _) => p,
                    (Some(b), Direction::Forward) => b.min(p),
                    (Some(b), Direction::Backward) => b.max(p),
                });
            }
        }
        let best = best?;
        for s in &mut self.sources {
            if s.peek() == Some(&best) {
                s.next();
            }
        }
        Some(best)
    }
}

#[async_trait]
impl EventStore for InMemoryEventStore {
    async fn append(
        &self,
        events: Vec<NewEvent>,
        condition: Option<AppendCondition>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let recorded = {
            let mut state = self.inner.state.write();
            if let Some(condition) = &condition {
                if let Some(&position) = state.select(&condition.conflict_query()).first() {
                    return Err(StoreError::Conflict { position });
                }
            }
            if events.is_empty() {
                return Ok(Vec::new());
            }
            let timestamp = Utc::now();
            let mut recorded = Vec::with_capacity(events.len());
            let ids = crate::event::ids::new_ids(events.len());
            for (e, id) in events.into_iter().zip(ids) {
                let position = state.head() + 1;
                let event_type = match state.by_type.get_key_value(e.event_type.as_str()) {
                    Some((k, _)) => k.clone(),
                    None => e.event_type.as_arc().clone(),
                };
                state
                    .by_type
                    .entry(event_type.clone())
                    .or_default()
                    .push(position);
                for tag in e.tags.iter() {
                    state.by_tag.entry(tag.clone()).or_default().push(position);
                }
                let r = RecordedEvent {
                    position,
                    id,
                    event_type,
                    tags: e.tags,
                    timestamp,
                    data: e.payload,
                };
                state.events.push(r.clone());
                recorded.push(r);
            }
            let head = state.head();
            // Published while still holding the lock so heads are announced in order.
            self.inner.head.send_replace(head);
            recorded
        };
        Ok(recorded)
    }

    async fn read(&self, query: &EventQuery) -> Result<Vec<RecordedEvent>, StoreError> {
        let state = self.inner.state.read();
        Ok(state
            .select(query)
            .into_iter()
            .map(|p| state.event(p).clone())
            .collect())
    }

    async fn head(&self) -> Result<u64, StoreError> {
        Ok(self.inner.state.read().head())
    }

    fn subscribe(&self, query: EventQuery, after: u64, cancel: CancellationToken) -> Subscription {
        Subscription::polling(
            self.clone(),
            query,
            after,
            self.inner.head.subscribe(),
            cancel,
        )
    }
}

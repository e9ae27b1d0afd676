//! DCB style event queries.
//!
//! An [`EventQuery`] is an OR of [`QueryItem`]s; an item matches an event when the event's type
//! is one of the item's types (no types: any type) AND the event carries every tag of the item.
//! A query also has a [`Direction`], an optional [`Limit`] and a position range: strictly after
//! a cursor and up to an inclusive `until`.

use std::borrow::Cow;
use std::num::NonZeroU64;
use std::sync::Arc;

use crate::event::{Event, EventType, Tag, Tags};

/// Why a query could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// A limit of zero was asked for.
    #[error("query limit must be at least 1, got 0")]
    ZeroLimit,
}

/// The order in which a query returns events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Direction {
    /// Ascending positions.
    #[default]
    Forward,
    /// Descending positions.
    Backward,
}

/// The largest number of events a query returns; never zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Limit(NonZeroU64);

impl Limit {
    /// A limit of `n` events; zero is rejected.
    pub fn new(n: u64) -> Result<Self, QueryError> {
        NonZeroU64::new(n).map(Limit).ok_or(QueryError::ZeroLimit)
    }

    /// A limit known at compile time; a zero fails to compile.
    pub const fn from_const(n: u64) -> Self {
        match NonZeroU64::new(n) {
            Some(n) => Limit(n),
            None => panic!("a query limit must not be zero"),
        }
    }

    /// The limit as a number.
    pub fn get(self) -> u64 {
        self.0.get()
    }
}

impl TryFrom<u64> for Limit {
    type Error = QueryError;
    fn try_from(n: u64) -> Result<Self, QueryError> {
        Limit::new(n)
    }
}

/// One alternative of a query: any of its types AND all of its tags.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct QueryItem {
    types: Vec<Cow<'static, str>>,
    tags: Vec<Tag>,
}

impl QueryItem {
    /// Matches every event.
    pub fn any() -> Self {
        Self::default()
    }

    /// Matches events of any of these types.
    pub fn types<T: Into<Cow<'static, str>>>(types: impl IntoIterator<Item = T>) -> Self {
        Self::any().or_types(types)
    }

    /// Matches events of any type of the enum `E`.
    pub fn of<E: Event>() -> Self {
        Self::types(E::TYPES.iter().copied())
    }

    /// Matches events that carry all of these tags.
    pub fn tagged(tags: impl IntoIterator<Item = Tag>) -> Self {
        Self::any().and_tags(tags)
    }

    /// Adds types (OR).
    pub fn or_types<T: Into<Cow<'static, str>>>(
        mut self,
        types: impl IntoIterator<Item = T>,
    ) -> Self {
        self.types.extend(types.into_iter().map(Into::into));
        self.types.sort_unstable();
        self.types.dedup();
        self
    }

    /// Adds required tags (AND).
    pub fn and_tags(mut self, tags: impl IntoIterator<Item = Tag>) -> Self {
        self.tags.extend(tags);
        self.tags.sort_unstable();
        self.tags.dedup();
        self
    }

    /// Adds one required tag (AND).
    pub fn and_tag(self, tag: Tag) -> Self {
        self.and_tags([tag])
    }

    /// The type names; empty means any type.
    pub fn type_names(&self) -> &[Cow<'static, str>] {
        &self.types
    }

    /// The required tags.
    pub fn required_tags(&self) -> &[Tag] {
        &self.tags
    }

    /// Whether an event with this type and these tags matches.
    pub fn matches(&self, event_type: &str, tags: &Tags) -> bool {
        (self.types.is_empty() || self.types.iter().any(|t| t == event_type))
            && tags.contains_all(&self.tags)
    }
}

impl From<EventType> for Cow<'static, str> {
    fn from(t: EventType) -> Self {
        Cow::Borrowed(t.as_str())
    }
}

/// A query: items OR-ed together, a direction, an optional limit and a position range.
///
/// ```
/// # use krescent_core::{EventQuery, QueryItem, Tag};
/// let latest_count = EventQuery::item(
///     QueryItem::types(["stock.counted"]).and_tag(Tag::new("product", "WIDGET-42").unwrap()),
/// )
/// .backward()
/// .limit(1)
/// .unwrap();
/// assert_eq!(latest_count.limit_value().map(|l| l.get()), Some(1));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventQuery {
    items: Arc<[QueryItem]>,
    direction: Direction,
    limit: Option<Limit>,
    after: u64,
    until: Option<u64>,
}

impl EventQuery {
    /// Matches every event.
    pub fn match_all() -> Self {
        Self::from_items([QueryItem::any()])
    }

    /// Matches no event.
    pub fn match_none() -> Self {
        Self::from_items([])
    }

    /// Matches an event when one of `items` matches.
    pub fn from_items(items: impl IntoIterator<Item = QueryItem>) -> Self {
        EventQuery {
            items: items.into_iter().collect(),
            direction: Direction::Forward,
            limit: None,
            after: 0,
            until: None,
        }
    }

    /// A query of one item.
    pub fn item(item: QueryItem) -> Self {
        Self::from_items([item])
    }

    /// Every event of the enum `E`.
    pub fn of<E: Event>() -> Self {
        Self::item(QueryItem::of::<E>())
    }

    /// Adds an alternative.
    pub fn or(self, item: QueryItem) -> Self {
        let mut items: Vec<QueryItem> = self.items.iter().cloned().collect();
        items.push(item);
        EventQuery {
            items: items.into(),
            ..self
        }
    }

    /// Ascending positions (the default).
    pub fn forward(self) -> Self {
        self.direction(Direction::Forward)
    }

    /// Descending positions.
    pub fn backward(self) -> Self {
        self.direction(Direction::Backward)
    }

    /// Sets the direction.
    pub fn direction(mut self, direction: Direction) -> Self {
        self.direction = direction;
        self
    }

    /// Returns at most `n` events; zero is rejected.
    pub fn limit(self, n: u64) -> Result<Self, QueryError> {
        Ok(self.with_limit(Some(Limit::new(n)?)))
    }

    /// Sets or clears the limit.
    pub fn with_limit(mut self, limit: Option<Limit>) -> Self {
        self.limit = limit;
        self
    }

    /// Only events strictly after `position`.
    pub fn after(mut self, position: u64) -> Self {
        self.after = self.after.max(position);
        self
    }

    /// Only events strictly before `position`.
    pub fn before(self, position: u64) -> Self {
        self.until(position.saturating_sub(1))
    }

    /// Only events up to and including `position`.
    pub fn until(mut self, position: u64) -> Self {
        self.until = Some(self.until.map_or(position, |u| u.min(position)));
        self
    }

    /// The items.
    pub fn items(&self) -> &[QueryItem] {
        &self.items
    }

    /// The direction.
    pub fn direction_value(&self) -> Direction {
        self.direction
    }

    /// The limit, if any.
    pub fn limit_value(&self) -> Option<Limit> {
        self.limit
    }

    /// Events must be strictly after this position (0: from the start).
    pub fn after_position(&self) -> u64 {
        self.after
    }

    /// Events must be at or before this position, if set.
    pub fn until_position(&self) -> Option<u64> {
        self.until
    }

    /// Whether the query can match nothing at all (no items, or an empty range).
    pub fn is_empty(&self) -> bool {
        self.items.is_empty() || self.until.is_some_and(|u| u <= self.after)
    }

    /// Whether an event at `position` with this type and these tags is selected (ignoring the
    /// limit).
    pub fn matches(&self, position: u64, event_type: &str, tags: &Tags) -> bool {
        position > self.after
            && self.until.is_none_or(|u| position <= u)
            && self.matches_filter(event_type, tags)
    }

    /// Whether the items select an event with this type and these tags (ignoring range and
    /// limit).
    pub fn matches_filter(&self, event_type: &str, tags: &Tags) -> bool {
        self.items.iter().any(|i| i.matches(event_type, tags))
    }
}

/// The condition of a DCB append: fail if any event matching `query` was stored after
/// `after` (or at all, when `after` is `None`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AppendCondition {
    /// The events whose appearance makes the append fail. Its direction, limit and range are
    /// ignored.
    pub fail_if_events_match: EventQuery,
    /// The position the writer's decision was based on.
    pub after: Option<u64>,
}

impl AppendCondition {
    /// Fails if any event matching `query` exists at all.
    pub fn none_match(query: EventQuery) -> Self {
        AppendCondition {
            fail_if_events_match: query,
            after: None,
        }
    }

    /// Fails if an event matching `query` was stored after `position`.
    pub fn none_match_after(query: EventQuery, position: u64) -> Self {
        AppendCondition {
            fail_if_events_match: query,
            after: Some(position),
        }
    }

    /// The query a store runs to find the first conflicting event: the filter, forward,
    /// strictly after the expected position, limit 1.
    pub fn conflict_query(&self) -> EventQuery {
        EventQuery {
            items: self.fail_if_events_match.items.clone(),
            direction: Direction::Forward,
            limit: Some(Limit(NonZeroU64::MIN)),
            after: self.after.unwrap_or(0),
            until: None,
        }
    }
}

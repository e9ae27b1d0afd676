//! Type-only reads as position ranges.
//!
//! A read model's query names the types it handles, and usually those are all the types in
//! the store. Such a query selects every event up to the last position whose types the store
//! has looked up: that part is read as a plain position range (the primary key, in a statement
//! prepared once per connection) rather than with a filter on the type, which PostgreSQL has
//! to plan for every page (the best plan depends on how common the types are) and test on
//! every row. The events after that position are read with the filter.
//!
//! The stored types are read from `<prefix>types` (at most [`MAX_TYPES`] + 1 names; a name
//! is there once an event of it is committed), together with the last position, in one
//! statement: its
//! snapshot sees every event up to that position, since positions are assigned in commit
//! order. Events never change, so the answer stays true for those positions; it is read
//! again only when a covered query reads beyond it and at least [`REFRESH_AFTER`] events have
//! been appended since.

use crate::schema::Tables;
use krescent_core::query::{Direction, EventQuery, Limit};

/// The most distinct types looked up. A store with more never has its type-only reads turned
/// into ranges.
pub(crate) const MAX_TYPES: usize = 128;

/// How many events past the known position make a covered query read the stored types again.
pub(crate) const REFRESH_AFTER: u64 = 10_000;

/// `$1` how many types at most → the last position (NULL: no event) and the distinct types
/// (sorted bytewise), read in one snapshot: a name is in `<prefix>types` once an append that
/// stored an event of it committed.
pub(crate) fn stored_types(tables: &Tables) -> String {
    let (events, types) = (&tables.events, &tables.types);
    format!(
        "SELECT (SELECT max(position) FROM {events}), \
         ARRAY(SELECT name FROM {types} ORDER BY name LIMIT $1)"
    )
}

/// The distinct types of the events up to a position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredTypes {
    /// Every event at or before this position has one of `types`.
    pub through: u64,
    /// The distinct types, sorted bytewise: all of them when `complete`, else the first
    /// [`MAX_TYPES`].
    pub types: Vec<String>,
    /// Whether `types` lists every type.
    pub complete: bool,
}

/// How much of the store a query selects whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Coverage {
    /// Every event: an item without types or tags.
    Everything,
    /// Every event at or before this position (after the query's own `after`).
    Through(u64),
    /// Not known to select every event of any range beyond its `after`: read as it is.
    Unknown,
    /// It might, if the stored types were read (again).
    Refresh,
}

/// The coverage of `query` given what is known of the stored types and the latest head seen.
pub(crate) fn coverage(query: &EventQuery, known: Option<&StoredTypes>, head: u64) -> Coverage {
    let mut untagged = query
        .items()
        .iter()
        .filter(|i| i.required_tags().is_empty())
        .peekable();
    if untagged.peek().is_none() {
        return Coverage::Unknown;
    }
    let untagged: Vec<_> = untagged.collect();
    if untagged.iter().any(|i| i.type_names().is_empty()) {
        return Coverage::Everything;
    }
    // The events after the known position are read with the filter; going backwards they
    // would come first.
    if query.direction_value() == Direction::Backward {
        return Coverage::Unknown;
    }
    let Some(known) = known else {
        return Coverage::Refresh;
    };
    let named = |t: &str| {
        untagged
            .iter()
            .any(|i| i.type_names().binary_search_by(|n| (**n).cmp(t)).is_ok())
    };
    // Types are never removed: a stored type the query does not name rules it out for good.
    if !known.complete || !known.types.iter().all(|t| named(t)) {
        return Coverage::Unknown;
    }
    let after = query.after_position();
    if after < known.through {
        Coverage::Through(known.through)
    } else if head >= known.through.saturating_add(REFRESH_AFTER) && head > after {
        Coverage::Refresh
    } else {
        Coverage::Unknown
    }
}

/// `query` as a read of every event in its range, up to `until` at most (same direction,
/// start and limit).
pub(crate) fn as_range(query: &EventQuery, until: Option<u64>) -> EventQuery {
    let range = EventQuery::match_all()
        .direction(query.direction_value())
        .with_limit(query.limit_value())
        .after(query.after_position());
    match query.until_position().into_iter().chain(until).min() {
        Some(until) => range.until(until),
        None => range,
    }
}

/// What is left of `query` once a range read up to `through` returned `got` events: the
/// events after `through` (up to the query's own end), no more than its limit allows. `None`
/// when nothing is left.
pub(crate) fn rest(query: &EventQuery, through: u64, got: usize) -> Option<EventQuery> {
    if query.until_position().is_some_and(|u| u <= through) {
        return None;
    }
    let limit = match query.limit_value() {
        None => None,
        Some(limit) => {
            let left = limit
                .get()
                .saturating_sub(u64::try_from(got).unwrap_or(u64::MAX));
            Some(Limit::new(left).ok()?)
        }
    };
    Some(query.clone().after(through).with_limit(limit))
}

#[cfg(test)]
mod tests {
    use super::*;
    use krescent_core::event::Tag;
    use krescent_core::query::QueryItem;

    fn known(through: u64, types: &[&str], complete: bool) -> StoredTypes {
        StoredTypes {
            through,
            types: types.iter().map(|t| (*t).to_owned()).collect(),
            complete,
        }
    }

    #[test]
    fn queries_naming_every_stored_type_cover_the_known_positions() {
        let abc = EventQuery::item(QueryItem::types(["a", "b", "c"]));
        let stored = known(100, &["a", "c"], true);
        assert_eq!(coverage(&abc, Some(&stored), 100), Coverage::Through(100));
        assert_eq!(
            coverage(&abc.clone().after(99), Some(&stored), 100),
            Coverage::Through(100)
        );
        // At the known position: read the types again only once enough events were added.
        let at = abc.clone().after(100);
        assert_eq!(coverage(&at, Some(&stored), 100), Coverage::Unknown);
        assert_eq!(
            coverage(&at, Some(&stored), 100 + REFRESH_AFTER - 1),
            Coverage::Unknown
        );
        assert_eq!(
            coverage(&at, Some(&stored), 100 + REFRESH_AFTER),
            Coverage::Refresh
        );
        assert_eq!(coverage(&abc, None, 0), Coverage::Refresh);

        // Types spread over several untagged items count together; tagged items do not.
        let split = EventQuery::item(QueryItem::types(["c"]))
            .or(QueryItem::types(["a"]))
            .or(QueryItem::types(["b"]).and_tag(Tag::parse("k:v").unwrap()));
        assert_eq!(coverage(&split, Some(&stored), 0), Coverage::Through(100));
        let with_b = known(100, &["a", "b", "c"], true);
        assert_eq!(coverage(&split, Some(&with_b), 0), Coverage::Unknown);

        // A type the query does not name, or more types than were looked up, rule it out
        // (without reading the types again).
        let d = known(100, &["a", "d"], true);
        assert_eq!(coverage(&abc, Some(&d), 1_000_000), Coverage::Unknown);
        let many = known(100, &["a"], false);
        assert_eq!(coverage(&abc, Some(&many), 0), Coverage::Unknown);

        // Backwards reads and tagged queries are read as they are.
        assert_eq!(
            coverage(&abc.clone().backward(), Some(&stored), 0),
            Coverage::Unknown
        );
        let tagged = EventQuery::item(QueryItem::tagged([Tag::parse("k:v").unwrap()]));
        assert_eq!(coverage(&tagged, None, 0), Coverage::Unknown);

        // An item without types or tags selects everything, whatever the rest.
        let any = EventQuery::item(QueryItem::types(["x"])).or(QueryItem::any());
        assert_eq!(coverage(&any, None, 0), Coverage::Everything);
        assert_eq!(coverage(&any.backward(), Some(&d), 0), Coverage::Everything);
    }

    #[test]
    fn ranges_and_rests_split_a_query_at_the_known_position() {
        let q = EventQuery::item(QueryItem::types(["a", "b"]))
            .after(10)
            .limit(50)
            .unwrap();
        let range = as_range(&q, Some(30));
        assert_eq!(range.items(), EventQuery::match_all().items());
        assert_eq!(
            (range.after_position(), range.until_position()),
            (10, Some(30))
        );
        assert_eq!(range.limit_value(), q.limit_value());
        let rest_of = rest(&q, 30, 20).unwrap();
        assert_eq!(rest_of.items(), q.items());
        assert_eq!(rest_of.after_position(), 30);
        assert_eq!(rest_of.limit_value().map(Limit::get), Some(30));
        assert_eq!(rest(&q, 30, 50), None, "the page is full");

        // The query's own end wins over the known position, and nothing is left past it.
        let ends = q.clone().until(25);
        assert_eq!(as_range(&ends, Some(30)).until_position(), Some(25));
        assert_eq!(rest(&ends, 30, 3), None);
        let ends_later = q.clone().until(40);
        assert_eq!(rest(&ends_later, 30, 3).unwrap().until_position(), Some(40));

        let unlimited = EventQuery::item(QueryItem::types(["a"]));
        assert_eq!(as_range(&unlimited, None).until_position(), None);
        assert_eq!(rest(&unlimited, 30, 1_000).unwrap().limit_value(), None);
    }
}

//! Translation of an [`EventQuery`] into one parameterised SQL statement, as pure functions
//! of the query and the stored type names.
//!
//! Each (item, type) pair is an *arm* that yields positions in order from an index:
//! `events_type_position` for an item with types only, `event_tags` for an item with tags (one
//! seek of `(segment, tag, type)` per segment of `event_segments` in the position range;
//! further tags are `EXISTS` look-ups on the same key). One arm is joined with `events`
//! directly; several are combined with `UNION ... ORDER BY segment, position LIMIT n`, which
//! SQLite evaluates as a lazy merge of the ordered arms (type-only arms walk the segments too,
//! so that every arm has the same order), then joined with `events`. A query without items, or
//! whose items match every event, reads the `events` primary key range; one with more arms
//! than [`MAX_ARMS`] reads the range and filters it.
//!
//! Values are never formatted into the SQL text: positions, limit, segments, type ids and tags
//! are bound parameters (`?1` after, `?2` until, `?3` limit, then one number per distinct
//! value), so statements of the same shape share one prepared statement.

use std::fmt::Write;
use std::sync::Arc;

use rusqlite::Statement;

use crate::connection::TypeIds;
use crate::schema::SEGMENT_BITS;
use krescent_core::event::Tag;
use krescent_core::query::{Direction, EventQuery};

/// Beyond this many arms a query is read as a filtered scan of its position range.
const MAX_ARMS: usize = 64;

/// A tag-only item becomes one arm per stored type up to this many types; beyond, one arm
/// that SQLite sorts within each segment.
const EXPAND_TYPES: usize = 32;

/// The columns [`decode_row`](crate::record::decode_row) expects, from `events AS e`.
pub(crate) const COLUMNS: &str = "e.record, e.position";

/// How the rows of a statement relate to the query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Nothing stored can match: run no statement.
    Empty,
    /// The rows are exactly the result.
    Exact,
    /// The rows are the position range in order; keep those the query's items match, up to
    /// its limit.
    Filter,
}

/// A statement for a query.
pub(crate) struct Sql<'a> {
    pub(crate) kind: Kind,
    pub(crate) text: String,
    params: Vec<Param<'a>>,
}

#[derive(Debug, Clone, PartialEq)]
enum Param<'a> {
    Int(i64),
    Text(&'a str),
}

impl<'a> Sql<'a> {
    /// Binds the parameters to a statement prepared from `self.text`.
    pub(crate) fn bind(&self, stmt: &mut Statement<'_>) -> rusqlite::Result<()> {
        for (i, p) in self.params.iter().enumerate() {
            match p {
                Param::Int(v) => stmt.raw_bind_parameter(i + 1, v)?,
                Param::Text(s) => stmt.raw_bind_parameter(i + 1, s)?,
            }
        }
        Ok(())
    }

    /// The number of the parameter holding `s`, adding it if new.
    fn text(&mut self, s: &'a str) -> usize {
        let found = self
            .params
            .iter()
            .position(|p| matches!(p, Param::Text(t) if *t == s));
        match found {
            Some(i) => i + 1,
            None => {
                self.params.push(Param::Text(s));
                self.params.len()
            }
        }
    }

    /// A new parameter holding `v`. Numbers are never shared, so that a statement's text does
    /// not depend on their values.
    fn int(&mut self, v: i64) -> usize {
        self.params.push(Param::Int(v));
        self.params.len()
    }
}

/// One ordered source of positions: events of one type id (or any type) carrying all `tags`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Arm<'a> {
    ty: Option<i64>,
    tags: &'a [Tag],
}

/// The segment parameters of a statement walking `event_segments AS s` in a range.
struct Segments {
    first: usize,
    last: usize,
}

/// The statement for `query`, given the types stored (`known`: ids and names in id order,
/// `ids`: the id of each name; both from the same snapshot).
pub(crate) fn translate<'a>(
    query: &'a EventQuery,
    known: &[(i64, Arc<str>)],
    ids: &TypeIds,
) -> Sql<'a> {
    let lo = clamp(query.after_position());
    let hi = query.until_position().map_or(i64::MAX, clamp);
    let limit = query
        .limit_value()
        .map_or(-1, |l| i64::try_from(l.get()).unwrap_or(i64::MAX));
    let mut sql = Sql {
        kind: Kind::Empty,
        text: String::new(),
        params: vec![Param::Int(lo), Param::Int(hi), Param::Int(limit)],
    };
    if query.is_empty() || hi <= lo {
        return sql;
    }
    let dir = match query.direction_value() {
        Direction::Forward => "ASC",
        Direction::Backward => "DESC",
    };
    let mut arms = match arms_of(query, known, ids) {
        None => {
            scan(&mut sql, Kind::Exact, dir);
            return sql;
        }
        Some(arms) if arms.len() > MAX_ARMS => {
            scan(&mut sql, Kind::Filter, dir);
            return sql;
        }
        Some(arms) => arms,
    };
    arms.sort_unstable();
    arms.dedup();
    // The segments that can hold a position in (lo, hi].
    let segments = |sql: &mut Sql<'a>| Segments {
        first: sql.int(lo.saturating_add(1) >> SEGMENT_BITS),
        last: sql.int(hi >> SEGMENT_BITS),
    };
    let mut text = String::with_capacity(512);
    match arms.as_slice() {
        [] => return sql,
        [arm] if arm.tags.is_empty() => {
            // One type: the type index is ordered by position already.
            let ty = arm.ty.map_or(0, |t| sql.int(t));
            let _ = write!(
                text,
                "SELECT {COLUMNS} FROM events AS e INDEXED BY events_type_position \
                 WHERE e.type = ?{ty} AND e.position > ?1 AND e.position <= ?2 \
                 ORDER BY e.position {dir} LIMIT ?3"
            );
        }
        [arm] => {
            let seg = segments(&mut sql);
            let _ = write!(
                text,
                "SELECT {COLUMNS} FROM event_segments AS s CROSS JOIN event_tags AS t \
                 ON t.seg = s.seg CROSS JOIN events AS e ON e.position = t.position \
                 WHERE s.seg >= ?{} AND s.seg <= ?{} AND ",
                seg.first, seg.last
            );
            tag_conditions(&mut text, &mut sql, arm);
            let _ = write!(text, " ORDER BY s.seg {dir}, t.position {dir} LIMIT ?3");
        }
        arms => {
            let seg = segments(&mut sql);
            merged_arms(&mut text, &mut sql, arms, &seg, dir);
        }
    }
    sql.kind = Kind::Exact;
    sql.text = text;
    sql
}

/// The arms of `query`'s items (one per item and stored type), unsorted; `None` when an item
/// matches every event.
fn arms_of<'a>(
    query: &'a EventQuery,
    known: &[(i64, Arc<str>)],
    ids: &TypeIds,
) -> Option<Vec<Arm<'a>>> {
    let mut arms: Vec<Arm<'a>> = Vec::new();
    for item in query.items() {
        // The item's stored type ids; `None` when it accepts every stored type.
        let types: Option<Vec<i64>> = if item.type_names().is_empty() {
            None
        } else {
            let mut stored: Vec<i64> = item
                .type_names()
                .iter()
                .filter_map(|t| ids.get(t.as_ref()).copied())
                .collect();
            stored.sort_unstable();
            stored.dedup();
            if stored.is_empty() {
                continue; // none of its types is stored: it matches nothing
            }
            (stored.len() < known.len()).then_some(stored)
        };
        let tags = item.required_tags();
        match types {
            None if tags.is_empty() => return None,
            None if known.len() > EXPAND_TYPES => arms.push(Arm { ty: None, tags }),
            None => arms.extend(known.iter().map(|(id, _)| Arm {
                ty: Some(*id),
                tags,
            })),
            Some(types) => arms.extend(types.into_iter().map(|t| Arm { ty: Some(t), tags })),
        }
    }
    Some(arms)
}

/// Makes `sql` a read of the position range in the query's direction: exact for a query
/// that matches everything, a filter (without a limit: the reader applies it) for one with
/// too many arms.
fn scan(sql: &mut Sql<'_>, kind: Kind, dir: &str) {
    sql.kind = kind;
    if kind == Kind::Filter {
        sql.params[2] = Param::Int(-1);
    }
    sql.text = format!(
        "SELECT {COLUMNS} FROM events AS e WHERE e.position > ?1 AND e.position <= ?2 \
         ORDER BY e.position {dir} LIMIT ?3"
    );
}

/// Writes the statement that merges several arms (each ordered by segment and position) with
/// `UNION ... ORDER BY ... LIMIT`, then joins the positions with `events`.
fn merged_arms<'a>(
    text: &mut String,
    sql: &mut Sql<'a>,
    arms: &[Arm<'a>],
    seg: &Segments,
    dir: &str,
) {
    text.push_str("SELECT ");
    text.push_str(COLUMNS);
    text.push_str(" FROM (");
    for (i, arm) in arms.iter().enumerate() {
        if i > 0 {
            text.push_str(" UNION ");
        }
        if arm.tags.is_empty() {
            // The type index within each segment, so that every arm is ordered by
            // (segment, position) and the arms merge without a sort. One lower and one
            // upper bound, so that each seek stops at the end of its segment.
            let ty = arm.ty.map_or(0, |t| sql.int(t));
            let _ = write!(
                text,
                "SELECT s.seg AS g, x.position AS p FROM event_segments AS s \
                 CROSS JOIN events AS x INDEXED BY events_type_position \
                 ON x.type = ?{ty} \
                 AND x.position > max(?1, (s.seg << {SEGMENT_BITS}) - 1) \
                 AND x.position <= min(?2, ((s.seg + 1) << {SEGMENT_BITS}) - 1) \
                 WHERE s.seg >= ?{} AND s.seg <= ?{}",
                seg.first, seg.last
            );
        } else {
            let _ = write!(
                text,
                "SELECT s.seg AS g, t.position AS p FROM event_segments AS s \
                 CROSS JOIN event_tags AS t ON t.seg = s.seg \
                 WHERE s.seg >= ?{} AND s.seg <= ?{} AND ",
                seg.first, seg.last
            );
            tag_conditions(text, sql, arm);
        }
    }
    let _ = write!(
        text,
        " ORDER BY 1 {dir}, 2 {dir} LIMIT ?3) AS u CROSS JOIN events AS e \
         ON e.position = u.p ORDER BY u.g {dir}, u.p {dir}"
    );
}

/// The conditions on `event_tags AS t` (joined with `event_segments AS s`) of an arm with
/// tags.
fn tag_conditions<'a>(text: &mut String, sql: &mut Sql<'a>, arm: &Arm<'a>) {
    let Some((first, more)) = arm.tags.split_first() else {
        return;
    };
    let tag = sql.text(first.as_str());
    let _ = write!(text, "t.tag = ?{tag}");
    if let Some(ty) = arm.ty {
        let ty = sql.int(ty);
        let _ = write!(text, " AND t.type = ?{ty}");
    }
    text.push_str(" AND t.position > ?1 AND t.position <= ?2");
    for other in more {
        let tag = sql.text(other.as_str());
        let _ = write!(
            text,
            " AND EXISTS (SELECT 1 FROM event_tags AS x WHERE x.seg = t.seg AND x.tag = ?{tag} \
             AND x.type = t.type AND x.position = t.position)"
        );
    }
}

/// A position as an SQLite integer; positions beyond `i64::MAX` are never stored.
fn clamp(p: u64) -> i64 {
    i64::try_from(p).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use krescent_core::event::Tag;
    use krescent_core::query::QueryItem;

    /// Stored types `t.1` … `t.n` with ids 1 … n.
    fn stored(n: i64) -> (Vec<(i64, Arc<str>)>, TypeIds) {
        let known: Vec<(i64, Arc<str>)> =
            (1..=n).map(|i| (i, Arc::from(format!("t.{i}")))).collect();
        let ids = known
            .iter()
            .map(|(i, name)| (Arc::clone(name), *i))
            .collect();
        (known, ids)
    }

    fn tag(text: &str) -> Tag {
        Tag::parse(text).unwrap()
    }

    fn ints(sql: &Sql<'_>) -> Vec<i64> {
        sql.params
            .iter()
            .filter_map(|p| match p {
                Param::Int(v) => Some(*v),
                Param::Text(_) => None,
            })
            .collect()
    }

    #[test]
    fn queries_that_match_nothing_stored_need_no_statement() {
        let (known, ids) = stored(3);
        let unknown = EventQuery::item(QueryItem::types(["t.9"]));
        assert_eq!(translate(&unknown, &known, &ids).kind, Kind::Empty);
        let empty_range = EventQuery::match_all().after(5).until(5);
        assert_eq!(translate(&empty_range, &known, &ids).kind, Kind::Empty);
    }

    #[test]
    fn everything_reads_the_primary_key_range() {
        let (known, ids) = stored(3);
        let query = EventQuery::match_all().after(7).limit(10).unwrap();
        let sql = translate(&query, &known, &ids);
        assert_eq!(sql.kind, Kind::Exact);
        assert!(
            sql.text
                .starts_with("SELECT e.record, e.position FROM events AS e WHERE")
        );
        assert!(
            sql.text.ends_with("ORDER BY e.position ASC LIMIT ?3"),
            "{}",
            sql.text
        );
        assert_eq!(ints(&sql), [7, i64::MAX, 10]);
        // Naming every stored type is the same as naming none.
        let all_types = EventQuery::item(QueryItem::types(["t.1", "t.2", "t.3"]))
            .after(7)
            .limit(10)
            .unwrap();
        assert_eq!(translate(&all_types, &known, &ids).text, sql.text);
    }

    #[test]
    fn one_type_uses_the_type_index() {
        let (known, ids) = stored(3);
        let query = EventQuery::item(QueryItem::types(["t.2"])).backward();
        let sql = translate(&query, &known, &ids);
        assert_eq!(sql.kind, Kind::Exact);
        assert!(
            sql.text.contains("INDEXED BY events_type_position"),
            "{}",
            sql.text
        );
        assert!(sql.text.contains("e.type = ?4"), "{}", sql.text);
        assert!(sql.text.contains("DESC"), "{}", sql.text);
        assert_eq!(ints(&sql), [0, i64::MAX, -1, 2]);
    }

    #[test]
    fn tags_walk_the_segments_and_bind_each_tag_once() {
        let (known, ids) = stored(3);
        let query = EventQuery::item(
            QueryItem::types(["t.1"])
                .and_tag(tag("k:1"))
                .and_tag(tag("k:2")),
        )
        .after(1 << SEGMENT_BITS);
        let sql = translate(&query, &known, &ids);
        assert_eq!(sql.kind, Kind::Exact);
        assert!(
            sql.text.contains("FROM event_segments AS s"),
            "{}",
            sql.text
        );
        assert!(sql.text.contains("EXISTS"), "{}", sql.text);
        assert!(sql.params.contains(&Param::Text("k:1")));
        assert!(sql.params.contains(&Param::Text("k:2")));
        // The segments from that of the first position after `after` to the last.
        assert_eq!(ints(&sql)[3..5], [1, i64::MAX >> SEGMENT_BITS]);
    }

    #[test]
    fn several_arms_merge_and_values_never_change_the_text() {
        let (known, ids) = stored(5);
        let query = |a: &'static str, b: &'static str, after: u64| {
            EventQuery::item(QueryItem::types([a]).and_tag(tag("k:1")))
                .or(QueryItem::types([b]))
                .after(after)
                .limit(3)
                .unwrap()
        };
        let one = query("t.1", "t.2", 0);
        let other = query("t.3", "t.4", 99_999);
        let (first, second) = (
            translate(&one, &known, &ids),
            translate(&other, &known, &ids),
        );
        assert_eq!(first.kind, Kind::Exact);
        assert_eq!(first.text.matches(" UNION ").count(), 1, "{}", first.text);
        assert_eq!(first.text, second.text);
        assert_ne!(ints(&first), ints(&second));
    }

    #[test]
    fn too_many_arms_filter_a_scan_without_a_limit() {
        let (known, ids) = stored(80);
        let names: Vec<String> = (1..=70).map(|i| format!("t.{i}")).collect();
        let query = EventQuery::item(QueryItem::types(names)).limit(5).unwrap();
        let sql = translate(&query, &known, &ids);
        assert_eq!(sql.kind, Kind::Filter);
        assert_eq!(ints(&sql), [0, i64::MAX, -1]);
        // A tag-only item over many stored types is one arm instead.
        let tagged = EventQuery::item(QueryItem::tagged([tag("k:1")]));
        let sql = translate(&tagged, &known, &ids);
        assert_eq!(sql.kind, Kind::Exact);
        assert!(!sql.text.contains("t.type ="), "{}", sql.text);
    }
}

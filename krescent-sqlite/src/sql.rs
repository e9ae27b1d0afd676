//! Translation of an [`EventQuery`] into one parameterised SQL statement.
//!
//! Values are never formatted into the SQL text: positions, limit, segments, type ids and tags
//! are bound parameters (`?1` after, `?2` until, `?3` limit, then one number per distinct
//! value), so statements of the same shape share one prepared statement.

use std::fmt::Write;
use std::sync::Arc;

use rusqlite::Statement;

use super::SEGMENT_BITS;
use super::conn::TypeIds;
use krescent_core::event::Tag;
use krescent_core::query::{Direction, EventQuery};

/// Beyond this many arms a query is read as a filtered scan of its position range.
const MAX_ARMS: usize = 64;

/// A tag-only item becomes one arm per stored type up to this many types; beyond, one arm
/// that SQLite sorts within each segment.
const EXPAND_TYPES: usize = 32;

/// The columns [`decode_row`](super::conn) expects, from `events AS e`.
pub(super) const COLUMNS: &str = "e.record, e.position";

/// How the rows of a statement relate to the query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// Nothing stored can match: run no statement.
    Empty,
    /// The rows are exactly the result.
    Exact,
    /// The rows are the position range in order; keep those the query's items match, up to
    /// its limit.
    Filter,
}

/// A statement for a query.
pub(super) struct Sql<'a> {
    pub(super) kind: Kind,
    pub(super) text: String,
    params: Vec<Param<'a>>,
}

enum Param<'a> {
    Int(i64),
    Text(&'a str),
}

impl<'a> Sql<'a> {
    /// Binds the parameters to a statement prepared from `self.text`.
    pub(super) fn bind(&self, stmt: &mut Statement<'_>) -> rusqlite::Result<()> {
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
pub(super) fn translate<'a>(
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

    let mut arms: Vec<Arm<'a>> = Vec::new();
    let mut everything = false;
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
            None if tags.is_empty() => {
                everything = true;
                break;
            }
            None if known.len() > EXPAND_TYPES => arms.push(Arm { ty: None, tags }),
            None => arms.extend(known.iter().map(|(id, _)| Arm {
                ty: Some(*id),
                tags,
            })),
            Some(types) => arms.extend(types.into_iter().map(|t| Arm { ty: Some(t), tags })),
        }
    }

    if everything || arms.len() > MAX_ARMS {
        sql.kind = if everything {
            Kind::Exact
        } else {
            Kind::Filter
        };
        if sql.kind == Kind::Filter {
            sql.params[2] = Param::Int(-1);
        }
        sql.text = format!(
            "SELECT {COLUMNS} FROM events AS e WHERE e.position > ?1 AND e.position <= ?2 \
             ORDER BY e.position {dir} LIMIT ?3"
        );
        return sql;
    }
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
                    tag_conditions(&mut text, &mut sql, arm);
                }
            }
            let _ = write!(
                text,
                " ORDER BY 1 {dir}, 2 {dir} LIMIT ?3) AS u CROSS JOIN events AS e \
                 ON e.position = u.p ORDER BY u.g {dir}, u.p {dir}"
            );
        }
    }
    sql.kind = Kind::Exact;
    sql.text = text;
    sql
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

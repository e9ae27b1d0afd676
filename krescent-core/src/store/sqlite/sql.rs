//! Translation of an [`EventQuery`] into one parameterised SQL statement.
//!
//! Values are never formatted into the SQL text: positions, limit, type names and tags are
//! bound parameters (`?1` after, `?2` until, `?3` limit, then one number per distinct string),
//! so statements of the same shape share one prepared statement.

use std::collections::HashSet;
use std::fmt::Write;
use std::sync::Arc;

use rusqlite::Statement;

use crate::event::Tag;
use crate::query::{Direction, EventQuery};

/// Beyond this many arms a query is read as a filtered scan of its position range.
const MAX_ARMS: usize = 64;

/// A tag-only item becomes one arm per stored type up to this many types; beyond, one arm
/// that SQLite sorts.
const EXPAND_TYPES: usize = 32;

/// The columns [`decode_row`](super::conn) expects, from `events AS e`.
const COLUMNS: &str = "e.position, e.id, e.type, e.tags, e.ts, e.payload";

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
}

/// One ordered source of positions: events of one type (or any type) carrying all `tags`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Arm<'a> {
    ty: Option<&'a str>,
    tags: &'a [Tag],
}

/// The statement for `query`, given the type names stored (`known`, in the same snapshot).
pub(super) fn translate<'a>(
    query: &'a EventQuery,
    known: &'a [Arc<str>],
    known_set: &HashSet<Arc<str>>,
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
        // The item's stored types; `None` when it accepts every stored type.
        let types: Option<Vec<&'a str>> = if item.type_names().is_empty() {
            None
        } else {
            let stored: Vec<&'a str> = item
                .type_names()
                .iter()
                .map(|t| t.as_ref())
                .filter(|t| known_set.contains(*t))
                .collect();
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
            None => arms.extend(known.iter().map(|t| Arm {
                ty: Some(&**t),
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
    let mut text = String::with_capacity(256);
    match arms.as_slice() {
        [] => return sql,
        [arm] => {
            if arm.tags.is_empty() {
                let ty = arm.ty.map_or(0, |t| sql.text(t));
                let _ = write!(
                    text,
                    "SELECT {COLUMNS} FROM events AS e INDEXED BY events_type_position \
                     WHERE e.type = ?{ty} AND e.position > ?1 AND e.position <= ?2 \
                     ORDER BY e.position {dir} LIMIT ?3"
                );
            } else {
                let _ = write!(
                    text,
                    "SELECT {COLUMNS} FROM event_tags AS t CROSS JOIN events AS e \
                     ON e.position = t.position WHERE "
                );
                tag_conditions(&mut text, &mut sql, arm);
                let _ = write!(text, " ORDER BY t.position {dir} LIMIT ?3");
            }
        }
        arms => {
            text.push_str("SELECT ");
            text.push_str(COLUMNS);
            text.push_str(" FROM (");
            for (i, arm) in arms.iter().enumerate() {
                if i > 0 {
                    text.push_str(" UNION ");
                }
                if arm.tags.is_empty() {
                    let ty = arm.ty.map_or(0, |t| sql.text(t));
                    let _ = write!(
                        text,
                        "SELECT position AS p FROM events INDEXED BY events_type_position \
                         WHERE type = ?{ty} AND position > ?1 AND position <= ?2"
                    );
                } else {
                    text.push_str("SELECT t.position AS p FROM event_tags AS t WHERE ");
                    tag_conditions(&mut text, &mut sql, arm);
                }
            }
            let _ = write!(
                text,
                " ORDER BY 1 {dir} LIMIT ?3) AS s CROSS JOIN events AS e ON e.position = s.p \
                 ORDER BY s.p {dir}"
            );
        }
    }
    sql.kind = Kind::Exact;
    sql.text = text;
    sql
}

/// The conditions on `event_tags AS t` of an arm with tags.
fn tag_conditions<'a>(text: &mut String, sql: &mut Sql<'a>, arm: &Arm<'a>) {
    let Some((first, more)) = arm.tags.split_first() else {
        return;
    };
    let tag = sql.text(first.as_str());
    let _ = write!(text, "t.tag = ?{tag}");
    if let Some(ty) = arm.ty {
        let ty = sql.text(ty);
        let _ = write!(text, " AND t.type = ?{ty}");
    }
    text.push_str(" AND t.position > ?1 AND t.position <= ?2");
    for other in more {
        let tag = sql.text(other.as_str());
        let _ = write!(
            text,
            " AND EXISTS (SELECT 1 FROM event_tags AS x WHERE x.tag = ?{tag} \
             AND x.type = t.type AND x.position = t.position)"
        );
    }
}

/// A position as an SQLite integer; positions beyond `i64::MAX` are never stored.
fn clamp(p: u64) -> i64 {
    i64::try_from(p).unwrap_or(i64::MAX)
}

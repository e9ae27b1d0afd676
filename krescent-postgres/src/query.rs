//! The translation of an [`EventQuery`] into SQL, as pure functions: a query's [`Shape`]
//! (everything that changes the SQL text) and its [`Params`] (the values, always bound), and
//! the statement of each shape ([`build`]). Statements are generated once per shape and
//! prepared once per connection.

use std::sync::Arc;

use tokio_postgres::types::{ToSql, Type};

use crate::record::EVENT_COLUMNS;
use crate::schema::Tables;
use krescent_core::query::{Direction, EventQuery};

mod tagged;

/// What a statement returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Output {
    /// Whole events ([`EVENT_COLUMNS`]).
    Rows,
    /// Positions only.
    Positions,
}

/// The shape of one query item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum ItemShape {
    /// Any event: the events primary key.
    Any,
    /// Some types, no tags: one `text` parameter per type, each read as its own arm of the
    /// `(type_id, position)` index (up to [`TYPE_ARMS`] types).
    TypeArms(usize),
    /// More types than [`TYPE_ARMS`], no tags: one `text[]` parameter.
    Types,
    /// Tags (and maybe types): one `text` parameter per type and per tag.
    Tagged { types: usize, tags: usize },
}

/// The shape of a query: everything that changes its SQL text (not its values). Statements
/// are generated once per shape.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Shape {
    output: Output,
    direction: Direction,
    items: Vec<ItemShape>,
}

impl Shape {
    /// The shape of `query` read as `output`.
    pub fn of(query: &EventQuery, output: Output) -> Self {
        Shape {
            output,
            direction: query.direction_value(),
            items: query
                .items()
                .iter()
                .map(|i| match (i.type_names().len(), i.required_tags().len()) {
                    (0, 0) => ItemShape::Any,
                    (n, 0) if n <= TYPE_ARMS => ItemShape::TypeArms(n),
                    (_, 0) => ItemShape::Types,
                    (types, tags) => ItemShape::Tagged { types, tags },
                })
                .collect(),
        }
    }

    /// Whether the best plan depends on the values: a filter on many types alone may select
    /// most events (scan by position, filter by type) or few (the type index). Such
    /// statements are planned for each execution, with the statistics of the moment; the
    /// ids are the result of a subquery on the names, whose values the planner does not
    /// see. All others keep one prepared, generic plan. Up to
    /// [`TYPE_ARMS`] types are read as one ordered, limited index range per type instead,
    /// which is the right plan whatever the values and needs no statistics.
    pub fn is_value_sensitive(&self) -> bool {
        self.items.contains(&ItemShape::Types)
    }
}

/// An untagged item with at most this many types is read as one range of the
/// `(type_id, position)` index per type, merged in position order (Merge Append); with more,
/// as one `type_id = ANY(..)` filter planned per execution. Planned per execution on a table
/// without statistics (events appended before autovacuum analysed them), a filter on a few
/// types can become a bitmap scan of every later event of those types and a sort, for every
/// page of a catch-up. The ranges are one prepared statement whose generic plan needs no
/// statistics; PostgreSQL plans its first five executions on each connection with the
/// values, which from missing statistics may still be that slow plan, and then keeps the
/// generic one.
pub(crate) const TYPE_ARMS: usize = 16;

/// One bind parameter after the first three.
pub(crate) enum Value<'q> {
    Text(&'q str),
    TextArray(Vec<&'q str>),
}

/// The bind parameters of a query, in the order the SQL of its shape numbers them: `$1` after
/// (exclusive), `$2` until (inclusive), `$3` limit, then for each item its types (one value
/// per type; one array for an untagged item of more than [`TYPE_ARMS`] types) and its tags.
pub(crate) struct Params<'q> {
    pub after: i64,
    pub until: i64,
    pub limit: i64,
    pub values: Vec<Value<'q>>,
}

impl<'q> Params<'q> {
    /// The values of `query`. Positions beyond `i64::MAX` never exist, so they clamp.
    pub fn of(query: &'q EventQuery) -> Self {
        let clamp = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let mut values = Vec::new();
        for item in query.items() {
            let types = item.type_names().iter().map(|t| t.as_ref());
            if item.required_tags().is_empty() {
                match item.type_names().len() {
                    0 => {}
                    n if n <= TYPE_ARMS => values.extend(types.map(Value::Text)),
                    _ => values.push(Value::TextArray(types.collect())),
                }
            } else {
                values.extend(types.map(Value::Text));
                values.extend(item.required_tags().iter().map(|t| Value::Text(t.as_str())));
            }
        }
        Params {
            after: clamp(query.after_position()),
            until: query.until_position().map_or(i64::MAX, clamp),
            limit: query.limit_value().map_or(i64::MAX, |l| clamp(l.get())),
            values,
        }
    }

    /// The values with their types, for statements prepared or planned per execution.
    pub fn typed(&self) -> Vec<(&(dyn ToSql + Sync), Type)> {
        let mut out: Vec<(&(dyn ToSql + Sync), Type)> = Vec::with_capacity(3 + self.values.len());
        out.push((&self.after, Type::INT8));
        out.push((&self.until, Type::INT8));
        out.push((&self.limit, Type::INT8));
        for v in &self.values {
            out.push(match v {
                Value::Text(t) => (t, Type::TEXT),
                Value::TextArray(a) => (a, Type::TEXT_ARRAY),
            });
        }
        out
    }

    /// The values alone.
    pub fn untyped(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.typed().into_iter().map(|(v, _)| v).collect()
    }

    /// The values as text, for `EXPLAIN EXECUTE` (arrays in PostgreSQL's array syntax).
    pub fn texts(&self) -> Vec<String> {
        let mut out = vec![
            self.after.to_string(),
            self.until.to_string(),
            self.limit.to_string(),
        ];
        for v in &self.values {
            out.push(match v {
                Value::Text(t) => (*t).to_owned(),
                Value::TextArray(a) => {
                    let mut s = String::new();
                    array_literal(a.iter().copied(), &mut s);
                    s
                }
            });
        }
        out
    }
}

/// Texts as a PostgreSQL array literal (`{"a:1","b:2"}`).
pub(crate) fn array_literal<'a>(texts: impl Iterator<Item = &'a str>, out: &mut String) {
    out.push('{');
    for (i, text) in texts.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        for c in text.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
    }
    out.push('}');
}

/// The parameter numbers of one item.
enum ItemParams {
    Any,
    /// The parameter numbers of an untagged item's types, one arm each.
    TypeArms(Vec<usize>),
    Types(usize),
    Tagged {
        types: Vec<usize>,
        tags: Vec<usize>,
    },
}

/// The SQL text of a query shape.
///
/// - An item without tags reads the events table within the position range: no types, every
///   event (the primary key); up to [`TYPE_ARMS`] types, one ordered and limited range of the
///   `(type_id, position)` index per type, merged with `UNION ALL` (Merge Append, no
///   sort); more, `type_id = ANY(..)` by the primary key or by the type index, whichever the
///   statistics favour (see [`Shape::is_value_sensitive`]). Each name is mapped to its id
///   inside the statement.
/// - An item with tags drives from the two tag indexes keyed `(seg, tag, type_id,
///   position)` and `(seg, tag, type, position)` (the index of `events.tag` and the primary
///   key of `extra_tags`), walking the segments
///   in the query's direction (`generate_series`, from the segment of `$1` to that of the
///   head or `$2`) in a nested loop that stops at the limit. Within a segment, the first tag
///   with each type is an index range of each, read in position order, each further tag an
///   `EXISTS` probe of `extra_tags` (see `tagged.rs`). The branches are disjoint;
///   each is ordered and limited, and `UNION ALL` merges them in position order (Merge
///   Append) without a sort. The walk starts at the first segment `tag_starts` records for
///   every tag of the item (with one of its types), so a pair never stored visits no
///   segment.
/// - Several items may select the same event: each item is ordered and limited on its own,
///   then they are combined with `UNION` (no duplicates), ordered and limited again.
/// - A query of one tagged item reads whole rows in each segment (the branch of `extra_tags`
///   joining the events by primary key): the walk's order is the result's, with nothing to
///   sort or join after it. Queries of several items select positions first, then join the
///   events by primary key and sort the rows the limit kept.
pub(crate) fn build(tables: &Tables, shape: &Shape) -> String {
    let dir = order(shape.direction);
    let items = item_params(shape);
    match (items.as_slice(), shape.output) {
        ([ItemParams::Tagged { types, tags }], Output::Rows) => {
            return tagged::select(tables, types, tags, true, shape.direction);
        }
        ([item], Output::Rows) => {
            if let Some(sql) = untagged(tables, item, EVENT_COLUMNS, dir) {
                return sql;
            }
        }
        _ => {}
    }
    let item_positions = |item: &ItemParams| match item {
        ItemParams::Tagged { types, tags } => {
            tagged::select(tables, types, tags, false, shape.direction)
        }
        _ => untagged(tables, item, "position", dir).unwrap_or_default(),
    };
    let positions = match items.as_slice() {
        [item] => item_positions(item),
        _ => format!(
            "SELECT position FROM ({}) u ORDER BY position {dir} LIMIT $3",
            union(items.iter().map(item_positions), " UNION ")
        ),
    };
    match shape.output {
        Output::Positions => positions,
        Output::Rows => format!(
            "SELECT {} FROM ({positions}) p JOIN {} e ON e.position = p.position \
             ORDER BY e.position {dir}",
            qualified("e", EVENT_COLUMNS),
            tables.events
        ),
    }
}

/// The SQL order of `direction`.
fn order(direction: Direction) -> &'static str {
    match direction {
        Direction::Forward => "ASC",
        Direction::Backward => "DESC",
    }
}

/// The parameter numbers of each item of `shape`: its values follow `$1` to `$3`, in the
/// order of [`Params::of`].
fn item_params(shape: &Shape) -> Vec<ItemParams> {
    let mut next = 4;
    shape
        .items
        .iter()
        .map(|item| match *item {
            ItemShape::Any => ItemParams::Any,
            ItemShape::TypeArms(n) => {
                next += n;
                ItemParams::TypeArms((next - n..next).collect())
            }
            ItemShape::Types => {
                next += 1;
                ItemParams::Types(next - 1)
            }
            ItemShape::Tagged { types, tags } => {
                let t = (next..next + types).collect();
                next += types;
                let g = (next..next + tags).collect();
                next += tags;
                ItemParams::Tagged { types: t, tags: g }
            }
        })
        .collect()
}

/// The statement selecting `cols` of the events an untagged item selects, ordered (`dir`) and
/// limited; `None` for a tagged item.
fn untagged(tables: &Tables, item: &ItemParams, cols: &str, dir: &str) -> Option<String> {
    let events = &tables.events;
    let range = |of_type: &str| {
        format!(
            "SELECT {cols} FROM {events} WHERE {of_type}position > $1 AND position <= $2 \
             ORDER BY position {dir} LIMIT $3"
        )
    };
    let of_type = |t: usize| range(&format!("type_id = {} AND ", type_id(tables, t)));
    match item {
        ItemParams::Any => Some(range("")),
        ItemParams::Types(t) => Some(range(&format!(
            "type_id = ANY(ARRAY(SELECT id FROM {} WHERE name = ANY(${t}))) AND ",
            tables.types
        ))),
        ItemParams::TypeArms(types) => match types.as_slice() {
            [t] => Some(of_type(*t)),
            more => Some(format!(
                "SELECT {cols} FROM ({}) a ORDER BY position {dir} LIMIT $3",
                union(more.iter().map(|t| of_type(*t)), " UNION ALL ")
            )),
        },
        ItemParams::Tagged { .. } => None,
    }
}

/// `parts`, each in parentheses, joined by `op` (` UNION `, ` UNION ALL `).
fn union(parts: impl Iterator<Item = String>, op: &str) -> String {
    parts.map(|p| format!("({p})")).collect::<Vec<_>>().join(op)
}

/// `cols` (comma-separated) each prefixed with `alias.`.
fn qualified(alias: &str, cols: &str) -> String {
    cols.split(", ")
        .map(|c| format!("{alias}.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The id of the type named by parameter `$param`, looked up in the statement's own snapshot
/// (NULL when no event of that name is stored, which matches no row).
fn type_id(tables: &Tables, param: usize) -> String {
    format!("(SELECT id FROM {} WHERE name = ${param})", tables.types)
}

/// The SQL of a query shape, and how to run it.
#[derive(Clone)]
pub(crate) struct Compiled {
    pub sql: Arc<str>,
    /// Planned at each execution (unnamed statement) rather than prepared once.
    pub per_execution: bool,
}

impl Compiled {
    /// The statement of `shape`.
    pub fn of(tables: &Tables, shape: &Shape) -> Self {
        Compiled {
            sql: build(tables, shape).into(),
            per_execution: shape.is_value_sensitive(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use krescent_core::event::{Tag, Tags};
    use krescent_core::query::QueryItem;

    #[test]
    fn array_literals_escape_quotes_and_backslashes() {
        let tags = Tags::parse(["a:x\"y", "b:c\\d", "c:{,}"]).unwrap();
        let mut s = String::new();
        array_literal(tags.iter().map(Tag::as_str), &mut s);
        assert_eq!(s, r#"{"a:x\"y","b:c\\d","c:{,}"}"#);
        let mut s = String::new();
        array_literal(std::iter::empty(), &mut s);
        assert_eq!(s, "{}");
    }

    #[test]
    fn shapes_and_params() {
        let tag = |t: &str| Tag::parse(t).unwrap();
        let q = EventQuery::item(QueryItem::types(["a", "b"]).and_tag(tag("k:1")))
            .or(QueryItem::tagged([tag("x:1"), tag("y:2")]))
            .backward()
            .after(5)
            .limit(3)
            .unwrap();
        let p = Params::of(&q);
        assert_eq!((p.after, p.until, p.limit), (5, i64::MAX, 3));
        assert_eq!(
            p.texts(),
            [
                "5",
                &i64::MAX.to_string(),
                "3",
                "a",
                "b",
                "k:1",
                "x:1",
                "y:2"
            ]
        );
        let sql = build(&Tables::new("p_"), &Shape::of(&q, Output::Rows));
        for needle in [
            "$4",
            "$5",
            "$6",
            "$7",
            "$8",
            "UNION ALL",
            " UNION (",
            "DESC",
        ] {
            assert!(sql.contains(needle), "{needle} in {sql}");
        }
        assert!(!sql.contains("$9"));
        // Values never appear in the text.
        assert!(!sql.contains("k:1"));
        // A few types: one index range per type, merged; one generic plan.
        let q = EventQuery::item(QueryItem::types(["a", "b"])).or(QueryItem::any());
        let p = Params::of(&q);
        assert_eq!(p.texts()[3..], ["a".to_owned(), "b".to_owned()]);
        let shape = Shape::of(&q, Output::Positions);
        assert!(!shape.is_value_sensitive());
        let sql = build(&Tables::new("p_"), &shape);
        for needle in [
            "type_id = (SELECT id FROM p_types WHERE name = $4) AND",
            "type_id = (SELECT id FROM p_types WHERE name = $5) AND",
            "UNION ALL",
        ] {
            assert!(sql.contains(needle), "{needle} in {sql}");
        }
        assert!(!sql.contains("ANY"), "{sql}");
        let one = EventQuery::item(QueryItem::types(["a"]));
        let sql = build(&Tables::new("p_"), &Shape::of(&one, Output::Rows));
        assert!(
            sql.contains("type_id = (SELECT id FROM p_types WHERE name = $4) AND")
                && !sql.contains("UNION"),
            "{sql}"
        );
        // Many types: one array, planned per execution.
        let names = [
            "t0", "t1", "t2", "t3", "t4", "t5", "t6", "t7", "t8", "t9", "t10", "t11", "t12", "t13",
            "t14", "t15", "t16",
        ];
        assert!(names.len() > TYPE_ARMS);
        let q = EventQuery::item(QueryItem::types(names));
        let p = Params::of(&q);
        assert_eq!(p.values.len(), 1);
        let shape = Shape::of(&q, Output::Positions);
        assert!(shape.is_value_sensitive());
        assert!(
            build(&Tables::new("p_"), &shape)
                .contains("type_id = ANY(ARRAY(SELECT id FROM p_types WHERE name = ANY($4)))")
        );
    }
}

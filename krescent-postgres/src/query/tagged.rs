//! The SQL of a tagged query item: a walk over the segments of the two tag indexes, in the
//! query's direction, with one probe of each index per segment.

use std::fmt::Write as _;

use super::{order, qualified, type_id, union};
use crate::record::EVENT_COLUMNS;
use crate::schema::{SEGMENT_BITS, Tables};
use krescent_core::query::Direction;

/// The statement selecting the positions of the events a tagged item (its parameter numbers
/// `types` and `tags`) selects, or (`rows`, for a query of a single tagged item) their whole
/// rows, read in each segment so that no join and sort of the result follows.
pub(super) fn select(
    tables: &Tables,
    types: &[usize],
    tags: &[usize],
    rows: bool,
    direction: Direction,
) -> String {
    let dir = order(direction);
    let cols = if rows { EVENT_COLUMNS } else { "position" };
    let branches = branches(tables, types, tags, dir, rows);
    let in_segment = match branches.as_slice() {
        [one] => one.clone(),
        _ => format!(
            "SELECT {cols} FROM ({}) b ORDER BY position {dir} LIMIT $3",
            union(branches.iter().cloned(), " UNION ALL ")
        ),
    };
    // The segments that may hold a position in ($1, $2], in the query's direction: from
    // the first one holding every tag of the item (with one of its types; none at all
    // when a tag was never stored with them) up to the head's (no later segment holds a
    // committed event). A position's segment only grows with it, so visiting the
    // segments in order and the positions of each in order visits the positions in
    // order: the nested loop emits them ordered by `s.n`, the ordinality the planner
    // knows the function scan is sorted by, without a sort, and the limit stops the walk
    // as soon as enough are found.
    let first = first_segment(tables, types, tags);
    let last = format!(
        "least($2::bigint, (SELECT position FROM {head})) >> {SEGMENT_BITS}",
        head = tables.head
    );
    let series = match direction {
        Direction::Forward => format!("{first}, {last}, 1"),
        Direction::Backward => format!("{last}, {first}, -1"),
    };
    // The filter on `s.seg` holds for every segment of the series (it repeats the bounds
    // of the query's range). It is there for the
    // planner, which otherwise counts 1,000 rows for a series with parameters (and a
    // tenth of them under a `LIMIT` parameter): a generic plan costed that high is never
    // chosen over the custom plans, and planning every execution would cost more than
    // the query. Two bounds on an unknown value count as 0.5% of the rows.
    format!(
        "SELECT {} FROM generate_series({series}) WITH ORDINALITY AS s(seg, n) \
             CROSS JOIN LATERAL ({in_segment}) w \
             WHERE s.seg >= $1::bigint >> {SEGMENT_BITS} AND s.seg <= $2::bigint >> {SEGMENT_BITS} \
             ORDER BY s.n LIMIT $3",
        qualified("w", cols)
    )
}

/// The first segment to visit for a tagged item: the first one holding every tag of the item
/// (with one of its types), as `tag_starts` records them; past every segment when a tag was
/// never stored with them.
fn first_segment(tables: &Tables, types: &[usize], tags: &[usize]) -> String {
    let mut first = format!("greatest($1::bigint >> {SEGMENT_BITS}");
    for g in tags {
        let of_type = match types {
            [] => String::new(),
            [t] => format!(" AND type = ${t}"),
            more => format!(
                " AND type IN ({})",
                more.iter()
                    .map(|t| format!("${t}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        // `greatest` skips NULLs: an absent pair moves the start past every segment. With
        // one type the key `(tag, type)` selects at most one row: no aggregate needed.
        let seg = if types.len() == 1 { "seg" } else { "min(seg)" };
        let _ = write!(
            first,
            ", coalesce((SELECT {seg} FROM {} WHERE tag = ${g}{of_type}), {})",
            tables.starts,
            i64::MAX
        );
    }
    first.push(')');
    first
}

/// The disjoint, ordered and limited branches of a tagged item within the segment `s.seg`:
/// for each type (or for any type), one in the index of `events.tag` and one in
/// `extra_tags`, each selecting `position` or (`rows`) every column of [`EVENT_COLUMNS`], the
/// branch of `extra_tags` then joining the events by primary key.
///
/// An event's `events.tag` is its smallest tag and `extra_tags` holds the others; the item's
/// tags are sorted too, so its first tag is its smallest. An event carrying all of them
/// therefore has either that first tag in `events.tag` or all of them in `extra_tags`: each
/// branch drives from the first tag in its own table, and checks every further tag in
/// `extra_tags` (an `EXISTS` probe of its key).
fn branches(
    tables: &Tables,
    types: &[usize],
    tags: &[usize],
    dir: &str,
    rows: bool,
) -> Vec<String> {
    let (events, tag_table) = (&tables.events, &tables.extra_tags);
    let (from_events, from_tags) = if rows {
        let cols = qualified("e", EVENT_COLUMNS);
        (
            format!("SELECT {cols} FROM {events} e"),
            format!("SELECT {cols} FROM {tag_table} t JOIN {events} e ON e.position = t.position"),
        )
    } else {
        (
            format!("SELECT e.position FROM {events} e"),
            format!("SELECT t.position FROM {tag_table} t"),
        )
    };
    let (first_tag, more_tags) = match tags.split_first() {
        Some(split) => split,
        None => return Vec::new(),
    };
    let more = |t: &str| {
        let mut more = String::new();
        for g in more_tags {
            let _ = write!(
                more,
                " AND EXISTS (SELECT 1 FROM {tag_table} x WHERE x.seg = s.seg \
                 AND x.tag = ${g} AND x.type = {t}.type AND x.position = {t}.position)"
            );
        }
        more
    };
    let (more_e, more_t) = (more("e"), more("t"));
    let types: Vec<Option<usize>> = if types.is_empty() {
        vec![None]
    } else {
        types.iter().copied().map(Some).collect()
    };
    let mut branches = Vec::with_capacity(2 * types.len());
    for t in types {
        // `events` holds the type's id (looked up in the statement's own snapshot), the
        // tags table its name.
        let (e_type, t_type) = t.map_or_else(Default::default, |t| {
            (
                format!(" AND e.type_id = {}", type_id(tables, t)),
                format!(" AND t.type = ${t}"),
            )
        });
        branches.push(format!(
            "{from_events} WHERE (e.position >> {SEGMENT_BITS}) = s.seg \
             AND e.tag = ${first_tag}{e_type} AND e.position > $1 AND e.position <= $2\
             {more_e} ORDER BY e.position {dir} LIMIT $3"
        ));
        branches.push(format!(
            "{from_tags} WHERE t.seg = s.seg \
             AND t.tag = ${first_tag}{t_type} AND t.position > $1 AND t.position <= $2\
             {more_t} ORDER BY t.position {dir} LIMIT $3"
        ));
    }
    branches
}

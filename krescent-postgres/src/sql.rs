//! The SQL of the PostgreSQL store: table names, the schema, and the translation of
//! [`EventQuery`] shapes into parameterized statements.
//!
//! The validated table prefix is the only text ever formatted into SQL; every value (positions,
//! limits, type names, tags, payloads) is a bind parameter.

use std::fmt::Write as _;

use tokio_postgres::types::{ToSql, Type};

use krescent_core::query::{Direction, EventQuery};

/// The columns every event read returns, in this order.
pub(super) const EVENT_COLUMNS: &str = "position, id, type, tags, recorded_at, payload";

/// The name of column `index` of [`EVENT_COLUMNS`] (`?` past the last).
pub(super) fn event_column(index: usize) -> &'static str {
    EVENT_COLUMNS.split(", ").nth(index).unwrap_or("?")
}

/// The schema version this code writes and reads. Until 1.0 a change of the schema edits
/// version 1 in place: there are no migrations.
pub(super) const SCHEMA_VERSION: i64 = 1;

/// The tag index is split into segments of `2^SEGMENT_BITS` positions (`seg = position >>
/// SEGMENT_BITS`), its key starting with the segment: an append writes to the pages of the
/// newest segment only, which stay in memory, rather than to a page per event spread over the
/// whole index.
pub(super) const SEGMENT_BITS: u32 = 15;

/// The longest accepted table prefix, in bytes (PostgreSQL identifiers hold 63 bytes; the
/// longest derived name is the prefix plus `extra_tags_seg_check`, 61 bytes).
pub(super) const MAX_PREFIX_LEN: usize = 41;
pub(super) fn is_valid_prefix(prefix: &str) -> bool {
    let bytes = prefix.as_bytes();
    match bytes.first() {
        Some(b) if b.is_ascii_lowercase() || *b == b'_' => {}
        _ => return false,
    }
    bytes.len() <= MAX_PREFIX_LEN
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_')
}

/// The names and fixed statements of one store, derived from its (validated) prefix.
#[derive(Debug)]
pub(super) struct Tables {
    pub prefix: String,
    pub events: String,
    /// The tags of each event after its first (smallest) one, which `events.tag` holds.
    pub extra_tags: String,
    /// The first segment of each (tag, type) pair ([`Tables::insert_starts`]).
    pub starts: String,
    /// The id of each stored type name, which the indexes of `events` hold in place of the
    /// name.
    pub types: String,
    pub head: String,
    pub meta: String,
    /// Checkpoints of read models ([`CheckpointSql`]).
    pub checkpoints: String,
    /// Checkpoint deltas of read models ([`CheckpointSql`]).
    pub checkpoint_deltas: String,
    /// Bookmarks of projectors ([`BookmarkSql`]).
    pub bookmarks: String,
    /// The LISTEN/NOTIFY channel.
    pub channel: String,
    pub select_head: String,
    pub lock_head: String,
    pub insert_events: String,
    /// `$1` type names: gives the names not stored yet their ids (the next ones).
    pub insert_types: String,
    pub insert_tags: String,
    /// `$1` tags, `$2` types, `$3` positions relative to the new head: records the segment
    /// of each pair not recorded yet (the first one it appears in, as positions only grow).
    pub insert_starts: String,
    /// `$1` the channel: notifies the new head, read from the locked counter row.
    pub notify: String,
}

impl Tables {
    /// Names for a prefix that [`is_valid_prefix`] accepted.
    pub fn new(prefix: &str) -> Self {
        let events = format!("{prefix}events");
        let extra_tags = format!("{prefix}extra_tags");
        let starts = format!("{prefix}tag_starts");
        let head = format!("{prefix}head");
        let types = format!("{prefix}types");
        Tables {
            prefix: prefix.to_owned(),
            select_head: format!("SELECT position FROM {head}"),
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
            meta: format!("{prefix}meta"),
            checkpoints: format!("{prefix}checkpoints"),
            checkpoint_deltas: format!("{prefix}checkpoint_deltas"),
            bookmarks: format!("{prefix}bookmarks"),
            channel: format!("{prefix}events"),
            events,
            extra_tags,
            starts,
            types,
            head,
        }
    }

    /// The statement creating the meta table (run under the schema lock before reading the
    /// version).
    pub fn create_meta(&self) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {} (name text PRIMARY KEY, value bigint NOT NULL)",
            self.meta
        )
    }

    /// The statement reading the schema version.
    pub fn select_version(&self) -> String {
        format!(
            "SELECT value FROM {} WHERE name = 'schema_version'",
            self.meta
        )
    }

    /// The idempotent statements creating schema version [`SCHEMA_VERSION`].
    pub fn create_schema(&self) -> String {
        let Tables {
            prefix,
            events,
            head,
            meta,
            checkpoints,
            checkpoint_deltas,
            bookmarks,
            ..
        } = self;
        let create_starts = self.create_starts();
        let create_tags = self.create_tags();
        let create_tag_index = self.create_tag_index();
        let create_types = self.create_types();
        format!(
            "CREATE TABLE IF NOT EXISTS {events} (
                 position bigint PRIMARY KEY,
                 id uuid NOT NULL,
                 type text COLLATE \"C\" NOT NULL,
                 tags bytea NOT NULL,
                 recorded_at timestamptz NOT NULL,
                 payload bytea NOT NULL,
                 tag text COLLATE \"C\",
                 type_id integer NOT NULL
             );
             {create_types}
             CREATE INDEX IF NOT EXISTS {prefix}events_type_idx ON {events} (type_id, position);
             {create_tag_index}
             {create_tags}
             {create_starts}
             CREATE TABLE IF NOT EXISTS {head} (
                 id boolean PRIMARY KEY DEFAULT true CHECK (id),
                 position bigint NOT NULL,
                 recorded_at timestamptz
             );
             INSERT INTO {head} (id, position) VALUES (true, 0) ON CONFLICT DO NOTHING;
             CREATE TABLE IF NOT EXISTS {checkpoints} (
                 model text COLLATE \"C\" PRIMARY KEY,
                 catalog_revision bigint NOT NULL
                     CHECK (catalog_revision BETWEEN 0 AND 4294967295),
                 model_version bigint NOT NULL CHECK (model_version BETWEEN 0 AND 4294967295),
                 shape bigint NOT NULL,
                 position bigint NOT NULL,
                 taken_at timestamptz NOT NULL,
                 checkpoint bytea NOT NULL
             );
             CREATE TABLE IF NOT EXISTS {checkpoint_deltas} (
                 model text COLLATE \"C\" NOT NULL,
                 position bigint NOT NULL,
                 base_position bigint NOT NULL,
                 taken_at timestamptz NOT NULL,
                 delta bytea NOT NULL,
                 PRIMARY KEY (model, position)
             );
             CREATE TABLE IF NOT EXISTS {bookmarks} (
                 reader text COLLATE \"C\" PRIMARY KEY,
                 position bigint NOT NULL
             );
             INSERT INTO {meta} (name, value) VALUES ('schema_version', {SCHEMA_VERSION})
                 ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value;"
        )
    }

    /// The statement creating `<prefix>extra_tags`: one row for each tag of an event after
    /// its first, keyed by segment first (see [`SEGMENT_BITS`]).
    fn create_tags(&self) -> String {
        let tags = &self.extra_tags;
        format!(
            "CREATE TABLE IF NOT EXISTS {tags} (
                 tag text COLLATE \"C\" NOT NULL,
                 type text COLLATE \"C\" NOT NULL,
                 position bigint NOT NULL,
                 seg bigint NOT NULL,
                 CONSTRAINT {tags}_seg_check CHECK (seg = position >> {SEGMENT_BITS}),
                 PRIMARY KEY (seg, tag, type, position)
             );"
        )
    }

    /// The statement creating the index of each event's first tag, `events.tag`: keyed like
    /// `<prefix>extra_tags`, by segment (the expression `position >> SEGMENT_BITS`), tag,
    /// type and position, and holding only the events that have a tag.
    fn create_tag_index(&self) -> String {
        format!(
            "CREATE INDEX IF NOT EXISTS {prefix}events_tag_idx ON {events} \
             ((position >> {SEGMENT_BITS}), tag, type_id, position) WHERE tag IS NOT NULL;",
            prefix = self.prefix,
            events = self.events
        )
    }

    /// The statement creating `<prefix>types`: the id of each stored type name.
    fn create_types(&self) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {} (
                 id integer PRIMARY KEY,
                 name text COLLATE \"C\" NOT NULL UNIQUE
             );",
            self.types
        )
    }

    /// The id of the type named by parameter `$param`, looked up in the statement's own
    /// snapshot (NULL when no event of that name is stored, which matches no row).
    fn type_id(&self, param: usize) -> String {
        format!("(SELECT id FROM {} WHERE name = ${param})", self.types)
    }

    /// The statement creating `<prefix>tag_starts`: for each (tag, type) pair stored, the
    /// first segment holding it. A tag query skips the segments before it, and finds a pair
    /// that was never stored without visiting any segment.
    fn create_starts(&self) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {} (
                 tag text COLLATE \"C\" NOT NULL,
                 type text COLLATE \"C\" NOT NULL,
                 seg bigint NOT NULL,
                 PRIMARY KEY (tag, type) INCLUDE (seg)
             );",
            self.starts
        )
    }

    /// The statement dropping every table of the store.
    pub fn drop_schema(&self) -> String {
        format!(
            "DROP TABLE IF EXISTS {}, {}, {}, {}, {}, {}, {}, {}, {}",
            self.events,
            self.types,
            self.extra_tags,
            self.starts,
            self.head,
            self.meta,
            self.checkpoints,
            self.checkpoint_deltas,
            self.bookmarks
        )
    }
}

/// A `u64` (a position, a shape) in a `bigint` column: the same 64 bits, so values from 2^63
/// up read as negative numbers in SQL. Every value round-trips.
pub(super) fn u64_to_sql(value: u64) -> i64 {
    i64::from_ne_bytes(value.to_ne_bytes())
}

/// The `u64` stored by [`u64_to_sql`].
pub(super) fn u64_from_sql(value: i64) -> u64 {
    u64::from_ne_bytes(value.to_ne_bytes())
}

/// The statements of the checkpoint storage on `<prefix>checkpoints` and
/// `<prefix>checkpoint_deltas`.
#[derive(Debug)]
pub(super) struct CheckpointSql {
    /// The table name.
    pub table: String,
    /// `$1` model → the encoded checkpoint (kind 0), then its deltas (kind 1) by position.
    pub load: String,
    /// `$1` model, `$2` catalog revision, `$3` model version, `$4` shape, `$5` position,
    /// `$6` time, `$7` the encoded checkpoint: insert or replace.
    pub upsert: String,
    /// `$1` model → one row if it was deleted.
    pub delete: String,
    /// `$1` model: drops the model's deltas.
    pub delete_deltas: String,
    /// `$1` model → the checkpoint's position, locking its row.
    pub lock_position: String,
    /// `$1` model → the position of the last delta (NULL: none).
    pub last_delta: String,
    /// `$1` model, `$2` position, `$3` base position, `$4` time, `$5` the encoded delta.
    pub insert_delta: String,
    /// Every checkpoint's metadata, in byte order of the model names, with the position and
    /// time of its last delta if it has one.
    pub list: String,
}

impl CheckpointSql {
    /// The statements for a prefix that [`is_valid_prefix`] accepted.
    pub fn new(prefix: &str) -> Self {
        let table = format!("{prefix}checkpoints");
        let deltas = format!("{prefix}checkpoint_deltas");
        CheckpointSql {
            load: format!(
                "SELECT 0 AS kind, position, checkpoint FROM {table} WHERE model = $1 \
                 UNION ALL SELECT 1, position, delta FROM {deltas} WHERE model = $1 \
                 ORDER BY 1, 2"
            ),
            upsert: format!(
                "INSERT INTO {table} \
                 (model, catalog_revision, model_version, shape, position, taken_at, checkpoint) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (model) DO UPDATE SET \
                 catalog_revision = EXCLUDED.catalog_revision, \
                 model_version = EXCLUDED.model_version, shape = EXCLUDED.shape, \
                 position = EXCLUDED.position, taken_at = EXCLUDED.taken_at, \
                 checkpoint = EXCLUDED.checkpoint"
            ),
            delete: format!("DELETE FROM {table} WHERE model = $1 RETURNING true"),
            delete_deltas: format!("DELETE FROM {deltas} WHERE model = $1"),
            lock_position: format!("SELECT position FROM {table} WHERE model = $1 FOR UPDATE"),
            last_delta: format!("SELECT max(position) FROM {deltas} WHERE model = $1"),
            insert_delta: format!(
                "INSERT INTO {deltas} (model, position, base_position, taken_at, delta) \
                 VALUES ($1, $2, $3, $4, $5)"
            ),
            list: format!(
                "SELECT c.model, c.catalog_revision, c.model_version, c.shape, \
                 coalesce(d.position, c.position), coalesce(d.taken_at, c.taken_at) \
                 FROM {table} AS c LEFT JOIN LATERAL (\
                 SELECT position, taken_at FROM {deltas} WHERE model = c.model \
                 ORDER BY position DESC LIMIT 1) AS d ON true \
                 ORDER BY c.model"
            ),
            table,
        }
    }
}

/// The statements of the bookmark storage on `<prefix>bookmarks`.
#[derive(Debug)]
pub(super) struct BookmarkSql {
    /// The table name.
    pub table: String,
    /// `$1` reader → its position.
    pub load: String,
    /// `$1` reader, `$2` position: insert or replace.
    pub upsert: String,
    /// `$1` reader.
    pub delete: String,
}

impl BookmarkSql {
    /// The statements for a prefix that [`is_valid_prefix`] accepted.
    pub fn new(prefix: &str) -> Self {
        let table = format!("{prefix}bookmarks");
        BookmarkSql {
            load: format!("SELECT position FROM {table} WHERE reader = $1"),
            upsert: format!(
                "INSERT INTO {table} (reader, position) VALUES ($1, $2) \
                 ON CONFLICT (reader) DO UPDATE SET position = EXCLUDED.position"
            ),
            delete: format!("DELETE FROM {table} WHERE reader = $1"),
            table,
        }
    }
}

/// What a statement returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Output {
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
pub(super) struct Shape {
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
/// as one `type_id = ANY(..)` filter planned per execution. Planned per execution, two types were
/// read from a table without statistics (1M events appended before autovacuum analysed them)
/// as a bitmap scan of every later event of those types and a sort, about 60 to 100 ms for
/// each page of 1,000 instead of 0.6 ms: minutes for a catch-up. The ranges are one prepared
/// statement whose generic plan needs no statistics; PostgreSQL plans its first five
/// executions on each connection with the values, which from missing statistics may still
/// be that slow plan, and then keeps the generic one.
pub(super) const TYPE_ARMS: usize = 16;

/// One bind parameter after the first three.
pub(super) enum Value<'q> {
    Text(&'q str),
    TextArray(Vec<&'q str>),
}

/// The bind parameters of a query, in the order the SQL of its shape numbers them: `$1` after
/// (exclusive), `$2` until (inclusive), `$3` limit, then for each item its types (one value
/// per type; one array for an untagged item of more than [`TYPE_ARMS`] types) and its tags.
pub(super) struct Params<'q> {
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
pub(super) fn array_literal<'a>(texts: impl Iterator<Item = &'a str>, out: &mut String) {
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

/// Appends the encoding of an event's tags in the `tags` column to `out`: for each tag in
/// order, its length in bytes (4 bytes, big-endian), then its UTF-8 text; nothing for no
/// tags. Sent and returned as `bytea`, it costs the server a copy, where a `text[]` costs an
/// element-by-element conversion in each direction.
pub(super) fn encode_tags<'a>(texts: impl Iterator<Item = &'a str>, out: &mut Vec<u8>) {
    for text in texts {
        // A tag of 4 GiB or more cannot be sent anyway: a protocol message holds at most
        // 1 GiB, so the append fails.
        let len = u32::try_from(text.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(text.as_bytes());
    }
}

/// The texts of an encoding written by [`encode_tags`], in order.
pub(super) fn decode_tags(mut raw: &[u8]) -> Result<Vec<&str>, String> {
    let mut texts = Vec::new();
    while let Some((len, rest)) = raw.split_first_chunk::<4>() {
        let len = usize::try_from(u32::from_be_bytes(*len)).unwrap_or(usize::MAX);
        if rest.len() < len {
            return Err(format!(
                "the tags are cut short: a tag of {len} bytes, {} left",
                rest.len()
            ));
        }
        let (text, rest) = rest.split_at(len);
        texts.push(std::str::from_utf8(text).map_err(|e| format!("a tag is not UTF-8: {e}"))?);
        raw = rest;
    }
    if !raw.is_empty() {
        return Err(format!("the tags end in {} stray bytes", raw.len()));
    }
    Ok(texts)
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

/// `$1` how many types at most → the last position (NULL: no event) and the distinct types
/// (sorted bytewise), read in one snapshot: a name is in `<prefix>types` once an append that
/// stored an event of it committed.
pub(super) fn stored_types(tables: &Tables) -> String {
    let (events, types) = (&tables.events, &tables.types);
    format!(
        "SELECT (SELECT max(position) FROM {events}), \
         ARRAY(SELECT name FROM {types} ORDER BY name LIMIT $1)"
    )
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
///   `EXISTS` probe of `extra_tags` (see [`tagged_branches`]). The branches are disjoint;
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
pub(super) fn build(tables: &Tables, shape: &Shape) -> String {
    let dir = match shape.direction {
        Direction::Forward => "ASC",
        Direction::Backward => "DESC",
    };
    let mut next = 4;
    let items: Vec<ItemParams> = shape
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
        .collect();

    let events = &tables.events;
    let type_ids = &tables.types;
    let untagged = |item: &ItemParams, cols: &str| -> Option<String> {
        let range = |of_type: &str| {
            format!(
                "SELECT {cols} FROM {events} WHERE {of_type}position > $1 AND position <= $2 \
                 ORDER BY position {dir} LIMIT $3"
            )
        };
        match item {
            ItemParams::Any => Some(range("")),
            ItemParams::Types(t) => Some(range(&format!(
                "type_id = ANY(ARRAY(SELECT id FROM {type_ids} WHERE name = ANY(${t}))) AND "
            ))),
            ItemParams::TypeArms(types) => match types.as_slice() {
                [t] => Some(range(&format!("type_id = {} AND ", tables.type_id(*t)))),
                more => Some(format!(
                    "SELECT {cols} FROM ({}) a ORDER BY position {dir} LIMIT $3",
                    more.iter()
                        .map(|t| format!(
                            "({})",
                            range(&format!("type_id = {} AND ", tables.type_id(*t)))
                        ))
                        .collect::<Vec<_>>()
                        .join(" UNION ALL ")
                )),
            },
            ItemParams::Tagged { .. } => None,
        }
    };
    if let ([item], Output::Rows) = (items.as_slice(), shape.output) {
        if let Some(sql) = untagged(item, EVENT_COLUMNS) {
            return sql;
        }
    }
    // The positions an item selects, or (`rows`, for a query of a single tagged item) its
    // whole rows, read in each segment so that no join and sort of the result follows.
    let item_select = |item: &ItemParams, rows: bool| -> String {
        let cols = if rows { EVENT_COLUMNS } else { "position" };
        if let Some(sql) = untagged(item, cols) {
            return sql;
        }
        let ItemParams::Tagged { types, tags } = item else {
            return String::new();
        };
        let branches = tagged_branches(tables, types, tags, dir, rows);
        let in_segment = match branches.as_slice() {
            [one] => one.clone(),
            _ => format!(
                "SELECT {cols} FROM ({}) b ORDER BY position {dir} LIMIT $3",
                branches
                    .iter()
                    .map(|b| format!("({b})"))
                    .collect::<Vec<_>>()
                    .join(" UNION ALL ")
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
        let mut first = format!("greatest($1::bigint >> {SEGMENT_BITS}");
        for g in tags {
            let of_type = match types.as_slice() {
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
        let last = format!(
            "least($2::bigint, (SELECT position FROM {head})) >> {SEGMENT_BITS}",
            head = tables.head
        );
        let series = match shape.direction {
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
    };
    if let ([item @ ItemParams::Tagged { .. }], Output::Rows) = (items.as_slice(), shape.output) {
        return item_select(item, true);
    }
    let item_positions = |item: &ItemParams| item_select(item, false);
    let positions = match items.as_slice() {
        [item] => item_positions(item),
        _ => format!(
            "SELECT position FROM ({}) u ORDER BY position {dir} LIMIT $3",
            items
                .iter()
                .map(|i| format!("({})", item_positions(i)))
                .collect::<Vec<_>>()
                .join(" UNION ")
        ),
    };
    match shape.output {
        Output::Positions => positions,
        Output::Rows => format!(
            "SELECT {} FROM ({positions}) p JOIN {events} e ON e.position = p.position \
             ORDER BY e.position {dir}",
            qualified("e", EVENT_COLUMNS)
        ),
    }
}

/// `cols` (comma-separated) each prefixed with `alias.`.
fn qualified(alias: &str, cols: &str) -> String {
    cols.split(", ")
        .map(|c| format!("{alias}.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
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
fn tagged_branches(
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
                format!(" AND e.type_id = {}", tables.type_id(t)),
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

#[cfg(test)]
mod tests {
    use super::*;
    use krescent_core::event::Tag;
    use krescent_core::query::QueryItem;

    #[test]
    fn storage_tables_belong_to_the_schema() {
        let tables = Tables::new("p_");
        let schema = tables.create_schema();
        for table in [
            "p_checkpoints",
            "p_checkpoint_deltas",
            "p_bookmarks",
            "p_tag_starts",
        ] {
            assert!(
                schema.contains(&format!("CREATE TABLE IF NOT EXISTS {table} (")),
                "{table}"
            );
            assert!(tables.drop_schema().contains(table), "{table}");
        }
        assert!(
            CheckpointSql::new("p_")
                .upsert
                .starts_with("INSERT INTO p_checkpoints ")
        );
        assert!(BookmarkSql::new("p_").load.contains("FROM p_bookmarks "));
        for value in [0, 1, i64::MAX as u64, i64::MAX as u64 + 1, u64::MAX] {
            assert_eq!(u64_from_sql(u64_to_sql(value)), value);
        }
    }

    #[test]
    fn prefixes() {
        for ok in ["a", "_", "krescent_", "t_0123abc_", &"a".repeat(41)] {
            assert!(is_valid_prefix(ok), "{ok}");
        }
        for bad in [
            "",
            "0a",
            "A",
            "a-b",
            "a b",
            "a;drop",
            "a.b",
            "é",
            "\"a",
            &"a".repeat(42),
        ] {
            assert!(!is_valid_prefix(bad), "{bad}");
        }
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

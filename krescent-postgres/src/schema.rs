//! The schema: the names of a prefix's tables ([`Tables`]), the statements creating and
//! dropping them, and the check run on connect: it only reads an existing schema, and
//! creates a missing one under an advisory lock (`init_schema`).
//!
//! The schema has one version, [`SCHEMA_VERSION`]. Until 1.0 a change of the schema edits
//! version 1 in place: there are no migrations. Tables of any other version are refused with
//! [`PostgresError::UnsupportedSchemaVersion`].
//!
//! Every table name is the validated prefix followed by a fixed name: the prefix is the only
//! text ever formatted into SQL; every value (positions, limits, type names, tags, payloads)
//! is a bind parameter.

use deadpool_postgres::{GenericClient, Pool};
use tokio_postgres::error::SqlState;

use crate::PostgresEventStore;
use crate::error::{self, PostgresError};
use crate::record::to_position;
use krescent_core::store::StoreError;

/// The schema version this code writes and reads.
pub(crate) const SCHEMA_VERSION: i64 = 1;

/// The tag indexes are split into segments of `2^SEGMENT_BITS` positions (`seg = position >>
/// SEGMENT_BITS`), their keys starting with the segment: an append writes to the pages of the
/// newest segment only, which stay in memory, rather than to a page per event spread over the
/// whole index.
pub(crate) const SEGMENT_BITS: u32 = 15;

/// The longest accepted table prefix, in bytes (PostgreSQL identifiers hold 63 bytes; the
/// longest derived name is the prefix plus `extra_tags_seg_check`, 61 bytes).
pub(crate) const MAX_PREFIX_LEN: usize = 41;

/// Whether `prefix` is a valid table prefix: `^[a-z_][a-z0-9_]{0,40}$`.
pub(crate) fn is_valid_prefix(prefix: &str) -> bool {
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

/// The table names of one store, derived from its (validated) prefix.
#[derive(Debug)]
pub(crate) struct Tables {
    pub prefix: String,
    pub events: String,
    /// The tags of each event after its first (smallest) one, which `events.tag` holds.
    pub extra_tags: String,
    /// The first segment of each (tag, type) pair.
    pub starts: String,
    /// The id of each stored type name, which the indexes of `events` hold in place of the
    /// name.
    pub types: String,
    /// The counter row: the position and time of the last append.
    pub head: String,
    pub meta: String,
    /// Checkpoints of read models (see `checkpoint.rs`).
    pub checkpoints: String,
    /// Checkpoint deltas of read models.
    pub checkpoint_deltas: String,
    /// Bookmarks of projectors (see `bookmark.rs`).
    pub bookmarks: String,
    /// The LISTEN/NOTIFY channel.
    pub channel: String,
    /// Reads the head.
    pub select_head: String,
}

impl Tables {
    /// Names for a prefix that [`is_valid_prefix`] accepted.
    pub fn new(prefix: &str) -> Self {
        let head = format!("{prefix}head");
        Tables {
            prefix: prefix.to_owned(),
            events: format!("{prefix}events"),
            extra_tags: format!("{prefix}extra_tags"),
            starts: format!("{prefix}tag_starts"),
            types: format!("{prefix}types"),
            meta: format!("{prefix}meta"),
            checkpoints: format!("{prefix}checkpoints"),
            checkpoint_deltas: format!("{prefix}checkpoint_deltas"),
            bookmarks: format!("{prefix}bookmarks"),
            channel: format!("{prefix}events"),
            select_head: format!("SELECT position FROM {head}"),
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
pub(crate) fn u64_to_sql(value: u64) -> i64 {
    i64::from_ne_bytes(value.to_ne_bytes())
}

/// The `u64` stored by [`u64_to_sql`].
pub(crate) fn u64_from_sql(value: i64) -> u64 {
    u64::from_ne_bytes(value.to_ne_bytes())
}

/// Checks the schema, creating it first if it is missing; returns the head.
///
/// An existing schema is only read: its version (a plain `SELECT` of `<prefix>meta`) and the
/// head. No DDL runs then, so a connect takes no lock that an append holds (a `CREATE … IF
/// NOT EXISTS` on the events table would wait for appends' table locks, and the head row's
/// insert for the row an append holds: the two orders of a deadlock). A missing schema is
/// created under the prefix's advisory lock, after reading the version again there, in case
/// another connect created it meanwhile.
pub(crate) async fn init_schema(pool: &Pool, tables: &Tables) -> Result<u64, StoreError> {
    let mut client = pool.get().await.map_err(error::pool)?;
    if let Some(version) = existing_version(&client, tables).await? {
        check_version(tables, version)?;
        return read_head(&client, tables).await;
    }
    let txn = client.transaction().await.map_err(error::db)?;
    txn.execute(
        "SELECT pg_advisory_xact_lock($1)",
        &[&lock_key(&tables.prefix)],
    )
    .await
    .map_err(error::db)?;
    txn.batch_execute(&tables.create_meta())
        .await
        .map_err(error::db)?;
    match existing_version(&txn, tables).await? {
        Some(version) => check_version(tables, version)?,
        None => {
            tracing::info!(prefix = %tables.prefix, version = SCHEMA_VERSION, "creating the schema");
            txn.batch_execute(&tables.create_schema())
                .await
                .map_err(error::db)?;
        }
    }
    let head = read_head(&txn, tables).await?;
    txn.commit().await.map_err(error::db)?;
    Ok(head)
}

/// The stored schema version, or `None` when the meta table or its version row is missing.
async fn existing_version(
    client: &impl GenericClient,
    tables: &Tables,
) -> Result<Option<i64>, StoreError> {
    match client.query_opt(&tables.select_version(), &[]).await {
        Ok(row) => row.map(|r| r.try_get(0)).transpose().map_err(error::db),
        Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => Ok(None),
        Err(e) => Err(error::db(e)),
    }
}

/// Refuses a version other than [`SCHEMA_VERSION`].
fn check_version(tables: &Tables, found: i64) -> Result<(), StoreError> {
    if found == SCHEMA_VERSION {
        return Ok(());
    }
    Err(PostgresError::UnsupportedSchemaVersion {
        prefix: tables.prefix.clone(),
        found,
        supported: SCHEMA_VERSION,
    }
    .into())
}

/// Reads the head (a plain `SELECT`, which waits for no lock).
async fn read_head(client: &impl GenericClient, tables: &Tables) -> Result<u64, StoreError> {
    let head: i64 = client
        .query_one(&tables.select_head, &[])
        .await
        .map_err(error::db)?
        .try_get(0)
        .map_err(error::db)?;
    to_position(head)
}

/// The advisory lock key of a prefix's schema (FNV-1a of a namespaced name).
fn lock_key(prefix: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in "krescent.schema:".bytes().chain(prefix.bytes()) {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}

impl PostgresEventStore {
    /// Drops every table of this store. For tests and tools; the store is unusable after.
    #[doc(hidden)]
    pub async fn drop_tables(&self) -> Result<(), StoreError> {
        let client = self.inner.pool.get().await.map_err(error::pool)?;
        client
            .batch_execute(&self.inner.tables.drop_schema())
            .await
            .map_err(error::db)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bookmark::BookmarkSql;
    use crate::checkpoint::CheckpointSql;

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
}

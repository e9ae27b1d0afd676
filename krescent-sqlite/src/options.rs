//! The settings a store opens its connections with: the read-connection pool, the busy
//! timeout, the statement and decoding caches, and the pragmas of the write and read
//! connections, and how often a subscribed store checks the file for appends of other
//! processes.

use std::time::Duration;

use rusqlite::Connection;

/// How many idle read connections a store keeps open.
pub(crate) const MAX_IDLE_READERS: usize = 4;

/// How long a connection waits for a lock held by another connection.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Prepared statements kept per connection (query shapes differ by item count and tags).
pub(crate) const STATEMENT_CACHE: usize = 128;

/// Distinct tag lists remembered per connection for decoding without allocating.
pub(crate) const TAG_CACHE: usize = 65_536;

/// The page size of new files, in bytes.
const PAGE_SIZE: u32 = 4096;

/// Memory-mapped I/O for reads of file stores, in bytes.
const MMAP_SIZE: u64 = 1 << 30;

/// WAL pages after which a commit copies the WAL back into the database file.
const WAL_AUTOCHECKPOINT_PAGES: i64 = 16_384;

/// The page cache of each connection, in KiB (negative `cache_size`).
const CACHE_KIB: i64 = 32 * 1024;

/// Which connection of a file store is being configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// The write connection: WAL mode, the page size of a new file.
    Writer,
    /// A read connection: `query_only`.
    Reader,
}

/// Sets the busy timeout and the pragmas of a file store's connection; `path` names the
/// file in a warning if SQLite refuses WAL mode.
pub(crate) fn configure(conn: &Connection, role: Role, path: &str) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    match role {
        Role::Writer => {
            // Only takes effect while the file is still empty.
            conn.pragma_update(None, "page_size", PAGE_SIZE)?;
            // The first statement that reads the file: a non-database fails here.
            let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
            if !mode.eq_ignore_ascii_case("wal") {
                tracing::warn!(path, mode, "SQLite refused WAL mode");
            }
            conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)?;
            // The statement journals of multi-row inserts stay in memory.
            conn.pragma_update(None, "temp_store", "MEMORY")?;
            conn.pragma_update(None, "mmap_size", MMAP_SIZE)?;
        }
        Role::Reader => {
            conn.pragma_update(None, "query_only", true)?;
            conn.pragma_update(None, "mmap_size", MMAP_SIZE)?;
        }
    }
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
    Ok(())
}

/// While a subscription of a file store is live and no append of this process wakes it, the
/// store checks the file for appends of other processes (`PRAGMA data_version`) after this
/// delay, doubled after each check that finds nothing, up to [`FOREIGN_POLL_MAX`], and reset
/// by any change. An append by another process is seen within about this cap.
pub(crate) const FOREIGN_POLL_MIN: Duration = Duration::from_millis(10);

/// The longest delay between two checks for appends of other processes (see
/// [`FOREIGN_POLL_MIN`]).
pub(crate) const FOREIGN_POLL_MAX: Duration = Duration::from_millis(250);

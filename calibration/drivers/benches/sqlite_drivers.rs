//! rusqlite 0.37 against sqlx 0.9 (sqlite, tokio) on krescent's SQLite workload.
//!
//! Workload (see `src/lib.rs`): a stock ledger; each event has a ≈120-byte JSON payload, a
//! 16-byte id, one of three types, two tags (`sku:sku-NNNN`, `warehouse:w-N`) stored as a JSON
//! array, and a microsecond timestamp. Tables as krescent's SQLite store: `events (position
//! INTEGER PRIMARY KEY, id BLOB, type TEXT, tags TEXT, ts INTEGER, payload BLOB)` and the tag
//! index `event_tags (tag, type, position)` WITHOUT ROWID. One file per purpose in
//! `$TMPDIR/calib_drivers_sqlite/` (removed at the end), `journal_mode=WAL`,
//! `synchronous=NORMAL`, both drivers
//! linking the same bundled SQLite (libsqlite3-sys 0.35).
//!
//! Figures, each measured for both drivers back to back in one run:
//! - `sqlite_append`: 1000 events (+2000 tag rows) per transaction, multi-row INSERTs of 64
//!   events / 128 tag rows per statement (as krescent's writer). rusqlite: `prepare_cached` +
//!   `raw_bind_parameter`; sqlx: `QueryBuilder::push_values` per statement (its documented
//!   bulk-insert idiom), and sqlx with the statement text built once and reused (cached
//!   prepared statement). Each driver appends to its own fresh file. Events/s.
//! - `sqlite_scan`: all 200k events, pages of 1000 by `position > ?` and one single streamed
//!   query; every column read (borrowed where the driver allows), the payload decoded with
//!   serde_json and folded into a `HashMap<String, i64>`. Events/s. Both drivers read the same
//!   file and must fold to the same ledger.
//! - `sqlite_point`: `SELECT position FROM event_tags WHERE tag=? AND type=? ORDER BY position
//!   DESC LIMIT 1` on random existing keys, criterion's mean per query, then an interleaved
//!   pass (rusqlite, sqlx, rusqlite, …) that prints the median latency in µs.
//!
//! After each criterion group an interleaved pass (driver A, driver B, A, B, … one sample
//! each) prints `PAIRED` lines: median and mean per sample and the ratio of medians. Those are
//! the figures to compare on a loaded machine, since a load change between two criterion
//! benches shifts one driver's figure and not the other's.
//!
//! sqlx runs on a current-thread tokio runtime (its SQLite connection works on a worker
//! thread of its own, as it always does).
//!
//! Run: `CARGO_TARGET_DIR=/work/target-h-drivers cargo bench --bench sqlite_drivers`
//! (from `calibration/drivers`).

use std::collections::HashMap;
use std::error::Error;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::TryStreamExt;
use krescent_calibration_drivers::{
    BATCH, Batch, EVENT_ROWS_PER_INSERT, Ledger, MultiRowSql, PAGE, SCAN_EVENTS,
    TAG_ROWS_PER_INSERT, Workload, print_paired,
};
use rusqlite::Connection;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteRow, SqliteSynchronous,
};
use sqlx::{
    AssertSqlSafe, ConnectOptions as _, Connection as _, QueryBuilder, Row, SqlSafeStr, SqlStr,
    Sqlite,
};
use tokio::runtime::Runtime;

type Res<T> = Result<T, Box<dyn Error>>;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    position INTEGER PRIMARY KEY,
    id BLOB NOT NULL,
    type TEXT NOT NULL,
    tags TEXT NOT NULL,
    ts INTEGER NOT NULL,
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS event_tags (
    tag TEXT NOT NULL,
    type TEXT NOT NULL,
    position INTEGER NOT NULL,
    PRIMARY KEY (tag, type, position)
) WITHOUT ROWID;
";
const EVENT_INSERT: &str = "INSERT INTO events (position, id, type, tags, ts, payload) VALUES ";
const EVENT_ROW: &str = "(?, ?, ?, ?, ?, ?)";
const TAG_INSERT: &str = "INSERT INTO event_tags (tag, type, position) VALUES ";
const TAG_ROW: &str = "(?, ?, ?)";
const SCAN_PAGE: &str = "SELECT position, id, type, tags, ts, payload FROM events \
                         WHERE position > ? ORDER BY position LIMIT ?";
const SCAN_ALL: &str = "SELECT position, id, type, tags, ts, payload FROM events ORDER BY position";
const POINT: &str = "SELECT position FROM event_tags WHERE tag = ? AND type = ? \
                     ORDER BY position DESC LIMIT 1";

fn fresh(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join("calib_drivers_sqlite");
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    path
}

fn open_rusqlite(path: &PathBuf) -> Res<Connection> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
}

fn open_sqlx(rt: &Runtime, path: &PathBuf) -> Res<SqliteConnection> {
    rt.block_on(async {
        let mut conn = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .connect()
            .await?;
        sqlx::raw_sql(SCHEMA).execute(&mut conn).await?;
        Ok(conn)
    })
}

// ---------------------------------------------------------------------------------------------
// Appends

struct RusqliteWriter {
    events: MultiRowSql,
    tags: MultiRowSql,
}

impl RusqliteWriter {
    fn new() -> Self {
        Self {
            events: MultiRowSql::new(EVENT_INSERT, EVENT_ROW),
            tags: MultiRowSql::new(TAG_INSERT, TAG_ROW),
        }
    }

    fn append(&mut self, conn: &mut Connection, batch: &Batch) -> Res<()> {
        let tx = conn.transaction()?;
        for chunk in batch.events.chunks(EVENT_ROWS_PER_INSERT) {
            let mut stmt = tx.prepare_cached(self.events.get(chunk.len()))?;
            for (k, e) in chunk.iter().enumerate() {
                let at = 6 * k;
                stmt.raw_bind_parameter(at + 1, e.position)?;
                stmt.raw_bind_parameter(at + 2, &e.id[..])?;
                stmt.raw_bind_parameter(at + 3, e.event_type)?;
                stmt.raw_bind_parameter(at + 4, e.tags.as_str())?;
                stmt.raw_bind_parameter(at + 5, e.ts)?;
                stmt.raw_bind_parameter(at + 6, e.payload.as_slice())?;
            }
            stmt.raw_execute()?;
        }
        for chunk in batch.tags.chunks(TAG_ROWS_PER_INSERT) {
            let mut stmt = tx.prepare_cached(self.tags.get(chunk.len()))?;
            for (k, t) in chunk.iter().enumerate() {
                let at = 3 * k;
                stmt.raw_bind_parameter(at + 1, t.tag.as_str())?;
                stmt.raw_bind_parameter(at + 2, t.event_type)?;
                stmt.raw_bind_parameter(at + 3, t.position)?;
            }
            stmt.raw_execute()?;
        }
        tx.commit()?;
        Ok(())
    }
}

/// sqlx's documented bulk insert: a `QueryBuilder` with `push_values` per statement.
async fn sqlx_append_builder(conn: &mut SqliteConnection, batch: &Batch) -> Res<()> {
    let mut tx = conn.begin().await?;
    for chunk in batch.events.chunks(EVENT_ROWS_PER_INSERT) {
        let mut qb = QueryBuilder::<Sqlite>::new(
            "INSERT INTO events (position, id, type, tags, ts, payload) ",
        );
        qb.push_values(chunk, |mut row, e| {
            row.push_bind(e.position)
                .push_bind(&e.id[..])
                .push_bind(e.event_type)
                .push_bind(e.tags.as_str())
                .push_bind(e.ts)
                .push_bind(e.payload.as_slice());
        });
        qb.build().execute(&mut *tx).await?;
    }
    for chunk in batch.tags.chunks(TAG_ROWS_PER_INSERT) {
        let mut qb = QueryBuilder::<Sqlite>::new("INSERT INTO event_tags (tag, type, position) ");
        qb.push_values(chunk, |mut row, t| {
            row.push_bind(t.tag.as_str())
                .push_bind(t.event_type)
                .push_bind(t.position);
        });
        qb.build().execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// sqlx with each statement's text built once and handed out again (so only the binds are
/// new work; the prepared statement comes from sqlx's per-connection cache either way).
struct SqlxWriter {
    sql: HashMap<(bool, usize), SqlStr>,
    events: MultiRowSql,
    tags: MultiRowSql,
}

impl SqlxWriter {
    fn new() -> Self {
        Self {
            sql: HashMap::new(),
            events: MultiRowSql::new(EVENT_INSERT, EVENT_ROW),
            tags: MultiRowSql::new(TAG_INSERT, TAG_ROW),
        }
    }

    fn sql(&mut self, tags: bool, rows: usize) -> SqlStr {
        let Self {
            sql,
            events,
            tags: t,
        } = self;
        sql.entry((tags, rows))
            .or_insert_with(|| {
                let text = if tags { t.get(rows) } else { events.get(rows) };
                AssertSqlSafe(text.to_owned()).into_sql_str()
            })
            .clone()
    }

    async fn append(&mut self, conn: &mut SqliteConnection, batch: &Batch) -> Res<()> {
        let mut tx = conn.begin().await?;
        for chunk in batch.events.chunks(EVENT_ROWS_PER_INSERT) {
            let mut q = sqlx::query(self.sql(false, chunk.len()));
            for e in chunk {
                q = q
                    .bind(e.position)
                    .bind(&e.id[..])
                    .bind(e.event_type)
                    .bind(e.tags.as_str())
                    .bind(e.ts)
                    .bind(e.payload.as_slice());
            }
            q.execute(&mut *tx).await?;
        }
        for chunk in batch.tags.chunks(TAG_ROWS_PER_INSERT) {
            let mut q = sqlx::query(self.sql(true, chunk.len()));
            for t in chunk {
                q = q.bind(t.tag.as_str()).bind(t.event_type).bind(t.position);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

fn bench_append(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut g = c.benchmark_group("sqlite_append");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(2));
    g.measurement_time(Duration::from_secs(8));

    {
        let mut conn = open_rusqlite(&fresh("append_rusqlite.db")).expect("open");
        let mut writer = RusqliteWriter::new();
        let mut work = Workload::new(11);
        let mut next = 1i64;
        g.bench_function("rusqlite", |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let batch = work.batch(next, BATCH);
                    next += BATCH as i64;
                    let t = Instant::now();
                    writer.append(&mut conn, &batch).expect("append");
                    spent += t.elapsed();
                }
                spent
            })
        });
    }
    {
        let mut conn = open_sqlx(&rt, &fresh("append_sqlx_builder.db")).expect("open");
        let mut work = Workload::new(11);
        let mut next = 1i64;
        g.bench_function("sqlx_query_builder", |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut spent = Duration::ZERO;
                    for _ in 0..iters {
                        let batch = work.batch(next, BATCH);
                        next += BATCH as i64;
                        let t = Instant::now();
                        sqlx_append_builder(&mut conn, &batch)
                            .await
                            .expect("append");
                        spent += t.elapsed();
                    }
                    spent
                })
            })
        });
    }
    {
        let mut conn = open_sqlx(&rt, &fresh("append_sqlx_cached.db")).expect("open");
        let mut writer = SqlxWriter::new();
        let mut work = Workload::new(11);
        let mut next = 1i64;
        g.bench_function("sqlx_cached_sql", |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut spent = Duration::ZERO;
                    for _ in 0..iters {
                        let batch = work.batch(next, BATCH);
                        next += BATCH as i64;
                        let t = Instant::now();
                        writer.append(&mut conn, &batch).await.expect("append");
                        spent += t.elapsed();
                    }
                    spent
                })
            })
        });
    }
    g.finish();

    // Interleaved: one batch per driver in turn, each into a fresh file of its own, so that
    // load changes on the shared machine hit all of them alike.
    let mut rconn = open_rusqlite(&fresh("paired_rusqlite.db")).expect("open");
    let mut bconn = open_sqlx(&rt, &fresh("paired_sqlx_builder.db")).expect("open");
    let mut cconn = open_sqlx(&rt, &fresh("paired_sqlx_cached.db")).expect("open");
    let mut rwriter = RusqliteWriter::new();
    let mut cwriter = SqlxWriter::new();
    let mut work = Workload::new(13);
    let (mut r, mut b, mut cached) = (Vec::new(), Vec::new(), Vec::new());
    rt.block_on(async {
        for round in 0..PAIRED_APPEND_ROUNDS {
            let batch = work.batch(1 + round * BATCH as i64, BATCH);
            let t = Instant::now();
            rwriter.append(&mut rconn, &batch).expect("append");
            r.push(t.elapsed());
            let t = Instant::now();
            sqlx_append_builder(&mut bconn, &batch)
                .await
                .expect("append");
            b.push(t.elapsed());
            let t = Instant::now();
            cwriter.append(&mut cconn, &batch).await.expect("append");
            cached.push(t.elapsed());
        }
    });
    print_paired(
        "sqlite_append",
        BATCH as f64,
        &mut [
            ("rusqlite", r),
            ("sqlx_query_builder", b),
            ("sqlx_cached_sql", cached),
        ],
    );
}

/// Batches per driver in the interleaved append pass.
const PAIRED_APPEND_ROUNDS: i64 = 150;
/// Whole-store scans per driver and kind in the interleaved scan pass.
const PAIRED_SCAN_ROUNDS: usize = 7;

// ---------------------------------------------------------------------------------------------
// Scans

fn fold_rusqlite_row(ledger: &mut Ledger, row: &rusqlite::Row<'_>) -> Res<i64> {
    let position: i64 = row.get(0)?;
    let id = row.get_ref(1)?.as_blob()?;
    let event_type = row.get_ref(2)?.as_str()?;
    let tags = row.get_ref(3)?.as_str()?;
    let ts: i64 = row.get(4)?;
    let payload = row.get_ref(5)?.as_blob()?;
    ledger.apply(position, id, event_type, tags, ts, payload);
    Ok(position)
}

fn scan_paged_rusqlite(conn: &Connection) -> Res<Ledger> {
    let mut ledger = Ledger::default();
    let mut stmt = conn.prepare_cached(SCAN_PAGE)?;
    let mut after = 0i64;
    loop {
        let mut rows = stmt.query((after, PAGE))?;
        let mut n = 0;
        while let Some(row) = rows.next()? {
            after = fold_rusqlite_row(&mut ledger, row)?;
            n += 1;
        }
        if n < PAGE {
            return Ok(ledger);
        }
    }
}

fn scan_all_rusqlite(conn: &Connection) -> Res<Ledger> {
    let mut ledger = Ledger::default();
    let mut stmt = conn.prepare_cached(SCAN_ALL)?;
    let mut rows = stmt.query(())?;
    while let Some(row) = rows.next()? {
        fold_rusqlite_row(&mut ledger, row)?;
    }
    Ok(ledger)
}

fn fold_sqlx_row(ledger: &mut Ledger, row: &SqliteRow) -> Res<i64> {
    let position: i64 = row.try_get(0)?;
    let id: &[u8] = row.try_get(1)?;
    let event_type: &str = row.try_get(2)?;
    let tags: &str = row.try_get(3)?;
    let ts: i64 = row.try_get(4)?;
    let payload: &[u8] = row.try_get(5)?;
    ledger.apply(position, id, event_type, tags, ts, payload);
    Ok(position)
}

async fn scan_paged_sqlx(conn: &mut SqliteConnection) -> Res<Ledger> {
    let mut ledger = Ledger::default();
    let mut after = 0i64;
    loop {
        let mut rows = sqlx::query(SCAN_PAGE)
            .bind(after)
            .bind(PAGE)
            .fetch(&mut *conn);
        let mut n = 0;
        while let Some(row) = rows.try_next().await? {
            after = fold_sqlx_row(&mut ledger, &row)?;
            n += 1;
        }
        if n < PAGE {
            return Ok(ledger);
        }
    }
}

async fn scan_all_sqlx(conn: &mut SqliteConnection) -> Res<Ledger> {
    let mut ledger = Ledger::default();
    let mut rows = sqlx::query(SCAN_ALL).fetch(&mut *conn);
    while let Some(row) = rows.try_next().await? {
        fold_sqlx_row(&mut ledger, &row)?;
    }
    Ok(ledger)
}

/// The store that the scans and point queries read, written once with rusqlite.
fn seeded() -> PathBuf {
    let path = fresh("scan.db");
    let mut conn = open_rusqlite(&path).expect("open");
    let mut writer = RusqliteWriter::new();
    let mut work = Workload::new(7);
    let mut next = 1i64;
    while next <= SCAN_EVENTS {
        let batch = work.batch(next, BATCH);
        writer.append(&mut conn, &batch).expect("seed");
        next += BATCH as i64;
    }
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); ANALYZE;")
        .expect("checkpoint");
    path
}

fn bench_scan(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let path = seeded();
    let rconn = open_rusqlite(&path).expect("open");
    let mut sconn = open_sqlx(&rt, &path).expect("open");

    // Same rows, same fold, whichever driver reads them.
    let expected = scan_paged_rusqlite(&rconn).expect("scan");
    assert_eq!(expected.events, SCAN_EVENTS as u64);
    assert!(scan_all_rusqlite(&rconn).expect("scan") == expected);
    assert!(rt.block_on(scan_paged_sqlx(&mut sconn)).expect("scan") == expected);
    assert!(rt.block_on(scan_all_sqlx(&mut sconn)).expect("scan") == expected);

    let mut g = c.benchmark_group("sqlite_scan");
    g.throughput(Throughput::Elements(SCAN_EVENTS as u64));
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(6));
    g.bench_function("paged/rusqlite", |b| {
        b.iter(|| scan_paged_rusqlite(&rconn).expect("scan"))
    });
    g.bench_function("paged/sqlx", |b| {
        b.iter(|| rt.block_on(scan_paged_sqlx(&mut sconn)).expect("scan"))
    });
    g.bench_function("streamed/rusqlite", |b| {
        b.iter(|| scan_all_rusqlite(&rconn).expect("scan"))
    });
    g.bench_function("streamed/sqlx", |b| {
        b.iter(|| rt.block_on(scan_all_sqlx(&mut sconn)).expect("scan"))
    });
    g.finish();

    let (mut pr, mut ps, mut sr, mut ss) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..PAIRED_SCAN_ROUNDS {
        let t = Instant::now();
        std::hint::black_box(scan_paged_rusqlite(&rconn).expect("scan"));
        pr.push(t.elapsed());
        let t = Instant::now();
        std::hint::black_box(rt.block_on(scan_paged_sqlx(&mut sconn)).expect("scan"));
        ps.push(t.elapsed());
        let t = Instant::now();
        std::hint::black_box(scan_all_rusqlite(&rconn).expect("scan"));
        sr.push(t.elapsed());
        let t = Instant::now();
        std::hint::black_box(rt.block_on(scan_all_sqlx(&mut sconn)).expect("scan"));
        ss.push(t.elapsed());
    }
    let events = SCAN_EVENTS as f64;
    print_paired(
        "sqlite_scan_paged",
        events,
        &mut [("rusqlite", pr), ("sqlx", ps)],
    );
    print_paired(
        "sqlite_scan_streamed",
        events,
        &mut [("rusqlite", sr), ("sqlx", ss)],
    );

    // -----------------------------------------------------------------------------------------
    // Point queries on the same store.

    fn point_rusqlite(conn: &Connection, tag: &str, ty: &str) -> Res<i64> {
        Ok(conn
            .prepare_cached(POINT)?
            .query_row((tag, ty), |r| r.get(0))?)
    }
    async fn point_sqlx(conn: &mut SqliteConnection, tag: &str, ty: &str) -> Res<i64> {
        Ok(sqlx::query_scalar::<_, i64>(POINT)
            .bind(tag)
            .bind(ty)
            .fetch_one(&mut *conn)
            .await?)
    }

    let keys: Vec<(String, &'static str)> = {
        let mut w = Workload::new(99);
        (0..4096).map(|_| w.lookup_key()).collect()
    };
    for (tag, ty) in keys.iter().take(64) {
        let a = point_rusqlite(&rconn, tag, ty).expect("point");
        let b = rt.block_on(point_sqlx(&mut sconn, tag, ty)).expect("point");
        assert_eq!(a, b);
    }

    let mut g = c.benchmark_group("sqlite_point");
    g.throughput(Throughput::Elements(1));
    g.sample_size(20);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(3));
    let mut k = 0usize;
    g.bench_function("rusqlite", |b| {
        b.iter(|| {
            k = (k + 1) % keys.len();
            point_rusqlite(&rconn, &keys[k].0, keys[k].1).expect("point")
        })
    });
    g.bench_function("sqlx", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let t = Instant::now();
                for _ in 0..iters {
                    k = (k + 1) % keys.len();
                    point_sqlx(&mut sconn, &keys[k].0, keys[k].1)
                        .await
                        .expect("point");
                }
                t.elapsed()
            })
        })
    });
    g.finish();

    // Interleaved, one query at a time, for the medians.
    let rounds = 20_000;
    let mut r = Vec::with_capacity(rounds);
    let mut s = Vec::with_capacity(rounds);
    rt.block_on(async {
        for i in 0..rounds {
            let (tag, ty) = &keys[i % keys.len()];
            let t = Instant::now();
            std::hint::black_box(point_rusqlite(&rconn, tag, ty).expect("point"));
            r.push(t.elapsed());
            let t = Instant::now();
            std::hint::black_box(point_sqlx(&mut sconn, tag, ty).await.expect("point"));
            s.push(t.elapsed());
        }
    });
    print_paired("sqlite_point", 1.0, &mut [("rusqlite", r), ("sqlx", s)]);

    // Leave nothing behind (some hundreds of MB of files).
    drop(rconn);
    rt.block_on(sconn.close()).expect("close");
    let _ = std::fs::remove_dir_all(std::env::temp_dir().join("calib_drivers_sqlite"));
}

criterion_group!(benches, bench_append, bench_scan);
criterion_main!(benches);

//! tokio-postgres 0.7 against sqlx 0.9 (postgres, tokio) on krescent's PostgreSQL workload.
//!
//! Workload (see `src/lib.rs`): a stock ledger; each event has a ≈120-byte JSON payload, a
//! uuid id, one of three types, two tags (`sku:sku-NNNN`, `warehouse:w-N`) stored as a JSON
//! array in a text column, and a microsecond timestamp (bigint). Tables `events (position
//! bigint PRIMARY KEY, id uuid, type text, tags text, ts bigint, payload bytea)` and
//! `event_tags (tag, type, position)` with that primary key, in schemas of their own
//! (`calib_drivers_scan`, `calib_drivers_tp`, `calib_drivers_sqlx`, chosen per connection by
//! `search_path` so both drivers send the same SQL text), all dropped at the end.
//!
//! Server: `CALIB_PG` (default `host=127.0.0.1 port=5432 user=postgres dbname=test`), TCP on
//! loopback, no TLS. One plain connection per driver (no pool on either side); every
//! statement prepared once (tokio-postgres `prepare`, sqlx's per-connection statement cache).
//!
//! Figures, each measured for both drivers back to back in one run:
//! - `pg_append`: 1000 events per transaction, one `INSERT … SELECT * FROM UNNEST($1::bigint[],
//!   …)` for the events and one for their 2000 tag rows. Events/s.
//! - `pg_scan`: all 200k events in pages of 1000 by `position > $1`, and one single query read
//!   as a stream; every column read (borrowed where the driver allows), the payload decoded
//!   with serde_json and folded into a `HashMap<String, i64>`. Events/s. Both drivers must
//!   fold to the same ledger.
//! - `pg_point`: `SELECT position FROM event_tags WHERE tag=$1 AND type=$2 ORDER BY position
//!   DESC LIMIT 1` on random existing keys; criterion's mean, then an interleaved pass that
//!   prints median µs.
//! - `pg_select1`: a prepared `SELECT 1` round trip; same two measurements.
//!
//! After each criterion group an interleaved pass (driver A, driver B, A, B, … one sample
//! each) prints `PAIRED` lines: median and mean per sample and the ratio of medians. Those are
//! the figures to compare on a loaded machine, since a load change between two criterion
//! benches shifts one driver's figure and not the other's.
//!
//! Both run on a current-thread tokio runtime (tokio-postgres' connection task spawned on it).
//!
//! Run: `CARGO_TARGET_DIR=/work/target-h-drivers cargo bench --bench postgres_drivers`
//! (from `calibration/drivers`).

use std::error::Error;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::{StreamExt, TryStreamExt};
use krescent_calibration_drivers::{
    BATCH, Batch, Ledger, PAGE, SCAN_EVENTS, Workload, print_paired,
};
use sqlx::postgres::{PgConnection, PgRow};
use sqlx::{Connection as _, Row};
use tokio::runtime::Runtime;
use tokio_postgres::{Client, NoTls, Statement};
use uuid::Uuid;

type Res<T> = Result<T, Box<dyn Error>>;

const SCHEMAS: [&str; 3] = [
    "calib_drivers_scan",
    "calib_drivers_tp",
    "calib_drivers_sqlx",
];
const TABLES: &str = "
CREATE TABLE IF NOT EXISTS events (
    position bigint PRIMARY KEY,
    id uuid NOT NULL,
    type text NOT NULL,
    tags text NOT NULL,
    ts bigint NOT NULL,
    payload bytea NOT NULL
);
CREATE TABLE IF NOT EXISTS event_tags (
    tag text NOT NULL,
    type text NOT NULL,
    position bigint NOT NULL,
    PRIMARY KEY (tag, type, position)
);
";
const EVENT_INSERT: &str = "INSERT INTO events (position, id, type, tags, ts, payload) \
    SELECT * FROM UNNEST($1::bigint[], $2::uuid[], $3::text[], $4::text[], $5::bigint[], \
    $6::bytea[])";
const TAG_INSERT: &str = "INSERT INTO event_tags (tag, type, position) \
    SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[])";
const SCAN_PAGE: &str = "SELECT position, id, type, tags, ts, payload FROM events \
    WHERE position > $1 ORDER BY position LIMIT $2";
const SCAN_ALL: &str = "SELECT position, id, type, tags, ts, payload FROM events ORDER BY position";
const POINT: &str = "SELECT position FROM event_tags WHERE tag = $1 AND type = $2 \
    ORDER BY position DESC LIMIT 1";
const SELECT1: &str = "SELECT 1";

fn conninfo() -> String {
    std::env::var("CALIB_PG")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=test".into())
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A tokio-postgres connection working in `schema`, made afresh when `fresh`.
async fn tp_connect(schema: &str, fresh: bool) -> Res<Client> {
    let (client, connection) = tokio_postgres::connect(&conninfo(), NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("tokio-postgres connection: {e}");
        }
    });
    if fresh {
        client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .await?;
    }
    client
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {schema}; SET search_path TO {schema}; {TABLES}"
        ))
        .await?;
    Ok(client)
}

async fn sqlx_connect(schema: &str) -> Res<PgConnection> {
    // The same parameters in the key=value form both crates accept as a URL's query.
    let url = format!(
        "postgres:///?{}",
        conninfo()
            .split_whitespace()
            .chain(["sslmode=disable"])
            .collect::<Vec<_>>()
            .join("&")
    );
    let mut conn = PgConnection::connect(&url).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE SCHEMA IF NOT EXISTS {schema}; SET search_path TO {schema}; {TABLES}"
    )))
    .execute(&mut conn)
    .await?;
    Ok(conn)
}

// ---------------------------------------------------------------------------------------------
// Appends

struct TpWriter {
    events: Statement,
    tags: Statement,
}

impl TpWriter {
    async fn new(client: &Client) -> Res<Self> {
        Ok(Self {
            events: client.prepare(EVENT_INSERT).await?,
            tags: client.prepare(TAG_INSERT).await?,
        })
    }

    async fn append(&self, client: &mut Client, batch: &Batch) -> Res<()> {
        let ev = &batch.events;
        let positions: Vec<i64> = ev.iter().map(|e| e.position).collect();
        let ids: Vec<Uuid> = ev.iter().map(|e| Uuid::from_bytes(e.id)).collect();
        let types: Vec<&str> = ev.iter().map(|e| e.event_type).collect();
        let tags: Vec<&str> = ev.iter().map(|e| e.tags.as_str()).collect();
        let ts: Vec<i64> = ev.iter().map(|e| e.ts).collect();
        let payloads: Vec<&[u8]> = ev.iter().map(|e| e.payload.as_slice()).collect();
        let tag_names: Vec<&str> = batch.tags.iter().map(|t| t.tag.as_str()).collect();
        let tag_types: Vec<&str> = batch.tags.iter().map(|t| t.event_type).collect();
        let tag_positions: Vec<i64> = batch.tags.iter().map(|t| t.position).collect();

        let tx = client.transaction().await?;
        tx.execute(
            &self.events,
            &[&positions, &ids, &types, &tags, &ts, &payloads],
        )
        .await?;
        tx.execute(&self.tags, &[&tag_names, &tag_types, &tag_positions])
            .await?;
        tx.commit().await?;
        Ok(())
    }
}

async fn sqlx_append(conn: &mut PgConnection, batch: &Batch) -> Res<()> {
    let ev = &batch.events;
    let positions: Vec<i64> = ev.iter().map(|e| e.position).collect();
    let ids: Vec<Uuid> = ev.iter().map(|e| Uuid::from_bytes(e.id)).collect();
    let types: Vec<&str> = ev.iter().map(|e| e.event_type).collect();
    let tags: Vec<&str> = ev.iter().map(|e| e.tags.as_str()).collect();
    let ts: Vec<i64> = ev.iter().map(|e| e.ts).collect();
    let payloads: Vec<&[u8]> = ev.iter().map(|e| e.payload.as_slice()).collect();
    let tag_names: Vec<&str> = batch.tags.iter().map(|t| t.tag.as_str()).collect();
    let tag_types: Vec<&str> = batch.tags.iter().map(|t| t.event_type).collect();
    let tag_positions: Vec<i64> = batch.tags.iter().map(|t| t.position).collect();

    let mut tx = conn.begin().await?;
    sqlx::query(EVENT_INSERT)
        .bind(&positions)
        .bind(&ids)
        .bind(&types)
        .bind(&tags)
        .bind(&ts)
        .bind(&payloads)
        .execute(&mut *tx)
        .await?;
    sqlx::query(TAG_INSERT)
        .bind(&tag_names)
        .bind(&tag_types)
        .bind(&tag_positions)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

fn bench_append(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("pg_append");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(2));
    g.measurement_time(Duration::from_secs(8));

    {
        let mut client = rt
            .block_on(tp_connect("calib_drivers_tp", true))
            .expect("connect");
        let writer = rt.block_on(TpWriter::new(&client)).expect("prepare");
        let mut work = Workload::new(11);
        let mut next = 1i64;
        g.bench_function("tokio_postgres", |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut spent = Duration::ZERO;
                    for _ in 0..iters {
                        let batch = work.batch(next, BATCH);
                        next += BATCH as i64;
                        let t = Instant::now();
                        writer.append(&mut client, &batch).await.expect("append");
                        spent += t.elapsed();
                    }
                    spent
                })
            })
        });
    }
    {
        // Start from an empty schema, like tokio-postgres did.
        rt.block_on(async {
            let c = tp_connect("calib_drivers_sqlx", true).await?;
            drop(c);
            Ok::<_, Box<dyn Error>>(())
        })
        .expect("fresh schema");
        let mut conn = rt
            .block_on(sqlx_connect("calib_drivers_sqlx"))
            .expect("connect");
        let mut work = Workload::new(11);
        let mut next = 1i64;
        g.bench_function("sqlx", |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut spent = Duration::ZERO;
                    for _ in 0..iters {
                        let batch = work.batch(next, BATCH);
                        next += BATCH as i64;
                        let t = Instant::now();
                        sqlx_append(&mut conn, &batch).await.expect("append");
                        spent += t.elapsed();
                    }
                    spent
                })
            })
        });
    }
    g.finish();

    // Interleaved: one batch per driver in turn, each into an empty schema of its own, so that
    // load changes on the shared machine hit both alike.
    let (mut tp, mut sx) = (Vec::new(), Vec::new());
    rt.block_on(async {
        let mut client = tp_connect("calib_drivers_tp", true).await?;
        drop(tp_connect("calib_drivers_sqlx", true).await?);
        let mut conn = sqlx_connect("calib_drivers_sqlx").await?;
        let writer = TpWriter::new(&client).await?;
        let mut work = Workload::new(13);
        for round in 0..PAIRED_APPEND_ROUNDS {
            let batch = work.batch(1 + round * BATCH as i64, BATCH);
            let t = Instant::now();
            writer.append(&mut client, &batch).await?;
            tp.push(t.elapsed());
            let t = Instant::now();
            sqlx_append(&mut conn, &batch).await?;
            sx.push(t.elapsed());
        }
        Ok::<_, Box<dyn Error>>(())
    })
    .expect("paired append");
    print_paired(
        "pg_append",
        BATCH as f64,
        &mut [("tokio_postgres", tp), ("sqlx", sx)],
    );
}

/// Batches per driver in the interleaved append pass.
const PAIRED_APPEND_ROUNDS: i64 = 200;
/// Whole-store scans per driver and kind in the interleaved scan pass.
const PAIRED_SCAN_ROUNDS: usize = 7;

// ---------------------------------------------------------------------------------------------
// Scans

fn fold_tp_row(ledger: &mut Ledger, row: &tokio_postgres::Row) -> Res<i64> {
    let position: i64 = row.try_get(0)?;
    let id: Uuid = row.try_get(1)?;
    let event_type: &str = row.try_get(2)?;
    let tags: &str = row.try_get(3)?;
    let ts: i64 = row.try_get(4)?;
    let payload: &[u8] = row.try_get(5)?;
    ledger.apply(position, id.as_bytes(), event_type, tags, ts, payload);
    Ok(position)
}

async fn scan_paged_tp(client: &Client, page: &Statement) -> Res<Ledger> {
    let mut ledger = Ledger::default();
    let mut after = 0i64;
    loop {
        let rows = client.query(page, &[&after, &PAGE]).await?;
        for row in &rows {
            after = fold_tp_row(&mut ledger, row)?;
        }
        if (rows.len() as i64) < PAGE {
            return Ok(ledger);
        }
    }
}

async fn scan_all_tp(client: &Client, all: &Statement) -> Res<Ledger> {
    let mut ledger = Ledger::default();
    let rows = client.query_raw(all, std::iter::empty::<i64>()).await?;
    let mut rows = std::pin::pin!(rows);
    while let Some(row) = rows.next().await {
        fold_tp_row(&mut ledger, &row?)?;
    }
    Ok(ledger)
}

fn fold_sqlx_row(ledger: &mut Ledger, row: &PgRow) -> Res<i64> {
    let position: i64 = row.try_get(0)?;
    let id: Uuid = row.try_get(1)?;
    let event_type: &str = row.try_get(2)?;
    let tags: &str = row.try_get(3)?;
    let ts: i64 = row.try_get(4)?;
    let payload: &[u8] = row.try_get(5)?;
    ledger.apply(position, id.as_bytes(), event_type, tags, ts, payload);
    Ok(position)
}

async fn scan_paged_sqlx(conn: &mut PgConnection) -> Res<Ledger> {
    let mut ledger = Ledger::default();
    let mut after = 0i64;
    loop {
        let rows = sqlx::query(SCAN_PAGE)
            .bind(after)
            .bind(PAGE)
            .fetch_all(&mut *conn)
            .await?;
        for row in &rows {
            after = fold_sqlx_row(&mut ledger, row)?;
        }
        if (rows.len() as i64) < PAGE {
            return Ok(ledger);
        }
    }
}

async fn scan_all_sqlx(conn: &mut PgConnection) -> Res<Ledger> {
    let mut ledger = Ledger::default();
    let mut rows = sqlx::query(SCAN_ALL).fetch(&mut *conn);
    while let Some(row) = rows.try_next().await? {
        fold_sqlx_row(&mut ledger, &row)?;
    }
    Ok(ledger)
}

async fn point_tp(client: &Client, stmt: &Statement, tag: &str, ty: &str) -> Res<i64> {
    Ok(client.query_one(stmt, &[&tag, &ty]).await?.try_get(0)?)
}

async fn point_sqlx(conn: &mut PgConnection, tag: &str, ty: &str) -> Res<i64> {
    Ok(sqlx::query_scalar::<_, i64>(POINT)
        .bind(tag)
        .bind(ty)
        .fetch_one(&mut *conn)
        .await?)
}

async fn select1_tp(client: &Client, stmt: &Statement) -> Res<i32> {
    Ok(client.query_one(stmt, &[]).await?.try_get(0)?)
}

async fn select1_sqlx(conn: &mut PgConnection) -> Res<i32> {
    Ok(sqlx::query_scalar::<_, i32>(SELECT1)
        .fetch_one(&mut *conn)
        .await?)
}

fn bench_reads(c: &mut Criterion) {
    let rt = runtime();
    let (client, mut conn) = rt
        .block_on(async {
            let mut seeder = tp_connect("calib_drivers_scan", true).await?;
            let writer = TpWriter::new(&seeder).await?;
            let mut work = Workload::new(7);
            let mut next = 1i64;
            while next <= SCAN_EVENTS {
                let batch = work.batch(next, BATCH);
                writer.append(&mut seeder, &batch).await?;
                next += BATCH as i64;
            }
            // One statement per call: VACUUM refuses the implicit transaction of a batch.
            seeder.batch_execute("VACUUM ANALYZE events").await?;
            seeder.batch_execute("VACUUM ANALYZE event_tags").await?;
            let conn = sqlx_connect("calib_drivers_scan").await?;
            Ok::<_, Box<dyn Error>>((seeder, conn))
        })
        .expect("seed");
    let (page, all, point, select1) = rt
        .block_on(async {
            Ok::<_, Box<dyn Error>>((
                client.prepare(SCAN_PAGE).await?,
                client.prepare(SCAN_ALL).await?,
                client.prepare(POINT).await?,
                client.prepare(SELECT1).await?,
            ))
        })
        .expect("prepare");

    // Same rows, same fold, whichever driver reads them.
    rt.block_on(async {
        let expected = scan_paged_tp(&client, &page).await?;
        assert_eq!(expected.events, SCAN_EVENTS as u64);
        assert!(scan_all_tp(&client, &all).await? == expected);
        assert!(scan_paged_sqlx(&mut conn).await? == expected);
        assert!(scan_all_sqlx(&mut conn).await? == expected);
        Ok::<_, Box<dyn Error>>(())
    })
    .expect("scans agree");

    let mut g = c.benchmark_group("pg_scan");
    g.throughput(Throughput::Elements(SCAN_EVENTS as u64));
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(8));
    g.bench_function("paged/tokio_postgres", |b| {
        b.iter(|| rt.block_on(scan_paged_tp(&client, &page)).expect("scan"))
    });
    g.bench_function("paged/sqlx", |b| {
        b.iter(|| rt.block_on(scan_paged_sqlx(&mut conn)).expect("scan"))
    });
    g.bench_function("streamed/tokio_postgres", |b| {
        b.iter(|| rt.block_on(scan_all_tp(&client, &all)).expect("scan"))
    });
    g.bench_function("streamed/sqlx", |b| {
        b.iter(|| rt.block_on(scan_all_sqlx(&mut conn)).expect("scan"))
    });
    g.finish();

    let (mut pt, mut ps, mut st, mut ss) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    rt.block_on(async {
        for _ in 0..PAIRED_SCAN_ROUNDS {
            let t = Instant::now();
            std::hint::black_box(scan_paged_tp(&client, &page).await?);
            pt.push(t.elapsed());
            let t = Instant::now();
            std::hint::black_box(scan_paged_sqlx(&mut conn).await?);
            ps.push(t.elapsed());
            let t = Instant::now();
            std::hint::black_box(scan_all_tp(&client, &all).await?);
            st.push(t.elapsed());
            let t = Instant::now();
            std::hint::black_box(scan_all_sqlx(&mut conn).await?);
            ss.push(t.elapsed());
        }
        Ok::<_, Box<dyn Error>>(())
    })
    .expect("paired scans");
    let events = SCAN_EVENTS as f64;
    print_paired(
        "pg_scan_paged",
        events,
        &mut [("tokio_postgres", pt), ("sqlx", ps)],
    );
    print_paired(
        "pg_scan_streamed",
        events,
        &mut [("tokio_postgres", st), ("sqlx", ss)],
    );

    let keys: Vec<(String, &'static str)> = {
        let mut w = Workload::new(99);
        (0..4096).map(|_| w.lookup_key()).collect()
    };
    rt.block_on(async {
        for (tag, ty) in keys.iter().take(64) {
            assert_eq!(
                point_tp(&client, &point, tag, ty).await?,
                point_sqlx(&mut conn, tag, ty).await?
            );
        }
        Ok::<_, Box<dyn Error>>(())
    })
    .expect("points agree");

    let mut g = c.benchmark_group("pg_point");
    g.throughput(Throughput::Elements(1));
    g.sample_size(20);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(3));
    let mut k = 0usize;
    g.bench_function("tokio_postgres", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let t = Instant::now();
                for _ in 0..iters {
                    k = (k + 1) % keys.len();
                    point_tp(&client, &point, &keys[k].0, keys[k].1)
                        .await
                        .expect("point");
                }
                t.elapsed()
            })
        })
    });
    g.bench_function("sqlx", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let t = Instant::now();
                for _ in 0..iters {
                    k = (k + 1) % keys.len();
                    point_sqlx(&mut conn, &keys[k].0, keys[k].1)
                        .await
                        .expect("point");
                }
                t.elapsed()
            })
        })
    });
    g.finish();

    let mut g = c.benchmark_group("pg_select1");
    g.throughput(Throughput::Elements(1));
    g.sample_size(20);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(3));
    g.bench_function("tokio_postgres", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let t = Instant::now();
                for _ in 0..iters {
                    select1_tp(&client, &select1).await.expect("select 1");
                }
                t.elapsed()
            })
        })
    });
    g.bench_function("sqlx", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let t = Instant::now();
                for _ in 0..iters {
                    select1_sqlx(&mut conn).await.expect("select 1");
                }
                t.elapsed()
            })
        })
    });
    g.finish();

    // Interleaved, one query at a time, for the medians.
    let rounds = 10_000;
    let (mut pt, mut ps, mut st, mut ss) = (
        Vec::with_capacity(rounds),
        Vec::with_capacity(rounds),
        Vec::with_capacity(rounds),
        Vec::with_capacity(rounds),
    );
    rt.block_on(async {
        for i in 0..rounds {
            let (tag, ty) = &keys[i % keys.len()];
            let t = Instant::now();
            std::hint::black_box(point_tp(&client, &point, tag, ty).await.expect("point"));
            pt.push(t.elapsed());
            let t = Instant::now();
            std::hint::black_box(point_sqlx(&mut conn, tag, ty).await.expect("point"));
            ps.push(t.elapsed());
            let t = Instant::now();
            std::hint::black_box(select1_tp(&client, &select1).await.expect("select 1"));
            st.push(t.elapsed());
            let t = Instant::now();
            std::hint::black_box(select1_sqlx(&mut conn).await.expect("select 1"));
            ss.push(t.elapsed());
        }
    });
    print_paired("pg_point", 1.0, &mut [("tokio_postgres", pt), ("sqlx", ps)]);
    print_paired(
        "pg_select1",
        1.0,
        &mut [("tokio_postgres", st), ("sqlx", ss)],
    );

    // Leave nothing behind.
    rt.block_on(async {
        for schema in SCHEMAS {
            client
                .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                .await?;
        }
        Ok::<_, Box<dyn Error>>(())
    })
    .expect("drop schemas");
}

criterion_group!(benches, bench_append, bench_reads);
criterion_main!(benches);

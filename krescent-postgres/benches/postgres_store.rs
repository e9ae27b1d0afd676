//! PostgreSQL event store benchmarks.
//!
//! Needs `KRESCENT_POSTGRES_URL` (for example `postgres://postgres@127.0.0.1:5432/test`);
//! without it the benchmark prints that it was skipped and exits.
//!
//! Workload (the same as the SQLite benchmark): a stock ledger of 1,000,000 JSON events of
//! about 110 bytes, 3 event types (`stock.added`, `stock.picked`, `stock.counted` — the
//! savepoint, one event in ten), each tagged with one of 10,000 products
//! (`product:P-01234`). The 1M events are written once per run, into tables with a fresh
//! prefix, through the store's own batched append; then `VACUUM ANALYZE` (what autovacuum
//! would do shortly after); the tables are dropped at the end.
//!
//! - (a) `append, batches of 1000`: the 1,000 appends of 1,000 events that build the ledger,
//!   each timed (events/s, tag index included); measured by hand.
//! - (b) `postgres_append/single_conditional` (criterion): appends of one event with a DCB
//!   condition ("no event of this product after the position I read") to the 1M-event store.
//! - (c) catch-up: a read model's catch-up of the 1M events through `EventStore::read_pages`
//!   (`match_all`; and the three types, the query a derived read model uses, which names every
//!   stored type and so is read as a position range), in pages of 1,000, decoding each payload
//!   with serde_json and folding it into a `HashMap<String, i64>` of 10,000 keys. The store
//!   reads up to two pages ahead on other connections while the fold runs; the hand-written
//!   select of (d) reads one page at a time.
//! - (d) the same decode and fold over a hand-written, prepared tokio-postgres statement
//!   `SELECT position, type, payload FROM events WHERE position > $1 ORDER BY position LIMIT
//!   1000`, paged by position; and the same selecting every column the store reads (`id`,
//!   `tags`, `recorded_at` too), to tell the cost of the columns from the cost of the store.
//! - (e) `postgres_init_query/latest_savepoint_of_product` (criterion): the projection init
//!   query (latest `stock.counted` of one product, backwards, limit 1) at 1M events, through
//!   the store, for products that have a count (every tenth one, `common::counted_product`).
//! - (f) `postgres_round_trip/prepared_select_1` (criterion): a prepared `SELECT 1` on one
//!   connection.
//! - (g) the init query of a product that has no event (an absent tag): the worst case of the
//!   tag index, whose queries visit the segments of the index one by one until the limit.
//!
//! The figures compared with each other are measured in alternation by hand after the
//! criterion runs (7 rounds of the four catch-ups; 25 rounds of 400 init queries, 400
//! `SELECT 1` and 400 init queries of an absent product), so that the load of a shared
//! machine weighs on both sides alike; the summary prints their medians and the ratios to the
//! targets (catch-up at least 0.9× the hand-written select; batched appends at least 150k
//! events/s; the init query at most 2× the `SELECT 1` round trip).
//!
//! Run: `KRESCENT_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test cargo bench -p
//! krescent-postgres --bench postgres_store`.
//!
//! With `KRESCENT_BENCH_APPEND_ONLY=1` it builds the ledger, then runs only the interleaved
//! latency rounds and prints (a), (e), (f) and (g): quicker, while working on appends. With
//! `KRESCENT_BENCH_CATCH_UP_ONLY=1` it builds the ledger, then runs only the interleaved
//! catch-up rounds ((c) and (d)) and prints their medians: quicker, while working on reads.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "../../krescent-core/benches/common/mod.rs"]
mod common;

use common::{
    EVENTS, PAGE, PRODUCTS, TYPES, condition_for, counted_product, event, fold, init_query, median,
};
use criterion::{Criterion, Throughput};
use krescent_core::{EventQuery, EventStore, NewEvent, QueryItem};
use krescent_postgres::{PostgresEventStore, PostgresOptions};
use parking_lot::Mutex;
use tokio::runtime::Runtime;

const URL_VAR: &str = "KRESCENT_POSTGRES_URL";
/// Set (to anything but `0`) to skip the criterion runs and the catch-ups.
const APPEND_ONLY_VAR: &str = "KRESCENT_BENCH_APPEND_ONLY";
/// Set (to anything but `0`) to run only the interleaved catch-up comparison.
const CATCH_UP_ONLY_VAR: &str = "KRESCENT_BENCH_CATCH_UP_ONLY";
const BUILD_BATCH: u64 = 1_000;
/// The columns of the hand-written catch-up: what its fold needs.
const PLAIN_COLUMNS: &str = "position, type, payload";
/// Every column the store reads, to tell the cost of the columns from that of the store.
const ALL_COLUMNS: &str = "position, type, payload, id, tags, recorded_at";
struct Ledger {
    url: String,
    prefix: String,
    store: PostgresEventStore,
    raw: tokio_postgres::Client,
    batch_times: Vec<Duration>,
    build_time: Duration,
}

async fn raw_client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("raw connection");
    tokio::spawn(connection);
    client
}

async fn build_ledger(url: String) -> Ledger {
    let prefix = format!("bench_{}_", uuid::Uuid::now_v7().simple());
    let store = PostgresEventStore::connect(
        &url,
        PostgresOptions::default()
            .table_prefix(&prefix)
            .pool_size(4),
    )
    .await
    .expect("connect");
    let mut batch_times = Vec::with_capacity((EVENTS / BUILD_BATCH) as usize);
    let mut build_time = Duration::ZERO;
    for chunk in 0..EVENTS / BUILD_BATCH {
        let batch: Vec<NewEvent> = (chunk * BUILD_BATCH..(chunk + 1) * BUILD_BATCH)
            .map(event)
            .collect();
        let started = Instant::now();
        store.append(batch, None).await.expect("append");
        let took = started.elapsed();
        batch_times.push(took);
        build_time += took;
    }
    let raw = raw_client(&url).await;
    for table in ["events", "extra_tags", "tag_starts"] {
        raw.batch_execute(&format!("VACUUM ANALYZE {prefix}{table}"))
            .await
            .expect("vacuum");
    }
    eprintln!(
        "built {EVENTS} events in {build_time:.2?} of appends ({:.0} events/s, batches of \
         {BUILD_BATCH})",
        EVENTS as f64 / build_time.as_secs_f64()
    );
    Ledger {
        url,
        prefix,
        store,
        raw,
        batch_times,
        build_time,
    }
}

/// Reads every event of `query` in pages through the store and folds them.
async fn catch_up(store: &PostgresEventStore, query: &EventQuery) -> HashMap<String, i64> {
    let (levels, n) = common::catch_up(store, query).await;
    assert!(n >= EVENTS, "caught up on {n} events");
    levels
}

/// The same catch-up over a hand-written paged select of `columns` (position, type and
/// payload first).
async fn handwritten(
    client: &tokio_postgres::Client,
    prefix: &str,
    columns: &str,
) -> HashMap<String, i64> {
    let stmt = client
        .prepare(&format!(
            "SELECT {columns} FROM {prefix}events WHERE position > $1 \
             ORDER BY position LIMIT 1000"
        ))
        .await
        .expect("prepare");
    let mut levels = HashMap::with_capacity(PRODUCTS as usize);
    let mut cursor = 0i64;
    let mut n = 0u64;
    loop {
        let rows = client.query(&stmt, &[&cursor]).await.expect("select");
        let Some(last) = rows.last() else { break };
        cursor = last.get(0);
        n += rows.len() as u64;
        for row in &rows {
            fold(&mut levels, row.get(1), row.get(2));
        }
    }
    assert!(n >= EVENTS, "caught up on {n} events");
    levels
}

/// Rounds of the interleaved catch-up measurement.
const CATCH_UP_ROUNDS: usize = 7;
/// Rounds, and queries per round, of the interleaved latency measurement.
const LATENCY_ROUNDS: usize = 25;
const LATENCY_QUERIES: usize = 400;

fn main() {
    let Ok(url) = std::env::var(URL_VAR) else {
        println!("skipped: {URL_VAR} not set");
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let ledger = rt.block_on(build_ledger(url));
    let only = |var: &str| std::env::var(var).is_ok_and(|v| v != "0");
    if only(APPEND_ONLY_VAR) {
        let latency = rt.block_on(interleaved_latency(&ledger));
        println!("\n== postgres_store append and latency medians ==");
        print_append(&ledger);
        print_latency(latency);
    } else if only(CATCH_UP_ONLY_VAR) {
        let catch_up = rt.block_on(interleaved_catch_up(&ledger));
        println!("\n== postgres_store catch-up medians ==");
        print_catch_up(catch_up);
    } else {
        let mut c = Criterion::default().configure_from_args();

        latency(&mut c, &rt, &ledger);
        let conditional = appends(&mut c, &rt, &ledger);
        c.final_summary();

        // The ratios compare measurements taken in alternation, so that a change in the load
        // of the machine affects both sides alike.
        let latency = rt.block_on(interleaved_latency(&ledger));
        let catch_up = rt.block_on(interleaved_catch_up(&ledger));

        println!("\n== postgres_store medians ==");
        print_append(&ledger);
        println!(
            "(b) single conditional append: {conditional:.2?} = {:.0} events/s",
            1.0 / conditional.as_secs_f64()
        );
        print_catch_up(catch_up);
        print_latency(latency);
    }
    rt.block_on(ledger.store.drop_tables())
        .expect("drop tables");
}

/// Prints (c) and (d): the medians of the interleaved catch-ups and their ratios.
fn print_catch_up(catch_up: [Duration; 4]) {
    let per_s = |d: Duration, n: u64| n as f64 / d.as_secs_f64();
    let [s, t, p, pa] = catch_up;
    println!(
        "(c) catch-up via read_pages:    {s:.2?} = {:.0} events/s",
        per_s(s, EVENTS)
    );
    println!(
        "    ... with the three types:   {t:.2?} = {:.0} events/s",
        per_s(t, EVENTS)
    );
    println!(
        "(d) hand-written paged SELECT:  {p:.2?} = {:.0} events/s",
        per_s(p, EVENTS)
    );
    println!(
        "    ... selecting every column: {pa:.2?} = {:.0} events/s",
        per_s(pa, EVENTS)
    );
    println!(
        "    store / hand-written speed: {:.2} (match_all), {:.2} (three types)  target >= 0.9",
        p.as_secs_f64() / s.as_secs_f64(),
        p.as_secs_f64() / t.as_secs_f64()
    );
    println!(
        "    ... against every column:   {:.2} (match_all), {:.2} (three types)",
        pa.as_secs_f64() / s.as_secs_f64(),
        pa.as_secs_f64() / t.as_secs_f64()
    );
}

/// Prints (a): the median batch of the build.
fn print_append(ledger: &Ledger) {
    let batch_median = median(ledger.batch_times.clone());
    let per_s = |d: Duration, n: u64| n as f64 / d.as_secs_f64();
    println!(
        "(a) append, batches of 1000:   median batch {batch_median:.2?} = {:.0} events/s \
         (whole build: {:.0} events/s)  target >= 150000",
        per_s(batch_median, BUILD_BATCH),
        per_s(ledger.build_time, EVENTS)
    );
}

/// Prints (e), (f) and (g): the medians of the interleaved latency rounds.
fn print_latency([init, select_1, absent]: [Duration; 3]) {
    println!("(e) init query at 1M events:   {init:.2?}");
    println!("(f) prepared SELECT 1:         {select_1:.2?}");
    println!(
        "    init / SELECT 1:            {:.2}  target <= 2",
        init.as_secs_f64() / select_1.as_secs_f64()
    );
    println!(
        "(g) init query, absent product: {absent:.2?} ({:.2}x SELECT 1)",
        absent.as_secs_f64() / select_1.as_secs_f64()
    );
}

/// Medians of per-query means over rounds that alternate the init query, `SELECT 1` and the
/// init query of an absent product.
async fn interleaved_latency(ledger: &Ledger) -> [Duration; 3] {
    let client = raw_client(&ledger.url).await;
    let stmt = client.prepare("SELECT 1").await.expect("prepare");
    let (mut init, mut one, mut absent) = (Vec::new(), Vec::new(), Vec::new());
    let mut k = 0u64;
    for _ in 0..LATENCY_ROUNDS {
        let started = Instant::now();
        for _ in 0..LATENCY_QUERIES {
            k += 7;
            let found = ledger
                .store
                .read(&init_query(counted_product(k)))
                .await
                .expect("init query");
            assert_eq!(found.len(), 1, "every counted product has a latest count");
        }
        init.push(started.elapsed() / LATENCY_QUERIES as u32);
        let started = Instant::now();
        for _ in 0..LATENCY_QUERIES {
            let row = client.query_one(&stmt, &[]).await.expect("select 1");
            black_box(row.get::<_, i32>(0));
        }
        one.push(started.elapsed() / LATENCY_QUERIES as u32);
        let started = Instant::now();
        for _ in 0..LATENCY_QUERIES {
            k = (k + 7) % PRODUCTS;
            // Products numbered from PRODUCTS up have no event.
            let found = ledger
                .store
                .read(&init_query(PRODUCTS + k))
                .await
                .expect("init query");
            assert!(found.is_empty(), "an absent product has no count");
        }
        absent.push(started.elapsed() / LATENCY_QUERIES as u32);
    }
    [median(init), median(one), median(absent)]
}

/// Medians of whole catch-ups, the four variants in alternation: the store (`match_all`), the
/// store (three types), the hand-written select, the hand-written select of every column.
async fn interleaved_catch_up(ledger: &Ledger) -> [Duration; 4] {
    let mut times: [Vec<Duration>; 4] = Default::default();
    let three_types = EventQuery::item(QueryItem::types(TYPES));
    for round in 0..CATCH_UP_ROUNDS {
        for i in 0..4 {
            let variant = (round + i) % 4;
            let started = Instant::now();
            let levels = match variant {
                0 => catch_up(&ledger.store, &EventQuery::match_all()).await,
                1 => catch_up(&ledger.store, &three_types).await,
                2 => handwritten(&ledger.raw, &ledger.prefix, PLAIN_COLUMNS).await,
                _ => handwritten(&ledger.raw, &ledger.prefix, ALL_COLUMNS).await,
            };
            times[variant].push(started.elapsed());
            assert_eq!(levels.len(), PRODUCTS as usize);
            black_box(levels);
        }
    }
    times.map(median)
}

fn latency(c: &mut Criterion, rt: &Runtime, ledger: &Ledger) {
    let mut group = c.benchmark_group("postgres_init_query");
    let store = &ledger.store;
    for (what, query) in [
        ("init query", init_query(counted_product(4))),
        (
            "catch-up page after position 500,000",
            EventQuery::item(QueryItem::types(TYPES))
                .after(EVENTS / 2)
                .limit(PAGE)
                .expect("page"),
        ),
    ] {
        let plan = rt.block_on(store.explain(&query)).expect("explain");
        eprintln!("plan of the {what} at {EVENTS} events:\n{plan}");
    }
    let mut k = 0u64;
    group.bench_function("latest_savepoint_of_product", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    k += 7;
                    let found = store
                        .read(&init_query(counted_product(k)))
                        .await
                        .expect("init query");
                    black_box(found);
                }
                started.elapsed()
            })
        });
    });
    group.finish();

    let mut group = c.benchmark_group("postgres_round_trip");
    let client = rt.block_on(raw_client(&ledger.url));
    let stmt = rt.block_on(client.prepare("SELECT 1")).expect("prepare");
    group.bench_function("prepared_select_1", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    let row = client.query_one(&stmt, &[]).await.expect("select 1");
                    black_box(row.get::<_, i32>(0));
                }
                started.elapsed()
            })
        });
    });
    group.finish();
}

/// Single conditional appends to the 1M-event store; returns the median per append.
fn appends(c: &mut Criterion, rt: &Runtime, ledger: &Ledger) -> Duration {
    let mut group = c.benchmark_group("postgres_append");
    let store = &ledger.store;
    let mut head = rt.block_on(store.head()).expect("head");
    let mut k = 0u64;
    let samples = Arc::new(Mutex::new(Vec::new()));
    group.throughput(Throughput::Elements(1));
    group.bench_function("single_conditional", |b| {
        b.iter_custom(|iters| {
            let total = rt.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    k += 1;
                    let e = event(EVENTS + k);
                    let condition = condition_for(&e, head);
                    let recorded = store
                        .append(vec![e], Some(condition))
                        .await
                        .expect("conditional append");
                    head = recorded[0].position;
                }
                started.elapsed()
            });
            samples
                .lock()
                .push(total / u32::try_from(iters.max(1)).unwrap_or(u32::MAX));
            total
        });
    });
    group.finish();
    let samples = samples.lock().clone();
    median(samples)
}

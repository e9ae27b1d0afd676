//! SQLite event store benchmarks.
//!
//! Workload: a stock ledger of 1,000,000 JSON events of about 110 bytes, 3 event types
//! (`stock.added`, `stock.picked`, `stock.counted` — the savepoint, one event in ten), each
//! tagged with one of 10,000 products (`product:P-01234`). The 1M-event file is built once
//! per run, in a temporary directory, through the store (batches of 10,000).
//!
//! - `append/batch_1000`: appends in batches of 1,000 such events to a growing store
//!   (events/s).
//! - `append/single_conditional`: appends of one event with a DCB condition ("no event of
//!   this product after the position I read") to the 1M-event store (events/s).
//! - `catch_up/store_read_pages`: a read model's catch-up of the 1M events through
//!   `EventStore::read_pages` (pages of 1,000, read ahead) (query: the three types), decoding each
//!   payload with serde_json into a small struct and folding it into a `HashMap<String, i64>`
//!   of 10,000 keys.
//! - `catch_up/store_read_pages_two_types`: the same over two of the three types (an index
//!   merge instead of a primary-key scan).
//! - `catch_up/handwritten_scan`: the same decode and fold over one hand-written rusqlite
//!   statement, `SELECT record FROM events ORDER BY position`, on the same file: the least a
//!   scan can read (the type id is bytes 8 to 16 of the record, mapped to a name through a
//!   table loaded from `event_types` first; the payload is the tail of the record, after the
//!   44-byte header and the tags).
//! - `PAIRED catch-up` (printed after the catch-up group): 11 pairs of the store's catch-up
//!   (three types) and the hand-written scan in alternation, their medians and the median of
//!   the per-pair speed ratios; this is the figure for the target (at least 0.9), since
//!   criterion's separate groups see different load on a shared machine.
//! - `init_query/latest_savepoint_of_product`: the projection init query (latest
//!   `stock.counted` of one product, backwards, limit 1) at 1M events, through the store.
//! - `init_query/absent_tag`: the same query for a tag no event carries, the worst case of
//!   the tag index (every segment is sought, newest to oldest, and none has it).
//!
//! Run: `cargo bench -p krescent-sqlite --bench sqlite_store`.

use std::collections::HashMap;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

#[path = "../../krescent-core/benches/common/mod.rs"]
mod common;

use common::{
    EVENTS, PAGE, PRODUCTS, TYPES, condition_for, counted_product, event, fold, init_query, median,
};
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use krescent_core::{EventQuery, EventStore, NewEvent, QueryItem, Tag};
use krescent_sqlite::SqliteEventStore;
use tokio::runtime::Runtime;

const BUILD_BATCH: u64 = 10_000;

fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime")
    })
}

/// The directory of the files: a new temporary one, or `KRESCENT_BENCH_DIR` (kept, so that
/// a ledger built by an earlier run of the same schema is reused while tuning).
fn dir() -> &'static Path {
    static DIR: OnceLock<(Option<tempfile::TempDir>, PathBuf)> = OnceLock::new();
    let (_, path) = DIR.get_or_init(|| match std::env::var_os("KRESCENT_BENCH_DIR") {
        Some(dir) => (None, PathBuf::from(dir)),
        None => {
            let tmp = tempfile::tempdir().expect("temporary directory");
            let path = tmp.path().to_path_buf();
            (Some(tmp), path)
        }
    });
    path
}

/// The 1M-event file, built once per run.
fn ledger() -> &'static (PathBuf, SqliteEventStore) {
    static LEDGER: OnceLock<(PathBuf, SqliteEventStore)> = OnceLock::new();
    LEDGER.get_or_init(|| {
        let path = dir().join("ledger.db");
        runtime().block_on(async {
            let store = SqliteEventStore::open(&path).await.expect("open");
            let head = store.head().await.expect("head");
            if head == EVENTS {
                eprintln!(
                    "reusing the ledger of {EVENTS} events in {}",
                    path.display()
                );
                return (path, store);
            }
            assert_eq!(
                head,
                0,
                "{} holds {head} events, not {EVENTS}",
                path.display()
            );
            let started = Instant::now();
            for chunk in 0..EVENTS / BUILD_BATCH {
                let batch = (chunk * BUILD_BATCH..(chunk + 1) * BUILD_BATCH)
                    .map(event)
                    .collect();
                store.append(batch, None).await.expect("append");
            }
            let took = started.elapsed();
            let size = std::fs::metadata(&path).map_or(0, |m| m.len());
            eprintln!(
                "built {EVENTS} events in {took:.2?} ({:.0} events/s, batches of {BUILD_BATCH}); \
                 file {:.0} MiB",
                EVENTS as f64 / took.as_secs_f64(),
                size as f64 / (1 << 20) as f64
            );
            (path, store)
        })
    })
}

fn appends(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("append");
    group.sample_size(10);

    let store = rt
        .block_on(SqliteEventStore::open(
            dir().join(format!("appends-{}.db", std::process::id())),
        ))
        .expect("open");
    let mut n = 0u64;
    group.throughput(Throughput::Elements(1000));
    group.bench_function("batch_1000", |b| {
        b.iter_batched(
            || {
                let batch: Vec<NewEvent> = (n..n + 1000).map(event).collect();
                n += 1000;
                batch
            },
            |batch| rt.block_on(store.append(batch, None)).expect("append"),
            criterion::BatchSize::PerIteration,
        );
    });

    // On the store the batches grew (the 1M-event ledger stays as built, for the reads).
    let mut head = rt.block_on(store.head()).expect("head");
    let mut k = 0u64;
    group.throughput(Throughput::Elements(1));
    group.bench_function("single_conditional", |b| {
        b.iter(|| {
            k += 1;
            let e = event(n + k);
            let condition = condition_for(&e, head);
            let recorded = rt
                .block_on(store.append(vec![e], Some(condition)))
                .expect("conditional append");
            head = recorded[0].position;
        });
    });
    group.finish();
}

/// Reads every event of `query` in pages through the store and folds them.
fn catch_up(store: &SqliteEventStore, query: &EventQuery) -> HashMap<String, i64> {
    runtime().block_on(common::catch_up(store, query)).0
}

fn handwritten_scan(path: &PathBuf) -> HashMap<String, i64> {
    let conn = rusqlite::Connection::open(path).expect("open");
    let mut levels = HashMap::with_capacity(PRODUCTS as usize);
    // The type names by id (schema version 2 stores type ids in `events`).
    let mut names: Vec<String> = Vec::new();
    let mut types = conn
        .prepare("SELECT id, name FROM event_types")
        .expect("prepare");
    let mut rows = types.query([]).expect("query");
    while let Some(row) = rows.next().expect("row") {
        let id = usize::try_from(row.get::<_, i64>(0).expect("id")).expect("id");
        if names.len() <= id {
            names.resize(id + 1, String::new());
        }
        names[id] = row.get(1).expect("name");
    }
    let mut stmt = conn
        .prepare("SELECT record FROM events ORDER BY position")
        .expect("prepare");
    let mut rows = stmt.query([]).expect("query");
    while let Some(row) = rows.next().expect("row") {
        let record = row.get_ref(0).expect("record").as_blob().expect("blob");
        // The position (8 bytes), the type id (8), the event id (16), the time (8), the
        // length of the tags (4), the tags, then the payload.
        let id = i64::from_le_bytes(record[8..16].try_into().expect("8 bytes"));
        let event_type = &names[usize::try_from(id).expect("id")];
        let tags_len = u32::from_le_bytes(record[40..44].try_into().expect("4 bytes"));
        let payload = &record[44 + tags_len as usize..];
        fold(&mut levels, event_type, payload);
    }
    levels
}

fn catch_ups(c: &mut Criterion) {
    let (path, store) = ledger();
    let mut group = c.benchmark_group("catch_up");
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.measurement_time(Duration::from_secs(15));
    group.throughput(Throughput::Elements(EVENTS));

    let all_types = EventQuery::item(QueryItem::types(TYPES));
    // Both sides see the same events (the append benchmarks may have added some).
    let total = runtime().block_on(store.head()).expect("head");
    let expected = handwritten_scan(path);
    assert_eq!(
        catch_up(store, &all_types),
        expected,
        "store read and hand-written scan fold to the same levels"
    );
    group.throughput(Throughput::Elements(total));
    group.bench_function("store_read_pages", |b| {
        b.iter(|| black_box(catch_up(store, &all_types)));
    });
    group.bench_function("handwritten_scan", |b| {
        b.iter(|| black_box(handwritten_scan(path)));
    });
    let two_types = EventQuery::item(QueryItem::types(TYPES[..2].iter().copied()));
    group.bench_function("store_read_pages_two_types", |b| {
        b.iter(|| black_box(catch_up(store, &two_types)));
    });
    group.finish();
}

fn init_queries(c: &mut Criterion) {
    let (_, store) = ledger();
    let rt = runtime();
    let mut group = c.benchmark_group("init_query");
    let queries: Vec<EventQuery> = (0..1000).map(|p| init_query(counted_product(p))).collect();
    for (what, query) in [
        ("init query", &queries[0]),
        (
            "catch-up page after position 500,000",
            &EventQuery::item(QueryItem::types(TYPES))
                .after(EVENTS / 2)
                .limit(PAGE)
                .expect("page"),
        ),
    ] {
        let plan = rt.block_on(store.explain(query)).expect("explain");
        eprintln!("plan of the {what} at {EVENTS} events:\n{plan}");
    }
    for q in &queries[..10] {
        let found = rt.block_on(store.read(q)).expect("read");
        assert_eq!(found.len(), 1, "every product has a savepoint");
    }
    let mut i = 0;
    group.bench_function("latest_savepoint_of_product", |b| {
        b.iter(|| {
            i = (i + 1) % queries.len();
            black_box(rt.block_on(store.read(&queries[i])).expect("read"))
        });
    });
    // The worst case of the segment walk: a tag no event carries, so every segment of the
    // tag index is sought, from the newest to the oldest.
    let absent = EventQuery::item(
        QueryItem::types([TYPES[2]]).and_tag(Tag::new("product", "absent").expect("tag")),
    )
    .backward()
    .limit(1)
    .expect("limit 1");
    assert!(rt.block_on(store.read(&absent)).expect("read").is_empty());
    group.bench_function("absent_tag", |b| {
        b.iter(|| black_box(rt.block_on(store.read(&absent)).expect("read")));
    });
    group.finish();
}

/// Catch-ups measured in alternation, so that the load of a shared machine weighs on both
/// sides alike: the store's (three types) and the hand-written scan take turns, and the line
/// gives both medians and the median of the per-pair speed ratios (the figure for the target).
fn paired_catch_ups(_: &mut Criterion) {
    let (path, store) = ledger();
    let all_types = EventQuery::item(QueryItem::types(TYPES));
    let mut store_times = Vec::with_capacity(PAIRS);
    let mut hand_times = Vec::with_capacity(PAIRS);
    let mut ratios = Vec::with_capacity(PAIRS);
    for pair in 0..PAIRS {
        let time = |store_side: bool| {
            let started = Instant::now();
            black_box(if store_side {
                catch_up(store, &all_types)
            } else {
                handwritten_scan(path)
            });
            started.elapsed()
        };
        // Alternate which side goes first.
        let (s, h) = if pair % 2 == 0 {
            let s = time(true);
            (s, time(false))
        } else {
            let h = time(false);
            (time(true), h)
        };
        store_times.push(s);
        hand_times.push(h);
        ratios.push(h.as_secs_f64() / s.as_secs_f64());
    }
    eprintln!(
        "PAIRED catch-up, {PAIRS} pairs: store {:.1?}, hand-written scan {:.1?}; store speed / \
         floor speed, median of the pairs: {:.2} (target >= 0.9)",
        median(store_times),
        median(hand_times),
        median(ratios)
    );
}

/// Pairs of the interleaved catch-up comparison.
const PAIRS: usize = 11;

// Reads first, so that they see exactly the 1M events the appends then add to.
criterion_group!(benches, catch_ups, paired_catch_ups, init_queries, appends);
criterion_main!(benches);

//! The in-memory event store under the workload of the SQLite and PostgreSQL benchmarks, so
//! that the closing figures of each backend stand next to the in-memory ones.
//!
//! Workload (`benches/common`): a stock ledger of 1,000,000 JSON events of about 110 bytes,
//! three event types (`stock.counted`, the savepoint, one event in ten), each tagged with one
//! of 10,000 products, built once per run through the store's append in batches of 10,000.
//!
//! - `memory_catch_up/store_read_pages`: a catch-up of the 1M events through
//!   `InMemoryEventStore::read` in pages of 1,000 (query: the three types), decoding each
//!   payload with serde_json and folding it into a `HashMap<String, i64>` of 10,000 keys.
//! - `memory_init_query/latest_savepoint_of_product`: the projection init query (latest
//!   `stock.counted` of one product, backwards, limit 1) at 1M events.
//! - `memory_append/batch_1000` and `memory_append/single_conditional`: appends of 1,000
//!   events, and of one event under a DCB condition ("no event of this product after the
//!   position I read"), to the 1M-event store.
//!
//! Run: `cargo bench -p krescent-core --bench memory_backend`.

mod common;

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Duration;

use common::{EVENTS, PRODUCTS, TYPES, condition_for, counted_product, event, init_query};
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use krescent_core::{EventQuery, EventStore, InMemoryEventStore, NewEvent, QueryItem};
use tokio::runtime::Runtime;

fn setup() -> (Runtime, InMemoryEventStore) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let store = InMemoryEventStore::new();
    rt.block_on(async {
        for chunk in 0..EVENTS / 10_000 {
            let batch = (chunk * 10_000..(chunk + 1) * 10_000).map(event).collect();
            store.append(batch, None).await.expect("append");
        }
    });
    (rt, store)
}

async fn catch_up(store: &InMemoryEventStore, query: &EventQuery) -> HashMap<String, i64> {
    common::catch_up(store, query).await.0
}

fn bench(c: &mut Criterion) {
    let (rt, store) = setup();

    let mut group = c.benchmark_group("memory_catch_up");
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(EVENTS));
    let all_types = EventQuery::item(QueryItem::types(TYPES));
    assert_eq!(
        rt.block_on(catch_up(&store, &all_types)).len(),
        PRODUCTS as usize
    );
    group.bench_function("store_read_pages", |b| {
        b.iter(|| black_box(rt.block_on(catch_up(&store, &all_types))));
    });
    group.finish();

    let mut group = c.benchmark_group("memory_init_query");
    let queries: Vec<EventQuery> = (0..1000).map(|p| init_query(counted_product(p))).collect();
    assert_eq!(rt.block_on(store.read(&queries[0])).expect("read").len(), 1);
    let mut i = 0;
    group.bench_function("latest_savepoint_of_product", |b| {
        b.iter(|| {
            i = (i + 1) % queries.len();
            black_box(rt.block_on(store.read(&queries[i])).expect("read"))
        });
    });
    group.finish();

    let mut group = c.benchmark_group("memory_append");
    group.sample_size(20);
    let mut n = EVENTS;
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
    let mut head = rt.block_on(store.head()).expect("head");
    group.throughput(Throughput::Elements(1));
    group.bench_function("single_conditional", |b| {
        b.iter(|| {
            n += 1;
            let e = event(n);
            let condition = condition_for(&e, head);
            let recorded = rt
                .block_on(store.append(vec![e], Some(condition)))
                .expect("conditional append");
            head = recorded[0].position;
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! Projection start-up time against history length: the savepoint path against a full replay.
//!
//! Workload: an in-memory store holding N events (N = 1k, 10k, 100k, 1M) of one product,
//! `stock.added` / `stock.picked` alternating, ~60-byte JSON payloads, with one
//! `stock.counted` savepoint 100 events before the head. Measured: building a brand-new
//! projector and running it to the head, for
//! - `savepoint`: a projection with `savepoint(Counted)` (init query, then ~99 events);
//! - `full_replay`: the same handlers without a savepoint (all N events).
//!
//! The savepoint path must stay flat as N grows, and at 1M start at least 1000x faster.
//!
//! Run: `cargo bench --bench projection_startup`.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use krescent::prelude::*;
use krescent::projection::Projector;
use krescent_core::testing::fixtures::StockEvent;

macro_rules! level_projection {
    ($name:ident, $($attrs:tt)*) => {
        #[derive(Projection, Default)]
        #[krescent(events = StockEvent, $($attrs)*, tags(product = self.product))]
        pub struct $name {
            product: String,
            level: i64,
        }
        impl $name {
            fn new() -> Self {
                $name { product: "P".into(), level: 0 }
            }
            fn on_added(&mut self, _p: &String, q: &i64) {
                self.level += q;
            }
            fn on_picked(&mut self, _p: &String, q: &i64) {
                self.level -= q;
            }
            fn on_counted(&mut self, _p: &String, c: &i64) {
                self.level = *c;
            }
        }
    };
}

level_projection!(WithSavepoint, handles(Added, Picked), savepoint(Counted));
level_projection!(FullReplay, handles(Added, Picked, Counted));

fn store_with(rt: &tokio::runtime::Runtime, n: usize) -> InMemoryEventStore {
    let store = InMemoryEventStore::new();
    rt.block_on(async {
        let mut batch = Vec::with_capacity(10_000);
        for i in 0..n {
            let product = "P".to_string();
            let e = if i == n - 100 {
                StockEvent::Counted {
                    product,
                    counted: 5_000,
                }
            } else if i % 2 == 0 {
                StockEvent::Added {
                    product,
                    quantity: 3,
                }
            } else {
                StockEvent::Picked {
                    product,
                    quantity: 2,
                }
            };
            batch.push(e);
            if batch.len() == 10_000 {
                store
                    .append_events(&std::mem::take(&mut batch), None)
                    .await
                    .unwrap();
            }
        }
        store.append_events(&batch, None).await.unwrap();
    });
    store
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("projection_startup");
    g.sample_size(10);
    for n in [1_000usize, 10_000, 100_000, 1_000_000] {
        let store = store_with(&rt, n);
        // Both paths reach the same level.
        let check = rt.block_on(async {
            let mut a = WithSavepoint::new();
            Projector::from(&store)
                .towards(&mut a)
                .build()
                .await
                .unwrap()
                .run()
                .await
                .unwrap();
            let mut b = FullReplay::new();
            Projector::from(&store)
                .towards(&mut b)
                .build()
                .await
                .unwrap()
                .run()
                .await
                .unwrap();
            (a.level, b.level)
        });
        assert_eq!(check.0, check.1);
        g.bench_with_input(BenchmarkId::new("savepoint", n), &store, |b, store| {
            b.iter(|| {
                rt.block_on(async {
                    let mut p = WithSavepoint::new();
                    Projector::from(store)
                        .towards(&mut p)
                        .build()
                        .await
                        .unwrap()
                        .run()
                        .await
                        .unwrap();
                    p.level
                })
            })
        });
        g.bench_with_input(BenchmarkId::new("full_replay", n), &store, |b, store| {
            b.iter(|| {
                rt.block_on(async {
                    let mut p = FullReplay::new();
                    Projector::from(store)
                        .towards(&mut p)
                        .build()
                        .await
                        .unwrap()
                        .run()
                        .await
                        .unwrap();
                    p.level
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

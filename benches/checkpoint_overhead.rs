//! The cost of checkpointing during a catch-up, and restart time from a checkpoint.
//!
//! Workload: an in-memory store of 1,000,000 `counter.added` events (~60-byte JSON payloads)
//! spread over 10,000 keys, folded into a `HashMap<String, i64>` with 10,000 keys by a read
//! model whose map is stored with `#[krescent(binary)]`, checkpoints kept in an
//! `InMemoryCheckpointStorage` (which encodes and decodes the full bytes, like a file or row
//! would, without disk latency). Measured:
//! - `catch_up/none`, `catch_up/every_1000`, `catch_up/every_100`: a full catch-up of 1M
//!   events without checkpoints, with `FixedEventRate(1000)` and with `FixedEventRate(100)`;
//! - `restart/from_checkpoint` (checkpoint 1,000 events before the head) against
//!   `restart/full_replay`.
//!
//! Run: `cargo bench --bench checkpoint_overhead`.

use std::collections::HashMap;

use criterion::{Criterion, criterion_group, criterion_main};
use krescent::checkpoint::{
    Always, CheckpointMap, FixedEventRate, InMemoryCheckpointStorage, Never,
};
use krescent::prelude::*;

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
#[krescent(catalog = "bench.counters")]
pub enum CounterEvent {
    #[krescent(name = "counter.added")]
    Added {
        #[krescent(tag)]
        key: String,
        by: i64,
    },
}

/// The model as the docs recommend for large state: a `CheckpointMap` whose checkpoints after
/// the first are deltas of the entries changed since the previous one.
#[derive(ReadModel, CheckpointSupport, Default)]
#[krescent(name = "bench.counters", version = 1, events = CounterEvent, handles(Added))]
pub struct Counters {
    #[krescent(delta)]
    map: CheckpointMap<String, i64>,
}

impl Counters {
    fn on_added(&mut self, key: &str, by: &i64) {
        match self.map.get_mut(key) {
            Some(v) => *v += by,
            None => {
                self.map.insert(key.to_owned(), *by);
            }
        }
    }
}

/// The same model with a plain `HashMap` stored whole (`#[krescent(binary)]`) in every
/// checkpoint, for comparison.
#[derive(ReadModel, CheckpointSupport, Default)]
#[krescent(name = "bench.counters_full", version = 1, events = CounterEvent, handles(Added))]
pub struct FullCounters {
    #[krescent(binary)]
    map: HashMap<String, i64>,
}

impl FullCounters {
    fn on_added(&mut self, key: &str, by: &i64) {
        match self.map.get_mut(key) {
            Some(v) => *v += by,
            None => {
                self.map.insert(key.to_owned(), *by);
            }
        }
    }
}

const EVENTS: usize = 1_000_000;

fn store(rt: &tokio::runtime::Runtime) -> InMemoryEventStore {
    let store = InMemoryEventStore::new();
    rt.block_on(async {
        let mut batch = Vec::with_capacity(10_000);
        for i in 0..EVENTS {
            batch.push(CounterEvent::Added {
                key: format!("key-{}", i % 10_000),
                by: (i % 13) as i64,
            });
            if batch.len() == 10_000 {
                store
                    .append_events(&std::mem::take(&mut batch), None)
                    .await
                    .unwrap();
            }
        }
    });
    store
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let store = store(&rt);

    let mut g = c.benchmark_group("checkpoint_overhead_1M");
    g.sample_size(10);
    g.bench_function("catch_up/none", |b| {
        b.iter(|| {
            rt.block_on(async {
                Counters::default()
                    .runner()
                    .catch_up(&store)
                    .await
                    .unwrap()
                    .events_handled
            })
        })
    });
    g.bench_function("catch_up/none_full_map", |b| {
        b.iter(|| {
            rt.block_on(async {
                FullCounters::default()
                    .runner()
                    .catch_up(&store)
                    .await
                    .unwrap()
                    .events_handled
            })
        })
    });
    g.bench_function("catch_up/every_1000_full_map", |b| {
        b.iter(|| {
            rt.block_on(async {
                let storage = InMemoryCheckpointStorage::new();
                let mut r = FullCounters::default()
                    .configure(|c| c.use_checkpoints(storage, FixedEventRate::new(1000).unwrap()));
                let m = r.catch_up(&store).await.unwrap();
                assert_eq!(m.checkpoints_written, EVENTS as u64 / 1000);
                assert_eq!(m.deltas_written, 0);
                m.events_handled
            })
        })
    });
    for rate in [1000u64, 100] {
        g.bench_function(format!("catch_up/every_{rate}"), |b| {
            b.iter(|| {
                rt.block_on(async {
                    let storage = InMemoryCheckpointStorage::new();
                    let mut r = Counters::default().configure(|c| {
                        c.use_checkpoints(storage, FixedEventRate::new(rate).unwrap())
                    });
                    let m = r.catch_up(&store).await.unwrap();
                    assert_eq!(m.checkpoints_written, EVENTS as u64 / rate);
                    m.events_handled
                })
            })
        });
    }

    // A checkpoint 1,000 events before the head.
    let storage = InMemoryCheckpointStorage::new();
    rt.block_on(async {
        let mut r = Counters::default().configure(|c| c.use_checkpoints(storage.clone(), Always));
        let head = store.head().await.unwrap();
        let partial = krescent::InMemoryEventStore::new();
        let events = store
            .read_events::<CounterEvent>(&EventQuery::match_all().until(head - 1_000))
            .await
            .unwrap();
        let data: Vec<CounterEvent> = events.into_iter().map(|e| e.data).collect();
        for chunk in data.chunks(10_000) {
            partial.append_events(chunk, None).await.unwrap();
        }
        r.catch_up(&partial).await.unwrap();
        r.checkpoint_now().await.unwrap();
    });
    g.bench_function("restart/from_checkpoint", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut r =
                    Counters::default().configure(|c| c.use_checkpoints(storage.clone(), Never));
                let m = r.catch_up(&store).await.unwrap();
                assert_eq!(m.events_handled, 1_000);
                m.position
            })
        })
    });
    g.bench_function("restart/full_replay", |b| {
        b.iter(|| {
            rt.block_on(async {
                Counters::default()
                    .runner()
                    .catch_up(&store)
                    .await
                    .unwrap()
                    .position
            })
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

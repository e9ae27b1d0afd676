//! The cost of checkpointing during a catch-up, and restart time from a checkpoint.
//!
//! Workload: an in-memory store of 1,000,000 `counter.added` events (~60-byte JSON payloads)
//! spread over 10,000 keys (event `i` adds to key `i % 10_000`, so every 1,000 consecutive
//! events touch 1,000 distinct keys), folded into a map with 10,000 keys. Checkpoints go to an
//! `InMemoryCheckpointStorage`, which encodes and decodes the full bytes like a file or row
//! would, without disk latency. Two models:
//! - `Counters`: a `CheckpointMap<String, i64>` marked `#[krescent(delta)]` — the first
//!   checkpoint is full, later ones are deltas of the changed entries, a full one again after
//!   64 deltas (the default `max_delta_chain`);
//! - `FullCounters`: a `HashMap<String, i64>` stored whole with `#[krescent(binary)]` in every
//!   checkpoint.
//!
//! Measured:
//! - `catch_up/none`, `catch_up/every_1000`, `catch_up/every_100`: a full catch-up of 1M
//!   events into `Counters` without checkpoints, with `FixedEventRate(1000)` and with
//!   `FixedEventRate(100)`;
//! - `catch_up/none_full_map`, `catch_up/every_1000_full_map`: the same for `FullCounters`;
//! - `restart/from_checkpoint` (a full checkpoint 1,000 events before the head) against
//!   `restart/full_replay`, and `restart/from_delta_chain` (a full checkpoint and 63 deltas of
//!   1,000 events each, ending 1,000 events before the head).
//!
//! - `PAIRED`, printed last: 15 catch-ups without checkpoints and 15 with
//!   `FixedEventRate(1000)`, interleaved, their medians and the median per-pair ratio (the
//!   figure for the overhead on a shared machine, where the load drifts between criterion's
//!   groups).
//!
//! Run: `cargo bench --bench checkpoint_overhead`; the paired run follows the criterion groups
//! (`cargo bench --bench checkpoint_overhead -- PAIRED` skips the groups: no group has that
//! name).

use std::collections::HashMap;

use criterion::{Criterion, criterion_group, criterion_main};
use krescent::checkpoint::{CheckpointMap, FixedEventRate, InMemoryCheckpointStorage, Never};
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
                    assert!(m.deltas_written > m.checkpoints_written * 9 / 10);
                    m.events_handled
                })
            })
        });
    }

    // The events up to 1,000 before the head.
    let data: Vec<CounterEvent> = rt.block_on(async {
        let head = store.head().await.unwrap();
        let events = store
            .read_events::<CounterEvent>(&EventQuery::match_all().until(head - 1_000))
            .await
            .unwrap();
        events.into_iter().map(|e| e.data).collect()
    });
    let append = |partial: &InMemoryEventStore, events: &[CounterEvent]| {
        rt.block_on(async {
            for chunk in events.chunks(10_000) {
                partial.append_events(chunk, None).await.unwrap();
            }
        })
    };

    // A full checkpoint 1,000 events before the head.
    let storage = InMemoryCheckpointStorage::new();
    let partial = InMemoryEventStore::new();
    append(&partial, &data);
    rt.block_on(async {
        let mut r = Counters::default().configure(|c| c.use_checkpoints(storage.clone(), Never));
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

    // A full checkpoint 64,000 events before the head, then 63 deltas of 1,000 events each.
    let chain = InMemoryCheckpointStorage::new();
    let partial = InMemoryEventStore::new();
    let split = data.len() - 63_000;
    append(&partial, &data[..split]);
    rt.block_on(async {
        let mut r = Counters::default().configure(|c| c.use_checkpoints(chain.clone(), Never));
        r.catch_up(&partial).await.unwrap();
        r.checkpoint_now().await.unwrap();
    });
    append(&partial, &data[split..]);
    rt.block_on(async {
        let mut r = Counters::default()
            .configure(|c| c.use_checkpoints(chain.clone(), FixedEventRate::new(1000).unwrap()));
        let m = r.catch_up(&partial).await.unwrap();
        assert_eq!(m.deltas_written, 63);
    });
    g.bench_function("restart/from_delta_chain", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut r =
                    Counters::default().configure(|c| c.use_checkpoints(chain.clone(), Never));
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
    paired(&rt, &store);
}

/// On a shared machine the load changes between criterion's groups of samples more than the
/// few percent measured here; runs of the two configurations interleaved (none, every 1000,
/// none, …) see the same load. Prints the medians of each and the median of the per-pair
/// ratios.
fn paired(rt: &tokio::runtime::Runtime, store: &InMemoryEventStore) {
    const PAIRS: usize = 15;
    let run = |rate: Option<u64>| {
        let start = std::time::Instant::now();
        rt.block_on(async {
            let m = match rate {
                None => Counters::default().runner().catch_up(store).await.unwrap(),
                Some(rate) => {
                    let storage = InMemoryCheckpointStorage::new();
                    let mut r = Counters::default().configure(|c| {
                        c.use_checkpoints(storage, FixedEventRate::new(rate).unwrap())
                    });
                    r.catch_up(store).await.unwrap()
                }
            };
            assert_eq!(m.events_handled, EVENTS as u64);
        });
        start.elapsed().as_secs_f64() * 1e3
    };
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (mut none, mut every, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..PAIRS {
        let a = run(None);
        let b = run(Some(1000));
        none.push(a);
        every.push(b);
        ratios.push(b / a);
    }
    println!(
        "PAIRED catch_up none vs every_1000 ({PAIRS} interleaved pairs): medians {:.1} ms and \
         {:.1} ms, median per-pair ratio {:.3}",
        median(none),
        median(every),
        median(ratios)
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);

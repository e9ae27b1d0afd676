//! In-memory store reads over 1M events: the type/tag index against a scan.
//!
//! Workload: 1,000,000 events, ~110-byte JSON payloads, types `stock.added` / `stock.picked`
//! alternating over 10,000 products (tag `product:P{n}`), plus 10 `stock.audited` events
//! spread evenly (the rare type) and one product, `P-OLD`, tagged only in the first 100
//! events (the far-back match). Measured:
//! - `rare_type_forward`: all 10 `stock.audited` events, via the index;
//! - `latest_far_back`: backwards, limit 1, `stock.added` + `product:P-OLD`, via the index;
//! - `..._scan`: the same answers computed by filtering every event (what an unindexed store
//!   does), as the baseline.
//!
//!
//! Run: `cargo bench --bench memory_store`.

use criterion::{Criterion, criterion_group, criterion_main};
use krescent::prelude::*;
use krescent::{NewEvent, RecordedEvent};

const EVENTS: usize = 1_000_000;

fn event(ty: &str, product: &str, i: usize) -> NewEvent {
    let payload = format!(
        r#"{{"product":"{product}","quantity":{},"note":"bench payload padding 0123456789"}}"#,
        i % 97
    );
    NewEvent::new(
        ty,
        Tags::from_tags([Tag::new("product", product).unwrap()]),
        payload.into_bytes(),
    )
    .unwrap()
}

fn fill(rt: &tokio::runtime::Runtime) -> InMemoryEventStore {
    let store = InMemoryEventStore::new();
    rt.block_on(async {
        let mut batch = Vec::with_capacity(10_000);
        for i in 0..EVENTS {
            let e = if i < 100 && i % 10 == 0 {
                event("stock.added", "P-OLD", i)
            } else if i % (EVENTS / 10) == 5 {
                event("stock.audited", &format!("P{}", i % 10_000), i)
            } else if i % 2 == 0 {
                event("stock.added", &format!("P{}", i % 10_000), i)
            } else {
                event("stock.picked", &format!("P{}", i % 10_000), i)
            };
            batch.push(e);
            if batch.len() == 10_000 {
                store
                    .append(std::mem::take(&mut batch), None)
                    .await
                    .unwrap();
            }
        }
        store.append(batch, None).await.unwrap();
    });
    store
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let store = fill(&rt);
    let old = Tag::new("product", "P-OLD").unwrap();
    let rare = EventQuery::item(QueryItem::types(["stock.audited"]));
    let far_back = EventQuery::item(QueryItem::types(["stock.added"]).and_tag(old.clone()))
        .backward()
        .limit(1)
        .unwrap();
    assert_eq!(rt.block_on(store.read(&rare)).unwrap().len(), 10);
    assert_eq!(rt.block_on(store.read(&far_back)).unwrap()[0].position, 91);
    let all: Vec<RecordedEvent> = rt.block_on(store.read(&EventQuery::match_all())).unwrap();

    let mut g = c.benchmark_group("memory_store_1M");
    g.sample_size(20);
    g.bench_function("rare_type_forward", |b| {
        b.iter(|| rt.block_on(store.read(&rare)).unwrap().len())
    });
    g.bench_function("rare_type_forward_scan", |b| {
        b.iter(|| {
            all.iter()
                .filter(|e| &*e.event_type == "stock.audited")
                .count()
        })
    });
    g.bench_function("latest_far_back", |b| {
        b.iter(|| rt.block_on(store.read(&far_back)).unwrap()[0].position)
    });
    g.bench_function("latest_far_back_scan", |b| {
        b.iter(|| {
            all.iter()
                .rev()
                .find(|e| &*e.event_type == "stock.added" && e.tags.contains(&old))
                .map(|e| e.position)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

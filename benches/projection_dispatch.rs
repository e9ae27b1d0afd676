//! Derive-generated dispatch against a hand-written `match` over the same events.
//!
//! Workload: 100,000 decoded `Recorded<StockEvent>` values (added / picked / counted / moved
//! in a fixed rotation, one product), folded into a stock level by
//! - `derive`: `#[derive(Projection)]` and its per-variant handlers;
//! - `hand_written`: a `Projection` implemented by hand with one `match` in `when`.
//!
//! Both must give the same level; the derive must cost no more than the hand-written code.
//!
//! Run: `cargo bench --bench projection_dispatch`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use krescent::prelude::*;
use krescent::{HandlerError, RecordedEvent};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
#[krescent(catalog = "bench")]
pub enum StockEvent {
    #[krescent(name = "stock.added")]
    Added {
        #[krescent(tag)]
        product: String,
        quantity: i64,
    },
    #[krescent(name = "stock.picked")]
    Picked {
        #[krescent(tag)]
        product: String,
        quantity: i64,
    },
    #[krescent(name = "stock.counted")]
    Counted {
        #[krescent(tag)]
        product: String,
        counted: i64,
    },
    #[krescent(name = "stock.moved")]
    Moved(Moved),
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Moved {
    product: String,
    quantity: i64,
}

#[derive(Projection, Default)]
#[krescent(events = StockEvent, handles(Added, Picked, Moved), savepoint(Counted),
           tags(product = self.product))]
pub struct Derived {
    product: String,
    level: i64,
}

impl Derived {
    fn on_added(&mut self, _p: &String, q: &i64) {
        self.level += q;
    }
    fn on_picked(&mut self, _p: &String, q: &i64) -> Result<(), HandlerError> {
        self.level -= q;
        Ok(())
    }
    fn on_counted(&mut self, _p: &String, c: &i64) {
        self.level = *c;
    }
    fn on_moved(&mut self, m: &Moved) {
        self.level -= m.quantity;
    }
}

#[derive(Default)]
pub struct HandWritten {
    product: String,
    level: i64,
}

impl Projection for HandWritten {
    type Event = StockEvent;
    fn init_query(&self) -> Option<EventQuery> {
        None
    }
    fn event_query(&self) -> EventQuery {
        EventQuery::item(
            QueryItem::of::<StockEvent>().and_tag(Tag::new("product", &self.product).unwrap()),
        )
    }
    fn when(&mut self, event: &Recorded<StockEvent>) -> Result<(), HandlerError> {
        match &event.data {
            StockEvent::Added { quantity, .. } => self.level += quantity,
            StockEvent::Picked { quantity, .. } => self.level -= quantity,
            StockEvent::Counted { counted, .. } => self.level = *counted,
            StockEvent::Moved(m) => self.level -= m.quantity,
        }
        Ok(())
    }
}

fn events(n: usize) -> Vec<Recorded<StockEvent>> {
    (0..n)
        .map(|i| {
            let product = "P".to_string();
            let data = match i % 10 {
                0..=3 => StockEvent::Added {
                    product,
                    quantity: (i % 7) as i64,
                },
                4..=7 => StockEvent::Picked {
                    product,
                    quantity: (i % 5) as i64,
                },
                8 => StockEvent::Moved(Moved {
                    product,
                    quantity: 1,
                }),
                _ => StockEvent::Counted {
                    product,
                    counted: (i % 1000) as i64,
                },
            };
            RecordedEvent {
                position: i as u64 + 1,
                id: uuid::Uuid::now_v7(),
                event_type: data.event_type().as_str().into(),
                tags: data.tags(),
                timestamp: chrono::Utc::now(),
                data: Default::default(),
            }
            .with_data(data)
        })
        .collect()
}

fn fold<P: Projection<Event = StockEvent>>(p: &mut P, events: &[Recorded<StockEvent>]) {
    for e in events {
        p.when(black_box(e)).unwrap();
    }
}

fn bench(c: &mut Criterion) {
    let events = events(100_000);
    let (mut d, mut h) = (Derived::default(), HandWritten::default());
    fold(&mut d, &events);
    fold(&mut h, &events);
    assert_eq!(d.level, h.level, "both projections agree");

    let mut g = c.benchmark_group("dispatch_100k");
    g.bench_function("derive", |b| {
        b.iter(|| {
            let mut p = Derived::default();
            fold(&mut p, &events);
            p.level
        })
    });
    g.bench_function("hand_written", |b| {
        b.iter(|| {
            let mut p = HandWritten::default();
            fold(&mut p, &events);
            p.level
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! The savepoint walkthrough of the design, literally, on product `WIDGET-42`.

use krescent::prelude::*;
use krescent::projection::{Projector, ProjectorMetrics};

use krescent_core::testing::fixtures::StockEvent;

#[derive(Projection, Debug)]
#[krescent(events = StockEvent, handles(Added, Picked), savepoint(Counted),
           tags(product = self.product), meta(Added, Picked, Counted))]
pub struct StockLevel {
    product: String,
    level: i64,
    seen: Vec<u64>,
}

impl StockLevel {
    fn new(product: &str) -> Self {
        StockLevel {
            product: product.into(),
            level: 0,
            seen: Vec::new(),
        }
    }
    fn on_added(&mut self, product: &String, q: &i64, meta: &Recorded<StockEvent>) {
        assert_eq!(
            product, &self.product,
            "another product reached the projection"
        );
        self.level += q;
        self.seen.push(meta.position);
    }
    fn on_picked(&mut self, product: &String, q: &i64, meta: &Recorded<StockEvent>) {
        assert_eq!(
            product, &self.product,
            "another product reached the projection"
        );
        self.level -= q;
        self.seen.push(meta.position);
    }
    fn on_counted(&mut self, product: &String, c: &i64, meta: &Recorded<StockEvent>) {
        assert_eq!(
            product, &self.product,
            "another product reached the projection"
        );
        self.level = *c;
        self.seen.push(meta.position);
    }
}

const W: &str = "WIDGET-42";
use StockEvent::*;

fn added(p: &str, quantity: i64) -> StockEvent {
    Added {
        product: p.into(),
        quantity,
    }
}
fn picked(p: &str, quantity: i64) -> StockEvent {
    Picked {
        product: p.into(),
        quantity,
    }
}
fn counted(p: &str, counted: i64) -> StockEvent {
    Counted {
        product: p.into(),
        counted,
    }
}

async fn fresh(store: &InMemoryEventStore) -> (StockLevel, ProjectorMetrics) {
    let mut level = StockLevel::new(W);
    let metrics = Projector::from(store)
        .towards(&mut level)
        .build()
        .await
        .unwrap()
        .run()
        .await
        .unwrap();
    (level, metrics)
}

#[tokio::test]
async fn walkthrough() {
    let store = InMemoryEventStore::new();
    store
        .append_events(
            &[
                added(W, 100),
                picked(W, 10),
                added("OTHER", 7),
                picked(W, 5),
                added(W, 50),
                picked(W, 20),
            ],
            None,
        )
        .await
        .unwrap();

    // No savepoint: the init query finds nothing, the event query replays everything.
    let (level, m) = fresh(&store).await;
    assert_eq!(level.level, 115);
    assert_eq!(m.events_handled, 5);
    assert_eq!(m.queries_done, 2, "init query + one short batch");
    assert_eq!(
        level.seen,
        [1, 2, 4, 5, 6],
        "the other product's event never arrives"
    );

    store
        .append_events(&[counted(W, 115), added(W, 30), picked(W, 12)], None)
        .await
        .unwrap();
    let (level, m) = fresh(&store).await;
    assert_eq!(level.level, 133);
    assert_eq!(m.events_handled, 3);
    assert_eq!(m.queries_done, 2);
    assert_eq!(level.seen, [7, 8, 9], "only the savepoint and the delta");
    assert_eq!(m.last_position, Some(9));

    store
        .append_events(
            &[
                counted(W, 133),
                counted("OTHER", 1),
                added("OTHER", 3),
                picked(W, 3),
            ],
            None,
        )
        .await
        .unwrap();
    let (level, m) = fresh(&store).await;
    assert_eq!(level.level, 130);
    assert_eq!(m.events_handled, 2);
    assert_eq!(level.seen, [10, 13]);
}

#[tokio::test]
async fn a_wrong_savepoint_is_fixed_by_appending_a_corrected_one() {
    let store = InMemoryEventStore::new();
    store
        .append_events(&[added(W, 10), counted(W, 999), picked(W, 1)], None)
        .await
        .unwrap();
    assert_eq!(fresh(&store).await.0.level, 998);
    store.append_events(&[counted(W, 9)], None).await.unwrap();
    let (level, m) = fresh(&store).await;
    assert_eq!(level.level, 9);
    // The wrong savepoint is a savepoint type: the event query never processes it.
    assert_eq!(m.events_handled, 1);
}

#[tokio::test]
async fn the_same_projector_run_twice_skips_the_init_query() {
    let store = InMemoryEventStore::new();
    store
        .append_events(&[added(W, 10), counted(W, 8), picked(W, 1)], None)
        .await
        .unwrap();
    let mut level = StockLevel::new(W);
    let mut projector = Projector::from(&store)
        .towards(&mut level)
        .build()
        .await
        .unwrap();
    let first = projector.run().await.unwrap();
    assert_eq!((first.events_handled, first.queries_done), (2, 2));

    store
        .append_events(&[counted(W, 100), added(W, 5)], None)
        .await
        .unwrap();
    let second = projector.run().await.unwrap();
    // Only the event query, only the new movement: the new savepoint is not processed.
    assert_eq!((second.events_handled, second.queries_done), (1, 1));
    let total = projector.total_metrics();
    assert_eq!((total.events_handled, total.queries_done), (3, 3));
    drop(projector);
    assert_eq!(level.level, 12);
    assert_eq!(level.seen, [2, 3, 5]);
}

//! The savepoint walkthrough: a projection created on the fly jumps to the latest
//! `StockCounted` of its product and processes only the movements after it.
//!
//! Run with `cargo run --example stock_savepoint`. The events live in a SQLite file (the
//! embedded default store; a fresh file in a temporary directory, removed at the end). Each
//! step prints the level a brand-new projection reaches and the projector's metrics: 115/5,
//! then 133/3/2, then 130/2.

use krescent::SqliteEventStore;
use krescent::prelude::*;
use krescent::projection::Projector;

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
#[krescent(catalog = "warehouse", revision = 1)]
pub enum StockEvent {
    #[krescent(name = "stock.added")]
    StockAdded {
        #[krescent(tag)]
        product: String,
        quantity: i64,
    },
    #[krescent(name = "stock.picked")]
    StockPicked {
        #[krescent(tag)]
        product: String,
        quantity: i64,
    },
    /// The savepoint: a physical count of the stock.
    #[krescent(name = "stock.counted")]
    StockCounted {
        #[krescent(tag)]
        product: String,
        counted: i64,
    },
}

/// The stock level of one product.
#[derive(Projection, Debug)]
#[krescent(events = StockEvent, handles(StockAdded, StockPicked), savepoint(StockCounted),
           tags(product = self.product))]
pub struct StockLevel {
    product: String,
    level: i64,
}

impl StockLevel {
    fn new(product: &str) -> Self {
        StockLevel {
            product: product.into(),
            level: 0,
        }
    }
    fn on_stock_added(&mut self, _product: &str, quantity: &i64) {
        self.level += quantity;
    }
    fn on_stock_picked(&mut self, _product: &str, quantity: &i64) {
        self.level -= quantity;
    }
    fn on_stock_counted(&mut self, _product: &str, counted: &i64) {
        self.level = *counted;
    }
}

use StockEvent::*;

const WIDGET: &str = "WIDGET-42";

fn added(product: &str, quantity: i64) -> StockEvent {
    StockAdded {
        product: product.into(),
        quantity,
    }
}
fn picked(product: &str, quantity: i64) -> StockEvent {
    StockPicked {
        product: product.into(),
        quantity,
    }
}
fn counted(product: &str, counted: i64) -> StockEvent {
    StockCounted {
        product: product.into(),
        counted,
    }
}

/// A new projection, run once to the head.
async fn project(
    store: &SqliteEventStore,
    step: &str,
) -> Result<StockLevel, Box<dyn std::error::Error>> {
    let mut level = StockLevel::new(WIDGET);
    let metrics = Projector::from(store)
        .towards(&mut level)
        .build()
        .await?
        .run()
        .await?;
    println!(
        "{step}: level {} ({} events handled, {} queries, last position {:?})",
        level.level, metrics.events_handled, metrics.queries_done, metrics.last_position
    );
    Ok(level)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("warehouse.db");
    let store = SqliteEventStore::open(&path).await?;
    println!("events stored in {}", path.display());

    store
        .append_events(
            &[
                added(WIDGET, 100),
                picked(WIDGET, 10),
                added("GADGET-7", 999),
                picked(WIDGET, 5),
                added(WIDGET, 50),
                picked(WIDGET, 20),
            ],
            None,
        )
        .await?;
    let level = project(&store, "1. no savepoint yet, full replay").await?;
    assert_eq!(level.level, 115);

    store
        .append_events(
            &[counted(WIDGET, 115), added(WIDGET, 30), picked(WIDGET, 12)],
            None,
        )
        .await?;
    let level = project(&store, "2. from StockCounted 115").await?;
    assert_eq!(level.level, 133);

    store
        .append_events(
            &[
                counted(WIDGET, 133),
                counted("GADGET-7", 1),
                picked(WIDGET, 3),
            ],
            None,
        )
        .await?;
    let level = project(&store, "3. from StockCounted 133").await?;
    assert_eq!(level.level, 130);
    Ok(())
}

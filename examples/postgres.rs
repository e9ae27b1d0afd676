//! The stock model of `stock_savepoint` on PostgreSQL, with two processes sharing the store.
//!
//! Run with `cargo run --example postgres --features postgres`. It connects to
//! `KRESCENT_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`) and uses tables
//! with a prefix of its own (`krescent_example_<pid>_`), dropped at the end.
//!
//! 1. This process starts a read model of every product's level, streaming live (woken by
//!    LISTEN/NOTIFY) with a checkpoint after every event in PostgreSQL.
//! 2. It starts a second process (this program with the argument `writer`) that appends
//!    movements and counts to the same store, in three rounds.
//! 3. When the writer is done, the read model has seen every event; it stops, writing a
//!    final checkpoint. A brand-new savepoint projection then starts from the latest count and
//!    handles only the two movements after it, and a restarted read model restores its
//!    checkpoint and handles nothing.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use krescent::checkpoint::{Always, CheckpointStorage};
use krescent::prelude::*;
use krescent::projection::Projector;
use krescent::{PostgresCheckpointStorage, PostgresEventStore, PostgresOptions};
use tokio_util::sync::CancellationToken;

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

use StockEvent::*;

/// The stock level of one product, from its latest count on.
#[derive(Projection, Debug)]
#[krescent(events = StockEvent, handles(StockAdded, StockPicked), savepoint(StockCounted),
           tags(product = self.product))]
pub struct StockLevel {
    product: String,
    level: i64,
}

impl StockLevel {
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

/// Every product's level: a long-lived read model with checkpoints.
#[derive(ReadModel, CheckpointSupport, Default, Debug)]
#[krescent(name = "warehouse.levels", version = 1, events = StockEvent,
           handles(StockAdded, StockPicked, StockCounted))]
pub struct StockLevels {
    levels: BTreeMap<String, i64>,
}

impl StockLevels {
    fn on_stock_added(&mut self, product: &str, quantity: &i64) {
        *self.levels.entry(product.to_owned()).or_default() += quantity;
    }
    fn on_stock_picked(&mut self, product: &str, quantity: &i64) {
        *self.levels.entry(product.to_owned()).or_default() -= quantity;
    }
    fn on_stock_counted(&mut self, product: &str, counted: &i64) {
        self.levels.insert(product.to_owned(), *counted);
    }
}

const WIDGET: &str = "WIDGET-42";
const GADGET: &str = "GADGET-7";

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

type Error = Box<dyn std::error::Error + Send + Sync>;

fn url() -> String {
    std::env::var("KRESCENT_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

async fn connect(prefix: &str) -> Result<PostgresEventStore, Error> {
    let url = url();
    PostgresEventStore::connect(&url, PostgresOptions::default().table_prefix(prefix))
        .await
        .map_err(|e| {
            format!(
                "cannot use PostgreSQL at {url}: {e}\n\
                 (start a server or point KRESCENT_POSTGRES_URL at one)"
            )
            .into()
        })
}

/// The second process: appends three rounds of events to the shared store.
async fn writer(prefix: &str) -> Result<(), Error> {
    let store = connect(prefix).await?;
    let rounds = [
        vec![
            added(WIDGET, 100),
            picked(WIDGET, 10),
            added(GADGET, 999),
            picked(WIDGET, 5),
            added(WIDGET, 50),
            picked(WIDGET, 20),
        ],
        vec![counted(WIDGET, 115), added(WIDGET, 30), picked(WIDGET, 12)],
        vec![counted(WIDGET, 133), counted(GADGET, 1), picked(WIDGET, 3)],
    ];
    for round in &rounds {
        store.append_events(round, None).await?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "writer (pid {}): appended {} events; head {}",
        std::process::id(),
        rounds.iter().map(Vec::len).sum::<usize>(),
        store.head().await?
    );
    Ok(())
}

/// Waits until the model's checkpoint reaches `head`.
async fn wait_for_checkpoint(storage: &PostgresCheckpointStorage, head: u64) -> Result<(), Error> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reached = storage
            .load(StockLevels::NAME)
            .await?
            .map_or(0, |c| c.position);
        if reached >= head {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("the read model reached only position {reached} of {head}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn coordinator(prefix: &str) -> Result<(), Error> {
    let store = connect(prefix).await?;
    let storage = store.checkpoint_storage();
    println!("reader (pid {}): tables {prefix}*", std::process::id());

    // 1. The live read model.
    let shutdown = CancellationToken::new();
    let live = tokio::spawn({
        let (store, storage, shutdown) = (store.clone(), storage.clone(), shutdown.clone());
        async move {
            let mut runner = StockLevels::default()
                .configure(|c| c.use_checkpoints(storage, Always.on_shutdown()));
            let metrics = runner.stream(&store, shutdown).await?;
            Ok::<_, Error>((runner.into_model(), metrics))
        }
    });

    // 2. The second process.
    let exe = std::env::current_exe()?;
    let prefix_arg = prefix.to_owned();
    let status = tokio::task::spawn_blocking(move || {
        std::process::Command::new(exe)
            .args(["writer", &prefix_arg])
            .status()
    })
    .await??;
    if !status.success() {
        shutdown.cancel();
        return Err(format!("the writer process failed: {status}").into());
    }

    // 3. Everything the writer appended reaches the live model.
    let head = store.head().await?;
    wait_for_checkpoint(&storage, head).await?;
    shutdown.cancel();
    let (model, metrics) = live.await??;
    println!(
        "reader: live model handled {} events, {} checkpoints; levels {:?}",
        metrics.events_handled, metrics.checkpoints_written, model.levels
    );
    assert_eq!(model.levels[WIDGET], 130);
    assert_eq!(model.levels[GADGET], 1);

    let mut level = StockLevel {
        product: WIDGET.into(),
        level: 0,
    };
    let m = Projector::from(&store)
        .towards(&mut level)
        .build()
        .await?
        .run()
        .await?;
    println!(
        "reader: a new {WIDGET} projection starts at the latest count: level {} ({} events handled)",
        level.level, m.events_handled
    );
    assert_eq!((level.level, m.events_handled), (130, 2));

    let mut restarted = StockLevels::default().configure(|c| c.use_checkpoints(storage, Always));
    let m = restarted.catch_up(&store).await?;
    println!(
        "reader: a restarted model restored position {:?} and handled {} events; levels {:?}",
        m.restored_from,
        m.events_handled,
        restarted.model().levels
    );
    assert_eq!((m.restored_from, m.events_handled), (Some(head), 0));
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [role, prefix] = args.as_slice() {
        if role == "writer" {
            return writer(prefix).await;
        }
    }
    let prefix = format!("krescent_example_{}_", std::process::id());
    let result = coordinator(&prefix).await;
    if let Ok(store) = connect(&prefix).await {
        store.drop_tables().await?;
    }
    result
}

//! Appends the stock movements of the savepoint design and finds the latest `StockCounted`
//! of one product with a backwards, limit-1 query.
//!
//! Run with `cargo run --example warehouse`.

use krescent::prelude::*;

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
    /// The savepoint: a counted stock level.
    #[krescent(name = "stock.counted")]
    StockCounted {
        #[krescent(tag)]
        product: String,
        counted: i64,
    },
}

use StockEvent::*;

fn product(p: &str) -> String {
    p.to_owned()
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = InMemoryEventStore::new();
    let w = "WIDGET-42";
    let history = [
        StockAdded {
            product: product(w),
            quantity: 100,
        },
        StockPicked {
            product: product(w),
            quantity: 10,
        },
        StockAdded {
            product: product("GADGET-7"),
            quantity: 40,
        },
        StockPicked {
            product: product(w),
            quantity: 5,
        },
        StockCounted {
            product: product(w),
            counted: 85,
        },
        StockAdded {
            product: product(w),
            quantity: 50,
        },
        StockCounted {
            product: product("GADGET-7"),
            counted: 39,
        },
        StockPicked {
            product: product(w),
            quantity: 20,
        },
        StockCounted {
            product: product(w),
            counted: 115,
        },
        StockAdded {
            product: product(w),
            quantity: 30,
        },
    ];
    let recorded = store.append_events(&history, None).await?;
    println!(
        "appended {} events, head at {}",
        recorded.len(),
        store.head().await?
    );

    // The init query of a savepoint projection: latest `stock.counted` for this product.
    let latest_count = EventQuery::item(
        QueryItem::types([StockEvent::STOCK_COUNTED]).and_tag(Tag::new("product", w)?),
    )
    .backward()
    .limit(1)?;
    let found = store.read_events::<StockEvent>(&latest_count).await?;
    match found.first() {
        Some(savepoint) => {
            if let StockCounted { counted, .. } = &savepoint.data {
                println!(
                    "latest StockCounted for {w}: {counted} at position {} ({})",
                    savepoint.position, savepoint.timestamp
                );
            }
            // The delta after the savepoint: the movements a projection would still process.
            let delta = EventQuery::item(
                QueryItem::types([StockEvent::STOCK_ADDED, StockEvent::STOCK_PICKED])
                    .and_tag(Tag::new("product", w)?),
            )
            .after(savepoint.position);
            let delta = store.read_events::<StockEvent>(&delta).await?;
            println!("{} movement(s) after the savepoint:", delta.len());
            for e in &delta {
                println!("  #{} {:?}", e.position, e.data);
            }
        }
        None => println!("no StockCounted for {w} yet"),
    }
    Ok(())
}

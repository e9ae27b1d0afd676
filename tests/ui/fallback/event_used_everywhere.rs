// One mistake in an event enum's attributes is reported once: the enum still implements
// `Event` (a stub beside the error), so the projection over it, the append and the type-name
// constant add no "not implemented" errors of their own.
use krescent::prelude::*;
use krescent::projection::Projector;

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
#[krescent(catalog = "warehouse")]
pub enum StockEvent {
    #[krescent(name = "stock.added")]
    Added {
        #[krescent(tagg)]
        product: String,
        quantity: i64,
    },
    #[krescent(name = "stock.counted")]
    Counted {
        #[krescent(tag)]
        product: String,
        counted: i64,
    },
}

#[derive(Projection, Debug)]
#[krescent(events = StockEvent, handles(Added), savepoint(Counted),
           tags(product = self.product))]
pub struct StockLevel {
    product: String,
    level: i64,
}

impl StockLevel {
    fn on_added(&mut self, _product: &String, quantity: &i64) {
        self.level += quantity;
    }
    fn on_counted(&mut self, _product: &String, counted: &i64) {
        self.level = *counted;
    }
}

async fn uses(store: &InMemoryEventStore) {
    let added = StockEvent::Added {
        product: "WIDGET-42".into(),
        quantity: 3,
    };
    store.append_events(&[added], None).await.ok();
    let _name: EventType = StockEvent::ADDED;
    let mut level = StockLevel {
        product: "WIDGET-42".into(),
        level: 0,
    };
    let _ = Projector::from(store).towards(&mut level).build().await;
}

fn main() {
    let _ = uses;
}

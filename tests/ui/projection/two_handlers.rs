use krescent::prelude::*;

#[derive(Event, Serialize, Deserialize)]
pub enum StockEvent {
    Added {
        #[krescent(tag)]
        product: String,
        quantity: i64,
    },
    Counted {
        #[krescent(tag)]
        product: String,
        counted: i64,
    },
}

#[derive(Projection)]
#[krescent(events = StockEvent, handles(Counted = a), savepoint(Counted = b))]
pub struct Level {
    level: i64,
}

fn main() {}

use krescent::prelude::*;

#[derive(Event, Serialize, Deserialize)]
pub enum StockEvent {
    Added {
        #[krescent(tag)]
        product: String,
        #[krescent(tag)]
        site: String,
        quantity: i64,
    },
}

#[derive(Projection)]
#[krescent(events = StockEvent, handles(Added), tags(product = "a\0b", site = 'x'))]
pub struct Level {
    level: i64,
}

fn main() {}

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
#[krescent(events = StockEvent, handles(Added), tags(product = self.sku))]
pub struct Level {
    product: String,
    level: i64,
}

impl Level {
    fn on_added(&mut self, _p: &String, q: &i64) {
        self.level += q;
    }
}

fn main() {}

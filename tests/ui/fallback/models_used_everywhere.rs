// One mistake in the attributes of a projection, a read model or a checkpointed struct is
// reported once: each still implements its trait (a stub beside the error), so running it or
// nesting it adds no "not implemented" errors of their own.
use krescent::prelude::*;
use krescent::projection::Projector;

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
#[krescent(catalog = "books")]
pub enum BookEvent {
    #[krescent(name = "book.added")]
    Added {
        #[krescent(tag)]
        isbn: String,
    },
}

#[derive(Projection, Debug)]
#[krescent(events = BookEvent, handles(Added), colour = "red")]
pub struct Count {
    n: u32,
}

impl Count {
    fn on_added(&mut self, _isbn: &String) {
        self.n += 1;
    }
}

#[derive(ReadModel, CheckpointSupport, Default)]
#[krescent(name = "books available", events = BookEvent, handles(Added))]
pub struct Available {
    n: u32,
    #[krescent(nested)]
    shelf: Shelf,
}

impl Available {
    fn on_added(&mut self, _isbn: &String) {
        self.n += 1;
    }
}

#[derive(CheckpointSupport, Default, Clone)]
pub struct Shelf {
    #[krescent(rename = "")]
    books: u32,
}

async fn uses(store: &InMemoryEventStore) {
    let mut count = Count { n: 0 };
    let _ = Projector::from(store).towards(&mut count).build().await;
    let mut runner = Available::default().runner();
    let _ = runner.catch_up(store).await;
}

fn main() {
    let _ = uses;
}

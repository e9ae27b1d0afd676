use krescent::prelude::*;

#[derive(Event, Serialize, Deserialize)]
pub enum BookEvent {
    Added {
        #[krescent(tag)]
        isbn: String,
    },
}

#[derive(ReadModel, CheckpointSupport, Default)]
#[krescent(name = "books", version = "one", events = BookEvent, handles(Added))]
struct Books {
    n: u32,
}

fn main() {}

use krescent::prelude::*;

#[derive(Event, Serialize, Deserialize)]
pub enum BookEvent {
    Added {
        #[krescent(tag)]
        isbn: String,
    },
}

#[derive(ReadModel, CheckpointSupport, Default)]
#[krescent(name = "books", events = BookEvent, handles(Added))]
struct Books {
    n: u32,
}

impl Books {
    fn on_added(&mut self, _isbn: &String) -> u32 {
        self.n += 1;
        self.n
    }
}

fn main() {}

use krescent::prelude::*;

#[derive(Event, Serialize, Deserialize)]
pub enum BookEvent {
    Added {
        #[krescent(tag)]
        isbn: String,
    },
}

#[derive(ReadModel, Default)]
#[krescent(name = "books", events = BookEvent, handles(Added))]
struct Books {
    n: u32,
}

impl Books {
    fn on_added(&mut self, _isbn: &String) {
        self.n += 1;
    }
}

fn main() {}

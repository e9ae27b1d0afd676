use krescent::prelude::*;

#[derive(Serialize, Deserialize)]
struct Location {
    x: i32,
}

#[derive(Event, Serialize, Deserialize)]
enum E {
    Moved {
        #[krescent(tag)]
        to: Location,
    },
}
fn main() {}

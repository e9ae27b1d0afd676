use krescent::prelude::*;

#[derive(Event, Serialize, Deserialize)]
enum E {
    Moved(i32, i32),
}
fn main() {}

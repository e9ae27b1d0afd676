use krescent::prelude::*;

#[derive(Event, Serialize, Deserialize)]
enum E<T> {
    Happened(T),
}
fn main() {}

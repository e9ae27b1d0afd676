use krescent::prelude::*;

#[derive(Event, Serialize, Deserialize)]
enum E {
    A(#[krescent(tag)] u32),
}
fn main() {}

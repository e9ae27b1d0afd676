use krescent::prelude::*;

#[derive(Event)]
enum E {
    Happened { id: u32 },
}
fn main() {}

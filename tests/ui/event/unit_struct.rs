use krescent::prelude::*;

#[derive(Event)]
struct Unit;
fn main() {}

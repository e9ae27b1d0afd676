use krescent::prelude::*;

#[derive(Event, Serialize, Deserialize)]
enum E {}
fn main() {}

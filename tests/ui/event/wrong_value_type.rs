use krescent::prelude::*;

#[derive(Event, Serialize, Deserialize)]
#[krescent(catalog = 7)]
enum E {
    A,
}
fn main() {}

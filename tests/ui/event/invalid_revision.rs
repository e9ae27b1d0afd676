use krescent::prelude::*;

#[derive(Event, Serialize, Deserialize)]
#[krescent(revision = -1)]
enum E {
    A,
}
fn main() {}

use krescent::prelude::*;

#[derive(Event, Serialize, Deserialize)]
#[krescent(catalog = "my catalog")]
enum E {
    A,
}
fn main() {}

use krescent::prelude::*;

#[derive(Event, Serialize, Deserialize)]
enum E {
    A {
        #[krescent(tag = "id")]
        first: u32,
        #[krescent(tag = "id")]
        second: u32,
    },
}
fn main() {}

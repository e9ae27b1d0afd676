use krescent::prelude::*;

#[derive(Event, Serialize, Deserialize)]
enum E {
    A {
        #[krescent(tag = "product:id")]
        id: u32,
    },
}
fn main() {}

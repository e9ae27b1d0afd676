use krescent::prelude::*;

#[derive(Event, Serialize, Deserialize)]
#[krescent(catalog = "c")]
#[krescent(catalog = "d")]
enum E {
    #[krescent(name = "e.a", name = "e.b")]
    A {
        #[krescent(tag, tag = "x")]
        id: u32,
    },
}
fn main() {}

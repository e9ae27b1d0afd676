use krescent::prelude::*;

#[derive(Event, Serialize, Deserialize)]
enum E {
    #[krescent(tags(id))]
    A { id: u32 },
}
fn main() {}

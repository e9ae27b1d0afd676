use krescent::prelude::*;

#[derive(Event, Serialize, Deserialize)]
#[serde(tag = "type")]
enum E {
    A { id: u32 },
}
fn main() {}

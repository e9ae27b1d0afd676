use krescent::prelude::*;

#[derive(Event, Serialize, Deserialize)]
enum E {
    A,
    #[serde(skip)]
    B,
}
fn main() {}

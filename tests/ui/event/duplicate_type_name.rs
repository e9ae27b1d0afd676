use krescent::prelude::*;

#[derive(Event, Serialize, Deserialize)]
enum E {
    #[krescent(name = "e.happened")]
    A,
    #[krescent(name = "e.happened")]
    B,
}
fn main() {}

use krescent::prelude::*;

#[derive(Event, Serialize, Deserialize)]
enum E {
    #[krescent(name = "stock added")]
    A,
    #[krescent(name = "")]
    B,
}
fn main() {}

use krescent::prelude::*;

#[derive(Serialize, Deserialize)]
struct Added {
    product: String,
}

#[derive(Event, Serialize, Deserialize)]
enum E {
    #[krescent(tags(prodcut))]
    A(Added),
}
fn main() {}

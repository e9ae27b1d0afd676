use krescent::prelude::*;

#[derive(Event, Serialize, Deserialize)]
#[krescent(catalog = "c", colour = "red")]
enum E {
    #[krescent(nme = "e.a")]
    A {
        #[krescent(tagg)]
        id: u32,
    },
}
fn main() {}

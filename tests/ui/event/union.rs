use krescent::prelude::*;

#[derive(Event)]
union U {
    a: u32,
    b: f32,
}
fn main() {}

use krescent::prelude::*;

#[derive(CheckpointSupport, Default)]
struct S {
    x: u32,
    #[krescent(rename = "x")]
    y: u32,
}

fn main() {}

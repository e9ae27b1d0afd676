use krescent::prelude::*;

#[derive(CheckpointSupport, Default)]
#[krescent(nmae = "x")]
struct S {
    x: u32,
}

fn main() {}

use krescent::prelude::*;

#[derive(CheckpointSupport, Default)]
struct S {
    #[krescent(skip, rename = "y")]
    x: u32,
}

fn main() {}

use krescent::prelude::*;

#[derive(CheckpointSupport, Default)]
struct S {
    #[krescent(binery)]
    x: u32,
}

fn main() {}

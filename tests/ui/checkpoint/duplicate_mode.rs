use krescent::prelude::*;

#[derive(CheckpointSupport, Default)]
struct S {
    #[krescent(binary, skip)]
    x: u32,
}

fn main() {}

use krescent::prelude::*;

#[derive(CheckpointSupport)]
enum E {
    A,
}

fn main() {}

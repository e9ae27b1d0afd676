use krescent::prelude::*;

struct Opaque;

#[derive(CheckpointSupport)]
struct S {
    x: Opaque,
}

fn main() {}

use krescent::prelude::*;

#[derive(Clone, Default)]
struct Plain {
    x: u32,
}

#[derive(CheckpointSupport, Default)]
struct S {
    #[krescent(nested)]
    inner: Plain,
}

fn main() {}

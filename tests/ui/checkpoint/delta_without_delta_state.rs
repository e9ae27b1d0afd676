use std::collections::HashMap;

use krescent::prelude::*;

#[derive(CheckpointSupport, Default)]
struct S {
    #[krescent(delta)]
    counts: HashMap<String, i64>,
}

fn main() {}

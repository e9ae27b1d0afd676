//! `#[derive(CheckpointSupport)]`: field encodings, renames, skips, nesting, atomic restore
//! and the shape fingerprint.

use std::collections::{BTreeMap, HashMap};

use krescent::checkpoint::{CheckpointBucket, CheckpointError, CheckpointValue};
use krescent::prelude::*;

#[derive(CheckpointSupport, Clone, Default, Debug, PartialEq)]
struct Extension {
    table: String,
    revision: u32,
}

#[derive(CheckpointSupport, Default, Debug, PartialEq)]
struct Model {
    flag: bool,
    small: i8,
    count: u64,
    signed: i64,
    size: usize,
    ratio: f32,
    name: String,
    map: BTreeMap<String, u32>,
    #[krescent(binary)]
    packed: Vec<(u16, i64)>,
    #[krescent(rename = "ext")]
    #[krescent(nested)]
    extension: Extension,
    #[krescent(skip)]
    cache: Option<String>,
}

fn sample() -> Model {
    Model {
        flag: true,
        small: -5,
        count: u64::MAX,
        signed: i64::MIN,
        size: 42,
        ratio: 0.25,
        name: "shelf".into(),
        map: BTreeMap::from([("a".into(), 1), ("b".into(), 2)]),
        packed: vec![(1, -1), (2, 2)],
        extension: Extension {
            table: "t_books_v3".into(),
            revision: 3,
        },
        cache: Some("warm".into()),
    }
}

#[test]
fn fields_are_stored_by_kind() {
    let mut b = CheckpointBucket::new();
    sample().create_checkpoint(&mut b).unwrap();
    assert!(b.bool("flag").unwrap());
    assert_eq!(b.i64("small").unwrap(), -5);
    assert_eq!(b.u64("count").unwrap(), u64::MAX);
    assert_eq!(b.i64("signed").unwrap(), i64::MIN);
    assert_eq!(b.u64("size").unwrap(), 42);
    assert_eq!(b.f64("ratio").unwrap(), 0.25);
    assert_eq!(b.str("name").unwrap(), "shelf");
    assert_eq!(b.json("map").unwrap(), &serde_json::json!({"a": 1, "b": 2}));
    assert!(matches!(b.get("packed"), Some(CheckpointValue::Bytes(_))));
    assert_eq!(b.bucket("ext").unwrap().str("table").unwrap(), "t_books_v3");
    assert!(!b.contains("cache") && !b.contains("extension"));
    assert_eq!(b.len(), 10);
}

#[test]
fn restore_round_trips_and_resets_skipped_fields() {
    let mut b = CheckpointBucket::new();
    sample().create_checkpoint(&mut b).unwrap();
    // Through the binary encoding too.
    let b = CheckpointBucket::decode(&b.encode().unwrap()).unwrap();
    let mut m = Model {
        cache: Some("stale".into()),
        ..Model::default()
    };
    m.restore_checkpoint(&b).unwrap();
    assert_eq!(
        m,
        Model {
            cache: None,
            ..sample()
        }
    );
}

#[test]
fn a_failed_restore_changes_nothing() {
    let mut b = CheckpointBucket::new();
    sample().create_checkpoint(&mut b).unwrap();
    b.put_i64("small", 1000); // does not fit an i8
    let mut m = Model::default();
    let err = m.restore_checkpoint(&b).unwrap_err();
    assert!(
        matches!(err, CheckpointError::OutOfRange { ref key, .. } if key == "small"),
        "{err}"
    );
    assert_eq!(m, Model::default());

    let mut b2 = CheckpointBucket::new();
    sample().create_checkpoint(&mut b2).unwrap();
    b2.remove("name");
    let err = m.restore_checkpoint(&b2).unwrap_err();
    assert!(err.to_string().contains("`name`"), "{err}");
    assert_eq!(m, Model::default());

    b2 = CheckpointBucket::new();
    sample().create_checkpoint(&mut b2).unwrap();
    b2.put_bytes("packed", vec![0xff; 3]);
    assert!(matches!(
        m.restore_checkpoint(&b2),
        Err(CheckpointError::Binary { .. })
    ));
    assert_eq!(m, Model::default());
}

#[test]
fn shape_changes_with_fields() {
    #[derive(CheckpointSupport, Default)]
    struct A {
        x: u32,
        y: String,
    }
    #[derive(CheckpointSupport, Default)]
    struct SameAsA {
        x: u32,
        y: String,
        #[krescent(skip)]
        _ignored: HashMap<u8, u8>,
    }
    #[derive(CheckpointSupport, Default)]
    struct Retyped {
        x: u64,
        y: String,
    }
    #[derive(CheckpointSupport, Default)]
    struct Renamed {
        #[krescent(rename = "z")]
        x: u32,
        y: String,
    }
    #[derive(CheckpointSupport, Default)]
    struct Binary {
        #[krescent(binary)]
        x: u32,
        y: String,
    }
    #[derive(CheckpointSupport, Default)]
    struct Added {
        x: u32,
        y: String,
        z: bool,
    }
    assert_eq!(
        A::SHAPE,
        SameAsA::SHAPE,
        "skipped fields do not count, names of types do not"
    );
    for other in [Retyped::SHAPE, Renamed::SHAPE, Binary::SHAPE, Added::SHAPE] {
        assert_ne!(A::SHAPE, other);
    }
    // A nested extension's shape is part of its owner's.
    #[derive(CheckpointSupport, Default, Clone)]
    struct Ext2 {
        table: String,
        revision: u64,
    }
    #[derive(CheckpointSupport, Default)]
    struct Owner1 {
        #[krescent(nested)]
        e: Extension,
    }
    #[derive(CheckpointSupport, Default)]
    struct Owner2 {
        #[krescent(nested)]
        e: Ext2,
    }
    assert_ne!(Extension::SHAPE, Ext2::SHAPE);
    assert_ne!(Owner1::SHAPE, Owner2::SHAPE);
}

#[test]
fn tuple_structs_use_indices() {
    #[derive(CheckpointSupport, Default, Debug, PartialEq)]
    struct Pair(u32, String);
    let mut b = CheckpointBucket::new();
    Pair(7, "x".into()).create_checkpoint(&mut b).unwrap();
    assert_eq!(b.u64("0").unwrap(), 7);
    let mut p = Pair::default();
    p.restore_checkpoint(&b).unwrap();
    assert_eq!(p, Pair(7, "x".into()));
}

//! `CheckpointBucket`: typed access, the binary encoding (round trips, the fixed layout, every
//! corruption the decoder reports) and robustness of the decoder against arbitrary bytes.

use krescent_core::checkpoint::{
    BucketError, CheckpointBucket, CheckpointValue, Corruption, KeyError, ValueKind, codec,
};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// Helpers

/// CRC-32 (IEEE), bit by bit: independent of the table-driven one in the library.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFF_u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Wraps `body` in a valid header and checksum, so the decoder gets past them.
fn seal(body: &[u8]) -> Vec<u8> {
    let mut out = b"KRCB\x01".to_vec();
    out.extend_from_slice(&u32::try_from(body.len()).unwrap().to_le_bytes());
    out.extend_from_slice(body);
    let crc = crc32(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// The body of an encoding (between header and checksum).
fn body_of(encoded: &[u8]) -> &[u8] {
    &encoded[9..encoded.len() - 4]
}

fn le32(n: u32) -> [u8; 4] {
    n.to_le_bytes()
}

/// A body with the given entries, each already encoded as `key_len key tag value`.
fn body(entries: &[&[u8]]) -> Vec<u8> {
    let mut out = le32(u32::try_from(entries.len()).unwrap()).to_vec();
    for e in entries {
        out.extend_from_slice(e);
    }
    out
}

/// An entry `key tag value`.
fn entry(key: &str, tag: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![u8::try_from(key.len()).unwrap()];
    out.extend_from_slice(key.as_bytes());
    out.push(tag);
    out.extend_from_slice(value);
    out
}

/// A length-prefixed value.
fn prefixed(bytes: &[u8]) -> Vec<u8> {
    let mut out = le32(u32::try_from(bytes.len()).unwrap()).to_vec();
    out.extend_from_slice(bytes);
    out
}

/// Decodes and expects a corruption; returns offset and reason.
fn corruption(bytes: &[u8]) -> (usize, Corruption) {
    match CheckpointBucket::decode(bytes) {
        Err(BucketError::Corrupt { offset, reason }) => (offset, reason),
        other => panic!("expected a corruption error, got {other:?}"),
    }
}

/// Decodes a sealed body with one entry and expects a corruption.
fn entry_corruption(entry: &[u8]) -> (usize, Corruption) {
    corruption(&seal(&body(&[entry])))
}

fn round_trip(bucket: &CheckpointBucket) -> CheckpointBucket {
    let bytes = bucket.encode().expect("encode");
    let decoded = CheckpointBucket::decode(&bytes).expect("decode");
    assert_eq!(&decoded, bucket);
    assert_eq!(decoded.encode().unwrap(), bytes, "re-encoding differs");
    decoded
}

/// A bucket with every kind of value.
fn sample() -> CheckpointBucket {
    let mut inner = CheckpointBucket::new();
    inner.put_u64("x", 1);
    let mut b = CheckpointBucket::new();
    b.put_bool("a", true)
        .put_i64("b", -2)
        .put_u64("c", 3)
        .put_f64("d", 1.5)
        .put_str("e", "hé")
        .put_bytes("f", vec![0x00, 0xff])
        .put_json("g", json!({ "k": [null, true, -1, 2, 0.5, "s"] }))
        .put_bucket("h", inner);
    b
}

/// `levels` buckets nested inside `root`.
fn nested_buckets(levels: usize) -> CheckpointBucket {
    let mut b = CheckpointBucket::new().with("leaf", true);
    for _ in 0..levels {
        b = CheckpointBucket::new().with("n", b);
    }
    b
}

fn nested_arrays(levels: usize) -> Value {
    let mut v = Value::Null;
    for _ in 0..levels {
        v = Value::Array(vec![v]);
    }
    v
}

// ---------------------------------------------------------------------------------------------
// Typed access

#[test]
fn bucket_types_are_send_sync_and_errors_are_std_errors() {
    fn send_sync<T: Send + Sync + 'static>() {}
    fn error<T: std::error::Error + Send + Sync + 'static>() {}
    send_sync::<CheckpointBucket>();
    send_sync::<CheckpointValue>();
    error::<BucketError>();
    error::<Corruption>();
    error::<KeyError>();
}

#[test]
fn getters_return_what_setters_stored() {
    let b = sample();
    assert!(b.bool("a").unwrap());
    assert_eq!(b.i64("b").unwrap(), -2);
    assert_eq!(b.u64("c").unwrap(), 3);
    assert_eq!(b.f64("d").unwrap(), 1.5);
    assert_eq!(b.str("e").unwrap(), "hé");
    assert_eq!(b.bytes("f").unwrap(), &[0x00, 0xff]);
    assert_eq!(b.json("g").unwrap()["k"][3], json!(2));
    assert_eq!(b.bucket("h").unwrap().u64("x").unwrap(), 1);
    assert_eq!(b.get("c"), Some(&CheckpointValue::U64(3)));
    assert_eq!(b.get("zz"), None);
    assert_eq!(b.len(), 8);
    assert!(!b.is_empty());
    assert!(b.contains("a") && !b.contains("A"));
}

#[test]
fn kinds_have_names() {
    let b = sample();
    let kinds: Vec<String> = b.iter().map(|(_, v)| v.kind().to_string()).collect();
    assert_eq!(
        kinds,
        [
            "bool", "i64", "u64", "f64", "string", "bytes", "json", "bucket"
        ]
    );
    assert_eq!(ValueKind::Json.as_str(), "json");
}

#[test]
fn generic_put_converts_common_types() {
    let b = CheckpointBucket::new()
        .with("int", 5)
        .with("i64", -5_i64)
        .with("u32", 5_u32)
        .with("u64", u64::MAX)
        .with("f32", 0.5_f32)
        .with("str", "s")
        .with("string", String::from("t"))
        .with("slice", &b"ab"[..])
        .with("vec", vec![1_u8])
        .with("json", json!([1]))
        .with("bool", false);
    assert_eq!(b.i64("int").unwrap(), 5);
    assert_eq!(b.i64("i64").unwrap(), -5);
    assert_eq!(b.u64("u32").unwrap(), 5);
    assert_eq!(b.u64("u64").unwrap(), u64::MAX);
    assert_eq!(b.f64("f32").unwrap(), 0.5);
    assert_eq!(b.str("str").unwrap(), "s");
    assert_eq!(b.str("string").unwrap(), "t");
    assert_eq!(b.bytes("slice").unwrap(), b"ab");
    assert_eq!(b.bytes("vec").unwrap(), [1]);
    assert_eq!(b.json("json").unwrap(), &json!([1]));
    assert!(!b.bool("bool").unwrap());
}

#[test]
fn put_replaces_and_remove_takes_out() {
    let mut b = CheckpointBucket::new();
    b.put_i64("k", 1).put_str("k", "now a string");
    assert_eq!(b.len(), 1);
    assert_eq!(b.str("k").unwrap(), "now a string");
    assert_eq!(
        b.remove("k"),
        Some(CheckpointValue::String("now a string".into()))
    );
    assert_eq!(b.remove("k"), None);
    assert!(b.is_empty());
}

#[test]
fn iteration_is_in_key_byte_order() {
    let b: CheckpointBucket = [("b", 2), ("a", 1), ("B", 0), ("ä", 3), ("aa", 4)]
        .into_iter()
        .collect();
    let keys: Vec<&str> = b.keys().collect();
    assert_eq!(keys, ["B", "a", "aa", "b", "ä"]);
    let pairs: Vec<(&str, i64)> = b.iter().map(|(k, v)| (k, v.as_i64().unwrap())).collect();
    assert_eq!(pairs, [("B", 0), ("a", 1), ("aa", 4), ("b", 2), ("ä", 3)]);
    assert_eq!(b.iter().next_back().unwrap().0, "ä");
    let owned: Vec<String> = b.into_iter().map(|(k, _)| k).collect();
    assert_eq!(owned, ["B", "a", "aa", "b", "ä"]);
}

#[test]
fn missing_key_error_names_the_key() {
    let err = CheckpointBucket::new().i64("position").unwrap_err();
    assert!(matches!(&err, BucketError::MissingKey { key } if key == "position"));
    assert_eq!(err.to_string(), "checkpoint bucket has no key `position`");
}

#[test]
fn wrong_type_error_names_key_and_both_kinds() {
    let b = sample();
    let err = b.u64("b").unwrap_err();
    assert!(matches!(
        &err,
        BucketError::WrongType { key, expected: ValueKind::U64, found: ValueKind::I64 } if key == "b"
    ));
    assert_eq!(
        err.to_string(),
        "checkpoint bucket key `b` holds a value of kind i64, not u64"
    );
    // Every getter is strict about the kind.
    assert!(matches!(b.bool("c"), Err(BucketError::WrongType { .. })));
    assert!(matches!(b.i64("c"), Err(BucketError::WrongType { .. })));
    assert!(matches!(b.f64("b"), Err(BucketError::WrongType { .. })));
    assert!(matches!(b.str("f"), Err(BucketError::WrongType { .. })));
    assert!(matches!(b.bytes("e"), Err(BucketError::WrongType { .. })));
    assert!(matches!(b.json("h"), Err(BucketError::WrongType { .. })));
    assert!(matches!(b.bucket("g"), Err(BucketError::WrongType { .. })));
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Cursor {
    stream: String,
    position: u64,
    ratio: f64,
}

#[test]
fn serde_values_round_trip_through_json() {
    let cursor = Cursor {
        stream: "orders".into(),
        position: u64::MAX,
        ratio: 1.234_567_890_123_456_7e-300,
    };
    let mut b = CheckpointBucket::new();
    b.put_serde("cursor", &cursor).unwrap();
    assert_eq!(b.get("cursor").unwrap().kind(), ValueKind::Json);
    let decoded = round_trip(&b);
    assert_eq!(decoded.serde::<Cursor>("cursor").unwrap(), cursor);
}

#[test]
fn serde_errors_name_the_key() {
    let mut b = CheckpointBucket::new();
    b.put_json("cursor", json!({ "stream": 1 })).put_i64("n", 1);
    let err = b.serde::<Cursor>("cursor").unwrap_err();
    assert!(matches!(&err, BucketError::Json { key, .. } if key == "cursor"));
    assert!(
        err.to_string()
            .starts_with("cannot convert checkpoint bucket key `cursor` with serde:"),
        "{err}"
    );
    assert!(matches!(
        b.serde::<i64>("n"),
        Err(BucketError::WrongType {
            expected: ValueKind::Json,
            found: ValueKind::I64,
            ..
        })
    ));
    assert!(matches!(
        b.serde::<i64>("none"),
        Err(BucketError::MissingKey { .. })
    ));

    let mut map = std::collections::BTreeMap::new();
    map.insert((1, 2), 3);
    let err = b.put_serde("map", &map).unwrap_err();
    assert!(matches!(&err, BucketError::Json { key, .. } if key == "map"));
    assert!(!b.contains("map"));
}

#[test]
fn float_equality_is_bitwise() {
    let nan = CheckpointValue::F64(f64::NAN);
    assert_eq!(nan, nan.clone());
    assert_ne!(CheckpointValue::F64(0.0), CheckpointValue::F64(-0.0));
    assert_ne!(
        CheckpointValue::F64(f64::NAN),
        CheckpointValue::F64(f64::from_bits(f64::NAN.to_bits() | 1))
    );
    assert_ne!(CheckpointValue::I64(1), CheckpointValue::U64(1));
}

// ---------------------------------------------------------------------------------------------
// Round trips

#[test]
fn every_kind_round_trips() {
    round_trip(&sample());
}

#[test]
fn empty_bucket_round_trips_and_has_a_fixed_encoding() {
    let bytes = round_trip(&CheckpointBucket::new()).encode().unwrap();
    let mut expected = b"KRCB\x01\x04\x00\x00\x00\x00\x00\x00\x00".to_vec();
    expected.extend_from_slice(&crc32(&expected).to_le_bytes());
    assert_eq!(bytes, expected);
}

#[test]
fn special_floats_keep_their_bits() {
    let payload_nan = f64::from_bits(0x7ff8_dead_beef_0001);
    let negative_nan = f64::from_bits(0xfff0_0000_0000_0001);
    let b = CheckpointBucket::new()
        .with("nan", f64::NAN)
        .with("payload_nan", payload_nan)
        .with("negative_nan", negative_nan)
        .with("inf", f64::INFINITY)
        .with("-inf", f64::NEG_INFINITY)
        .with("-0", -0.0)
        .with("min_positive", f64::from_bits(1))
        .with("max", f64::MAX);
    let d = round_trip(&b);
    assert_eq!(
        d.f64("payload_nan").unwrap().to_bits(),
        payload_nan.to_bits()
    );
    assert_eq!(
        d.f64("negative_nan").unwrap().to_bits(),
        negative_nan.to_bits()
    );
    assert!(d.f64("-0").unwrap().is_sign_negative());
    assert_eq!(d.f64("inf").unwrap(), f64::INFINITY);
}

#[test]
fn extreme_and_large_values_round_trip() {
    let big_json = Value::Array((0..10_000).map(|i| json!({ "i": i, "s": "x" })).collect());
    let b = CheckpointBucket::new()
        .with("i64_min", i64::MIN)
        .with("i64_max", i64::MAX)
        .with("u64_max", u64::MAX)
        .with("u64_zero", 0_u64)
        .with("big_bytes", vec![0xa5_u8; 1 << 20])
        .with("big_string", "ü".repeat(1 << 19))
        .with("empty_string", "")
        .with("empty_bytes", Vec::<u8>::new())
        .with("big_json", big_json)
        .with("k".repeat(255), "longest key")
        .with("empty_bucket", CheckpointBucket::new());
    round_trip(&b);
}

#[test]
fn json_numbers_round_trip_exactly() {
    // Each of these reads back differently through serde_json's default text parser; the
    // binary JSON encoding keeps them exact.
    let floats = [
        1.071_566_039_146_582_6e-75,
        -1.819_967_304_027_17e-179,
        -1.603_964_615_428_183e143,
        -0.0,
        f64::MAX,
        f64::MIN_POSITIVE,
        5e-324,
    ];
    let value = json!({
        "floats": floats,
        "ints": [i64::MIN, -1, 0, u64::MAX],
        "float_one": 1.0,
        "int_one": 1,
    });
    let d = round_trip(&CheckpointBucket::new().with("j", value.clone()));
    let back = d.json("j").unwrap();
    for (a, b) in floats.iter().zip(back["floats"].as_array().unwrap()) {
        assert_eq!(a.to_bits(), b.as_f64().unwrap().to_bits());
    }
    assert!(back["float_one"].is_f64());
    assert!(back["int_one"].is_u64());
}

#[test]
fn nesting_up_to_the_limits_round_trips() {
    round_trip(&nested_buckets(CheckpointBucket::MAX_DEPTH));
    // Both limits at once: the deepest recursion the decoder can be made to do.
    let mut deepest =
        CheckpointBucket::new().with("j", nested_arrays(CheckpointBucket::MAX_JSON_DEPTH));
    for _ in 0..CheckpointBucket::MAX_DEPTH {
        deepest = CheckpointBucket::new().with("n", deepest);
    }
    round_trip(&deepest);
    round_trip(&CheckpointBucket::new().with("j", nested_arrays(CheckpointBucket::MAX_JSON_DEPTH)));
}

// ---------------------------------------------------------------------------------------------
// Encoding: the fixed layout and encode errors

#[test]
fn golden_encoding_of_every_kind() {
    #[rustfmt::skip]
    let body: &[u8] = &[
        0x08, 0x00, 0x00, 0x00,                                     // 8 entries
        0x01, b'a', 0x01, 0x01,                                     // "a" bool true
        0x01, b'b', 0x02, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // "b" i64 -2
        0x01, b'c', 0x03, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // "c" u64 3
        0x01, b'd', 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xf8, 0x3f, // "d" f64 1.5
        0x01, b'e', 0x05, 0x03, 0x00, 0x00, 0x00, b'h', 0xc3, 0xa9, // "e" string "hé"
        0x01, b'f', 0x06, 0x02, 0x00, 0x00, 0x00, 0x00, 0xff,       // "f" bytes 00 ff
        0x01, b'g', 0x07, 0x32, 0x00, 0x00, 0x00,                   // "g" json, 50 bytes:
            0x08, 0x01, 0x00, 0x00, 0x00,                           //   object, 1 member
            0x01, 0x00, 0x00, 0x00, b'k',                           //   "k":
            0x07, 0x06, 0x00, 0x00, 0x00,                           //   array, 6 items
            0x00,                                                   //     null
            0x02,                                                   //     true
            0x04, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,   //     -1
            0x03, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,   //     2
            0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xe0, 0x3f,   //     0.5
            0x06, 0x01, 0x00, 0x00, 0x00, b's',                     //     "s"
        0x01, b'h', 0x08, 0x0f, 0x00, 0x00, 0x00,                   // "h" bucket, 15 bytes:
            0x01, 0x00, 0x00, 0x00,                                 //   1 entry
            0x01, b'x', 0x03, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // "x" u64 1
    ];
    let mut expected = b"KRCB".to_vec();
    expected.push(0x01); // version
    expected.extend_from_slice(&[0x8b, 0x00, 0x00, 0x00]); // body length 139
    expected.extend_from_slice(body);
    expected.extend_from_slice(&[0xb0, 0x58, 0x4a, 0x05]); // CRC-32 0x054a58b0
    assert_eq!(body.len(), 139);
    assert_eq!(crc32(&expected[..expected.len() - 4]), 0x054a_58b0);

    let encoded = sample().encode().unwrap();
    assert_eq!(encoded, expected);
    assert_eq!(CheckpointBucket::decode(&expected).unwrap(), sample());
    assert_eq!(codec::MAGIC, *b"KRCB");
    assert_eq!(codec::FORMAT_VERSION, 1);
}

#[test]
fn json_object_keys_are_encoded_sorted() {
    let b = CheckpointBucket::new().with("j", json!({ "b": 1, "a": 2 }));
    let bytes = b.encode().unwrap();
    let body = body_of(&bytes);
    let a = body
        .windows(5)
        .position(|w| w == [1, 0, 0, 0, b'a'])
        .unwrap();
    let b_pos = body
        .windows(5)
        .position(|w| w == [1, 0, 0, 0, b'b'])
        .unwrap();
    assert!(a < b_pos);
}

#[test]
fn empty_key_is_rejected_at_encode() {
    let err = CheckpointBucket::new().with("", 1).encode().unwrap_err();
    assert!(matches!(
        &err,
        BucketError::InvalidKey { path, reason: KeyError::Empty } if path == &[""]
    ));
    assert_eq!(
        err.to_string(),
        "invalid checkpoint bucket key ``: keys may not be empty"
    );
}

#[test]
fn key_longer_than_255_bytes_is_rejected_at_encode_with_its_path() {
    let long = "é".repeat(128); // 256 bytes
    let b = CheckpointBucket::new().with("outer", CheckpointBucket::new().with(long.clone(), 1));
    let err = b.encode().unwrap_err();
    assert!(matches!(
        &err,
        BucketError::InvalidKey { path, reason: KeyError::TooLong { len: 256, max: 255 } }
            if path == &["outer".to_owned(), long.clone()]
    ));
    let message = err.to_string();
    assert!(
        message.starts_with("invalid checkpoint bucket key `outer`.`éééé"),
        "{message}"
    );
    assert!(message.ends_with("…`: the key is 256 bytes long; keys may be at most 255 bytes"));
}

#[test]
fn nesting_beyond_the_limits_is_rejected_at_encode() {
    let err = nested_buckets(CheckpointBucket::MAX_DEPTH + 1)
        .encode()
        .unwrap_err();
    assert!(
        matches!(&err, BucketError::TooDeep { path, limit: 64 } if path.len() == 65),
        "{err:?}"
    );
    let b = CheckpointBucket::new().with("j", nested_arrays(CheckpointBucket::MAX_JSON_DEPTH + 1));
    let err = b.encode().unwrap_err();
    assert!(matches!(&err, BucketError::TooDeep { path, limit: 128 } if path == &["j"]));
    assert_eq!(
        err.to_string(),
        "checkpoint bucket value `j` nests deeper than the 128 levels the format allows"
    );
}

// ---------------------------------------------------------------------------------------------
// Decoding: each corruption

#[test]
fn wrong_magic() {
    let mut bytes = sample().encode().unwrap();
    bytes[3] = b'X';
    let (offset, reason) = corruption(&bytes);
    assert_eq!(offset, 0);
    assert_eq!(
        reason,
        Corruption::BadMagic {
            found: b"KRCX".to_vec()
        }
    );
    assert_eq!(
        corruption(b"{}"),
        (
            0,
            Corruption::BadMagic {
                found: b"{}".to_vec()
            }
        )
    );
    let err = CheckpointBucket::decode(b"PK\x03\x04").unwrap_err();
    assert_eq!(
        err.to_string(),
        "corrupt checkpoint bucket at byte 0: the input does not start with the magic bytes \
         `KRCB` (found [50, 4b, 03, 04])"
    );
}

#[test]
fn unknown_version() {
    let mut bytes = sample().encode().unwrap();
    bytes[4] = 2;
    assert_eq!(
        corruption(&bytes),
        (
            4,
            Corruption::UnsupportedVersion {
                found: 2,
                supported: 1
            }
        )
    );
}

#[test]
fn empty_and_short_inputs_are_truncated() {
    for len in [0, 3, 4, 5, 8] {
        let bytes = &sample().encode().unwrap()[..len];
        let (offset, reason) = corruption(bytes);
        assert_eq!(offset, 0, "len {len}");
        assert_eq!(
            reason,
            Corruption::Truncated {
                what: "the header".into(),
                needed: 9,
                available: len
            }
        );
    }
}

#[test]
fn truncated_input() {
    let bytes = sample().encode().unwrap();
    let cut = &bytes[..bytes.len() - 1];
    assert_eq!(
        corruption(cut),
        (
            9,
            Corruption::Truncated {
                what: "the body and checksum".into(),
                needed: 143,
                available: 142
            }
        )
    );
}

#[test]
fn trailing_bytes() {
    let mut bytes = sample().encode().unwrap();
    let len = bytes.len();
    bytes.extend_from_slice(b"xyz");
    assert_eq!(
        corruption(&bytes),
        (
            len,
            Corruption::TrailingBytes {
                what: "the checksum".into(),
                count: 3
            }
        )
    );
}

#[test]
fn bad_checksum() {
    let mut bytes = sample().encode().unwrap();
    // The 'h' of the string "hé" (header 9 + count 4 + a 4 + b, c, d 33 + e's key, tag, len 7).
    assert_eq!(bytes[57], b'h');
    bytes[57] = b'H';
    let (offset, reason) = corruption(&bytes);
    assert_eq!(offset, bytes.len() - 4);
    assert!(matches!(
        reason,
        Corruption::ChecksumMismatch { stored: 0x054a_58b0, computed } if computed == crc32(&bytes[..bytes.len() - 4])
    ));
    let mut bytes = sample().encode().unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x80;
    assert!(matches!(
        corruption(&bytes).1,
        Corruption::ChecksumMismatch { .. }
    ));
}

#[test]
fn truncated_entries_inside_the_body() {
    // The count claims two entries, only one follows.
    let mut b = body(&[&entry("a", 0x01, &[1])]);
    b[0] = 2;
    assert_eq!(
        corruption(&seal(&b)),
        (
            17,
            Corruption::Truncated {
                what: "a key length".into(),
                needed: 1,
                available: 0
            }
        )
    );
    // A u64 with only three bytes.
    assert_eq!(
        entry_corruption(&entry("n", 0x03, &[1, 2, 3])),
        (
            16,
            Corruption::Truncated {
                what: "the value of key `n`".into(),
                needed: 8,
                available: 3
            }
        )
    );
    // A key length beyond the body.
    assert_eq!(
        corruption(&seal(&[1, 0, 0, 0, 9, b'a'])),
        (
            14,
            Corruption::Truncated {
                what: "a key".into(),
                needed: 9,
                available: 1
            }
        )
    );
    // A body too short for its entry count.
    assert_eq!(
        corruption(&seal(&[1, 0])),
        (
            9,
            Corruption::Truncated {
                what: "the entry count".into(),
                needed: 4,
                available: 2
            }
        )
    );
}

#[test]
fn trailing_bytes_inside_the_body_and_nested_values() {
    let mut b = body(&[&entry("a", 0x01, &[1])]);
    b.push(0);
    assert_eq!(
        corruption(&seal(&b)),
        (
            17,
            Corruption::TrailingBytes {
                what: "the bucket's entries".into(),
                count: 1
            }
        )
    );
    // A nested bucket whose length covers one byte more than its entries.
    let nested = entry("n", 0x08, &prefixed(&[0, 0, 0, 0, 0xaa]));
    assert_eq!(
        entry_corruption(&nested),
        (
            24,
            Corruption::TrailingBytes {
                what: "the value of key `n`".into(),
                count: 1
            }
        )
    );
    // A JSON value followed by a stray byte within its length.
    let j = entry("j", 0x07, &prefixed(&[0x00, 0x00]));
    assert_eq!(
        entry_corruption(&j),
        (
            21,
            Corruption::TrailingBytes {
                what: "the value of key `j`".into(),
                count: 1
            }
        )
    );
}

#[test]
fn empty_key_and_invalid_utf8_key() {
    assert_eq!(
        corruption(&seal(&[1, 0, 0, 0, 0, 0x01, 0x01])),
        (13, Corruption::EmptyKey)
    );
    assert_eq!(
        corruption(&seal(&[1, 0, 0, 0, 1, 0xff, 0x01, 0x01])),
        (14, Corruption::KeyNotUtf8)
    );
}

#[test]
fn duplicate_and_unordered_keys() {
    let a = entry("a", 0x01, &[1]);
    let b = entry("b", 0x01, &[0]);
    assert_eq!(
        corruption(&seal(&body(&[&a, &a]))),
        (17, Corruption::DuplicateKey { key: "a".into() })
    );
    assert_eq!(
        corruption(&seal(&body(&[&b, &a]))),
        (
            17,
            Corruption::KeyOutOfOrder {
                key: "a".into(),
                previous: "b".into()
            }
        )
    );
    let err = CheckpointBucket::decode(&seal(&body(&[&a, &a]))).unwrap_err();
    assert_eq!(
        err.to_string(),
        "corrupt checkpoint bucket at byte 17: key `a` appears twice"
    );
}

#[test]
fn unknown_kind_tag() {
    for tag in [0x00, 0x09, 0xff] {
        assert_eq!(
            entry_corruption(&entry("k", tag, &[0; 8])),
            (
                15,
                Corruption::UnknownKind {
                    key: "k".into(),
                    tag
                }
            )
        );
    }
}

#[test]
fn invalid_bool() {
    assert_eq!(
        entry_corruption(&entry("k", 0x01, &[2])),
        (
            16,
            Corruption::InvalidBool {
                key: "k".into(),
                byte: 2
            }
        )
    );
}

#[test]
fn invalid_utf8_string() {
    assert_eq!(
        entry_corruption(&entry("s", 0x05, &prefixed(&[b'o', 0xc3]))),
        (20, Corruption::StringNotUtf8 { key: "s".into() })
    );
}

#[test]
fn invalid_json() {
    let cases: [(&[u8], usize, &str); 7] = [
        (&[0x09], 20, "unknown JSON tag 0x09"),
        (
            &[0x05, 0, 0, 0, 0, 0, 0, 0xf8, 0x7f],
            20,
            "the number NaN is not finite",
        ),
        (
            &[0x05, 0, 0, 0, 0, 0, 0, 0xf0, 0x7f],
            20,
            "the number inf is not finite",
        ),
        (
            &[0x04, 1, 0, 0, 0, 0, 0, 0, 0],
            20,
            "the non-negative integer 1 is tagged as negative",
        ),
        (&[0x06, 1, 0, 0, 0, 0xff], 25, "a string is not valid UTF-8"),
        (
            &[
                0x08, 2, 0, 0, 0, 1, 0, 0, 0, b'a', 0x00, 1, 0, 0, 0, b'a', 0x00,
            ],
            31,
            "the object key \"a\" appears twice",
        ),
        (
            &[
                0x08, 2, 0, 0, 0, 1, 0, 0, 0, b'b', 0x00, 1, 0, 0, 0, b'a', 0x00,
            ],
            31,
            "the object key \"a\" is out of order: it comes after \"b\"",
        ),
    ];
    for (json, offset, reason) in cases {
        assert_eq!(
            entry_corruption(&entry("j", 0x07, &prefixed(json))),
            (
                offset,
                Corruption::InvalidJson {
                    key: "j".into(),
                    reason: reason.into()
                }
            ),
            "{json:02x?}"
        );
    }
}

#[test]
fn nesting_beyond_the_limits_is_rejected_at_decode() {
    // 65 nested buckets, written by hand since the encoder refuses them.
    let mut inner = body(&[]);
    for _ in 0..=CheckpointBucket::MAX_DEPTH {
        inner = body(&[&entry("n", 0x08, &prefixed(&inner))]);
    }
    let (_, reason) = corruption(&seal(&inner));
    assert_eq!(
        reason,
        Corruption::BucketTooDeep {
            key: "n".into(),
            limit: 64
        }
    );

    // 129 nested JSON arrays.
    let mut json = vec![0x00];
    for _ in 0..=CheckpointBucket::MAX_JSON_DEPTH {
        let mut array = vec![0x07, 1, 0, 0, 0];
        array.extend_from_slice(&json);
        json = array;
    }
    let (_, reason) = entry_corruption(&entry("j", 0x07, &prefixed(&json)));
    assert_eq!(
        reason,
        Corruption::JsonTooDeep {
            key: "j".into(),
            limit: 128
        }
    );
}

#[test]
fn lengths_claiming_4_gib_are_rejected_without_allocating() {
    let huge = le32(u32::MAX);
    let truncated = |what: &str, available| Corruption::Truncated {
        what: what.into(),
        needed: u64::from(u32::MAX),
        available,
    };
    for (tag, what) in [
        (0x05, "the value of key `v`"),
        (0x06, "the value of key `v`"),
    ] {
        let mut value = huge.to_vec();
        value.extend_from_slice(b"abc");
        assert_eq!(
            entry_corruption(&entry("v", tag, &value)),
            (20, truncated(what, 3))
        );
    }
    for tag in [0x07, 0x08] {
        assert_eq!(
            entry_corruption(&entry("v", tag, &huge)),
            (20, truncated("the value of key `v`", 0))
        );
    }
    // Counts of 4 billion entries, array items or object members with nothing behind them.
    assert!(matches!(
        corruption(&seal(&huge)).1,
        Corruption::Truncated {
            needed: 1,
            available: 0,
            ..
        }
    ));
    for jtag in [0x07, 0x08] {
        let mut json = vec![jtag];
        json.extend_from_slice(&huge);
        assert!(matches!(
            entry_corruption(&entry("j", 0x07, &prefixed(&json))).1,
            Corruption::Truncated { available: 0, .. }
        ));
    }
    // A header claiming a 4 GiB body.
    let mut bytes = b"KRCB\x01".to_vec();
    bytes.extend_from_slice(&huge);
    assert_eq!(
        corruption(&bytes),
        (
            9,
            Corruption::Truncated {
                what: "the body and checksum".into(),
                needed: u64::from(u32::MAX) + 4,
                available: 0
            }
        )
    );
}

#[test]
fn every_single_byte_change_of_the_golden_encoding_is_handled() {
    // Every position, every value, with header length and checksum repaired so the entry
    // parser sees the change. Must never panic; whatever decodes must re-encode to itself.
    let encoded = sample().encode().unwrap();
    let body = body_of(&encoded).to_vec();
    let mut decoded_ok = 0;
    for i in 0..body.len() {
        for v in 0..=255_u8 {
            let mut mutated = body.clone();
            mutated[i] = v;
            let sealed = seal(&mutated);
            if let Ok(b) = CheckpointBucket::decode(&sealed) {
                assert_eq!(b.encode().unwrap(), sealed);
                decoded_ok += 1;
            }
        }
    }
    // Changes inside values (integers, floats, string bytes) decode to other buckets.
    assert!(decoded_ok > 1000, "{decoded_ok}");
    // Every truncation of the whole encoding and of the body.
    for len in 0..encoded.len() {
        assert!(CheckpointBucket::decode(&encoded[..len]).is_err());
        let _ = CheckpointBucket::decode(&seal(&body[..len.min(body.len())]));
    }
}

// ---------------------------------------------------------------------------------------------
// Human-readable rendering

#[test]
fn to_json_renders_every_kind() {
    let b = sample()
        .with("nan", f64::NAN)
        .with("inf", f64::INFINITY)
        .with("-inf", f64::NEG_INFINITY);
    assert_eq!(
        b.to_json(),
        json!({
            "a": true,
            "b": -2,
            "c": 3,
            "d": 1.5,
            "e": "hé",
            "f": { "$bytes": "00ff" },
            "g": { "k": [null, true, -1, 2, 0.5, "s"] },
            "h": { "x": 1 },
            "nan": "NaN",
            "inf": "inf",
            "-inf": "-inf",
        })
    );
    let shown = CheckpointBucket::new().with("n", 1).with("s", "x");
    assert_eq!(shown.to_string(), r#"{"n":1,"s":"x"}"#);
    assert_eq!(format!("{shown:#}"), "{\n  \"n\": 1,\n  \"s\": \"x\"\n}");
    assert_eq!(
        format!("{shown:?}"),
        r#"CheckpointBucket {"n": I64(1), "s": String("x")}"#
    );
}

// ---------------------------------------------------------------------------------------------
// Properties

fn arb_key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-e]{1,3}",
        1 => "\\PC{1,12}",
        1 => Just("k".repeat(255)),
    ]
}

fn arb_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<u64>().prop_map(f64::from_bits),
        Just(f64::NAN),
        Just(-0.0),
        Just(f64::INFINITY),
        any::<f64>(),
    ]
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<u64>()
            .prop_map(f64::from_bits)
            .prop_filter_map("finite", serde_json::Number::from_f64)
            .prop_map(Value::Number),
        "\\PC{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("\\PC{0,6}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn arb_scalar() -> impl Strategy<Value = CheckpointValue> {
    prop_oneof![
        any::<bool>().prop_map(CheckpointValue::Bool),
        any::<i64>().prop_map(CheckpointValue::I64),
        any::<u64>().prop_map(CheckpointValue::U64),
        arb_f64().prop_map(CheckpointValue::F64),
        "\\PC{0,16}".prop_map(CheckpointValue::String),
        prop::collection::vec(any::<u8>(), 0..24).prop_map(CheckpointValue::Bytes),
        arb_json().prop_map(CheckpointValue::Json),
    ]
}

fn arb_bucket() -> impl Strategy<Value = CheckpointBucket> {
    let flat = prop::collection::vec((arb_key(), arb_scalar()), 0..8)
        .prop_map(|entries| entries.into_iter().collect::<CheckpointBucket>());
    flat.prop_recursive(4, 64, 6, |inner| {
        prop::collection::vec(
            (
                arb_key(),
                prop_oneof![
                    2 => arb_scalar(),
                    1 => inner.prop_map(CheckpointValue::Bucket),
                ],
            ),
            0..8,
        )
        .prop_map(|entries| entries.into_iter().collect::<CheckpointBucket>())
    })
}

#[derive(Debug, Clone)]
enum Mutation {
    Set(prop::sample::Index, u8),
    Flip(prop::sample::Index, u8),
    Insert(prop::sample::Index, u8),
    Remove(prop::sample::Index),
    Truncate(prop::sample::Index),
}

fn arb_mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, v)| Mutation::Set(i, v)),
        (any::<prop::sample::Index>(), 0..8_u8).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, v)| Mutation::Insert(i, v)),
        any::<prop::sample::Index>().prop_map(Mutation::Remove),
        any::<prop::sample::Index>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(bytes: &mut Vec<u8>, mutation: &Mutation) {
    if bytes.is_empty() {
        return;
    }
    match mutation {
        Mutation::Set(i, v) => {
            let i = i.index(bytes.len());
            bytes[i] = *v;
        }
        Mutation::Flip(i, bit) => {
            let i = i.index(bytes.len());
            bytes[i] ^= 1 << bit;
        }
        Mutation::Insert(i, v) => bytes.insert(i.index(bytes.len() + 1), *v),
        Mutation::Remove(i) => {
            bytes.remove(i.index(bytes.len()));
        }
        Mutation::Truncate(i) => bytes.truncate(i.index(bytes.len())),
    }
}

/// Decodes without panicking; anything accepted must be canonical.
fn check_decode(bytes: &[u8]) {
    if let Ok(bucket) = CheckpointBucket::decode(bytes) {
        assert_eq!(bucket.encode().unwrap(), bytes);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn random_buckets_round_trip(bucket in arb_bucket()) {
        let bytes = bucket.encode().unwrap();
        let decoded = CheckpointBucket::decode(&bytes).unwrap();
        prop_assert_eq!(&decoded, &bucket);
        prop_assert_eq!(decoded.encode().unwrap(), bytes);
    }

    #[test]
    fn mutated_encodings_never_panic(
        bucket in arb_bucket(),
        mutations in prop::collection::vec(arb_mutation(), 1..4),
        reseal in any::<bool>(),
    ) {
        let encoded = bucket.encode().unwrap();
        let mut bytes = if reseal { body_of(&encoded).to_vec() } else { encoded };
        for m in &mutations {
            mutate(&mut bytes, m);
        }
        if reseal {
            bytes = seal(&bytes);
        }
        check_decode(&bytes);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 5000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..128)) {
        check_decode(&bytes);
        let mut prefixed = b"KRCB\x01".to_vec();
        prefixed.extend_from_slice(&bytes);
        check_decode(&prefixed);
        // Past the header and checksum: random entries.
        check_decode(&seal(&bytes));
        // Random entries behind a plausible entry count.
        let mut counted = vec![bytes.first().copied().unwrap_or(0) % 4, 0, 0, 0];
        counted.extend_from_slice(&bytes);
        check_decode(&seal(&counted));
    }
}

//! The binary encoding of a [`CheckpointBucket`]: stable, versioned and self-describing.
//!
//! [`CheckpointBucket::encode`] writes it and [`CheckpointBucket::decode`] reads it. The same
//! bucket always encodes to the same bytes, and the decoder accepts only what the encoder
//! writes, so bytes that decode successfully re-encode to themselves.
//!
//! # Layout, format version 1
//!
//! All integers are little-endian. `u32` lengths count bytes unless said otherwise.
//!
//! ```text
//! encoding  = magic version body_len body crc
//! magic     = "KRCB"                          4 bytes (4b 52 43 42)
//! version   = 0x01                            1 byte
//! body_len  = u32                             length of `body`
//! body      = count entry*                    the entries of one bucket
//! count     = u32                             number of entries
//! entry     = key_len key tag value
//! key_len   = u8                              1..=255
//! key       = key_len bytes of UTF-8          strictly ascending byte order within a body
//! crc       = u32                             CRC-32 (IEEE, as zlib and PNG) of all bytes
//!                                             before it, from `magic` to the end of `body`
//!
//! tag   kind     value
//! 0x01  bool     1 byte, 0x00 or 0x01
//! 0x02  i64      8 bytes, two's complement
//! 0x03  u64      8 bytes
//! 0x04  f64      8 bytes, the IEEE 754 bit pattern (NaN payloads, -0.0 kept)
//! 0x05  string   u32 length, then that many bytes of UTF-8
//! 0x06  bytes    u32 length, then that many bytes
//! 0x07  json     u32 length, then exactly that many bytes holding one `json` (below)
//! 0x08  bucket   u32 length, then exactly that many bytes holding one `body`
//! ```
//!
//! JSON values are stored as a tree rather than as JSON text, so that every number reads back
//! exactly as it was written:
//!
//! ```text
//! json  = jtag payload
//! 0x00  null
//! 0x01  false
//! 0x02  true
//! 0x03  number, integer >= 0: u64
//! 0x04  number, integer < 0:  i64 (must be negative)
//! 0x05  number, float:        f64 bit pattern (must be finite)
//! 0x06  string: u32 length, then UTF-8
//! 0x07  array:  u32 item count, then that many `json`
//! 0x08  object: u32 member count, then per member a u32 key length, the key in UTF-8, and
//!       a `json`; keys strictly ascending in byte order
//! ```
//!
//! Nested buckets may be at most [`CheckpointBucket::MAX_DEPTH`] levels deep and JSON arrays
//! and objects at most [`CheckpointBucket::MAX_JSON_DEPTH`] levels deep within one value.
//!
//! # Decoding untrusted bytes
//!
//! Decoding never panics. Every length is checked against the bytes that remain before
//! anything is allocated, and every item consumes at least one input byte, so memory use is
//! bounded by a small multiple of the input's length. The header is checked first (magic,
//! version, total length, checksum), then the entries. Each problem is reported as
//! [`BucketError::Corrupt`] with its byte offset and a [`Corruption`] that says what is wrong.
//!
//! A later format version changes the version byte; a decoder rejects versions it does not know
//! with [`Corruption::UnsupportedVersion`].

use std::cmp::Ordering;
use std::str;

use serde_json::{Map, Number, Value};

use super::bucket::{CheckpointBucket, CheckpointValue};
use super::error::{BucketError, Corruption, KeyError};

/// The four bytes every encoding starts with.
pub const MAGIC: [u8; 4] = *b"KRCB";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u8 = 1;

/// Length of magic, version and body length.
const HEADER_LEN: usize = 9;
/// Length of the trailing checksum.
const CRC_LEN: usize = 4;

mod tag {
    pub const BOOL: u8 = 0x01;
    pub const I64: u8 = 0x02;
    pub const U64: u8 = 0x03;
    pub const F64: u8 = 0x04;
    pub const STRING: u8 = 0x05;
    pub const BYTES: u8 = 0x06;
    pub const JSON: u8 = 0x07;
    pub const BUCKET: u8 = 0x08;
}

mod jtag {
    pub const NULL: u8 = 0x00;
    pub const FALSE: u8 = 0x01;
    pub const TRUE: u8 = 0x02;
    pub const UINT: u8 = 0x03;
    pub const NEG_INT: u8 = 0x04;
    pub const FLOAT: u8 = 0x05;
    pub const STRING: u8 = 0x06;
    pub const ARRAY: u8 = 0x07;
    pub const OBJECT: u8 = 0x08;
}

// ---------------------------------------------------------------------------------------------
// CRC-32

/// CRC-32 with the IEEE polynomial (reflected, initial value and final xor `0xFFFFFFFF`), the
/// checksum of zlib, gzip and PNG.
pub(crate) fn crc32(bytes: &[u8]) -> u32 {
    // The same checksum, computed with SIMD where the CPU has it (tens of GB/s instead of
    // hundreds of MB/s for a table per byte).
    crc32fast::hash(bytes)
}

// ---------------------------------------------------------------------------------------------
// Encoding

pub(crate) fn encode(bucket: &CheckpointBucket) -> Result<Vec<u8>, BucketError> {
    let mut w = Writer {
        out: Vec::with_capacity(16 + size_hint(bucket)),
        path: Vec::new(),
    };
    w.out.extend_from_slice(&MAGIC);
    w.out.push(FORMAT_VERSION);
    w.len_prefixed(|w| w.body(bucket, 0))?;
    Ok(w.finish())
}

/// Encodes `head` with one more entry, `key` holding the bucket `nested`, as if it were in
/// `head`, without copying `nested` into it. `key` must not be a key of `head`.
pub(crate) fn encode_with_nested(
    head: &CheckpointBucket,
    key: &str,
    nested: &CheckpointBucket,
) -> Result<Vec<u8>, BucketError> {
    let mut w = Writer {
        out: Vec::with_capacity(32 + key.len() + size_hint(head) + size_hint(nested)),
        path: Vec::new(),
    };
    w.out.extend_from_slice(&MAGIC);
    w.out.push(FORMAT_VERSION);
    w.len_prefixed(|w| {
        w.put_len(head.len() + 1)?;
        let mut pending = Some(nested);
        for (k, value) in head {
            if let Some(nested) = pending.filter(|_| key < k) {
                w.key(key)?;
                w.bucket(nested, 0)?;
                w.path.pop();
                pending = None;
            }
            w.key(k)?;
            w.value(value, 0)?;
            w.path.pop();
        }
        if let Some(nested) = pending {
            w.key(key)?;
            w.bucket(nested, 0)?;
            w.path.pop();
        }
        Ok(())
    })?;
    Ok(w.finish())
}

/// About the length of a bucket's encoding, to allocate the output once.
fn size_hint(bucket: &CheckpointBucket) -> usize {
    bucket
        .iter()
        .map(|(key, value)| {
            2 + key.len()
                + match value {
                    CheckpointValue::String(v) => 5 + v.len(),
                    CheckpointValue::Bytes(v) => 5 + v.len(),
                    CheckpointValue::Json(_) => 64,
                    CheckpointValue::Bucket(v) => 5 + size_hint(v),
                    _ => 9,
                }
        })
        .sum::<usize>()
        + 4
}

struct Writer<'b> {
    out: Vec<u8>,
    /// The keys from the outermost bucket to the value being written, for errors.
    path: Vec<&'b str>,
}

impl<'b> Writer<'b> {
    fn path(&self) -> Vec<String> {
        self.path.iter().map(|&k| k.to_owned()).collect()
    }

    fn u32_len(&self, len: usize) -> Result<u32, BucketError> {
        u32::try_from(len).map_err(|_| BucketError::TooLarge {
            path: self.path(),
            len,
        })
    }

    fn put_len(&mut self, len: usize) -> Result<(), BucketError> {
        let len = self.u32_len(len)?;
        self.out.extend_from_slice(&len.to_le_bytes());
        Ok(())
    }

    /// Writes a `u32` length, then what `write` writes, and sets the length to the bytes
    /// written.
    fn len_prefixed(
        &mut self,
        write: impl FnOnce(&mut Self) -> Result<(), BucketError>,
    ) -> Result<(), BucketError> {
        let at = self.out.len();
        self.out.extend_from_slice(&[0; 4]);
        write(self)?;
        let len = self.u32_len(self.out.len() - at - 4)?;
        if let Some(slot) = self.out.get_mut(at..at + 4) {
            slot.copy_from_slice(&len.to_le_bytes());
        }
        Ok(())
    }

    /// Appends the checksum of everything written and returns the encoding.
    fn finish(mut self) -> Vec<u8> {
        let crc = crc32(&self.out);
        self.out.extend_from_slice(&crc.to_le_bytes());
        self.out
    }

    fn body(&mut self, bucket: &'b CheckpointBucket, depth: usize) -> Result<(), BucketError> {
        self.put_len(bucket.len())?;
        for (key, value) in bucket {
            self.key(key)?;
            self.value(value, depth)?;
            self.path.pop();
        }
        Ok(())
    }

    /// Writes a key and pushes it on the path (the caller pops it after the value).
    fn key(&mut self, key: &'b str) -> Result<(), BucketError> {
        self.path.push(key);
        let key_len = match key.len() {
            0 => Err(KeyError::Empty),
            len => u8::try_from(len).map_err(|_| KeyError::TooLong {
                len,
                max: CheckpointBucket::MAX_KEY_LEN,
            }),
        };
        let key_len = key_len.map_err(|reason| BucketError::InvalidKey {
            path: self.path(),
            reason,
        })?;
        self.out.push(key_len);
        self.out.extend_from_slice(key.as_bytes());
        Ok(())
    }

    /// Writes a nested bucket value.
    fn bucket(&mut self, bucket: &'b CheckpointBucket, depth: usize) -> Result<(), BucketError> {
        if depth >= CheckpointBucket::MAX_DEPTH {
            return Err(BucketError::TooDeep {
                path: self.path(),
                limit: CheckpointBucket::MAX_DEPTH,
            });
        }
        self.out.push(tag::BUCKET);
        self.len_prefixed(|w| w.body(bucket, depth + 1))
    }

    fn value(&mut self, value: &'b CheckpointValue, depth: usize) -> Result<(), BucketError> {
        match value {
            CheckpointValue::Bool(v) => {
                self.out.push(tag::BOOL);
                self.out.push(u8::from(*v));
            }
            CheckpointValue::I64(v) => {
                self.out.push(tag::I64);
                self.out.extend_from_slice(&v.to_le_bytes());
            }
            CheckpointValue::U64(v) => {
                self.out.push(tag::U64);
                self.out.extend_from_slice(&v.to_le_bytes());
            }
            CheckpointValue::F64(v) => {
                self.out.push(tag::F64);
                self.out.extend_from_slice(&v.to_bits().to_le_bytes());
            }
            CheckpointValue::String(v) => {
                self.out.push(tag::STRING);
                self.put_len(v.len())?;
                self.out.extend_from_slice(v.as_bytes());
            }
            CheckpointValue::Bytes(v) => {
                self.out.push(tag::BYTES);
                self.put_len(v.len())?;
                self.out.extend_from_slice(v);
            }
            CheckpointValue::Json(v) => {
                self.out.push(tag::JSON);
                self.len_prefixed(|w| w.json(v, 0))?;
            }
            CheckpointValue::Bucket(v) => self.bucket(v, depth)?,
        }
        Ok(())
    }

    fn json(&mut self, value: &Value, depth: usize) -> Result<(), BucketError> {
        if matches!(value, Value::Array(_) | Value::Object(_))
            && depth >= CheckpointBucket::MAX_JSON_DEPTH
        {
            return Err(BucketError::TooDeep {
                path: self.path(),
                limit: CheckpointBucket::MAX_JSON_DEPTH,
            });
        }
        match value {
            Value::Null => self.out.push(jtag::NULL),
            Value::Bool(false) => self.out.push(jtag::FALSE),
            Value::Bool(true) => self.out.push(jtag::TRUE),
            Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    self.out.push(jtag::UINT);
                    self.out.extend_from_slice(&u.to_le_bytes());
                } else if let Some(i) = n.as_i64() {
                    self.out.push(jtag::NEG_INT);
                    self.out.extend_from_slice(&i.to_le_bytes());
                } else if let Some(f) = n.as_f64().filter(|f| f.is_finite()) {
                    self.out.push(jtag::FLOAT);
                    self.out.extend_from_slice(&f.to_bits().to_le_bytes());
                } else {
                    return Err(BucketError::UnsupportedJsonNumber {
                        path: self.path(),
                        number: n.to_string(),
                    });
                }
            }
            Value::String(s) => {
                self.out.push(jtag::STRING);
                self.put_len(s.len())?;
                self.out.extend_from_slice(s.as_bytes());
            }
            Value::Array(items) => {
                self.out.push(jtag::ARRAY);
                self.put_len(items.len())?;
                for item in items {
                    self.json(item, depth + 1)?;
                }
            }
            Value::Object(members) => {
                self.out.push(jtag::OBJECT);
                self.put_len(members.len())?;
                // Sorted whatever order the map keeps, so the encoding is canonical.
                let mut sorted: Vec<(&String, &Value)> = members.iter().collect();
                sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
                for (key, item) in sorted {
                    self.put_len(key.len())?;
                    self.out.extend_from_slice(key.as_bytes());
                    self.json(item, depth + 1)?;
                }
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding

pub(crate) fn decode(bytes: &[u8]) -> Result<CheckpointBucket, BucketError> {
    let corrupt = |offset, reason| BucketError::Corrupt { offset, reason };

    let head = bytes.get(..MAGIC.len()).unwrap_or(bytes);
    if MAGIC.get(..head.len()) != Some(head) {
        return Err(corrupt(
            0,
            Corruption::BadMagic {
                found: head.to_vec(),
            },
        ));
    }
    if let Some(&version) = bytes.get(MAGIC.len()) {
        if version != FORMAT_VERSION {
            return Err(corrupt(
                MAGIC.len(),
                Corruption::UnsupportedVersion {
                    found: version,
                    supported: FORMAT_VERSION,
                },
            ));
        }
    }
    let mut r = Reader {
        bytes,
        pos: 0,
        end: bytes.len(),
    };
    let [.., l0, l1, l2, l3] = r.array::<HEADER_LEN>(|| "the header".to_owned())?;
    let body_len = u32::from_le_bytes([l0, l1, l2, l3]);
    // Body and checksum must fill the rest of the input exactly.
    let needed = u64::from(body_len) + CRC_LEN as u64;
    let available = bytes.len() - HEADER_LEN;
    match needed.cmp(&(available as u64)) {
        Ordering::Greater => {
            return Err(corrupt(
                HEADER_LEN,
                truncated("the body and checksum", needed, available),
            ));
        }
        Ordering::Less => {
            // `needed` < `available`, so it fits in usize.
            let end = HEADER_LEN + needed as usize;
            return Err(corrupt(
                end,
                Corruption::TrailingBytes {
                    what: "the checksum".to_owned(),
                    count: bytes.len() - end,
                },
            ));
        }
        Ordering::Equal => {}
    }
    let body_end = bytes.len() - CRC_LEN;
    let (covered, stored) = bytes.split_at(body_end);
    let stored = match stored {
        &[a, b, c, d] => u32::from_le_bytes([a, b, c, d]),
        _ => {
            return Err(corrupt(
                body_end,
                truncated("the checksum", 4, stored.len()),
            ));
        }
    };
    let computed = crc32(covered);
    if stored != computed {
        return Err(corrupt(
            body_end,
            Corruption::ChecksumMismatch { stored, computed },
        ));
    }

    r.end = body_end;
    let bucket = r.body(0)?;
    r.expect_end(|| "the bucket's entries".to_owned())?;
    Ok(bucket)
}

fn truncated(what: &str, needed: u64, available: usize) -> Corruption {
    Corruption::Truncated {
        what: what.to_owned(),
        needed,
        available,
    }
}

/// A cursor over the input. `pos <= end <= bytes.len()` always; offsets are absolute.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// The end of the span being read (the body, a nested bucket, a JSON value).
    end: usize,
}

impl<'a> Reader<'a> {
    fn corrupt(&self, offset: usize, reason: Corruption) -> BucketError {
        BucketError::Corrupt { offset, reason }
    }

    /// Takes the next `n` bytes of the current span.
    fn take(
        &mut self,
        n: impl Into<u64>,
        what: impl FnOnce() -> String,
    ) -> Result<&'a [u8], BucketError> {
        let n = n.into();
        let available = self.end - self.pos;
        let slice = usize::try_from(n)
            .ok()
            .filter(|&n| n <= available)
            .and_then(|n| self.bytes.get(self.pos..self.pos + n));
        match slice {
            Some(slice) => {
                self.pos += slice.len();
                Ok(slice)
            }
            None => Err(self.corrupt(
                self.pos,
                Corruption::Truncated {
                    what: what(),
                    needed: n,
                    available,
                },
            )),
        }
    }

    fn array<const N: usize>(
        &mut self,
        what: impl FnOnce() -> String,
    ) -> Result<[u8; N], BucketError> {
        let at = self.pos;
        let slice = self.take(N as u64, what)?;
        <[u8; N]>::try_from(slice).map_err(|_| self.corrupt(at, truncated("a value", N as u64, 0)))
    }

    fn u8(&mut self, what: impl FnOnce() -> String) -> Result<u8, BucketError> {
        let [b] = self.array(what)?;
        Ok(b)
    }

    fn u32(&mut self, what: impl FnOnce() -> String) -> Result<u32, BucketError> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: impl FnOnce() -> String) -> Result<u64, BucketError> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// Fails if the current span has bytes left.
    fn expect_end(&self, what: impl FnOnce() -> String) -> Result<(), BucketError> {
        if self.pos == self.end {
            Ok(())
        } else {
            Err(self.corrupt(
                self.pos,
                Corruption::TrailingBytes {
                    what: what(),
                    count: self.end - self.pos,
                },
            ))
        }
    }

    /// Reads a `u32` length and runs `read` on a span of that many bytes, which it must
    /// consume exactly.
    fn length_prefixed<T>(
        &mut self,
        what: &dyn Fn() -> String,
        read: impl FnOnce(&mut Self) -> Result<T, BucketError>,
    ) -> Result<T, BucketError> {
        let len = self.u32(|| format!("the length of {}", what()))?;
        let start = self.pos;
        self.take(len, what)?;
        let outer_end = self.end;
        let span_end = self.pos;
        self.pos = start;
        self.end = span_end;
        let value = read(self)?;
        self.expect_end(what)?;
        self.end = outer_end;
        Ok(value)
    }

    fn body(&mut self, depth: usize) -> Result<CheckpointBucket, BucketError> {
        let count = self.u32(|| "the entry count".to_owned())?;
        let mut bucket = CheckpointBucket::new();
        let mut previous: Option<&'a str> = None;
        for _ in 0..count {
            let key_at = self.pos;
            let key_len = self.u8(|| "a key length".to_owned())?;
            if key_len == 0 {
                return Err(self.corrupt(key_at, Corruption::EmptyKey));
            }
            let key = self.take(key_len, || "a key".to_owned())?;
            let key = str::from_utf8(key)
                .map_err(|_| self.corrupt(key_at + 1, Corruption::KeyNotUtf8))?;
            if let Some(previous) = previous {
                match key.cmp(previous) {
                    Ordering::Greater => {}
                    Ordering::Equal => {
                        return Err(self.corrupt(
                            key_at,
                            Corruption::DuplicateKey {
                                key: key.to_owned(),
                            },
                        ));
                    }
                    Ordering::Less => {
                        return Err(self.corrupt(
                            key_at,
                            Corruption::KeyOutOfOrder {
                                key: key.to_owned(),
                                previous: previous.to_owned(),
                            },
                        ));
                    }
                }
            }
            previous = Some(key);
            let value = self.value(key, depth)?;
            bucket.insert_decoded(key.to_owned(), value);
        }
        Ok(bucket)
    }

    fn value(&mut self, key: &str, depth: usize) -> Result<CheckpointValue, BucketError> {
        let value_of = || format!("the value of key `{key}`");
        let tag_at = self.pos;
        let tag = self.u8(|| format!("the kind tag of key `{key}`"))?;
        Ok(match tag {
            tag::BOOL => {
                let at = self.pos;
                match self.u8(value_of)? {
                    0 => CheckpointValue::Bool(false),
                    1 => CheckpointValue::Bool(true),
                    byte => {
                        return Err(self.corrupt(
                            at,
                            Corruption::InvalidBool {
                                key: key.to_owned(),
                                byte,
                            },
                        ));
                    }
                }
            }
            tag::I64 => CheckpointValue::I64(self.array(value_of).map(i64::from_le_bytes)?),
            tag::U64 => CheckpointValue::U64(self.u64(value_of)?),
            tag::F64 => CheckpointValue::F64(f64::from_bits(self.u64(value_of)?)),
            tag::STRING => {
                let len = self.u32(|| format!("the length of {}", value_of()))?;
                let at = self.pos;
                let raw = self.take(len, value_of)?;
                let s = str::from_utf8(raw).map_err(|_| {
                    self.corrupt(
                        at,
                        Corruption::StringNotUtf8 {
                            key: key.to_owned(),
                        },
                    )
                })?;
                CheckpointValue::String(s.to_owned())
            }
            tag::BYTES => {
                let len = self.u32(|| format!("the length of {}", value_of()))?;
                CheckpointValue::Bytes(self.take(len, value_of)?.to_vec())
            }
            tag::JSON => {
                CheckpointValue::Json(self.length_prefixed(&value_of, |r| r.json(key, 0))?)
            }
            tag::BUCKET => {
                if depth >= CheckpointBucket::MAX_DEPTH {
                    return Err(self.corrupt(
                        tag_at,
                        Corruption::BucketTooDeep {
                            key: key.to_owned(),
                            limit: CheckpointBucket::MAX_DEPTH,
                        },
                    ));
                }
                CheckpointValue::Bucket(self.length_prefixed(&value_of, |r| r.body(depth + 1))?)
            }
            tag => {
                return Err(self.corrupt(
                    tag_at,
                    Corruption::UnknownKind {
                        key: key.to_owned(),
                        tag,
                    },
                ));
            }
        })
    }

    fn json(&mut self, key: &str, depth: usize) -> Result<Value, BucketError> {
        let invalid = |r: &Self, at, reason: String| {
            r.corrupt(
                at,
                Corruption::InvalidJson {
                    key: key.to_owned(),
                    reason,
                },
            )
        };
        let in_json = || format!("the JSON value of key `{key}`");
        let at = self.pos;
        let tag = self.u8(in_json)?;
        if matches!(tag, jtag::ARRAY | jtag::OBJECT) && depth >= CheckpointBucket::MAX_JSON_DEPTH {
            return Err(self.corrupt(
                at,
                Corruption::JsonTooDeep {
                    key: key.to_owned(),
                    limit: CheckpointBucket::MAX_JSON_DEPTH,
                },
            ));
        }
        Ok(match tag {
            jtag::NULL => Value::Null,
            jtag::FALSE => Value::Bool(false),
            jtag::TRUE => Value::Bool(true),
            jtag::UINT => Value::from(self.u64(in_json)?),
            jtag::NEG_INT => {
                let i = self.array(in_json).map(i64::from_le_bytes)?;
                if i >= 0 {
                    return Err(invalid(
                        self,
                        at,
                        format!("the non-negative integer {i} is tagged as negative"),
                    ));
                }
                Value::from(i)
            }
            jtag::FLOAT => {
                let f = f64::from_bits(self.u64(in_json)?);
                match Number::from_f64(f) {
                    Some(n) => Value::Number(n),
                    None => return Err(invalid(self, at, format!("the number {f} is not finite"))),
                }
            }
            jtag::STRING => Value::String(self.json_str(key, &in_json)?.to_owned()),
            jtag::ARRAY => {
                let count = self.u32(in_json)?;
                let mut items = Vec::new();
                for _ in 0..count {
                    items.push(self.json(key, depth + 1)?);
                }
                Value::Array(items)
            }
            jtag::OBJECT => {
                let count = self.u32(in_json)?;
                let mut members = Map::new();
                let mut previous: Option<&'a str> = None;
                for _ in 0..count {
                    let member_at = self.pos;
                    let name = self.json_str(key, &in_json)?;
                    if let Some(previous) = previous {
                        let problem = match name.cmp(previous) {
                            Ordering::Greater => None,
                            Ordering::Equal => Some("appears twice".to_owned()),
                            Ordering::Less => {
                                Some(format!("is out of order: it comes after {previous:?}"))
                            }
                        };
                        if let Some(problem) = problem {
                            return Err(invalid(
                                self,
                                member_at,
                                format!("the object key {name:?} {problem}"),
                            ));
                        }
                    }
                    previous = Some(name);
                    let item = self.json(key, depth + 1)?;
                    members.insert(name.to_owned(), item);
                }
                Value::Object(members)
            }
            tag => return Err(invalid(self, at, format!("unknown JSON tag {tag:#04x}"))),
        })
    }

    /// Reads a `u32` length and that many bytes of UTF-8 inside a JSON value.
    fn json_str(
        &mut self,
        key: &str,
        in_json: &dyn Fn() -> String,
    ) -> Result<&'a str, BucketError> {
        let len = self.u32(in_json)?;
        let at = self.pos;
        let raw = self.take(len, in_json)?;
        match str::from_utf8(raw) {
            Ok(s) => Ok(s),
            Err(_) => Err(self.corrupt(
                at,
                Corruption::InvalidJson {
                    key: key.to_owned(),
                    reason: "a string is not valid UTF-8".to_owned(),
                },
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::crc32;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }
}

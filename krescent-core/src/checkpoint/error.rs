//! Why a [`CheckpointBucket`](super::CheckpointBucket) value could not be read, or a bucket could
//! not be encoded or decoded: [`BucketError`], [`KeyError`] and [`Corruption`].

use std::fmt::Write as _;

use super::bucket::ValueKind;

/// Why a value could not be read from a [`CheckpointBucket`](super::CheckpointBucket), or why the
/// bucket could not be encoded or decoded.
///
/// Errors name the key they are about; encode errors name the whole path of keys from the
/// outermost bucket, decode errors the byte offset in the input.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BucketError {
    /// A typed getter was asked for a key the bucket does not hold.
    #[error("checkpoint bucket has no key `{key}`")]
    MissingKey {
        /// The key that was asked for.
        key: String,
    },
    /// A typed getter was asked for a key that holds a value of another kind.
    #[error("checkpoint bucket key `{key}` holds a value of kind {found}, not {expected}")]
    WrongType {
        /// The key that was asked for.
        key: String,
        /// The kind the getter reads.
        expected: ValueKind,
        /// The kind of the stored value.
        found: ValueKind,
    },
    /// A value could not be converted to or from JSON with serde
    /// ([`put_serde`](super::CheckpointBucket::put_serde),
    /// [`serde`](super::CheckpointBucket::serde)).
    #[error("cannot convert checkpoint bucket key `{key}` with serde: {source}")]
    Json {
        /// The key of the value.
        key: String,
        /// What serde_json said.
        #[source]
        source: serde_json::Error,
    },
    /// Encoding found a key that cannot be stored: empty, or longer than
    /// [`CheckpointBucket::MAX_KEY_LEN`](super::CheckpointBucket::MAX_KEY_LEN) bytes.
    #[error("invalid checkpoint bucket key {}: {reason}", display_path(.path))]
    InvalidKey {
        /// The keys from the outermost bucket down to the offending key (the last element).
        path: Vec<String>,
        /// What is wrong with the key.
        reason: KeyError,
    },
    /// Encoding found buckets or JSON arrays and objects nested deeper than the format allows
    /// ([`CheckpointBucket::MAX_DEPTH`](super::CheckpointBucket::MAX_DEPTH),
    /// [`CheckpointBucket::MAX_JSON_DEPTH`](super::CheckpointBucket::MAX_JSON_DEPTH)).
    #[error(
        "checkpoint bucket value {} nests deeper than the {limit} levels the format allows",
        display_path(.path)
    )]
    TooDeep {
        /// The keys from the outermost bucket down to the value that nests too deep.
        path: Vec<String>,
        /// The limit that was exceeded.
        limit: usize,
    },
    /// Encoding found a string, byte string, JSON array, JSON object or nested bucket whose
    /// length does not fit the format's 32-bit length prefix.
    #[error(
        "checkpoint bucket value {} is {len} bytes or items long, more than the format's \
         limit of 4294967295",
        display_path(.path)
    )]
    TooLarge {
        /// The keys from the outermost bucket down to the value (empty for the whole bucket).
        path: Vec<String>,
        /// The length that does not fit.
        len: usize,
    },
    /// Encoding found a JSON number that is neither a 64-bit integer nor a finite `f64` (only
    /// possible when serde_json's `arbitrary_precision` feature is enabled).
    #[error(
        "checkpoint bucket value {} holds the unsupported JSON number {number}",
        display_path(.path)
    )]
    UnsupportedJsonNumber {
        /// The keys from the outermost bucket down to the value.
        path: Vec<String>,
        /// The number as text.
        number: String,
    },
    /// The bytes given to [`decode`](super::CheckpointBucket::decode) are not a valid encoding.
    #[error("corrupt checkpoint bucket at byte {offset}: {reason}")]
    Corrupt {
        /// The offset in the input at which the problem was found.
        offset: usize,
        /// What is wrong.
        reason: Corruption,
    },
}

impl BucketError {
    /// The [`Corruption`] if this is a decode error.
    pub fn corruption(&self) -> Option<&Corruption> {
        match self {
            Self::Corrupt { reason, .. } => Some(reason),
            _ => None,
        }
    }
}

/// What is wrong with a key that [`encode`](super::CheckpointBucket::encode) rejects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key is the empty string.
    #[error("keys may not be empty")]
    Empty,
    /// The key is longer than
    /// [`CheckpointBucket::MAX_KEY_LEN`](super::CheckpointBucket::MAX_KEY_LEN) bytes of UTF-8.
    #[error("the key is {len} bytes long; keys may be at most {max} bytes")]
    TooLong {
        /// The length of the key in bytes.
        len: usize,
        /// The maximum length.
        max: usize,
    },
}

/// What is wrong with bytes that [`decode`](super::CheckpointBucket::decode) rejects; found in
/// [`BucketError::Corrupt`] together with the offset.
///
/// The layout these variants refer to is described in [`codec`](super::codec).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Corruption {
    /// The input does not start with [`MAGIC`](super::codec::MAGIC).
    #[error("the input does not start with the magic bytes `KRCB` (found {found:02x?})")]
    BadMagic {
        /// The first bytes of the input (at most four).
        found: Vec<u8>,
    },
    /// The format version byte is not one this build can read.
    #[error("unsupported format version {found}; this build reads version {supported}")]
    UnsupportedVersion {
        /// The version byte found.
        found: u8,
        /// The version this build reads ([`FORMAT_VERSION`](super::codec::FORMAT_VERSION)).
        supported: u8,
    },
    /// The input ends before an item that its header or a length prefix announces.
    #[error("the input ends early: {what} needs {needed} bytes, {available} are left")]
    Truncated {
        /// The item being read, e.g. ``value of key `x` ``.
        what: String,
        /// How many bytes the item needs.
        needed: u64,
        /// How many bytes were left.
        available: usize,
    },
    /// Bytes follow the end of the encoding or of a nested bucket.
    #[error("{count} unexpected bytes after the end of {what}")]
    TrailingBytes {
        /// What ended before the extra bytes.
        what: String,
        /// How many bytes are extra.
        count: usize,
    },
    /// The trailing CRC-32 does not match the bytes before it.
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    ChecksumMismatch {
        /// The checksum stored in the input.
        stored: u32,
        /// The checksum of the bytes before it.
        computed: u32,
    },
    /// A key has length 0.
    #[error("a key is empty")]
    EmptyKey,
    /// A key is not valid UTF-8.
    #[error("a key is not valid UTF-8")]
    KeyNotUtf8,
    /// A key appears twice in one bucket.
    #[error("key `{key}` appears twice")]
    DuplicateKey {
        /// The repeated key.
        key: String,
    },
    /// A key does not sort after the key before it (entries are stored in ascending byte order).
    #[error("key `{key}` is out of order: it comes after `{previous}`")]
    KeyOutOfOrder {
        /// The key out of place.
        key: String,
        /// The key before it.
        previous: String,
    },
    /// A value's kind tag byte is not one of the known kinds.
    #[error("value of key `{key}` has the unknown kind tag {tag:#04x}")]
    UnknownKind {
        /// The key of the value.
        key: String,
        /// The tag byte found.
        tag: u8,
    },
    /// A bool value is neither `0` nor `1`.
    #[error("bool value of key `{key}` is {byte:#04x}, not 0x00 or 0x01")]
    InvalidBool {
        /// The key of the value.
        key: String,
        /// The byte found.
        byte: u8,
    },
    /// A string value is not valid UTF-8.
    #[error("string value of key `{key}` is not valid UTF-8")]
    StringNotUtf8 {
        /// The key of the value.
        key: String,
    },
    /// A JSON value is malformed.
    #[error("JSON value of key `{key}` is invalid: {reason}")]
    InvalidJson {
        /// The key of the value.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Buckets nest deeper than
    /// [`CheckpointBucket::MAX_DEPTH`](super::CheckpointBucket::MAX_DEPTH).
    #[error("bucket of key `{key}` nests deeper than {limit} levels")]
    BucketTooDeep {
        /// The key of the bucket that is one level too deep.
        key: String,
        /// The limit.
        limit: usize,
    },
    /// JSON arrays and objects nest deeper than
    /// [`CheckpointBucket::MAX_JSON_DEPTH`](super::CheckpointBucket::MAX_JSON_DEPTH).
    #[error("JSON value of key `{key}` nests deeper than {limit} levels")]
    JsonTooDeep {
        /// The key of the JSON value.
        key: String,
        /// The limit.
        limit: usize,
    },
}

/// Renders a key path as `` `outer`.`inner` ``, shortening very long keys.
fn display_path(path: &[String]) -> String {
    const SHOWN: usize = 48;
    if path.is_empty() {
        return "(the whole bucket)".to_owned();
    }
    let mut out = String::new();
    for (i, key) in path.iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        if key.chars().count() > SHOWN {
            let head: String = key.chars().take(SHOWN).collect();
            let _ = write!(out, "`{head}…`");
        } else {
            let _ = write!(out, "`{key}`");
        }
    }
    out
}

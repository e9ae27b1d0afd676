//! [`CheckpointBucket`]: keyed, typed values that a model writes into a checkpoint.

use std::collections::BTreeMap;
use std::collections::btree_map;
use std::fmt;
use std::iter::FusedIterator;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::codec;
use super::error::BucketError;

/// The kind of a [`CheckpointValue`]; its `Display` is the name used in error messages
/// (`"bool"`, `"i64"`, `"u64"`, `"f64"`, `"string"`, `"bytes"`, `"json"`, `"bucket"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ValueKind {
    /// [`CheckpointValue::Bool`].
    Bool,
    /// [`CheckpointValue::I64`].
    I64,
    /// [`CheckpointValue::U64`].
    U64,
    /// [`CheckpointValue::F64`].
    F64,
    /// [`CheckpointValue::String`].
    String,
    /// [`CheckpointValue::Bytes`].
    Bytes,
    /// [`CheckpointValue::Json`].
    Json,
    /// [`CheckpointValue::Bucket`].
    Bucket,
}

impl ValueKind {
    /// The name of the kind: `"bool"`, `"i64"`, `"u64"`, `"f64"`, `"string"`, `"bytes"`,
    /// `"json"` or `"bucket"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Bool => "bool",
            Self::I64 => "i64",
            Self::U64 => "u64",
            Self::F64 => "f64",
            Self::String => "string",
            Self::Bytes => "bytes",
            Self::Json => "json",
            Self::Bucket => "bucket",
        }
    }
}

impl fmt::Display for ValueKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One value in a [`CheckpointBucket`].
///
/// # Equality
///
/// `F64` values compare by their bit pattern ([`f64::to_bits`]), not with `==`: `NaN` equals a
/// `NaN` with the same bits, and `0.0` does not equal `-0.0`. This makes equality mean "decodes
/// to the same value", so a bucket always equals its own decoded encoding, and lets
/// `CheckpointValue` implement [`Eq`].
#[derive(Debug, Clone)]
pub enum CheckpointValue {
    /// A boolean.
    Bool(bool),
    /// A signed 64-bit integer.
    I64(i64),
    /// An unsigned 64-bit integer.
    U64(u64),
    /// A 64-bit float; every bit pattern, including `NaN` payloads, infinities and `-0.0`,
    /// round-trips exactly.
    F64(f64),
    /// A UTF-8 string.
    String(String),
    /// Raw bytes.
    Bytes(Vec<u8>),
    /// A JSON value. Numbers round-trip exactly (the encoding is binary, not JSON text).
    Json(serde_json::Value),
    /// A nested bucket.
    Bucket(CheckpointBucket),
}

impl CheckpointValue {
    /// The kind of this value.
    pub const fn kind(&self) -> ValueKind {
        match self {
            Self::Bool(_) => ValueKind::Bool,
            Self::I64(_) => ValueKind::I64,
            Self::U64(_) => ValueKind::U64,
            Self::F64(_) => ValueKind::F64,
            Self::String(_) => ValueKind::String,
            Self::Bytes(_) => ValueKind::Bytes,
            Self::Json(_) => ValueKind::Json,
            Self::Bucket(_) => ValueKind::Bucket,
        }
    }

    /// The boolean, if this is a `Bool`.
    pub const fn as_bool(&self) -> Option<bool> {
        match self {
            Self::Bool(v) => Some(*v),
            _ => None,
        }
    }

    /// The integer, if this is an `I64`.
    pub const fn as_i64(&self) -> Option<i64> {
        match self {
            Self::I64(v) => Some(*v),
            _ => None,
        }
    }

    /// The integer, if this is a `U64`.
    pub const fn as_u64(&self) -> Option<u64> {
        match self {
            Self::U64(v) => Some(*v),
            _ => None,
        }
    }

    /// The float, if this is an `F64`.
    pub const fn as_f64(&self) -> Option<f64> {
        match self {
            Self::F64(v) => Some(*v),
            _ => None,
        }
    }

    /// The string, if this is a `String`.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(v) => Some(v),
            _ => None,
        }
    }

    /// The bytes, if this is `Bytes`.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Self::Bytes(v) => Some(v),
            _ => None,
        }
    }

    /// The JSON value, if this is `Json`.
    pub const fn as_json(&self) -> Option<&serde_json::Value> {
        match self {
            Self::Json(v) => Some(v),
            _ => None,
        }
    }

    /// The nested bucket, if this is a `Bucket`.
    pub const fn as_bucket(&self) -> Option<&CheckpointBucket> {
        match self {
            Self::Bucket(v) => Some(v),
            _ => None,
        }
    }

    /// A JSON rendering of this value for people to read; see [`CheckpointBucket::to_json`].
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match self {
            Self::Bool(v) => Value::Bool(*v),
            Self::I64(v) => Value::from(*v),
            Self::U64(v) => Value::from(*v),
            Self::F64(v) => match serde_json::Number::from_f64(*v) {
                Some(n) => Value::Number(n),
                None => Value::String(v.to_string()),
            },
            Self::String(v) => Value::String(v.clone()),
            Self::Bytes(v) => {
                let mut map = serde_json::Map::new();
                map.insert("$bytes".to_owned(), Value::String(hex(v)));
                Value::Object(map)
            }
            Self::Json(v) => v.clone(),
            Self::Bucket(v) => v.to_json(),
        }
    }
}

impl PartialEq for CheckpointValue {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Bool(a), Self::Bool(b)) => a == b,
            (Self::I64(a), Self::I64(b)) => a == b,
            (Self::U64(a), Self::U64(b)) => a == b,
            (Self::F64(a), Self::F64(b)) => a.to_bits() == b.to_bits(),
            (Self::String(a), Self::String(b)) => a == b,
            (Self::Bytes(a), Self::Bytes(b)) => a == b,
            (Self::Json(a), Self::Json(b)) => a == b,
            (Self::Bucket(a), Self::Bucket(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for CheckpointValue {}

macro_rules! value_from {
    ($($ty:ty => $variant:ident $(via $conv:ty)?),* $(,)?) => {$(
        impl From<$ty> for CheckpointValue {
            fn from(value: $ty) -> Self {
                Self::$variant(value $(as $conv)?)
            }
        }
    )*};
}

value_from! {
    bool => Bool,
    i64 => I64,
    i32 => I64 via i64,
    u64 => U64,
    u32 => U64 via u64,
    f64 => F64,
    f32 => F64 via f64,
    String => String,
    Vec<u8> => Bytes,
    serde_json::Value => Json,
    CheckpointBucket => Bucket,
}

impl From<&str> for CheckpointValue {
    fn from(value: &str) -> Self {
        Self::String(value.to_owned())
    }
}

impl From<&[u8]> for CheckpointValue {
    fn from(value: &[u8]) -> Self {
        Self::Bytes(value.to_vec())
    }
}

/// Keyed, typed values that a model writes into a checkpoint and reads back on restore.
///
/// Values are booleans, `i64`, `u64`, `f64`, strings, bytes, JSON and nested buckets
/// ([`CheckpointValue`]). Keys are kept in ascending byte order, so [`iter`](Self::iter) and
/// the [encoding](super::codec) are deterministic.
///
/// Setters take any key and never fail; keys are checked when the bucket is
/// [encoded](Self::encode): a key must be non-empty and at most [`MAX_KEY_LEN`](Self::MAX_KEY_LEN)
/// bytes of UTF-8, or `encode` returns [`BucketError::InvalidKey`]. Putting a key that is
/// already present replaces its value.
///
/// Typed getters are strict: a value put as `i64` is read with [`i64`](Self::i64) only;
/// [`u64`](Self::u64) on it is a [`BucketError::WrongType`] that names the key.
///
/// ```
/// use krescent_core::checkpoint::CheckpointBucket;
///
/// let mut inner = CheckpointBucket::new();
/// inner.put_u64("position", 42);
///
/// let mut bucket = CheckpointBucket::new();
/// bucket
///     .put_str("name", "stock")
///     .put_i64("level", -3)
///     .put_bucket("cursor", inner);
///
/// let bytes = bucket.encode()?;
/// let restored = CheckpointBucket::decode(&bytes)?;
/// assert_eq!(restored, bucket);
/// assert_eq!(restored.i64("level")?, -3);
/// assert_eq!(restored.bucket("cursor")?.u64("position")?, 42);
/// assert!(restored.u64("level").is_err());
/// # Ok::<(), krescent_core::checkpoint::BucketError>(())
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct CheckpointBucket {
    entries: BTreeMap<String, CheckpointValue>,
}

macro_rules! typed_getter {
    ($(#[$doc:meta])* $name:ident -> $ty:ty, $as:ident, $kind:ident) => {
        $(#[$doc])*
        pub fn $name(&self, key: &str) -> Result<$ty, BucketError> {
            let value = self.require(key)?;
            value.$as().ok_or_else(|| wrong_type(key, ValueKind::$kind, value))
        }
    };
}

impl CheckpointBucket {
    /// The maximum length of a key in bytes of UTF-8.
    pub const MAX_KEY_LEN: usize = 255;
    /// How deep buckets may nest: a bucket's nested buckets are at level 1, theirs at level 2,
    /// and so on up to this level.
    pub const MAX_DEPTH: usize = 64;
    /// How deep arrays and objects may nest inside one JSON value.
    pub const MAX_JSON_DEPTH: usize = 128;

    /// An empty bucket.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores `value` under `key`, replacing any previous value.
    ///
    /// Integer literals become `I64` (`put("n", 5)`); use [`put_u64`](Self::put_u64) or a
    /// `u64` value for `U64`.
    pub fn put(&mut self, key: impl Into<String>, value: impl Into<CheckpointValue>) -> &mut Self {
        self.entries.insert(key.into(), value.into());
        self
    }

    /// Returns the bucket with `value` stored under `key`: a by-value [`put`](Self::put) for
    /// building nested buckets in one expression.
    #[must_use]
    pub fn with(mut self, key: impl Into<String>, value: impl Into<CheckpointValue>) -> Self {
        self.put(key, value);
        self
    }

    /// Stores a boolean under `key`.
    pub fn put_bool(&mut self, key: impl Into<String>, value: bool) -> &mut Self {
        self.put(key, CheckpointValue::Bool(value))
    }

    /// Stores a signed integer under `key`.
    pub fn put_i64(&mut self, key: impl Into<String>, value: i64) -> &mut Self {
        self.put(key, CheckpointValue::I64(value))
    }

    /// Stores an unsigned integer under `key`.
    pub fn put_u64(&mut self, key: impl Into<String>, value: u64) -> &mut Self {
        self.put(key, CheckpointValue::U64(value))
    }

    /// Stores a float under `key`.
    pub fn put_f64(&mut self, key: impl Into<String>, value: f64) -> &mut Self {
        self.put(key, CheckpointValue::F64(value))
    }

    /// Stores a string under `key`.
    pub fn put_str(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.put(key, CheckpointValue::String(value.into()))
    }

    /// Stores bytes under `key`.
    pub fn put_bytes(&mut self, key: impl Into<String>, value: impl Into<Vec<u8>>) -> &mut Self {
        self.put(key, CheckpointValue::Bytes(value.into()))
    }

    /// Stores a JSON value under `key`.
    pub fn put_json(&mut self, key: impl Into<String>, value: serde_json::Value) -> &mut Self {
        self.put(key, CheckpointValue::Json(value))
    }

    /// Stores a nested bucket under `key`.
    pub fn put_bucket(&mut self, key: impl Into<String>, value: CheckpointBucket) -> &mut Self {
        self.put(key, CheckpointValue::Bucket(value))
    }

    /// Stores `value` as JSON under `key`, converted with its `Serialize` implementation.
    ///
    /// Read it back with [`serde`](Self::serde). serde_json turns non-finite floats into
    /// `null`; store such floats with [`put_f64`](Self::put_f64) instead.
    ///
    /// # Errors
    ///
    /// [`BucketError::Json`] if serialization fails (e.g. a map with non-string keys); the
    /// bucket is unchanged then.
    pub fn put_serde<T: Serialize + ?Sized>(
        &mut self,
        key: impl Into<String>,
        value: &T,
    ) -> Result<(), BucketError> {
        let key = key.into();
        match serde_json::to_value(value) {
            Ok(json) => {
                self.entries.insert(key, CheckpointValue::Json(json));
                Ok(())
            }
            Err(source) => Err(BucketError::Json { key, source }),
        }
    }

    /// The value under `key`, if any.
    pub fn get(&self, key: &str) -> Option<&CheckpointValue> {
        self.entries.get(key)
    }

    /// Whether the bucket holds `key`.
    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    /// Removes `key` and returns its value, if any.
    pub fn remove(&mut self, key: &str) -> Option<CheckpointValue> {
        self.entries.remove(key)
    }

    /// The number of keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the bucket holds no keys.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The keys and values in ascending byte order of the keys.
    pub fn iter(&self) -> Iter<'_> {
        Iter(self.entries.iter())
    }

    /// The keys in ascending byte order.
    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &str> + ExactSizeIterator + '_ {
        self.entries.keys().map(String::as_str)
    }

    typed_getter! {
        /// The boolean under `key`.
        ///
        /// # Errors
        ///
        /// [`BucketError::MissingKey`] or [`BucketError::WrongType`].
        bool -> bool, as_bool, Bool
    }

    typed_getter! {
        /// The signed integer under `key`.
        ///
        /// # Errors
        ///
        /// [`BucketError::MissingKey`] or [`BucketError::WrongType`] (also for a `U64`).
        i64 -> i64, as_i64, I64
    }

    typed_getter! {
        /// The unsigned integer under `key`.
        ///
        /// # Errors
        ///
        /// [`BucketError::MissingKey`] or [`BucketError::WrongType`] (also for an `I64`).
        u64 -> u64, as_u64, U64
    }

    typed_getter! {
        /// The float under `key`.
        ///
        /// # Errors
        ///
        /// [`BucketError::MissingKey`] or [`BucketError::WrongType`].
        f64 -> f64, as_f64, F64
    }

    typed_getter! {
        /// The string under `key`.
        ///
        /// # Errors
        ///
        /// [`BucketError::MissingKey`] or [`BucketError::WrongType`].
        str -> &str, as_str, String
    }

    typed_getter! {
        /// The bytes under `key`.
        ///
        /// # Errors
        ///
        /// [`BucketError::MissingKey`] or [`BucketError::WrongType`].
        bytes -> &[u8], as_bytes, Bytes
    }

    typed_getter! {
        /// The JSON value under `key`.
        ///
        /// # Errors
        ///
        /// [`BucketError::MissingKey`] or [`BucketError::WrongType`].
        json -> &serde_json::Value, as_json, Json
    }

    typed_getter! {
        /// The nested bucket under `key`.
        ///
        /// # Errors
        ///
        /// [`BucketError::MissingKey`] or [`BucketError::WrongType`].
        bucket -> &CheckpointBucket, as_bucket, Bucket
    }

    /// The JSON value under `key`, converted with `T`'s `Deserialize` implementation; the
    /// counterpart of [`put_serde`](Self::put_serde).
    ///
    /// # Errors
    ///
    /// [`BucketError::MissingKey`], [`BucketError::WrongType`] if the value is not `Json`, or
    /// [`BucketError::Json`] if it does not deserialize as `T`.
    pub fn serde<T: DeserializeOwned>(&self, key: &str) -> Result<T, BucketError> {
        let json = self.json(key)?;
        T::deserialize(json).map_err(|source| BucketError::Json {
            key: key.to_owned(),
            source,
        })
    }

    /// Encodes the bucket in the stable binary format described in [`codec`](super::codec).
    ///
    /// # Errors
    ///
    /// [`BucketError::InvalidKey`] for an empty key or one longer than
    /// [`MAX_KEY_LEN`](Self::MAX_KEY_LEN) bytes, [`BucketError::TooDeep`] for nesting beyond
    /// [`MAX_DEPTH`](Self::MAX_DEPTH) or [`MAX_JSON_DEPTH`](Self::MAX_JSON_DEPTH),
    /// [`BucketError::TooLarge`] for a value longer than 4 GiB. Each names the key path.
    pub fn encode(&self) -> Result<Vec<u8>, BucketError> {
        codec::encode(self)
    }

    /// Decodes bytes written by [`encode`](Self::encode).
    ///
    /// Never panics, and allocates no more than a small multiple of the input's length
    /// whatever the input claims.
    ///
    /// # Errors
    ///
    /// [`BucketError::Corrupt`] with the byte offset and a [`Corruption`](super::Corruption)
    /// that says what is wrong.
    pub fn decode(bytes: &[u8]) -> Result<Self, BucketError> {
        codec::decode(bytes)
    }

    /// A JSON rendering for people to read (logs, debugging tools); it is not meant to be
    /// parsed back.
    ///
    /// Buckets become objects; integers and finite floats numbers; `NaN` and infinities the
    /// strings `"NaN"`, `"inf"` and `"-inf"`; bytes an object `{"$bytes": "<hex>"}`; JSON
    /// values appear as they are. [`Display`](fmt::Display) prints this rendering, pretty
    /// printed with `{:#}`.
    ///
    /// ```
    /// # use krescent_core::checkpoint::CheckpointBucket;
    /// let bucket = CheckpointBucket::new()
    ///     .with("raw", vec![0xca_u8, 0xfe])
    ///     .with("ratio", f64::NAN);
    /// assert_eq!(
    ///     bucket.to_json(),
    ///     serde_json::json!({ "raw": { "$bytes": "cafe" }, "ratio": "NaN" }),
    /// );
    /// ```
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Object(
            self.entries
                .iter()
                .map(|(key, value)| (key.clone(), value.to_json()))
                .collect(),
        )
    }

    fn require(&self, key: &str) -> Result<&CheckpointValue, BucketError> {
        self.entries
            .get(key)
            .ok_or_else(|| BucketError::MissingKey {
                key: key.to_owned(),
            })
    }

    /// Inserts an entry decoded by the codec (which has checked order and uniqueness).
    pub(super) fn insert_decoded(&mut self, key: String, value: CheckpointValue) {
        self.entries.insert(key, value);
    }
}

fn wrong_type(key: &str, expected: ValueKind, value: &CheckpointValue) -> BucketError {
    BucketError::WrongType {
        key: key.to_owned(),
        expected,
        found: value.kind(),
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

impl fmt::Debug for CheckpointBucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CheckpointBucket ")?;
        f.debug_map().entries(self.entries.iter()).finish()
    }
}

/// Prints the [`to_json`](CheckpointBucket::to_json) rendering; `{:#}` pretty-prints it.
impl fmt::Display for CheckpointBucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let json = self.to_json();
        if f.alternate() {
            write!(f, "{json:#}")
        } else {
            write!(f, "{json}")
        }
    }
}

impl<K: Into<String>, V: Into<CheckpointValue>> FromIterator<(K, V)> for CheckpointBucket {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut bucket = Self::new();
        bucket.extend(iter);
        bucket
    }
}

impl<K: Into<String>, V: Into<CheckpointValue>> Extend<(K, V)> for CheckpointBucket {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, iter: I) {
        for (key, value) in iter {
            self.put(key, value);
        }
    }
}

impl<'a> IntoIterator for &'a CheckpointBucket {
    type Item = (&'a str, &'a CheckpointValue);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl IntoIterator for CheckpointBucket {
    type Item = (String, CheckpointValue);
    type IntoIter = IntoIter;

    fn into_iter(self) -> IntoIter {
        IntoIter(self.entries.into_iter())
    }
}

/// The entries of a [`CheckpointBucket`] by reference, in ascending key order; see
/// [`CheckpointBucket::iter`].
#[derive(Debug, Clone)]
pub struct Iter<'a>(btree_map::Iter<'a, String, CheckpointValue>);

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a str, &'a CheckpointValue);

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next().map(|(k, v)| (k.as_str(), v))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl DoubleEndedIterator for Iter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.0.next_back().map(|(k, v)| (k.as_str(), v))
    }
}

impl ExactSizeIterator for Iter<'_> {}
impl FusedIterator for Iter<'_> {}

/// The entries of a [`CheckpointBucket`] by value, in ascending key order.
#[derive(Debug)]
pub struct IntoIter(btree_map::IntoIter<String, CheckpointValue>);

impl Iterator for IntoIter {
    type Item = (String, CheckpointValue);

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl DoubleEndedIterator for IntoIter {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.0.next_back()
    }
}

impl ExactSizeIterator for IntoIter {}
impl FusedIterator for IntoIter {}

//! A checkpoint as a [`CheckpointStorage`](super::CheckpointStorage) keeps it:
//! [`StoredCheckpoint`] (the model's state with its name, version, position and time) and
//! [`CheckpointVersion`].

use std::fmt;

use chrono::{DateTime, Utc};
use serde::Deserialize as _;

use super::bucket::{CheckpointBucket, CheckpointValue, ValueKind};
use super::error::BucketError;

/// What a checkpoint was written for: when any part differs from what the running model
/// expects, the checkpoint is discarded and the model rebuilds from the first event.
///
/// Displays as `revision 3 / version 2 / shape 0x00000000deadbeef`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CheckpointVersion {
    /// The revision of the event catalog the model reads (`#[krescent(revision = …)]`).
    pub catalog_revision: u32,
    /// The version the model declares (`#[krescent(version = …)]`).
    pub model_version: u32,
    /// A fingerprint of the shape of the model's checkpointed state, so that a change to the
    /// state's fields discards old checkpoints even when the version was not bumped.
    pub shape: u64,
}

impl CheckpointVersion {
    /// A version from its three parts.
    pub const fn new(catalog_revision: u32, model_version: u32, shape: u64) -> Self {
        CheckpointVersion {
            catalog_revision,
            model_version,
            shape,
        }
    }
}

impl fmt::Display for CheckpointVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "revision {} / version {} / shape {:#018x}",
            self.catalog_revision, self.model_version, self.shape
        )
    }
}

/// A model's saved state together with what a restart needs to know about it: the model's
/// name, the [version](CheckpointVersion) it was written for, the position of the last event
/// that produced it and when it was written.
///
/// [`encode`](Self::encode) puts the metadata and the state into one outer
/// [`CheckpointBucket`] and encodes that, so the bucket codec's magic bytes, format version and
/// checksum cover everything (see [`codec`](super::codec)). The outer bucket holds these keys:
///
/// | key                | kind   | field                        |
/// |--------------------|--------|------------------------------|
/// | `model`            | string | [`model`](Self::model)       |
/// | `catalog_revision` | u64    | `version.catalog_revision`   |
/// | `model_version`    | u64    | `version.model_version`      |
/// | `shape`            | u64    | `version.shape`              |
/// | `position`         | u64    | [`position`](Self::position) |
/// | `timestamp_micros` | i64    | microseconds since the Unix epoch, UTC |
/// | `state`            | bucket | [`state`](Self::state)       |
///
/// Timestamps are kept at microsecond precision: a timestamp with nanoseconds loses them in
/// the round trip. [`StoredCheckpoint::new`] takes the current time already truncated, so
/// that what is stored equals what is loaded.
///
/// ```
/// use krescent_core::checkpoint::{CheckpointBucket, CheckpointVersion, StoredCheckpoint};
///
/// let mut state = CheckpointBucket::new();
/// state.put_u64("count", 7);
/// let checkpoint =
///     StoredCheckpoint::new("book.available", CheckpointVersion::new(1, 2, 0xfeed), 42, state);
///
/// let bytes = checkpoint.encode()?;
/// assert_eq!(StoredCheckpoint::decode(&bytes)?, checkpoint);
/// # Ok::<(), krescent_core::checkpoint::BucketError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct StoredCheckpoint {
    /// The name of the model the checkpoint belongs to (see
    /// [`validate_model_name`](super::validate_model_name) for the names storages accept).
    pub model: String,
    /// What the checkpoint was written for.
    pub version: CheckpointVersion,
    /// The position of the last event reflected in [`state`](Self::state); a restored model
    /// continues strictly after it.
    pub position: u64,
    /// When the checkpoint was taken (stored at microsecond precision).
    pub timestamp: DateTime<Utc>,
    /// What the model wrote.
    pub state: CheckpointBucket,
    /// Deltas stored after this checkpoint, oldest first, each building on the one before
    /// (the first on this checkpoint): the model's latest state is `state` with every delta
    /// applied, at the position of the last one. Empty for a checkpoint written in full and
    /// for storages that keep no deltas. Not part of [`encode`](Self::encode): a storage keeps
    /// each delta as its own record (see [`CheckpointDelta`]).
    pub deltas: Vec<CheckpointDelta>,
}

/// What changed in a model's state between two checkpoints: written by the model runner
/// instead of a full [`StoredCheckpoint`] when the model can write deltas (see
/// [`CheckpointSupport::create_checkpoint_delta`](super::CheckpointSupport::create_checkpoint_delta))
/// and the storage keeps them
/// ([`CheckpointStorage::supports_deltas`](super::CheckpointStorage::supports_deltas)).
///
/// It builds on the stored checkpoint, or the last delta, at
/// [`base_position`](Self::base_position). Its encoding is a bucket like the
/// [`StoredCheckpoint`]'s, with a `base_position` key added.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointDelta {
    /// The model the delta belongs to.
    pub model: String,
    /// What the delta was written for; equal to the version of the checkpoint it builds on.
    pub version: CheckpointVersion,
    /// The position of the checkpoint or delta it builds on.
    pub base_position: u64,
    /// The position of the last event reflected in the state with this delta applied.
    pub position: u64,
    /// When the delta was taken (stored at microsecond precision).
    pub timestamp: DateTime<Utc>,
    /// What the model wrote.
    pub state: CheckpointBucket,
}

/// Keys of the outer bucket.
mod key {
    pub(super) const MODEL: &str = "model";
    pub(super) const CATALOG_REVISION: &str = "catalog_revision";
    pub(super) const MODEL_VERSION: &str = "model_version";
    pub(super) const SHAPE: &str = "shape";
    pub(super) const POSITION: &str = "position";
    pub(super) const TIMESTAMP_MICROS: &str = "timestamp_micros";
    pub(super) const STATE: &str = "state";
    pub(super) const BASE_POSITION: &str = "base_position";
}

/// The metadata of an encoding; the state goes under [`key::STATE`] next to it.
fn outer(
    model: &str,
    version: CheckpointVersion,
    position: u64,
    timestamp: DateTime<Utc>,
) -> CheckpointBucket {
    let mut outer = CheckpointBucket::new();
    outer
        .put_str(key::MODEL, model)
        .put_u64(key::CATALOG_REVISION, u64::from(version.catalog_revision))
        .put_u64(key::MODEL_VERSION, u64::from(version.model_version))
        .put_u64(key::SHAPE, version.shape)
        .put_u64(key::POSITION, position)
        .put_i64(key::TIMESTAMP_MICROS, timestamp.timestamp_micros());
    outer
}

/// What [`outer`] and the state wrote, read back with every key checked; the outer bucket keeps the keys
/// not read here.
struct Header {
    model: String,
    version: CheckpointVersion,
    position: u64,
    timestamp: DateTime<Utc>,
    state: CheckpointBucket,
}

fn read_header(outer: &mut CheckpointBucket) -> Result<Header, BucketError> {
    let model = outer.str(key::MODEL)?.to_owned();
    let catalog_revision = read_u32(outer, key::CATALOG_REVISION)?;
    let model_version = read_u32(outer, key::MODEL_VERSION)?;
    let shape = outer.u64(key::SHAPE)?;
    let position = outer.u64(key::POSITION)?;
    let micros = outer.i64(key::TIMESTAMP_MICROS)?;
    let timestamp = DateTime::from_timestamp_micros(micros).ok_or_else(|| {
        conversion_error(
            key::TIMESTAMP_MICROS,
            format!(
                "{micros} microseconds since the Unix epoch is outside the range of \
                 DateTime<Utc>"
            ),
        )
    })?;
    // Take the state out of the outer bucket instead of cloning it.
    let state = match outer.remove(key::STATE) {
        Some(CheckpointValue::Bucket(state)) => state,
        Some(other) => {
            return Err(BucketError::WrongType {
                key: key::STATE.to_owned(),
                expected: ValueKind::Bucket,
                found: other.kind(),
            });
        }
        None => {
            return Err(BucketError::MissingKey {
                key: key::STATE.to_owned(),
            });
        }
    };
    Ok(Header {
        model,
        version: CheckpointVersion {
            catalog_revision,
            model_version,
            shape,
        },
        position,
        timestamp,
        state,
    })
}

impl StoredCheckpoint {
    /// A checkpoint taken now (the current time truncated to microseconds).
    pub fn new(
        model: impl Into<String>,
        version: CheckpointVersion,
        position: u64,
        state: CheckpointBucket,
    ) -> Self {
        StoredCheckpoint {
            model: model.into(),
            version,
            position,
            timestamp: now_micros(),
            state,
            deltas: Vec::new(),
        }
    }

    /// Encodes the checkpoint, metadata and state, as one [`CheckpointBucket`] encoding.
    ///
    /// # Errors
    ///
    /// What [`CheckpointBucket::encode`] reports about the state (an invalid key, nesting too
    /// deep, a value too large); key paths start with `state`.
    pub fn encode(&self) -> Result<Vec<u8>, BucketError> {
        let outer = outer(&self.model, self.version, self.position, self.timestamp);
        super::codec::encode_with_nested(&outer, key::STATE, &self.state)
    }

    /// Decodes bytes written by [`encode`](Self::encode), checking every key it reads.
    ///
    /// Keys of the outer bucket that this version does not know are ignored.
    ///
    /// # Errors
    ///
    /// - [`BucketError::Corrupt`] if the bytes are not a valid bucket encoding (wrong magic,
    ///   torn or truncated, checksum mismatch, …);
    /// - [`BucketError::MissingKey`] or [`BucketError::WrongType`] if one of the keys listed on
    ///   [`StoredCheckpoint`] is absent or holds another kind of value;
    /// - [`BucketError::Json`] if `catalog_revision` or `model_version` does not fit a `u32`,
    ///   or `timestamp_micros` lies outside the range of [`DateTime<Utc>`].
    pub fn decode(bytes: &[u8]) -> Result<Self, BucketError> {
        let mut outer = CheckpointBucket::decode(bytes)?;
        let h = read_header(&mut outer)?;
        Ok(StoredCheckpoint {
            model: h.model,
            version: h.version,
            position: h.position,
            timestamp: h.timestamp,
            state: h.state,
            deltas: Vec::new(),
        })
    }

    /// The position of the latest state: that of the last delta, or of the checkpoint when
    /// it has none.
    pub fn latest_position(&self) -> u64 {
        self.deltas.last().map_or(self.position, |d| d.position)
    }

    /// Appends a delta read back by a storage, checking that it builds on the latest state.
    ///
    /// # Errors
    ///
    /// [`DeltaChainError`] if the delta belongs to another model or version, does not build
    /// on [`latest_position`](Self::latest_position), or does not move past it.
    pub fn push_delta(&mut self, delta: CheckpointDelta) -> Result<(), DeltaChainError> {
        let problem = chain_problem(&self.model, self.version, self.latest_position(), &delta);
        match problem {
            Some(problem) => Err(DeltaChainError {
                model: self.model.clone(),
                position: delta.position,
                problem,
            }),
            None => {
                self.deltas.push(delta);
                Ok(())
            }
        }
    }
}

/// Whether a delta from `base_position` to `position` continues a chain whose latest state is
/// at `tip`: it builds on `tip` and moves past it. The one rule every storage and the runner
/// apply.
pub fn continues_chain(tip: u64, base_position: u64, position: u64) -> bool {
    base_position == tip && position > tip
}

/// Why `delta` does not continue the chain of `model` at `version` whose latest state is at
/// `tip`; `None` if it does.
pub(crate) fn chain_problem(
    model: &str,
    version: CheckpointVersion,
    tip: u64,
    delta: &CheckpointDelta,
) -> Option<String> {
    if delta.model != model {
        Some(format!("it belongs to model `{}`", delta.model))
    } else if delta.version != version {
        Some(format!("its version ({}) differs", delta.version))
    } else if !continues_chain(tip, delta.base_position, delta.position) {
        Some(format!(
            "it goes from position {} to {}, but the latest state is at {tip}",
            delta.base_position, delta.position
        ))
    } else {
        None
    }
}

/// A delta that does not continue a checkpoint's chain (see [`StoredCheckpoint::push_delta`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the checkpoint delta of model `{model}` at position {position} does not continue its chain: {problem}"
)]
pub struct DeltaChainError {
    /// The model of the checkpoint.
    pub model: String,
    /// The position of the refused delta.
    pub position: u64,
    /// What is wrong.
    pub problem: String,
}

impl CheckpointDelta {
    /// A delta taken now (the current time truncated to microseconds).
    pub fn new(
        model: impl Into<String>,
        version: CheckpointVersion,
        base_position: u64,
        position: u64,
        state: CheckpointBucket,
    ) -> Self {
        CheckpointDelta {
            model: model.into(),
            version,
            base_position,
            position,
            timestamp: now_micros(),
            state,
        }
    }

    /// Encodes the delta like [`StoredCheckpoint::encode`], with `base_position` added.
    ///
    /// # Errors
    ///
    /// As [`StoredCheckpoint::encode`].
    pub fn encode(&self) -> Result<Vec<u8>, BucketError> {
        let mut outer = outer(&self.model, self.version, self.position, self.timestamp);
        outer.put_u64(key::BASE_POSITION, self.base_position);
        super::codec::encode_with_nested(&outer, key::STATE, &self.state)
    }

    /// Decodes bytes written by [`encode`](Self::encode).
    ///
    /// # Errors
    ///
    /// As [`StoredCheckpoint::decode`]; a full checkpoint's encoding lacks `base_position`
    /// ([`BucketError::MissingKey`]).
    pub fn decode(bytes: &[u8]) -> Result<Self, BucketError> {
        let mut outer = CheckpointBucket::decode(bytes)?;
        let base_position = outer.u64(key::BASE_POSITION)?;
        let h = read_header(&mut outer)?;
        Ok(CheckpointDelta {
            model: h.model,
            version: h.version,
            base_position,
            position: h.position,
            timestamp: h.timestamp,
            state: h.state,
        })
    }
}

/// The current time, truncated to whole microseconds.
fn now_micros() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

/// A `u64` value that must fit a `u32`.
fn read_u32(bucket: &CheckpointBucket, key: &str) -> Result<u32, BucketError> {
    let value = bucket.u64(key)?;
    u32::deserialize(serde_json::Value::from(value)).map_err(|source| BucketError::Json {
        key: key.to_owned(),
        source,
    })
}

/// A [`BucketError::Json`] for a value that is well-typed but cannot be converted.
fn conversion_error(key: &str, message: String) -> BucketError {
    BucketError::Json {
        key: key.to_owned(),
        source: serde::de::Error::custom(message),
    }
}

//! [`CheckpointSupport`]: what a model (or a model extension) writes into a checkpoint, and
//! how it restores from one.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{BucketError, CheckpointBucket};

/// Why a model could not write or restore its checkpoint state.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// A bucket value was missing, of the wrong kind, or not convertible.
    #[error(transparent)]
    Bucket(#[from] BucketError),
    /// A `#[krescent(binary)]` field could not be encoded or decoded.
    #[error("checkpoint field `{key}` cannot be converted with the binary codec: {source}")]
    Binary {
        /// The bucket key of the field.
        key: String,
        /// What the codec said.
        #[source]
        source: postcard::Error,
    },
    /// A stored integer does not fit the field's type.
    #[error("checkpoint field `{key}` holds {value}, which does not fit `{ty}`")]
    OutOfRange {
        /// The bucket key of the field.
        key: String,
        /// The stored value.
        value: String,
        /// The field's type.
        ty: &'static str,
    },
    /// A delta was handed to a state that never writes deltas.
    #[error("`{ty}` cannot restore a checkpoint delta: it writes only full checkpoints")]
    DeltaUnsupported {
        /// The state's type.
        ty: &'static str,
    },
    /// An error of a hand-written implementation.
    #[error("{0}")]
    Custom(Box<dyn std::error::Error + Send + Sync>),
}

/// State that can be written into a [`CheckpointBucket`] and restored from one.
///
/// Models and model extensions implement it, usually with `#[derive(CheckpointSupport)]`.
///
/// `restore_checkpoint` must be all or nothing: read every value first, then assign, so that a
/// failed restore leaves the state as it was (the derive does this). A model extension may
/// store only a *reference* to data kept elsewhere (a table name, a revision); that data must
/// be deleted together with the checkpoint.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be checkpointed",
    note = "consider adding `#[derive(CheckpointSupport)]` to `{Self}`"
)]
pub trait CheckpointSupport {
    /// A fingerprint of the shape of the stored state (field names, types and encodings).
    /// A checkpoint written with another shape is discarded. The derive computes it at compile
    /// time; hand-written implementations bump it when their layout changes.
    const SHAPE: u64 = 0;

    /// Writes the state into `bucket`.
    fn create_checkpoint(&self, bucket: &mut CheckpointBucket) -> Result<(), CheckpointError>;

    /// Replaces the state with what `bucket` holds.
    fn restore_checkpoint(&mut self, bucket: &CheckpointBucket) -> Result<(), CheckpointError>;

    /// Whether a stored state may be restored; a `false` discards the checkpoint like a
    /// version mismatch. Default: always.
    fn validate_checkpoint(&self, bucket: &CheckpointBucket) -> bool {
        let _ = bucket;
        true
    }

    /// Writes into `delta` only what changed since the last checkpoint confirmed with
    /// [`checkpoint_stored`](Self::checkpoint_stored) (or restored), and returns `true`; or
    /// returns `false` when a delta cannot or should not be written now (the runner then
    /// writes a full checkpoint with [`create_checkpoint`](Self::create_checkpoint)).
    ///
    /// Default: `false`, full checkpoints only. The derive writes deltas for structs with a
    /// `#[krescent(delta)]` field (such as a [`CheckpointMap`](super::CheckpointMap)); its
    /// other fields are written whole into every delta.
    fn create_checkpoint_delta(
        &self,
        delta: &mut CheckpointBucket,
    ) -> Result<bool, CheckpointError> {
        let _ = delta;
        Ok(false)
    }

    /// Applies a delta written by [`create_checkpoint_delta`](Self::create_checkpoint_delta)
    /// on top of the state restored from the checkpoint it builds on. All or nothing, like
    /// [`restore_checkpoint`](Self::restore_checkpoint).
    ///
    /// Default: [`CheckpointError::DeltaUnsupported`].
    fn restore_checkpoint_delta(
        &mut self,
        delta: &CheckpointBucket,
    ) -> Result<(), CheckpointError> {
        let _ = delta;
        Err(CheckpointError::DeltaUnsupported {
            ty: std::any::type_name::<Self>(),
        })
    }

    /// Tells the state that the checkpoint (full or delta) just created from it is stored:
    /// the next delta starts from here. Default: nothing.
    fn checkpoint_stored(&mut self) {}
}

/// State of one field that can write a delta of its changes since the last stored checkpoint
/// (`#[krescent(delta)]` in `#[derive(CheckpointSupport)]`). [`CheckpointMap`] implements it.
///
/// [`CheckpointMap`]: super::CheckpointMap
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot write checkpoint deltas",
    label = "`#[krescent(delta)]` needs a `DeltaState` field",
    note = "use `krescent::checkpoint::CheckpointMap` for a map, or remove `#[krescent(delta)]`"
)]
pub trait DeltaState: Sized {
    /// A delta read back from a bucket, ready to be applied.
    type Delta;

    /// Writes the whole state under `key`.
    fn put_full(&self, bucket: &mut CheckpointBucket, key: &str) -> Result<(), CheckpointError>;
    /// Reads a state written by [`put_full`](Self::put_full); it counts as stored.
    fn get_full(bucket: &CheckpointBucket, key: &str) -> Result<Self, CheckpointError>;
    /// Whether a delta can be written now (a stored state exists to build on) and is worth
    /// it (smaller than the whole state).
    fn delta_ready(&self) -> bool;
    /// Writes the changes since the last stored state under `key`.
    fn put_delta(&self, bucket: &mut CheckpointBucket, key: &str) -> Result<(), CheckpointError>;
    /// Reads a delta written by [`put_delta`](Self::put_delta).
    fn get_delta(bucket: &CheckpointBucket, key: &str) -> Result<Self::Delta, CheckpointError>;
    /// Applies a delta read by [`get_delta`](Self::get_delta); the result counts as stored.
    fn apply_delta(&mut self, delta: Self::Delta);
    /// The state as it is now is stored: later changes go into the next delta.
    fn mark_stored(&mut self);
}

/// A field type stored as a typed bucket value (booleans, integers, floats, strings) by
/// `#[derive(CheckpointSupport)]`.
pub trait CheckpointPrimitive: Sized {
    /// Writes the value under `key`.
    fn put(&self, bucket: &mut CheckpointBucket, key: &str);
    /// Reads the value under `key`.
    fn get(bucket: &CheckpointBucket, key: &str) -> Result<Self, CheckpointError>;
}

impl CheckpointPrimitive for bool {
    fn put(&self, bucket: &mut CheckpointBucket, key: &str) {
        bucket.put_bool(key, *self);
    }
    fn get(bucket: &CheckpointBucket, key: &str) -> Result<Self, CheckpointError> {
        Ok(bucket.bool(key)?)
    }
}

impl CheckpointPrimitive for String {
    fn put(&self, bucket: &mut CheckpointBucket, key: &str) {
        bucket.put_str(key, self.as_str());
    }
    fn get(bucket: &CheckpointBucket, key: &str) -> Result<Self, CheckpointError> {
        Ok(bucket.str(key)?.to_owned())
    }
}

macro_rules! int_primitive {
    ($put:ident, $get:ident, $wide:ty => $($ty:ty),*) => {$(
        impl CheckpointPrimitive for $ty {
            fn put(&self, bucket: &mut CheckpointBucket, key: &str) {
                // Widening: every integer type here is at most 64 bits on supported targets.
                bucket.$put(key, *self as $wide);
            }
            fn get(bucket: &CheckpointBucket, key: &str) -> Result<Self, CheckpointError> {
                let wide = bucket.$get(key)?;
                <$ty>::try_from(wide).map_err(|_| CheckpointError::OutOfRange {
                    key: key.into(),
                    value: wide.to_string(),
                    ty: stringify!($ty),
                })
            }
        }
    )*};
}

int_primitive!(put_i64, i64, i64 => i8, i16, i32, i64, isize);
int_primitive!(put_u64, u64, u64 => u8, u16, u32, u64, usize);

impl CheckpointPrimitive for f64 {
    fn put(&self, bucket: &mut CheckpointBucket, key: &str) {
        bucket.put_f64(key, *self);
    }
    fn get(bucket: &CheckpointBucket, key: &str) -> Result<Self, CheckpointError> {
        Ok(bucket.f64(key)?)
    }
}

impl CheckpointPrimitive for f32 {
    fn put(&self, bucket: &mut CheckpointBucket, key: &str) {
        bucket.put_f64(key, f64::from(*self));
    }
    fn get(bucket: &CheckpointBucket, key: &str) -> Result<Self, CheckpointError> {
        // Stored from an f32, so narrowing back is exact.
        Ok(bucket.f64(key)? as f32)
    }
}

/// Stores any serde value as JSON (the derive's default for non-primitive fields).
pub fn put_json<T: Serialize>(
    bucket: &mut CheckpointBucket,
    key: &str,
    value: &T,
) -> Result<(), CheckpointError> {
    bucket.put_serde(key, value)?;
    Ok(())
}

/// Reads a JSON value stored by [`put_json`].
pub fn get_json<T: DeserializeOwned>(
    bucket: &CheckpointBucket,
    key: &str,
) -> Result<T, CheckpointError> {
    Ok(bucket.serde(key)?)
}

/// Stores a serde value as bytes through the compact binary codec (`#[krescent(binary)]`).
pub fn put_binary<T: Serialize>(
    bucket: &mut CheckpointBucket,
    key: &str,
    value: &T,
) -> Result<(), CheckpointError> {
    let bytes = postcard::to_allocvec(value).map_err(|source| CheckpointError::Binary {
        key: key.into(),
        source,
    })?;
    bucket.put_bytes(key, bytes);
    Ok(())
}

/// Reads a value stored by [`put_binary`].
pub fn get_binary<T: DeserializeOwned>(
    bucket: &CheckpointBucket,
    key: &str,
) -> Result<T, CheckpointError> {
    let bytes = bucket.bytes(key)?;
    postcard::from_bytes(bytes).map_err(|source| CheckpointError::Binary {
        key: key.into(),
        source,
    })
}

/// Stores a nested [`CheckpointSupport`] value (a model extension) as a nested bucket.
pub fn put_nested<T: CheckpointSupport>(
    bucket: &mut CheckpointBucket,
    key: &str,
    value: &T,
) -> Result<(), CheckpointError> {
    let mut inner = CheckpointBucket::new();
    value.create_checkpoint(&mut inner)?;
    bucket.put_bucket(key, inner);
    Ok(())
}

/// Restores a nested value stored by [`put_nested`] into a copy of `current`.
pub fn get_nested<T: CheckpointSupport + Clone>(
    bucket: &CheckpointBucket,
    key: &str,
    current: &T,
) -> Result<T, CheckpointError> {
    let inner = bucket.bucket(key)?;
    let mut value = current.clone();
    value.restore_checkpoint(inner)?;
    Ok(value)
}

/// Mixes a derive's own fingerprint with the fingerprints of nested values, at compile time.
pub const fn mix_shape(own: u64, nested: &[u64]) -> u64 {
    let mut h = own;
    let mut i = 0;
    while i < nested.len() {
        h = (h ^ nested[i])
            .wrapping_mul(0x0000_0100_0000_01b3)
            .rotate_left(29);
        i += 1;
    }
    h
}

/// Writes the delta of a nested [`CheckpointSupport`] value as a nested bucket; `false` if it
/// has none to write (then the whole checkpoint is written in full).
pub fn put_nested_delta<T: CheckpointSupport>(
    bucket: &mut CheckpointBucket,
    key: &str,
    value: &T,
) -> Result<bool, CheckpointError> {
    let mut inner = CheckpointBucket::new();
    if !value.create_checkpoint_delta(&mut inner)? {
        return Ok(false);
    }
    bucket.put_bucket(key, inner);
    Ok(true)
}

/// Applies a nested delta stored by [`put_nested_delta`] to a copy of `current`.
pub fn get_nested_delta<T: CheckpointSupport + Clone>(
    bucket: &CheckpointBucket,
    key: &str,
    current: &T,
) -> Result<T, CheckpointError> {
    let inner = bucket.bucket(key)?;
    let mut value = current.clone();
    value.restore_checkpoint_delta(inner)?;
    Ok(value)
}

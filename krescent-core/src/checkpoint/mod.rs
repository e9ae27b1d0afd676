//! Checkpoints: a model's state saved together with the position of the last event that
//! produced it, so a restart continues from there instead of replaying the whole history.
//!
//! What a model saves is written into a [`CheckpointBucket`] of keyed, typed values
//! ([`CheckpointValue`]): booleans, integers, floats, strings, bytes, JSON and nested buckets.
//! A bucket [encodes](CheckpointBucket::encode) to a stable, versioned binary format described
//! in [`codec`], and [decoding](CheckpointBucket::decode) untrusted bytes gives a typed
//! [`BucketError`], never a panic.
//!
//! *When* a model writes a checkpoint is its [`CheckpointStrategy`] ([`strategy`]); *where*
//! is a [`CheckpointStorage`] ([`storage`]), which keeps one [`StoredCheckpoint`] (the state
//! with its model name, [`CheckpointVersion`], position and time) per model.

mod bucket;
pub mod codec;
mod error;
mod map;
pub mod storage;
pub(crate) mod stored;
pub mod strategy;
mod support;

pub use bucket::{CheckpointBucket, CheckpointValue, IntoIter, Iter, ValueKind};
pub use error::{BucketError, Corruption, KeyError};
pub use map::{CheckpointMap, CheckpointMapIter, MapDelta};
pub use storage::{
    CheckpointInfo, CheckpointStorage, CheckpointStorageError, FileCheckpointStorage,
    InMemoryCheckpointStorage, ModelNameError, PendingWrites, validate_model_name,
};
pub use stored::{CheckpointDelta, CheckpointVersion, DeltaChainError, StoredCheckpoint};
pub(crate) use stored::{chain_problem, continues_chain};
pub use strategy::{
    Always, CheckpointStrategy, CheckpointStrategyExt, FixedEventRate, FixedTimeRate, Manual,
    ManualTrigger, Never, StrategyError,
};
pub use support::{
    CheckpointError, CheckpointPrimitive, CheckpointSupport, DeltaState, get_binary, get_json,
    get_nested, get_nested_delta, mix_shape, put_binary, put_json, put_nested, put_nested_delta,
};

//! Helpers the backend crates (`krescent-sqlite`, `krescent-postgres`) share with the
//! in-memory and file implementations here. Not public API: it may change in any release.

use crate::checkpoint::{CheckpointDelta, CheckpointStorageError, validate_model_name};

pub use crate::checkpoint::stored::continues_chain;
pub use crate::event::ids::new_ids;
pub use crate::store::fast_hash::{FastHasher, FastState};
pub use crate::store::pages_ahead::{PageFuture, PageReader, PageTask, pages_ahead};

/// Checks the model name of `delta` and encodes it: the first step of every
/// [`CheckpointStorage::store_delta`](crate::checkpoint::CheckpointStorage::store_delta).
pub fn encode_delta(delta: &CheckpointDelta) -> Result<Vec<u8>, CheckpointStorageError> {
    validate_model_name(&delta.model)?;
    delta
        .encode()
        .map_err(|source| CheckpointStorageError::encode(&delta.model, source))
}

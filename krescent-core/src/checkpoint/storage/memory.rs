//! [`InMemoryCheckpointStorage`]: checkpoints in memory, lost when the process ends.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::RwLock;

use super::{CheckpointInfo, CheckpointStorage, CheckpointStorageError, validate_model_name};
use crate::checkpoint::stored::StoredCheckpoint;

/// Checkpoints in memory, lost when the process ends. Cloning gives another handle to the same
/// checkpoints.
///
/// Checkpoints are kept encoded, exactly as a persistent storage keeps them, and decoded on
/// [`load`](CheckpointStorage::load) and [`list`](CheckpointStorage::list): a state that does
/// not survive encoding fails in tests with this storage as it would in production.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use krescent_core::checkpoint::{
///     CheckpointBucket, CheckpointStorage, CheckpointVersion, InMemoryCheckpointStorage,
///     StoredCheckpoint,
/// };
///
/// let storage = InMemoryCheckpointStorage::new();
/// let checkpoint = StoredCheckpoint::new(
///     "book.available",
///     CheckpointVersion::new(1, 1, 0),
///     42,
///     CheckpointBucket::new().with("copies", 3_u64),
/// );
/// storage.store(&checkpoint).await?;
/// assert_eq!(storage.load("book.available").await?, Some(checkpoint));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Default)]
pub struct InMemoryCheckpointStorage {
    checkpoints: Arc<RwLock<BTreeMap<String, Arc<[u8]>>>>,
}

impl InMemoryCheckpointStorage {
    /// An empty storage.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many models have a checkpoint.
    pub fn len(&self) -> usize {
        self.checkpoints.read().len()
    }

    /// Whether no model has a checkpoint.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for InMemoryCheckpointStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let checkpoints = self.checkpoints.read();
        f.debug_struct("InMemoryCheckpointStorage")
            .field("models", &checkpoints.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The location named in errors.
const LOCATION: &str = "memory";

fn decode(model: &str, bytes: &[u8]) -> Result<StoredCheckpoint, CheckpointStorageError> {
    StoredCheckpoint::decode(bytes)
        .map_err(|source| CheckpointStorageError::corrupt(model, LOCATION, source))
}

#[async_trait]
impl CheckpointStorage for InMemoryCheckpointStorage {
    async fn load(&self, model: &str) -> Result<Option<StoredCheckpoint>, CheckpointStorageError> {
        validate_model_name(model)?;
        // Clone the bytes out so that decoding happens without the lock.
        let bytes = self.checkpoints.read().get(model).cloned();
        bytes.map(|bytes| decode(model, &bytes)).transpose()
    }

    async fn store(&self, checkpoint: &StoredCheckpoint) -> Result<(), CheckpointStorageError> {
        validate_model_name(&checkpoint.model)?;
        let bytes = checkpoint
            .encode()
            .map_err(|source| CheckpointStorageError::encode(&checkpoint.model, source))?;
        self.checkpoints
            .write()
            .insert(checkpoint.model.clone(), bytes.into());
        Ok(())
    }

    async fn delete(&self, model: &str) -> Result<bool, CheckpointStorageError> {
        validate_model_name(model)?;
        Ok(self.checkpoints.write().remove(model).is_some())
    }

    async fn list(&self) -> Result<Vec<CheckpointInfo>, CheckpointStorageError> {
        let entries: Vec<(String, Arc<[u8]>)> = self
            .checkpoints
            .read()
            .iter()
            .map(|(model, bytes)| (model.clone(), Arc::clone(bytes)))
            .collect();
        entries
            .iter()
            .map(|(model, bytes)| decode(model, bytes).map(CheckpointInfo::from))
            .collect()
    }
}

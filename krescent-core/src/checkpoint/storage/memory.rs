//! [`InMemoryCheckpointStorage`]: checkpoints in memory, lost when the process ends.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::RwLock;

use super::{CheckpointInfo, CheckpointStorage, CheckpointStorageError, validate_model_name};
use crate::checkpoint::continues_chain;
use crate::checkpoint::stored::{CheckpointDelta, StoredCheckpoint};

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
///
/// It keeps [checkpoint deltas](CheckpointStorage::supports_deltas): each as its own encoded
/// record after the checkpoint, dropped when the next full checkpoint is stored.
#[derive(Clone, Default)]
pub struct InMemoryCheckpointStorage {
    checkpoints: Arc<RwLock<BTreeMap<String, Chain>>>,
}

/// A checkpoint and its deltas, encoded.
#[derive(Clone)]
struct Chain {
    base: Arc<[u8]>,
    /// The position of the latest state (the last delta's, or the checkpoint's).
    tip: u64,
    deltas: Vec<Arc<Vec<u8>>>,
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

/// The checkpoint and deltas of a chain, decoded.
fn decode_chain(model: &str, chain: &Chain) -> Result<StoredCheckpoint, CheckpointStorageError> {
    let mut checkpoint = decode(model, &chain.base)?;
    for bytes in &chain.deltas {
        let delta = CheckpointDelta::decode(bytes)
            .map_err(|source| CheckpointStorageError::corrupt(model, LOCATION, source))?;
        checkpoint
            .push_delta(delta)
            .map_err(|source| CheckpointStorageError::BrokenChain {
                model: model.to_owned(),
                location: LOCATION.to_owned(),
                source: Box::new(source),
            })?;
    }
    Ok(checkpoint)
}

#[async_trait]
impl CheckpointStorage for InMemoryCheckpointStorage {
    async fn load(&self, model: &str) -> Result<Option<StoredCheckpoint>, CheckpointStorageError> {
        validate_model_name(model)?;
        // Clone the bytes out so that decoding happens without the lock.
        let chain = self.checkpoints.read().get(model).cloned();
        chain.map(|chain| decode_chain(model, &chain)).transpose()
    }

    async fn store(&self, checkpoint: &StoredCheckpoint) -> Result<(), CheckpointStorageError> {
        validate_model_name(&checkpoint.model)?;
        let bytes = checkpoint
            .encode()
            .map_err(|source| CheckpointStorageError::encode(&checkpoint.model, source))?;
        self.checkpoints.write().insert(
            checkpoint.model.clone(),
            Chain {
                base: bytes.into(),
                tip: checkpoint.position,
                deltas: Vec::new(),
            },
        );
        Ok(())
    }

    async fn delete(&self, model: &str) -> Result<bool, CheckpointStorageError> {
        validate_model_name(model)?;
        Ok(self.checkpoints.write().remove(model).is_some())
    }

    async fn list(&self) -> Result<Vec<CheckpointInfo>, CheckpointStorageError> {
        let entries: Vec<(String, Chain)> = self
            .checkpoints
            .read()
            .iter()
            .map(|(model, chain)| (model.clone(), chain.clone()))
            .collect();
        entries
            .iter()
            .map(|(model, chain)| {
                let mut info = CheckpointInfo::from(decode(model, &chain.base)?);
                if let Some(last) = chain.deltas.last() {
                    let delta = CheckpointDelta::decode(last).map_err(|source| {
                        CheckpointStorageError::corrupt(model, LOCATION, source)
                    })?;
                    info.position = delta.position;
                    info.timestamp = delta.timestamp;
                }
                Ok(info)
            })
            .collect()
    }

    fn supports_deltas(&self) -> bool {
        true
    }

    async fn store_delta(&self, delta: &CheckpointDelta) -> Result<(), CheckpointStorageError> {
        let bytes = crate::__backend::encode_delta(delta)?;
        let mut checkpoints = self.checkpoints.write();
        let chain = checkpoints.get_mut(&delta.model);
        match chain {
            Some(chain) if continues_chain(chain.tip, delta.base_position, delta.position) => {
                chain.deltas.push(Arc::new(bytes));
                chain.tip = delta.position;
                Ok(())
            }
            chain => Err(CheckpointStorageError::DeltaBaseMismatch {
                model: delta.model.clone(),
                base_position: delta.base_position,
                latest: chain.map(|c| c.tip),
            }),
        }
    }
}

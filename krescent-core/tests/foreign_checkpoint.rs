//! A checkpoint that belongs to another model (a checkpoint file copied or renamed by hand)
//! is discarded like any other invalid checkpoint while rebuilding is on, and is
//! `ModelError::CheckpointInvalid` naming the model only with `rebuild_on_invalid(false)`.

use std::sync::Arc;

use krescent_core::checkpoint::{
    Always, CheckpointStorage, CheckpointStorageError, FileCheckpointStorage,
    InMemoryCheckpointStorage, Never, StoredCheckpoint,
};
use krescent_core::model::{EventOutcome, ModelError, ReadModelExt};
use krescent_core::{EventStoreExt, InMemoryEventStore};
use serde::{Deserialize, Serialize};

#[derive(krescent_derive::Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[krescent(crate = "krescent_core", catalog = "foreign.checkpoint", revision = 1)]
pub enum TallyEvent {
    #[krescent(name = "tally.up")]
    Up { by: u64 },
}

/// The model whose checkpoint ends up under the other's name.
#[derive(krescent_derive::ReadModel, krescent_derive::CheckpointSupport, Default, Debug)]
#[krescent(crate = "krescent_core", name = "tally.owner", version = 1)]
#[krescent(events = TallyEvent, handles(Up))]
pub struct Owner {
    total: u64,
}

impl Owner {
    fn on_up(&mut self, by: &u64) -> EventOutcome {
        self.total += by;
        EventOutcome::Handled
    }
}

/// The same events and state under another name: the checkpoint of `Owner` is not its own.
#[derive(krescent_derive::ReadModel, krescent_derive::CheckpointSupport, Default, Debug)]
#[krescent(crate = "krescent_core", name = "tally.other", version = 1)]
#[krescent(events = TallyEvent, handles(Up))]
pub struct Other {
    total: u64,
}

impl Other {
    fn on_up(&mut self, by: &u64) -> EventOutcome {
        self.total += by;
        EventOutcome::Handled
    }
}

/// Three events (total 6), and `Owner`'s checkpoint of them in `storage`.
async fn history(storage: Arc<dyn CheckpointStorage>) -> InMemoryEventStore {
    let store = InMemoryEventStore::new();
    for by in [1, 2, 3] {
        store
            .append_events(&[TallyEvent::Up { by }], None)
            .await
            .expect("append");
    }
    let mut owner = Owner::default().configure(|c| c.use_shared_checkpoints(storage, Always));
    let metrics = owner.catch_up(&store).await.expect("owner catches up");
    assert_eq!((metrics.position, owner.model().total), (3, 6));
    store
}

/// With rebuilding on, `Other` discards the foreign checkpoint and replays every event; with
/// it off, the checkpoint is `CheckpointInvalid` naming `Other`.
async fn expect_discarded(storage: Arc<dyn CheckpointStorage>, store: &InMemoryEventStore) {
    let mut other =
        Other::default().configure(|c| c.use_shared_checkpoints(storage.clone(), Never));
    let metrics = other
        .catch_up(store)
        .await
        .expect("a foreign checkpoint is discarded while rebuilding is on");
    assert_eq!(
        (
            metrics.restored_from,
            metrics.events_handled,
            other.model().total
        ),
        (None, 3, 6),
        "rebuilt from the first event"
    );

    let mut strict = Other::default().configure(|c| {
        c.use_shared_checkpoints(storage, Never)
            .rebuild_on_invalid(false)
    });
    match strict.catch_up(store).await {
        Err(ModelError::CheckpointInvalid { model, reason }) => {
            assert_eq!(model, "tally.other");
            assert!(reason.contains("tally.owner"), "{reason}");
        }
        other => panic!("expected CheckpointInvalid, got {other:?}"),
    }
}

#[tokio::test]
async fn a_checkpoint_file_of_another_model_is_discarded_when_rebuilding() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let files = Arc::new(FileCheckpointStorage::new(dir.path()).expect("storage"));
    let store = history(files.clone()).await;
    std::fs::copy(
        files.file_path("tally.owner").expect("path"),
        files.file_path("tally.other").expect("path"),
    )
    .expect("copy the owner's checkpoint under the other's name");
    expect_discarded(files, &store).await;
}

/// An in-memory storage that hands out `Owner`'s checkpoint when `Other`'s is loaded, and
/// reports it as a mismatch as the file, SQLite and PostgreSQL storages do.
#[derive(Debug, Default)]
struct Misfiled(InMemoryCheckpointStorage);

#[async_trait::async_trait]
impl CheckpointStorage for Misfiled {
    async fn load(&self, model: &str) -> Result<Option<StoredCheckpoint>, CheckpointStorageError> {
        if model != "tally.other" {
            return self.0.load(model).await;
        }
        match self.0.load("tally.owner").await? {
            Some(found) => Err(CheckpointStorageError::ModelMismatch {
                expected: model.to_owned(),
                found: found.model,
                location: "memory".to_owned(),
            }),
            None => Ok(None),
        }
    }

    async fn store(&self, checkpoint: &StoredCheckpoint) -> Result<(), CheckpointStorageError> {
        self.0.store(checkpoint).await
    }

    async fn delete(&self, model: &str) -> Result<bool, CheckpointStorageError> {
        self.0.delete(model).await
    }

    async fn list(
        &self,
    ) -> Result<Vec<krescent_core::checkpoint::CheckpointInfo>, CheckpointStorageError> {
        self.0.list().await
    }
}

#[tokio::test]
async fn a_mismatch_reported_by_the_storage_is_discarded_when_rebuilding() {
    let storage = Arc::new(Misfiled::default());
    let store = history(storage.clone()).await;
    expect_discarded(storage, &store).await;
}

/// A storage that returns another model's checkpoint as if it were the requested one is
/// caught by the runner itself, with the same outcome.
#[tokio::test]
async fn another_models_checkpoint_returned_as_is_is_discarded_when_rebuilding() {
    let memory = Arc::new(InMemoryCheckpointStorage::new());
    let store = history(memory.clone()).await;
    let relabelled = Arc::new(Relabel(memory));
    expect_discarded(relabelled, &store).await;
}

/// Hands out `Owner`'s checkpoint, unchanged, when `Other`'s is loaded.
#[derive(Debug)]
struct Relabel(Arc<InMemoryCheckpointStorage>);

#[async_trait::async_trait]
impl CheckpointStorage for Relabel {
    async fn load(&self, model: &str) -> Result<Option<StoredCheckpoint>, CheckpointStorageError> {
        let name = if model == "tally.other" {
            "tally.owner"
        } else {
            model
        };
        self.0.load(name).await
    }

    async fn store(&self, checkpoint: &StoredCheckpoint) -> Result<(), CheckpointStorageError> {
        self.0.store(checkpoint).await
    }

    async fn delete(&self, model: &str) -> Result<bool, CheckpointStorageError> {
        self.0.delete(model).await
    }

    async fn list(
        &self,
    ) -> Result<Vec<krescent_core::checkpoint::CheckpointInfo>, CheckpointStorageError> {
        self.0.list().await
    }
}

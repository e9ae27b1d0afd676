//! `#[krescent(writes = field)]`: projection writes committed with each checkpoint in one
//! transaction of the checkpoint storage, here a storage whose "table" lives next to its
//! checkpoints in memory.

use std::sync::Arc;

use async_trait::async_trait;
use krescent::checkpoint::{
    CheckpointInfo, CheckpointStorage, CheckpointStorageError, FixedEventRate,
    InMemoryCheckpointStorage, PendingWrites, StoredCheckpoint,
};
use krescent::model::ModelError;
use krescent::prelude::*;
use parking_lot::Mutex;

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[krescent(catalog = "ledger")]
pub enum LedgerEvent {
    #[krescent(name = "ledger.posted")]
    Posted { amount: i64 },
    #[krescent(name = "ledger.broken")]
    Broken,
}

/// Rows to insert, buffered between checkpoints.
#[derive(Default, Debug)]
pub struct Rows(Vec<i64>);

impl PendingWrites for Rows {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    fn as_any(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

#[derive(ReadModel, CheckpointSupport, Default)]
#[krescent(
    name = "ledger.rows",
    events = LedgerEvent,
    handles(Posted, Broken),
    writes = rows
)]
pub struct LedgerRows {
    total: i64,
    #[krescent(skip)]
    rows: Rows,
}

impl LedgerRows {
    fn on_posted(&mut self, amount: &i64) {
        self.total += amount;
        self.rows.0.push(*amount);
    }
    fn on_broken(&mut self) -> Result<(), String> {
        Err("broken event".into())
    }
}

/// Checkpoints and a table, changed together under one lock (the "transaction").
#[derive(Clone, Default)]
struct Database {
    checkpoints: InMemoryCheckpointStorage,
    table: Arc<Mutex<Vec<i64>>>,
    transaction: Arc<tokio::sync::Mutex<()>>,
}

#[async_trait]
impl CheckpointStorage for Database {
    async fn load(&self, model: &str) -> Result<Option<StoredCheckpoint>, CheckpointStorageError> {
        self.checkpoints.load(model).await
    }
    async fn store(&self, checkpoint: &StoredCheckpoint) -> Result<(), CheckpointStorageError> {
        self.checkpoints.store(checkpoint).await
    }
    async fn delete(&self, model: &str) -> Result<bool, CheckpointStorageError> {
        self.checkpoints.delete(model).await
    }
    async fn list(&self) -> Result<Vec<CheckpointInfo>, CheckpointStorageError> {
        self.checkpoints.list().await
    }
    async fn store_with_writes(
        &self,
        checkpoint: &StoredCheckpoint,
        writes: &mut (dyn PendingWrites + '_),
    ) -> Result<(), CheckpointStorageError> {
        let Some(rows) = writes.as_any().downcast_mut::<Rows>() else {
            panic!("the test only hands Rows");
        };
        let _transaction = self.transaction.lock().await;
        self.checkpoints.store(checkpoint).await?;
        self.table.lock().append(&mut rows.0);
        Ok(())
    }
}

fn posted(n: i64) -> LedgerEvent {
    LedgerEvent::Posted { amount: n }
}

#[tokio::test]
async fn writes_are_committed_with_each_checkpoint_and_only_then() {
    let store = InMemoryEventStore::new();
    let events: Vec<_> = (1..=7).map(posted).collect();
    store.append_events(&events, None).await.unwrap();
    let db = Database::default();

    let mut runner = LedgerRows::default()
        .configure(|c| c.use_checkpoints(db.clone(), FixedEventRate::new(3).unwrap()));
    runner.catch_up(&store).await.unwrap();
    // Checkpoints after events 3 and 6; rows 7 is still buffered with no checkpoint.
    assert_eq!(*db.table.lock(), [1, 2, 3, 4, 5, 6]);
    assert_eq!(db.load("ledger.rows").await.unwrap().unwrap().position, 6);
    assert_eq!(runner.model().rows.0, [7]);
    runner.checkpoint_now().await.unwrap();
    assert_eq!(*db.table.lock(), [1, 2, 3, 4, 5, 6, 7]);
    assert!(runner.model().rows.0.is_empty());

    // A handler error after more writes: nothing after the last checkpoint is committed, and a
    // restart resumes from the checkpoint, so the table never holds a row twice.
    store
        .append_events(&[posted(8), posted(9), LedgerEvent::Broken], None)
        .await
        .unwrap();
    let mut runner = LedgerRows::default()
        .configure(|c| c.use_checkpoints(db.clone(), FixedEventRate::new(100).unwrap()));
    let err = runner.catch_up(&store).await.unwrap_err();
    assert!(matches!(err, ModelError::Handler { .. }), "{err:?}");
    assert_eq!(*db.table.lock(), [1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(db.load("ledger.rows").await.unwrap().unwrap().position, 7);
}

#[tokio::test]
async fn a_storage_without_transactions_refuses_writes() {
    let store = InMemoryEventStore::new();
    store.append_events(&[posted(1)], None).await.unwrap();
    let storage = InMemoryCheckpointStorage::new();
    let mut runner = LedgerRows::default()
        .configure(|c| c.use_checkpoints(storage.clone(), FixedEventRate::new(1).unwrap()));
    let err = runner.catch_up(&store).await.unwrap_err();
    assert!(
        matches!(
            &err,
            ModelError::Storage {
                source: CheckpointStorageError::WritesUnsupported { model },
                ..
            } if model == "ledger.rows"
        ),
        "{err:?}"
    );
    assert_eq!(storage.load("ledger.rows").await.unwrap(), None);
}

#[tokio::test]
async fn writes_without_checkpoints_are_refused_at_start() {
    let store = InMemoryEventStore::new();
    store.append_events(&[posted(1)], None).await.unwrap();
    let err = LedgerRows::default()
        .runner()
        .catch_up(&store)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ModelError::WritesWithoutCheckpoints {
                model: "ledger.rows"
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("use_checkpoints"), "{err}");
}

#[tokio::test]
async fn a_failed_model_with_writes_refuses_to_go_on() {
    let store = InMemoryEventStore::new();
    store
        .append_events(&[posted(1), LedgerEvent::Broken, posted(2)], None)
        .await
        .unwrap();
    let db = Database::default();
    let mut runner = LedgerRows::default()
        .configure(|c| c.use_checkpoints(db.clone(), FixedEventRate::new(1).unwrap()));
    let err = runner.catch_up(&store).await.unwrap_err();
    assert!(
        matches!(err, ModelError::Handler { position: 2, .. }),
        "{err:?}"
    );
    for _ in 0..2 {
        let again = runner.catch_up(&store).await.unwrap_err();
        assert!(
            matches!(
                again,
                ModelError::WritesLost {
                    model: "ledger.rows"
                }
            ),
            "{again:?}"
        );
    }
    assert!(matches!(
        runner.checkpoint_now().await,
        Err(ModelError::WritesLost { .. })
    ));
    assert_eq!(*db.table.lock(), [1]);
}

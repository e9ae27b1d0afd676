//! Checkpoint deltas end to end: a `CheckpointMap` model writes a full checkpoint, then deltas,
//! then a full one again after `max_delta_chain`; a restart applies the chain; storages
//! without deltas, a chain that no longer matches the storage, and a property test that
//! restore + delta equals a full replay for random adds, removals and clears.

use std::sync::Arc;

use async_trait::async_trait;
use krescent::checkpoint::{
    Always, CheckpointDelta, CheckpointInfo, CheckpointStorage, CheckpointStorageError,
    FileCheckpointStorage, FixedEventRate, InMemoryCheckpointStorage, Never, StoredCheckpoint,
};
use krescent::prelude::*;
use proptest::prelude::*;

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[krescent(catalog = "ledger", revision = 1)]
pub enum LedgerEvent {
    #[krescent(name = "ledger.added")]
    Added {
        #[krescent(tag)]
        key: String,
        by: i64,
    },
    #[krescent(name = "ledger.closed")]
    Closed {
        #[krescent(tag)]
        key: String,
    },
    #[krescent(name = "ledger.reset")]
    Reset,
}

#[derive(ReadModel, CheckpointSupport, Default, Debug, Clone, PartialEq)]
#[krescent(name = "test.ledger", version = 1, events = LedgerEvent, handles(Added, Closed, Reset))]
pub struct Ledger {
    #[krescent(delta)]
    balances: CheckpointMap<String, i64>,
    /// Written whole into every delta.
    total: i64,
}

impl Ledger {
    fn on_added(&mut self, key: &str, by: &i64) {
        *self.balances.get_or_insert_with(key.to_owned(), || 0) += by;
        self.total += by;
    }
    fn on_closed(&mut self, key: &str) {
        if let Some(v) = self.balances.remove(key) {
            self.total -= v;
        }
    }
    fn on_reset(&mut self) {
        self.balances.clear();
        self.total = 0;
    }
}

fn added(key: &str, by: i64) -> LedgerEvent {
    LedgerEvent::Added {
        key: key.into(),
        by,
    }
}

/// Events over `keys` keys: every key once, then `n` more adds spread over them.
fn events(keys: usize, n: usize) -> Vec<LedgerEvent> {
    (0..keys)
        .map(|k| added(&format!("k{k}"), 1))
        .chain((0..n).map(|i| added(&format!("k{}", (i * 7) % keys), i as i64 % 5)))
        .collect()
}

async fn replay(store: &InMemoryEventStore) -> Ledger {
    let mut r = Ledger::default().runner();
    r.catch_up(store).await.unwrap();
    r.into_model()
}

async fn restored(storage: impl CheckpointStorage + 'static, store: &InMemoryEventStore) -> Ledger {
    let mut r = Ledger::default().configure(|c| c.use_checkpoints(storage, Never));
    let m = r.catch_up(store).await.unwrap();
    assert_eq!(m.events_handled, 0, "the checkpoint is at the head");
    r.into_model()
}

#[tokio::test]
async fn deltas_follow_a_full_checkpoint_and_restore_to_the_same_state() {
    let store = InMemoryEventStore::new();
    store.append_events(&events(100, 200), None).await.unwrap();
    let storage = InMemoryCheckpointStorage::new();
    let mut r = Ledger::default().configure(|c| {
        c.use_checkpoints(storage.clone(), FixedEventRate::new(20).unwrap())
            .max_delta_chain(100)
    });
    let m = r.catch_up(&store).await.unwrap();
    assert_eq!(m.checkpoints_written, 15);
    // At 20 there is nothing to build on; at 40 half the map is new, so a delta is not
    // smaller than the map: both are full. From 60 on, 20 changed keys of 60 or more: deltas.
    assert_eq!(m.deltas_written, 13);
    let loaded = storage.load("test.ledger").await.unwrap().unwrap();
    assert_eq!(loaded.position, 40);
    assert_eq!(loaded.deltas.len(), 13);
    assert_eq!(loaded.latest_position(), 300);
    let info = storage.list().await.unwrap();
    assert_eq!(info[0].position, 300);

    let full = replay(&store).await;
    assert_eq!(restored(storage.clone(), &store).await, full);
    assert_eq!(r.model(), &full);
}

#[tokio::test]
async fn a_full_checkpoint_follows_max_delta_chain_deltas() {
    let store = InMemoryEventStore::new();
    store.append_events(&events(100, 200), None).await.unwrap();
    let storage = InMemoryCheckpointStorage::new();
    let mut r = Ledger::default().configure(|c| {
        c.use_checkpoints(storage.clone(), FixedEventRate::new(20).unwrap())
            .max_delta_chain(3)
    });
    let m = r.catch_up(&store).await.unwrap();
    // Full at 20 and 40 (see above), deltas at 60, 80, 100, full at 120, deltas at 140, 160,
    // 180, full at 200, …: 15 checkpoints hold 10 deltas.
    assert_eq!(m.checkpoints_written, 15);
    assert_eq!(m.deltas_written, 10);
    let loaded = storage.load("test.ledger").await.unwrap().unwrap();
    assert_eq!((loaded.position, loaded.deltas.len()), (280, 1));
    assert_eq!(restored(storage, &store).await, replay(&store).await);
}

#[tokio::test]
async fn max_delta_chain_zero_writes_full_checkpoints_only() {
    let store = InMemoryEventStore::new();
    store.append_events(&events(100, 100), None).await.unwrap();
    let storage = InMemoryCheckpointStorage::new();
    let mut r = Ledger::default().configure(|c| {
        c.use_checkpoints(storage.clone(), FixedEventRate::new(20).unwrap())
            .max_delta_chain(0)
    });
    let m = r.catch_up(&store).await.unwrap();
    assert_eq!((m.checkpoints_written, m.deltas_written), (10, 0));
    assert!(
        storage
            .load("test.ledger")
            .await
            .unwrap()
            .unwrap()
            .deltas
            .is_empty()
    );
}

#[tokio::test]
async fn a_restarted_runner_continues_the_chain_it_restored() {
    let store = InMemoryEventStore::new();
    store.append_events(&events(100, 60), None).await.unwrap();
    let storage = InMemoryCheckpointStorage::new();
    let config = |c: krescent::model::ModelConfig| {
        c.use_checkpoints(storage.clone(), FixedEventRate::new(20).unwrap())
            .max_delta_chain(100)
    };
    let mut first = Ledger::default().configure(config);
    first.catch_up(&store).await.unwrap();
    store
        .append_events(&events(100, 60)[..80], None)
        .await
        .unwrap();
    let mut second = Ledger::default().configure(config);
    let m = second.catch_up(&store).await.unwrap();
    assert_eq!(m.restored_from, Some(160));
    assert_eq!(m.events_handled, 80);
    assert_eq!(
        m.deltas_written, 4,
        "the restored chain goes on with deltas"
    );
    let loaded = storage.load("test.ledger").await.unwrap().unwrap();
    assert_eq!((loaded.position, loaded.deltas.len()), (40, 10));
    assert_eq!(restored(storage, &store).await, replay(&store).await);
}

#[tokio::test]
async fn removals_and_clears_travel_in_deltas() {
    let store = InMemoryEventStore::new();
    let mut evs = events(50, 0);
    evs.extend([
        LedgerEvent::Closed { key: "k1".into() },
        added("k1", 9),
        LedgerEvent::Closed { key: "k2".into() },
        LedgerEvent::Closed { key: "k3".into() },
    ]);
    store.append_events(&evs, None).await.unwrap();
    let storage = InMemoryCheckpointStorage::new();
    let mut r = Ledger::default().configure(|c| c.use_checkpoints(storage.clone(), Always));
    let m = r.catch_up(&store).await.unwrap();
    assert!(m.deltas_written >= 4);
    assert_eq!(
        restored(storage.clone(), &store).await,
        replay(&store).await
    );

    store
        .append_events(&[LedgerEvent::Reset, added("fresh", 1)], None)
        .await
        .unwrap();
    let m = r.catch_up(&store).await.unwrap();
    assert_eq!(m.events_handled, 56);
    let after = restored(storage, &store).await;
    assert_eq!(after, replay(&store).await);
    assert_eq!(after.balances.len(), 1);
}

/// A storage that keeps no deltas: the runner writes every checkpoint in full.
#[derive(Clone, Default)]
struct NoDeltas(InMemoryCheckpointStorage);

#[async_trait]
impl CheckpointStorage for NoDeltas {
    async fn load(&self, model: &str) -> Result<Option<StoredCheckpoint>, CheckpointStorageError> {
        self.0.load(model).await
    }
    async fn store(&self, checkpoint: &StoredCheckpoint) -> Result<(), CheckpointStorageError> {
        self.0.store(checkpoint).await
    }
    async fn delete(&self, model: &str) -> Result<bool, CheckpointStorageError> {
        self.0.delete(model).await
    }
    async fn list(&self) -> Result<Vec<CheckpointInfo>, CheckpointStorageError> {
        self.0.list().await
    }
}

#[tokio::test]
async fn a_storage_without_deltas_gets_full_checkpoints() {
    let store = InMemoryEventStore::new();
    store.append_events(&events(100, 100), None).await.unwrap();
    let storage = NoDeltas::default();
    let mut r = Ledger::default()
        .configure(|c| c.use_checkpoints(storage.clone(), FixedEventRate::new(20).unwrap()));
    let m = r.catch_up(&store).await.unwrap();
    assert_eq!((m.checkpoints_written, m.deltas_written), (10, 0));
    assert_eq!(restored(storage, &store).await, replay(&store).await);
}

#[tokio::test]
async fn a_chain_that_no_longer_matches_the_storage_falls_back_to_a_full_checkpoint() {
    let store = InMemoryEventStore::new();
    store.append_events(&events(100, 100), None).await.unwrap();
    let storage = InMemoryCheckpointStorage::new();
    let mut r = Ledger::default().configure(|c| c.use_checkpoints(storage.clone(), Never));
    r.catch_up(&store).await.unwrap();
    assert!(r.checkpoint_now().await.unwrap());
    store
        .append_events(&events(100, 0)[..10], None)
        .await
        .unwrap();
    r.catch_up(&store).await.unwrap();
    // Someone deletes the checkpoint: a delta has nothing to build on.
    assert!(storage.delete("test.ledger").await.unwrap());
    assert!(r.checkpoint_now().await.unwrap());
    assert_eq!(r.metrics().deltas_written, 0);
    let loaded = storage.load("test.ledger").await.unwrap().unwrap();
    assert_eq!((loaded.position, loaded.deltas.len()), (210, 0));
    // And the chain goes on from the new full checkpoint.
    store
        .append_events(&events(100, 0)[..10], None)
        .await
        .unwrap();
    r.catch_up(&store).await.unwrap();
    assert!(r.checkpoint_now().await.unwrap());
    assert_eq!(r.metrics().deltas_written, 1);
    assert_eq!(restored(storage, &store).await, replay(&store).await);
}

#[tokio::test]
async fn a_delta_that_does_not_apply_ends_the_chain_at_the_state_before_it() {
    let store = InMemoryEventStore::new();
    store.append_events(&events(100, 100), None).await.unwrap();
    let storage = InMemoryCheckpointStorage::new();
    let mut r = Ledger::default()
        .configure(|c| c.use_checkpoints(storage.clone(), FixedEventRate::new(50).unwrap()));
    r.catch_up(&store).await.unwrap();
    // A delta whose state this model cannot read (a hand-made one, for the test).
    let bad = CheckpointDelta::new(
        "test.ledger",
        krescent::model::ModelRunner::<Ledger>::version(),
        200,
        201,
        krescent::checkpoint::CheckpointBucket::new().with("balances", "not bytes"),
    );
    store.append_events(&[added("k0", 1)], None).await.unwrap();
    storage.store_delta(&bad).await.unwrap();
    let mut again = Ledger::default().configure(|c| c.use_checkpoints(storage.clone(), Never));
    let m = again.catch_up(&store).await.unwrap();
    assert_eq!(m.restored_from, Some(200));
    assert_eq!(m.events_handled, 1);
    assert_eq!(again.into_model(), replay(&store).await);
}

#[tokio::test]
async fn file_storage_keeps_the_chain_across_instances() {
    let dir = tempfile::tempdir().unwrap();
    let store = InMemoryEventStore::new();
    store.append_events(&events(100, 140), None).await.unwrap();
    let storage = Arc::new(FileCheckpointStorage::new(dir.path()).unwrap());
    let mut r = Ledger::default()
        .configure(|c| c.use_shared_checkpoints(storage.clone(), FixedEventRate::new(20).unwrap()));
    let m = r.catch_up(&store).await.unwrap();
    assert_eq!((m.checkpoints_written, m.deltas_written), (12, 10));
    let reopened = FileCheckpointStorage::new(dir.path()).unwrap();
    assert_eq!(
        reopened
            .load("test.ledger")
            .await
            .unwrap()
            .unwrap()
            .deltas
            .len(),
        10
    );
    assert_eq!(restored(reopened, &store).await, replay(&store).await);
}

/// One step of a random history: an add, a removal or a clear.
#[derive(Debug, Clone)]
enum Step {
    Add(u8, i8),
    Close(u8),
    Reset,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => (0..24_u8, any::<i8>()).prop_map(|(k, by)| Step::Add(k, by)),
        3 => (0..24_u8).prop_map(Step::Close),
        1 => Just(Step::Reset),
    ]
}

fn to_event(step: &Step) -> LedgerEvent {
    match step {
        Step::Add(k, by) => added(&format!("k{k}"), i64::from(*by)),
        Step::Close(k) => LedgerEvent::Closed {
            key: format!("k{k}"),
        },
        Step::Reset => LedgerEvent::Reset,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// For random histories, checkpoint points and chain lengths: restoring the full
    /// checkpoint with its deltas, then handling the rest, equals a full replay.
    #[test]
    fn restore_with_deltas_then_the_rest_equals_a_full_replay(
        steps in prop::collection::vec(step(), 1..120),
        every in 1..10_u64,
        chain in 0..6_u32,
        split in 0..120_usize,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let events: Vec<LedgerEvent> = steps.iter().map(to_event).collect();
            let split = split.min(events.len());
            let store = InMemoryEventStore::new();
            if split > 0 {
                store.append_events(&events[..split], None).await.unwrap();
            }
            let storage = InMemoryCheckpointStorage::new();
            let config = |c: krescent::model::ModelConfig| {
                c.use_checkpoints(storage.clone(), FixedEventRate::new(every).unwrap())
                    .max_delta_chain(chain)
            };
            let mut first = Ledger::default().configure(config);
            first.catch_up(&store).await.unwrap();
            if split < events.len() {
                store.append_events(&events[split..], None).await.unwrap();
            }
            let mut second = Ledger::default().configure(config);
            second.catch_up(&store).await.unwrap();
            let full = replay(&store).await;
            prop_assert_eq!(second.model(), &full);
            // A third start restores whatever the second left, and ends at the same state.
            let mut third = Ledger::default().configure(|c| c.use_checkpoints(storage.clone(), Never));
            third.catch_up(&store).await.unwrap();
            prop_assert_eq!(third.model(), &full);
            Ok(())
        })?;
    }
}

#[tokio::test]
async fn sqlite_storage_keeps_the_chain_across_opens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let store = InMemoryEventStore::new();
    store.append_events(&events(100, 140), None).await.unwrap();
    let storage = krescent::SqliteCheckpointStorage::open(&path)
        .await
        .unwrap();
    let mut r = Ledger::default()
        .configure(|c| c.use_checkpoints(storage.clone(), FixedEventRate::new(20).unwrap()));
    let m = r.catch_up(&store).await.unwrap();
    assert_eq!((m.checkpoints_written, m.deltas_written), (12, 10));
    drop((r, storage));
    let reopened = krescent::SqliteCheckpointStorage::open(&path)
        .await
        .unwrap();
    let loaded = reopened.load("test.ledger").await.unwrap().unwrap();
    assert_eq!((loaded.position, loaded.deltas.len()), (40, 10));
    assert_eq!(reopened.list().await.unwrap()[0].position, 240);
    assert_eq!(restored(reopened, &store).await, replay(&store).await);
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_storage_keeps_the_chain() {
    let Ok(url) = std::env::var("KRESCENT_POSTGRES_URL") else {
        eprintln!("skipped: KRESCENT_POSTGRES_URL is not set");
        return;
    };
    let prefix = format!("t_{}_", uuid::Uuid::now_v7().simple());
    let pg = krescent::PostgresEventStore::connect(
        &url,
        krescent::PostgresOptions::default().table_prefix(&prefix),
    )
    .await
    .unwrap();
    let store = InMemoryEventStore::new();
    store.append_events(&events(100, 140), None).await.unwrap();
    let storage = pg.checkpoint_storage();
    let mut r = Ledger::default()
        .configure(|c| c.use_checkpoints(storage.clone(), FixedEventRate::new(20).unwrap()));
    let m = r.catch_up(&store).await.unwrap();
    assert_eq!((m.checkpoints_written, m.deltas_written), (12, 10));
    let loaded = storage.load("test.ledger").await.unwrap().unwrap();
    assert_eq!((loaded.position, loaded.deltas.len()), (40, 10));
    assert_eq!(storage.list().await.unwrap()[0].position, 240);
    assert_eq!(restored(storage, &store).await, replay(&store).await);
    pg.drop_tables().await.unwrap();
}

//! The model runner: restore + delta, rebuilds on version changes, handler errors, graceful
//! shutdown, and a property test that restore + delta equals a full replay.

use std::collections::BTreeMap;
use std::sync::Arc;

use krescent::checkpoint::{
    Always, CheckpointStorage, CheckpointStrategyExt, CheckpointVersion, FixedEventRate,
    InMemoryCheckpointStorage, Manual, Never,
};
use krescent::model::{ModelError, ModelRegistry, ModelRunner};
use krescent::prelude::*;
use proptest::prelude::*;
use tokio_util::sync::CancellationToken;

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[krescent(catalog = "counting", revision = 1)]
pub enum CountEvent {
    #[krescent(name = "count.up")]
    Up {
        #[krescent(tag)]
        key: String,
        by: u32,
    },
    #[krescent(name = "count.poison")]
    Poison { at: u32 },
    #[krescent(name = "count.noise")]
    Noise,
}

#[derive(ReadModel, CheckpointSupport, Default, Debug, Clone, PartialEq)]
#[krescent(name = "test.counts", version = 1, events = CountEvent, handles(Up, Poison, Noise))]
pub struct Counts {
    counts: BTreeMap<String, u64>,
    #[krescent(skip)]
    seen: Vec<u64>,
}

impl Counts {
    fn on_up(&mut self, key: &str, by: &u32) {
        *self.counts.entry(key.to_owned()).or_default() += u64::from(*by);
    }
    fn on_poison(&mut self, at: &u32) -> Result<(), String> {
        Err(format!("poisoned at {at}"))
    }
    fn on_noise(&mut self) -> EventOutcome {
        EventOutcome::Skipped
    }
}

/// The same state, another model version.
#[derive(ReadModel, CheckpointSupport, Default, Debug)]
#[krescent(name = "test.counts", version = 2, events = CountEvent, handles(Up))]
pub struct CountsV2 {
    counts: BTreeMap<String, u64>,
}
impl CountsV2 {
    fn on_up(&mut self, key: &str, by: &u32) {
        *self.counts.entry(key.to_owned()).or_default() += u64::from(*by);
    }
}

/// The same name and version, another state shape.
#[derive(ReadModel, CheckpointSupport, Default, Debug)]
#[krescent(name = "test.counts", version = 1, events = CountEvent, handles(Up))]
pub struct CountsReshaped {
    counts: BTreeMap<String, u64>,
    total: u64,
}
impl CountsReshaped {
    fn on_up(&mut self, key: &str, by: &u32) {
        *self.counts.entry(key.to_owned()).or_default() += u64::from(*by);
        self.total += u64::from(*by);
    }
}

fn up(key: &str, by: u32) -> CountEvent {
    CountEvent::Up {
        key: key.into(),
        by,
    }
}

async fn store_with(events: &[CountEvent]) -> InMemoryEventStore {
    let store = InMemoryEventStore::new();
    if !events.is_empty() {
        store.append_events(events, None).await.unwrap();
    }
    store
}

#[tokio::test]
async fn restart_continues_after_the_checkpoint() {
    let store = store_with(&[up("a", 1), up("b", 2), CountEvent::Noise, up("a", 3)]).await;
    let storage = InMemoryCheckpointStorage::new();

    let mut first = Counts::default()
        .configure(|c| c.use_checkpoints(storage.clone(), FixedEventRate::new(2).unwrap()));
    let m = first.catch_up(&store).await.unwrap();
    assert_eq!((m.events_handled, m.events_skipped), (3, 1));
    // Handled 2 → checkpoint at position 2; the skipped Noise does not count; handled 3 at 4
    // is only the first since, so no second checkpoint.
    assert_eq!(m.checkpoints_written, 1);
    assert_eq!(
        storage.load("test.counts").await.unwrap().unwrap().position,
        2
    );

    store.append_events(&[up("c", 5)], None).await.unwrap();
    let mut second = Counts::default()
        .configure(|c| c.use_checkpoints(storage.clone(), FixedEventRate::new(2).unwrap()));
    let m = second.catch_up(&store).await.unwrap();
    assert_eq!(m.restored_from, Some(2));
    // Positions 3 (noise), 4 and 5: nothing lost, nothing twice.
    assert_eq!((m.events_handled, m.events_skipped), (2, 1));
    assert_eq!(
        second.model().counts,
        first_counts(&[("a", 4), ("b", 2), ("c", 5)])
    );
    assert_eq!(m.checkpoints_written, 1);
    assert_eq!(
        storage.load("test.counts").await.unwrap().unwrap().position,
        5
    );
}

fn first_counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

#[tokio::test]
async fn without_checkpoints_every_start_is_a_full_replay() {
    let store = store_with(&[up("a", 1), up("a", 1)]).await;
    for _ in 0..2 {
        let mut r = Counts::default().runner();
        let m = r.catch_up(&store).await.unwrap();
        assert_eq!((m.events_handled, m.restored_from), (2, None));
    }
}

#[tokio::test]
async fn a_version_or_shape_change_rebuilds() {
    let store = store_with(&[up("a", 1), up("b", 1), up("a", 1)]).await;
    let storage = InMemoryCheckpointStorage::new();
    let mut v1 = Counts::default().configure(|c| c.use_checkpoints(storage.clone(), Always));
    v1.catch_up(&store).await.unwrap();
    let stored = storage.load("test.counts").await.unwrap().unwrap();
    assert_eq!(stored.position, 3);
    assert_eq!(stored.version, ModelRunner::<Counts>::version());

    // Model version bumped.
    let mut v2 = CountsV2::default().configure(|c| c.use_checkpoints(storage.clone(), Always));
    let m = v2.catch_up(&store).await.unwrap();
    assert_eq!((m.restored_from, m.events_handled), (None, 3));
    assert_eq!(v2.model().counts, first_counts(&[("a", 2), ("b", 1)]));

    // Struct shape changed (same name and version as v1).
    assert_ne!(
        ModelRunner::<CountsReshaped>::version(),
        ModelRunner::<Counts>::version()
    );
    let mut reshaped =
        CountsReshaped::default().configure(|c| c.use_checkpoints(storage.clone(), Always));
    let m = reshaped.catch_up(&store).await.unwrap();
    assert_eq!((m.restored_from, m.events_handled), (None, 3));
    assert_eq!(reshaped.model().total, 3);

    // Catalog revision bumped: a checkpoint whose revision differs is discarded too.
    let mut stale = storage.load("test.counts").await.unwrap().unwrap();
    stale.version = CheckpointVersion {
        catalog_revision: 0,
        ..ModelRunner::<Counts>::version()
    };
    storage.store(&stale).await.unwrap();
    let mut again = Counts::default().configure(|c| c.use_checkpoints(storage.clone(), Never));
    let m = again.catch_up(&store).await.unwrap();
    assert_eq!((m.restored_from, m.events_handled), (None, 3));

    // With rebuilding turned off, a mismatch is an error naming the model.
    let mut strict = Counts::default().configure(|c| {
        c.use_checkpoints(storage.clone(), Never)
            .rebuild_on_invalid(false)
    });
    let err = strict.catch_up(&store).await.unwrap_err();
    assert!(
        matches!(
            err,
            ModelError::CheckpointInvalid {
                model: "test.counts",
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn a_handler_error_writes_no_checkpoint_for_the_failing_event() {
    let store = store_with(&[up("a", 1), CountEvent::Poison { at: 2 }]).await;
    let storage = InMemoryCheckpointStorage::new();
    let mut r = Counts::default().configure(|c| c.use_checkpoints(storage.clone(), Always));
    let err = r.catch_up(&store).await.unwrap_err();
    match &err {
        ModelError::Handler {
            model,
            position,
            event_type,
            ..
        } => {
            assert_eq!(
                (*model, *position, event_type.as_str()),
                ("test.counts", 2, "count.poison")
            );
        }
        other => panic!("unexpected error {other}"),
    }
    assert!(err.to_string().contains("position 2"));
    assert_eq!(
        storage.load("test.counts").await.unwrap().unwrap().position,
        1
    );

    // A restart resumes after the first event and meets the same failure again.
    let mut again = Counts::default().configure(|c| c.use_checkpoints(storage.clone(), Always));
    assert!(again.catch_up(&store).await.is_err());
    assert_eq!(again.metrics().restored_from, Some(1));
    assert_eq!(again.metrics().events_handled, 0);
    assert_eq!(again.model().counts, first_counts(&[("a", 1)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_cancel_writes_a_termination_checkpoint() {
    let store = store_with(&[up("a", 1)]).await;
    let storage = InMemoryCheckpointStorage::new();
    let shutdown = CancellationToken::new();
    let model_storage = storage.clone();
    let model_store = store.clone();
    let token = shutdown.clone();
    let task = tokio::spawn(async move {
        let mut r =
            Counts::default().configure(|c| c.use_checkpoints(model_storage, Never.on_shutdown()));
        let m = r.stream(&model_store, token).await.unwrap();
        (m, r.into_model())
    });
    // Live events may or may not be handled before the cancel lands; either way the
    // termination checkpoint must match what the model handled.
    store
        .append_events(&[up("b", 2), up("a", 3)], None)
        .await
        .unwrap();
    shutdown.cancel();
    let (m, model) = task.await.unwrap();
    assert!(
        m.position >= 1,
        "catch-up handles the history before streaming"
    );
    assert_eq!(m.checkpoints_written, 1, "only the termination checkpoint");
    let stored = storage.load("test.counts").await.unwrap().unwrap();
    assert_eq!(stored.position, m.position);

    // A later catch-up resumes from it.
    store.append_events(&[up("c", 1)], None).await.unwrap();
    let mut later = Counts::default().configure(|c| c.use_checkpoints(storage.clone(), Never));
    let lm = later.catch_up(&store).await.unwrap();
    assert_eq!(lm.restored_from, Some(m.position));
    assert_eq!(lm.events_handled, 4 - m.position);
    let mut expected = model.counts.clone();
    for e in store
        .read_events::<CountEvent>(&EventQuery::match_all().after(m.position))
        .await
        .unwrap()
    {
        if let CountEvent::Up { key, by } = e.data {
            *expected.entry(key).or_default() += u64::from(by);
        }
    }
    assert_eq!(later.model().counts, expected);
}

#[tokio::test]
async fn a_manual_trigger_writes_when_idle() {
    let store = store_with(&[up("a", 1), up("a", 1)]).await;
    let storage = InMemoryCheckpointStorage::new();
    let manual = Manual::new();
    let trigger = manual.handle();
    let mut r = Counts::default().configure(|c| c.use_checkpoints(storage.clone(), manual));
    r.catch_up(&store).await.unwrap();
    assert!(
        storage.load("test.counts").await.unwrap().is_none(),
        "not triggered yet"
    );
    trigger.trigger();
    r.catch_up(&store).await.unwrap();
    assert_eq!(
        storage.load("test.counts").await.unwrap().unwrap().position,
        2
    );
}

#[test]
fn models_register_their_name_and_version() {
    // Three types share the name on purpose in this file, so the global registry reports it.
    let err = ModelRegistry::global().unwrap_err();
    assert!(err.to_string().contains("test.counts"), "{err}");
}

#[tokio::test]
async fn restore_only_reads_no_events() {
    let store = store_with(&[up("a", 1), up("a", 1)]).await;
    let storage: Arc<dyn CheckpointStorage> = Arc::new(InMemoryCheckpointStorage::new());
    let mut r = Counts::default().configure(|c| c.use_shared_checkpoints(storage.clone(), Always));
    r.catch_up(&store).await.unwrap();
    let mut restored =
        Counts::default().configure(|c| c.use_shared_checkpoints(storage.clone(), Never));
    assert_eq!(restored.restore_only().await.unwrap(), Some(2));
    assert_eq!(restored.metrics().events_handled, 0);
    assert_eq!(restored.model().counts, first_counts(&[("a", 2)]));
}

fn events_strategy() -> impl Strategy<Value = Vec<CountEvent>> {
    prop::collection::vec(
        prop_oneof![
            4 => (0u8..5, 1u32..10).prop_map(|(k, by)| up(&format!("k{k}"), by)),
            1 => Just(CountEvent::Noise),
        ],
        0..60,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    /// For random histories and random checkpoint rates, stopping anywhere and restarting
    /// from the checkpoint gives the same state as one full replay.
    #[test]
    fn restore_plus_delta_equals_full_replay(
        events in events_strategy(),
        split in 0usize..60,
        rate in 1u64..7,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let split = split.min(events.len());
            let store = store_with(&events[..split]).await;
            let storage = InMemoryCheckpointStorage::new();
            let mut first = Counts::default()
                .configure(|c| c.use_checkpoints(storage.clone(), FixedEventRate::new(rate).unwrap()));
            first.catch_up(&store).await.unwrap();
            if split < events.len() {
                store.append_events(&events[split..], None).await.unwrap();
            }
            let mut second = Counts::default()
                .configure(|c| c.use_checkpoints(storage.clone(), FixedEventRate::new(rate).unwrap()));
            let m = second.catch_up(&store).await.unwrap();

            let mut full = Counts::default().runner();
            full.catch_up(&store).await.unwrap();
            prop_assert_eq!(&second.model().counts, &full.model().counts);
            // Nothing handled twice: restored position + processed delta = head.
            prop_assert_eq!(m.restored_from.unwrap_or(0) + m.events_processed(), events.len() as u64);
            Ok(())
        })?;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_time_rate_saves_idle_progress_without_further_events() {
    use krescent::checkpoint::FixedTimeRate;
    let store = store_with(&[up("a", 1)]).await;
    let storage = InMemoryCheckpointStorage::new();
    let shutdown = CancellationToken::new();
    let (model_store, model_storage, token) = (store.clone(), storage.clone(), shutdown.clone());
    let task = tokio::spawn(async move {
        let strategy = FixedTimeRate::new(std::time::Duration::from_millis(20)).unwrap();
        let mut r = Counts::default().configure(|c| c.use_checkpoints(model_storage, strategy));
        r.stream(&model_store, token).await.unwrap()
    });
    // No event arrives after the history; the checkpoint must still appear. The storage has
    // no change signal, so poll it, bounded.
    let mut found = None;
    for _ in 0..1_000 {
        if let Some(c) = storage.load("test.counts").await.unwrap() {
            found = Some(c.position);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    shutdown.cancel();
    let m = task.await.unwrap();
    assert_eq!(found, Some(1));
    assert!(m.checkpoints_written >= 1);
}

//! The projector: the savepoint walkthrough, batch boundaries, partial runs, failures and
//! retries, bookmarks with every read policy, and metrics. The events are the shared stock
//! fixture; the projections are implemented by hand, as a user without the derives would.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use krescent_core::projection::{DEFAULT_BATCH_SIZE, validate_reader_name};
use krescent_core::testing::fixtures::{StockEvent, product_tag};
use krescent_core::{
    AppendCondition, BookmarkError, BookmarkReader, BookmarkStorage, EventQuery, EventStore,
    EventStoreExt, EventType, HandlerError, InMemoryBookmarkStorage, InMemoryEventStore, NewEvent,
    Projection, Projector, ProjectorError, ProjectorMetrics, QueryItem, ReadPolicy, Recorded,
    RecordedEvent, StoreError, Subscription, Tags,
};
use tokio_util::sync::CancellationToken;

// ---------------------------------------------------------------------------------------------
// The events: the shared stock fixture.

const ADDED: EventType = StockEvent::ADDED;
const PICKED: EventType = StockEvent::PICKED;
const COUNTED: EventType = StockEvent::COUNTED;

const WIDGET: &str = "WIDGET-42";
const GADGET: &str = "GADGET-7";

fn added(product: &str, quantity: i64) -> StockEvent {
    StockEvent::Added {
        product: product.into(),
        quantity,
    }
}

fn picked(product: &str, quantity: i64) -> StockEvent {
    StockEvent::Picked {
        product: product.into(),
        quantity,
    }
}

fn counted(product: &str, counted: i64) -> StockEvent {
    StockEvent::Counted {
        product: product.into(),
        counted,
    }
}

/// Appends `events`, returning their positions.
async fn append(store: &(impl EventStore + ?Sized), events: &[StockEvent]) -> Vec<u64> {
    store
        .append_events(events, None)
        .await
        .expect("append")
        .iter()
        .map(|e| e.position)
        .collect()
}

/// A store holding `n` additions of one unit of WIDGET-42, at positions 1..=n.
async fn store_with(n: usize) -> InMemoryEventStore {
    let store = InMemoryEventStore::new();
    append(&store, &vec![added(WIDGET, 1); n]).await;
    store
}

// ---------------------------------------------------------------------------------------------
// Projections, by hand.

/// The stock level of one product, starting from its latest count (the savepoint).
#[derive(Debug)]
struct StockLevel {
    product: String,
    level: i64,
    /// Positions handled, in order.
    seen: Vec<u64>,
    /// Fail (once) when handling the event at this position.
    fail_once_at: Option<u64>,
}

impl StockLevel {
    fn new(product: &str) -> Self {
        StockLevel {
            product: product.into(),
            level: 0,
            seen: Vec::new(),
            fail_once_at: None,
        }
    }
}

#[derive(Debug)]
struct Refused(u64);

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "refused event at {}", self.0)
    }
}

impl std::error::Error for Refused {}

impl Projection for StockLevel {
    type Event = StockEvent;

    fn init_query(&self) -> Option<EventQuery> {
        Some(
            EventQuery::item(QueryItem::types([COUNTED]).and_tag(product_tag(&self.product)))
                .backward()
                .limit(1)
                .expect("limit 1"),
        )
    }

    fn event_query(&self) -> EventQuery {
        EventQuery::item(QueryItem::types([ADDED, PICKED]).and_tag(product_tag(&self.product)))
    }

    fn when(&mut self, event: &Recorded<StockEvent>) -> Result<(), HandlerError> {
        if self.fail_once_at == Some(event.position) {
            self.fail_once_at = None;
            return Err(Refused(event.position).into());
        }
        if event.data.product() != self.product {
            return Err(
                format!("event of {} reached {}", event.data.product(), self.product).into(),
            );
        }
        match &event.data {
            StockEvent::Added { quantity, .. } => self.level += quantity,
            StockEvent::Picked { quantity, .. } => self.level -= quantity,
            StockEvent::Counted { counted, .. } => self.level = *counted,
        }
        self.seen.push(event.position);
        Ok(())
    }
}

/// Records every stock event; an optional init query.
#[derive(Debug, Default)]
struct Tally {
    init: Option<EventQuery>,
    seen: Vec<u64>,
    fail_once_at: Option<u64>,
}

impl Tally {
    fn with_init(init: EventQuery) -> Self {
        Tally {
            init: Some(init),
            ..Tally::default()
        }
    }
}

impl Projection for Tally {
    type Event = StockEvent;

    fn init_query(&self) -> Option<EventQuery> {
        self.init.clone()
    }

    fn event_query(&self) -> EventQuery {
        EventQuery::of::<StockEvent>()
    }

    fn when(&mut self, event: &Recorded<StockEvent>) -> Result<(), HandlerError> {
        if self.fail_once_at == Some(event.position) {
            self.fail_once_at = None;
            return Err(Refused(event.position).into());
        }
        self.seen.push(event.position);
        Ok(())
    }
}

fn metrics(streamed: u64, handled: u64, queries: u64, last: Option<u64>) -> ProjectorMetrics {
    ProjectorMetrics {
        events_streamed: streamed,
        events_handled: handled,
        queries_done: queries,
        last_position: last,
    }
}

fn reader(storage: &InMemoryBookmarkStorage, name: &str, policy: ReadPolicy) -> BookmarkReader {
    BookmarkReader::new(name, Arc::new(storage.clone()), policy)
}

// ---------------------------------------------------------------------------------------------
// The savepoint walkthrough.

#[tokio::test]
async fn savepoint_walkthrough_counts() {
    let store = InMemoryEventStore::new();
    // Another product's events are interleaved throughout; they never reach the projection.
    append(
        &store,
        &[
            added(WIDGET, 100),
            added(GADGET, 7),
            picked(WIDGET, 10),
            picked(WIDGET, 5),
            counted(GADGET, 7),
            added(WIDGET, 50),
            picked(WIDGET, 20),
            picked(GADGET, 1),
        ],
    )
    .await;

    // No count yet: the init query finds nothing, the event query replays from the beginning.
    let mut level = StockLevel::new(WIDGET);
    let run = Projector::from(&store)
        .towards(&mut level)
        .build()
        .await
        .unwrap()
        .run()
        .await
        .unwrap();
    assert_eq!(level.level, 115);
    assert_eq!(level.seen, [1, 3, 4, 6, 7]);
    assert_eq!(run, metrics(5, 5, 2, Some(7)));

    // A count of 115 (the savepoint), then two movements.
    let new = append(
        &store,
        &[
            counted(WIDGET, 115),
            added(GADGET, 2),
            added(WIDGET, 30),
            picked(WIDGET, 12),
        ],
    )
    .await;
    assert_eq!(new, [9, 10, 11, 12]);
    let mut level = StockLevel::new(WIDGET);
    let run = Projector::from(&store)
        .towards(&mut level)
        .build()
        .await
        .unwrap()
        .run()
        .await
        .unwrap();
    assert_eq!(level.level, 133);
    assert_eq!(
        level.seen,
        [9, 11, 12],
        "the savepoint, then what follows it"
    );
    assert_eq!(run.events_handled, 3);
    assert_eq!(run.queries_done, 2);
    assert_eq!(run.last_position, Some(12));

    // A newer count of 133 and one pick: only those two are handled; the old count at 9 is
    // never processed again.
    append(
        &store,
        &[counted(WIDGET, 133), picked(GADGET, 1), picked(WIDGET, 3)],
    )
    .await;
    let mut level = StockLevel::new(WIDGET);
    let mut projector = Projector::from(&store)
        .towards(&mut level)
        .build()
        .await
        .unwrap();
    let run = projector.run().await.unwrap();
    assert_eq!(run, metrics(2, 2, 2, Some(15)));
    assert_eq!(projector.cursor(), Some(15));
    assert_eq!(projector.projection().level, 130);
    assert_eq!(projector.projection().seen, [13, 15]);
}

#[tokio::test]
async fn the_same_projector_run_twice_skips_the_init_query() {
    let store = InMemoryEventStore::new();
    append(&store, &[added(WIDGET, 100), picked(WIDGET, 10)]).await;
    let mut level = StockLevel::new(WIDGET);
    let mut projector = Projector::from(&store)
        .towards(&mut level)
        .build()
        .await
        .unwrap();

    // The init query returns nothing: counted, and the cursor stays unset until phase 2.
    assert_eq!(projector.run().await.unwrap(), metrics(2, 2, 2, Some(2)));

    // A count now exists, but the init query is not run again: only the new movements are.
    append(
        &store,
        &[counted(WIDGET, 90), added(WIDGET, 30), picked(WIDGET, 12)],
    )
    .await;
    assert_eq!(projector.run().await.unwrap(), metrics(2, 2, 1, Some(5)));
    assert_eq!(projector.projection().level, 108);
    assert_eq!(projector.projection().seen, [1, 2, 4, 5]);

    // Nothing new: one empty query.
    assert_eq!(projector.run().await.unwrap(), metrics(0, 0, 1, None));
    assert_eq!(projector.cursor(), Some(5));
}

#[tokio::test]
async fn an_empty_init_query_on_an_empty_store_is_not_repeated() {
    let store = InMemoryEventStore::new();
    let mut level = StockLevel::new(WIDGET);
    let mut projector = Projector::from(&store)
        .towards(&mut level)
        .build()
        .await
        .unwrap();
    assert_eq!(projector.run().await.unwrap(), metrics(0, 0, 2, None));
    assert_eq!(projector.cursor(), None);
    assert_eq!(projector.run().await.unwrap(), metrics(0, 0, 1, None));

    // A count appended now is not picked up: the init phase is done.
    append(&store, &[counted(WIDGET, 5), added(WIDGET, 1)]).await;
    assert_eq!(projector.run().await.unwrap(), metrics(1, 1, 1, Some(2)));
    assert_eq!(projector.projection().level, 1);
}

#[tokio::test]
async fn a_backwards_init_query_moves_the_cursor_to_its_highest_position() {
    let store = store_with(3).await; // 1..=3
    append(
        &store,
        &[counted(WIDGET, 3), added(WIDGET, 1), counted(WIDGET, 4)],
    )
    .await; // 4..=6
    append(&store, &[added(WIDGET, 1)]).await; // 7
    let init = EventQuery::item(QueryItem::types([COUNTED]))
        .backward()
        .limit(2)
        .unwrap();
    let mut tally = Tally::with_init(init);
    let mut projector = Projector::from(&store)
        .towards(&mut tally)
        .build()
        .await
        .unwrap();
    let run = projector.run().await.unwrap();
    assert_eq!(run, metrics(3, 3, 2, Some(7)));
    assert_eq!(
        projector.projection().seen,
        [6, 4, 7],
        "newest first, then after 6"
    );
}

#[tokio::test]
async fn starting_after_skips_the_init_query() {
    let store = InMemoryEventStore::new();
    append(
        &store,
        &[
            added(WIDGET, 100),
            counted(WIDGET, 100),
            added(WIDGET, 1),
            picked(WIDGET, 2),
        ],
    )
    .await;
    let mut level = StockLevel::new(WIDGET);
    let mut projector = Projector::from(&store)
        .towards(&mut level)
        .starting_after(3)
        .build()
        .await
        .unwrap();
    assert_eq!(projector.cursor(), Some(3));
    assert_eq!(projector.run().await.unwrap(), metrics(1, 1, 1, Some(4)));
    assert_eq!(projector.projection().level, -2);
}

// ---------------------------------------------------------------------------------------------
// Batches and partial runs.

#[tokio::test]
async fn batch_boundaries() {
    // (events stored, batch size, queries expected): full batches, then one short or empty.
    for (events, batch, queries) in [
        (0, 3, 1),
        (2, 3, 1),
        (3, 3, 2), // a full batch, then an empty one
        (4, 3, 2), // a full batch, then a short one: no final empty query
        (6, 3, 3),
        (7, 3, 3),
        (1, 1, 2),
    ] {
        let store = store_with(events).await;
        let mut tally = Tally::default();
        let mut projector = Projector::from(&store)
            .towards(&mut tally)
            .batch_size(batch)
            .build()
            .await
            .unwrap();
        let run = projector.run().await.unwrap();
        let last = (events > 0).then_some(events as u64);
        assert_eq!(
            run,
            metrics(events as u64, events as u64, queries, last),
            "{events} events in batches of {batch}"
        );
        assert_eq!(projector.cursor(), last);
        assert_eq!(projector.batch_size(), batch);
        assert_eq!(tally.seen, (1..=events as u64).collect::<Vec<_>>());
    }
}

#[tokio::test]
async fn the_default_batch_size_is_500() {
    let store = store_with(DEFAULT_BATCH_SIZE + 1).await;
    let mut tally = Tally::default();
    let mut projector = Projector::from(&store)
        .towards(&mut tally)
        .build()
        .await
        .unwrap();
    assert_eq!(projector.batch_size(), 500);
    let run = projector.run().await.unwrap();
    assert_eq!(run, metrics(501, 501, 2, Some(501)));
}

#[tokio::test]
async fn run_until_is_inclusive() {
    let store = store_with(10).await;
    let mut tally = Tally::default();
    let mut projector = Projector::from(&store)
        .towards(&mut tally)
        .batch_size(3)
        .build()
        .await
        .unwrap();
    // 4 events in batches of 3: a full batch, then a short one.
    assert_eq!(
        projector.run_until(4).await.unwrap(),
        metrics(4, 4, 2, Some(4))
    );
    assert_eq!(projector.cursor(), Some(4));
    assert_eq!(
        projector.run_until(4).await.unwrap(),
        metrics(0, 0, 1, None)
    );
    // 6 events: two full batches, then an empty query.
    assert_eq!(projector.run().await.unwrap(), metrics(6, 6, 3, Some(10)));
    assert_eq!(tally.seen, (1..=10).collect::<Vec<_>>());
}

#[tokio::test]
async fn run_until_also_bounds_the_init_query() {
    let store = InMemoryEventStore::new();
    append(
        &store,
        &[
            added(WIDGET, 10),   // 1
            counted(WIDGET, 10), // 2
            added(WIDGET, 5),    // 3
            counted(WIDGET, 15), // 4
            added(WIDGET, 1),    // 5
        ],
    )
    .await;
    let mut level = StockLevel::new(WIDGET);
    let mut projector = Projector::from(&store)
        .towards(&mut level)
        .build()
        .await
        .unwrap();
    // The state as of position 3: the count at 2, then the addition at 3.
    assert_eq!(
        projector.run_until(3).await.unwrap(),
        metrics(2, 2, 2, Some(3))
    );
    assert_eq!(projector.projection().level, 15);
    assert_eq!(projector.cursor(), Some(3));
    // The rest: the count at 4 belongs to the init query only and is not handled.
    assert_eq!(projector.run().await.unwrap(), metrics(1, 1, 1, Some(5)));
    assert_eq!(projector.projection().level, 16);
    assert_eq!(projector.projection().seen, [2, 3, 5]);
}

#[tokio::test]
async fn run_single_batch_handles_at_most_one_batch() {
    let store = store_with(5).await;
    let mut tally = Tally::default();
    let mut projector = Projector::from(&store)
        .towards(&mut tally)
        .batch_size(2)
        .build()
        .await
        .unwrap();
    assert_eq!(
        projector.run_single_batch().await.unwrap(),
        metrics(2, 2, 1, Some(2))
    );
    assert_eq!(
        projector.run_single_batch().await.unwrap(),
        metrics(2, 2, 1, Some(4))
    );
    assert_eq!(
        projector.run_single_batch().await.unwrap(),
        metrics(1, 1, 1, Some(5))
    );
    assert_eq!(
        projector.run_single_batch().await.unwrap(),
        metrics(0, 0, 1, None)
    );
    assert_eq!(projector.cursor(), Some(5));
    assert_eq!(tally.seen, [1, 2, 3, 4, 5]);
}

#[tokio::test]
async fn run_single_batch_runs_a_due_init_phase_first() {
    let store = store_with(2).await; // 1, 2
    append(&store, &[counted(WIDGET, 2)]).await; // 3
    append(&store, &vec![added(WIDGET, 1); 5]).await; // 4..=8
    let mut level = StockLevel::new(WIDGET);
    let mut projector = Projector::from(&store)
        .towards(&mut level)
        .batch_size(2)
        .build()
        .await
        .unwrap();
    // Init (the count at 3) plus one batch (4, 5).
    assert_eq!(
        projector.run_single_batch().await.unwrap(),
        metrics(3, 3, 2, Some(5))
    );
    assert_eq!(projector.projection().seen, [3, 4, 5]);
    // No init any more: one batch.
    assert_eq!(
        projector.run_single_batch().await.unwrap(),
        metrics(2, 2, 1, Some(7))
    );
    assert_eq!(projector.projection().level, 6);
}

// ---------------------------------------------------------------------------------------------
// Failures.

#[tokio::test]
async fn a_failing_handler_leaves_the_cursor_at_the_last_full_batch_and_the_next_run_retries() {
    let store = store_with(5).await;
    let mut tally = Tally {
        fail_once_at: Some(4),
        ..Tally::default()
    };
    let mut projector = Projector::from(&store)
        .towards(&mut tally)
        .batch_size(2)
        .build()
        .await
        .unwrap();

    let err = projector.run().await.unwrap_err();
    match &err {
        ProjectorError::Handler {
            position,
            event_type,
            source,
            ..
        } => {
            assert_eq!(*position, 4);
            assert_eq!(event_type, "stock.added");
            assert_eq!(source.to_string(), "refused event at 4");
        }
        other => panic!("expected a handler error, got {other:?}"),
    }
    assert_eq!(err.position(), Some(4));
    let message = err.to_string();
    assert!(message.contains("position 4"), "{message}");
    assert!(message.contains("stock.added"), "{message}");
    assert!(message.contains("Tally"), "{message}");
    assert!(std::error::Error::source(&err).is_some());

    // Batch [1, 2] was handled completely; batch [3, 4] failed at 4.
    assert_eq!(projector.cursor(), Some(2));
    assert_eq!(projector.total_metrics(), metrics(4, 3, 2, Some(3)));

    // The next run retries the whole batch [3, 4], then reads [5].
    let run = projector.run().await.unwrap();
    assert_eq!(run, metrics(3, 3, 2, Some(5)));
    assert_eq!(projector.cursor(), Some(5));
    assert_eq!(projector.total_metrics(), metrics(7, 6, 4, Some(5)));
    assert_eq!(tally.seen, [1, 2, 3, 3, 4, 5]);
}

#[tokio::test]
async fn a_failing_init_handler_leaves_the_init_phase_to_be_retried() {
    let store = InMemoryEventStore::new();
    append(
        &store,
        &[added(WIDGET, 1), counted(WIDGET, 50), added(WIDGET, 2)],
    )
    .await;
    let mut level = StockLevel::new(WIDGET);
    level.fail_once_at = Some(2);
    let mut projector = Projector::from(&store)
        .towards(&mut level)
        .build()
        .await
        .unwrap();

    let err = projector.run().await.unwrap_err();
    assert_eq!(err.position(), Some(2));
    assert!(err.to_string().contains("stock.counted"), "{err}");
    assert_eq!(projector.cursor(), None);
    assert_eq!(projector.total_metrics(), metrics(1, 0, 1, None));

    // The init query runs again.
    assert_eq!(projector.run().await.unwrap(), metrics(2, 2, 2, Some(3)));
    assert_eq!(projector.projection().level, 52);
    assert_eq!(projector.projection().seen, [2, 3]);
}

#[tokio::test]
async fn a_decode_error_names_the_position_and_the_type() {
    let store = store_with(2).await;
    let broken = NewEvent::new("stock.added", Tags::empty(), &b"not json"[..]).unwrap();
    store.append(vec![broken], None).await.unwrap(); // 3
    let mut tally = Tally::default();
    let mut projector = Projector::from(&store)
        .towards(&mut tally)
        .build()
        .await
        .unwrap();

    let err = projector.run().await.unwrap_err();
    assert!(
        matches!(&err, ProjectorError::Decode { position: 3, event_type, .. } if event_type == "stock.added"),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains("position 3"), "{message}");
    assert!(message.contains("stock.added"), "{message}");
    // The only batch failed: the cursor did not move; what was handled is counted.
    assert_eq!(projector.cursor(), None);
    assert_eq!(projector.total_metrics(), metrics(3, 2, 1, Some(2)));
}

#[tokio::test]
async fn an_unknown_event_type_is_a_decode_error() {
    let store = InMemoryEventStore::new();
    let foreign = NewEvent::new("order.placed", Tags::empty(), &b"{}"[..]).unwrap();
    store.append(vec![foreign], None).await.unwrap();
    // A projection whose query selects everything meets an event of another enum.
    struct Everything;
    impl Projection for Everything {
        type Event = StockEvent;
        fn event_query(&self) -> EventQuery {
            EventQuery::match_all()
        }
        fn when(&mut self, _: &Recorded<StockEvent>) -> Result<(), HandlerError> {
            Ok(())
        }
    }
    let mut everything = Everything;
    let mut projector = Projector::from(&store)
        .towards(&mut everything)
        .build()
        .await
        .unwrap();
    match projector.run().await.unwrap_err() {
        ProjectorError::Decode {
            position: 1,
            event_type,
            source,
            ..
        } => {
            assert_eq!(event_type, "order.placed");
            assert!(source.is_unknown_event_type());
        }
        other => panic!("expected a decode error, got {other:?}"),
    }
}

/// A store whose reads fail while `down` is set.
#[derive(Default)]
struct FlakyStore {
    inner: InMemoryEventStore,
    down: AtomicBool,
}

#[async_trait]
impl EventStore for FlakyStore {
    async fn append(
        &self,
        events: Vec<NewEvent>,
        condition: Option<AppendCondition>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.append(events, condition).await
    }

    async fn read(&self, query: &EventQuery) -> Result<Vec<RecordedEvent>, StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Backend {
                backend: "flaky",
                transient: false,
                source: "connection reset".into(),
            });
        }
        self.inner.read(query).await
    }

    async fn head(&self) -> Result<u64, StoreError> {
        self.inner.head().await
    }

    fn subscribe(&self, query: EventQuery, after: u64, cancel: CancellationToken) -> Subscription {
        self.inner.subscribe(query, after, cancel)
    }
}

#[tokio::test]
async fn store_errors_are_wrapped_and_the_projector_recovers() {
    let store = FlakyStore::default();
    append(&store, &[added(WIDGET, 1), added(WIDGET, 2)]).await;
    store.down.store(true, Ordering::SeqCst);
    let mut tally = Tally::default();
    let mut projector = Projector::from(&store)
        .towards(&mut tally)
        .build()
        .await
        .unwrap();

    let err = projector.run().await.unwrap_err();
    assert!(
        matches!(err, ProjectorError::Store(StoreError::Backend { .. })),
        "{err:?}"
    );
    assert!(err.to_string().contains("connection reset"), "{err}");
    assert_eq!(projector.total_metrics(), ProjectorMetrics::default());

    store.down.store(false, Ordering::SeqCst);
    assert_eq!(projector.run().await.unwrap(), metrics(2, 2, 1, Some(2)));
}

// ---------------------------------------------------------------------------------------------
// Builder checks.

#[tokio::test]
async fn a_batch_size_of_zero_is_rejected() {
    let store = InMemoryEventStore::new();
    let mut tally = Tally::default();
    let err = Projector::from(&store)
        .towards(&mut tally)
        .batch_size(0)
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, ProjectorError::ZeroBatchSize), "{err:?}");
    assert!(err.to_string().contains("batch size"), "{err}");
}

#[tokio::test]
async fn an_empty_or_blank_reader_name_is_rejected() {
    let store = InMemoryEventStore::new();
    let storage = InMemoryBookmarkStorage::new();
    for name in ["", "   ", "\t\n"] {
        let mut tally = Tally::default();
        let err = Projector::from(&store)
            .towards(&mut tally)
            .bookmark_progress(reader(&storage, name, ReadPolicy::AtCreation))
            .build()
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ProjectorError::InvalidBookmarkName { name: n, .. } if n == name),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("empty or only whitespace"),
            "{err}"
        );
    }
    let mut tally = Tally::default();
    let err = Projector::from(&store)
        .towards(&mut tally)
        .bookmark_progress(reader(&storage, "bad\u{7}name", ReadPolicy::AtCreation))
        .build()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("control character"), "{err}");
    assert!(storage.is_empty());
}

#[tokio::test]
async fn read_bookmark_without_a_reader_is_an_error() {
    let store = InMemoryEventStore::new();
    let mut tally = Tally::default();
    let mut projector = Projector::from(&store)
        .towards(&mut tally)
        .build()
        .await
        .unwrap();
    let err = projector.read_bookmark().await.unwrap_err();
    assert!(
        matches!(err, ProjectorError::NoBookmarkReader { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("Tally"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Bookmarks.

/// Collects the messages of `WARN` events on the current thread.
#[derive(Clone, Default)]
struct Warnings(Arc<Mutex<Vec<String>>>);

impl Warnings {
    fn messages(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        self.0.push_str(&format!("{}={:?} ", field.name(), value));
    }
}

impl tracing::Subscriber for Warnings {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        if *event.metadata().level() == tracing::Level::WARN {
            let mut fields = Fields(String::new());
            event.record(&mut fields);
            self.0.lock().unwrap().push(fields.0);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[tokio::test]
async fn a_bookmark_makes_the_projector_ignore_the_init_query_and_warn() {
    let store = InMemoryEventStore::new();
    append(
        &store,
        &[
            added(WIDGET, 100),
            counted(WIDGET, 90),
            picked(WIDGET, 5),
            added(GADGET, 1),
        ],
    )
    .await;
    let storage = InMemoryBookmarkStorage::new();
    let warnings = Warnings::default();
    let _guard = tracing::subscriber::set_default(warnings.clone());

    let mut level = StockLevel::new(WIDGET);
    let mut projector = Projector::from(&store)
        .towards(&mut level)
        .bookmark_progress(reader(&storage, "widget-level", ReadPolicy::AtCreation))
        .build()
        .await
        .unwrap();
    let warned = warnings.messages();
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(warned[0].contains("init query is ignored"), "{warned:?}");
    assert!(warned[0].contains("widget-level"), "{warned:?}");

    // No bookmark yet: from the beginning, through the event query only (the count at 2 is
    // not handled), and no init query is sent.
    assert_eq!(projector.cursor(), None);
    assert_eq!(projector.run().await.unwrap(), metrics(2, 2, 1, Some(3)));
    assert_eq!(projector.projection().level, 95);
    assert_eq!(projector.projection().seen, [1, 3]);
    assert_eq!(storage.load("widget-level").await.unwrap(), Some(3));
}

#[tokio::test]
async fn no_warning_without_an_init_query() {
    let store = InMemoryEventStore::new();
    let storage = InMemoryBookmarkStorage::new();
    let warnings = Warnings::default();
    let _guard = tracing::subscriber::set_default(warnings.clone());
    let mut tally = Tally::default();
    Projector::from(&store)
        .towards(&mut tally)
        .bookmark_progress(reader(&storage, "tally", ReadPolicy::AtCreation))
        .build()
        .await
        .unwrap();
    assert!(warnings.messages().is_empty(), "{:?}", warnings.messages());
}

#[tokio::test]
async fn read_policy_on_manual_trigger() {
    let store = store_with(6).await;
    let storage = InMemoryBookmarkStorage::new();
    storage.place("tally", 3).await.unwrap();
    let mut tally = Tally::default();
    let mut projector = Projector::from(&store)
        .towards(&mut tally)
        .bookmark_progress(reader(&storage, "tally", ReadPolicy::OnManualTrigger))
        .build()
        .await
        .unwrap();
    assert_eq!(projector.cursor(), None, "not read at creation");

    assert_eq!(projector.read_bookmark().await.unwrap(), Some(3));
    assert_eq!(projector.cursor(), Some(3));
    assert_eq!(projector.run().await.unwrap(), metrics(3, 3, 1, Some(6)));
    assert_eq!(storage.load("tally").await.unwrap(), Some(6));

    // Moved by someone else: not followed until the next trigger.
    storage.place("tally", 4).await.unwrap();
    assert_eq!(projector.run().await.unwrap(), metrics(0, 0, 1, None));
    assert_eq!(projector.read_bookmark().await.unwrap(), Some(4));
    assert_eq!(projector.run().await.unwrap(), metrics(2, 2, 1, Some(6)));
    assert_eq!(tally.seen, [4, 5, 6, 5, 6]);
}

#[tokio::test]
async fn read_policy_on_manual_trigger_without_reading_starts_from_the_beginning() {
    let store = store_with(3).await;
    let storage = InMemoryBookmarkStorage::new();
    storage.place("tally", 2).await.unwrap();
    let mut tally = Tally::default();
    let mut projector = Projector::from(&store)
        .towards(&mut tally)
        .bookmark_progress(reader(&storage, "tally", ReadPolicy::OnManualTrigger))
        .build()
        .await
        .unwrap();
    assert_eq!(projector.run().await.unwrap(), metrics(3, 3, 1, Some(3)));
    assert_eq!(storage.load("tally").await.unwrap(), Some(3));
}

#[tokio::test]
async fn read_policy_at_creation() {
    let store = store_with(6).await;
    let storage = InMemoryBookmarkStorage::new();
    storage.place("tally", 2).await.unwrap();
    let mut tally = Tally::default();
    let mut projector = Projector::from(&store)
        .towards(&mut tally)
        .bookmark_progress(reader(&storage, "tally", ReadPolicy::AtCreation))
        .build()
        .await
        .unwrap();
    assert_eq!(projector.cursor(), Some(2), "read by build");

    // Moved after creation: not read again.
    storage.place("tally", 5).await.unwrap();
    assert_eq!(projector.run().await.unwrap(), metrics(4, 4, 1, Some(6)));
    assert_eq!(tally.seen, [3, 4, 5, 6]);
}

#[tokio::test]
async fn read_policy_before_first_run() {
    let store = store_with(4).await;
    let storage = InMemoryBookmarkStorage::new();
    let mut tally = Tally::default();
    let mut projector = Projector::from(&store)
        .towards(&mut tally)
        .bookmark_progress(reader(&storage, "tally", ReadPolicy::BeforeFirstRun))
        .build()
        .await
        .unwrap();
    assert_eq!(projector.cursor(), None, "not read at creation");

    // Placed between creation and the first run: followed.
    storage.place("tally", 2).await.unwrap();
    assert_eq!(projector.run().await.unwrap(), metrics(2, 2, 1, Some(4)));
    assert_eq!(storage.load("tally").await.unwrap(), Some(4));

    // Moved after the first run: not followed.
    storage.place("tally", 1).await.unwrap();
    append(&store, &[added(WIDGET, 1)]).await;
    assert_eq!(projector.run().await.unwrap(), metrics(1, 1, 1, Some(5)));
    assert_eq!(tally.seen, [3, 4, 5]);
    assert_eq!(storage.load("tally").await.unwrap(), Some(5));
}

#[tokio::test]
async fn read_policy_before_each_run() {
    let store = store_with(4).await;
    let storage = InMemoryBookmarkStorage::new();
    storage.place("tally", 1).await.unwrap();
    let mut tally = Tally::default();
    let mut projector = Projector::from(&store)
        .towards(&mut tally)
        .bookmark_progress(reader(&storage, "tally", ReadPolicy::BeforeEachRun))
        .build()
        .await
        .unwrap();
    assert_eq!(projector.cursor(), None, "not read at creation");
    assert_eq!(projector.run().await.unwrap(), metrics(3, 3, 1, Some(4)));

    // Moved by someone else: followed by the next run.
    storage.place("tally", 2).await.unwrap();
    assert_eq!(projector.run().await.unwrap(), metrics(2, 2, 1, Some(4)));
    // Deleted: the next run starts from the beginning.
    storage.delete("tally").await.unwrap();
    assert_eq!(projector.run().await.unwrap(), metrics(4, 4, 1, Some(4)));
    assert_eq!(tally.seen, [2, 3, 4, 3, 4, 1, 2, 3, 4]);
    assert_eq!(storage.load("tally").await.unwrap(), Some(4));
}

#[tokio::test]
async fn a_missing_bookmark_falls_back_to_starting_after() {
    let store = store_with(4).await;
    let storage = InMemoryBookmarkStorage::new();
    let mut tally = Tally::default();
    let mut projector = Projector::from(&store)
        .towards(&mut tally)
        .starting_after(2)
        .bookmark_progress(reader(&storage, "tally", ReadPolicy::AtCreation))
        .build()
        .await
        .unwrap();
    assert_eq!(projector.cursor(), Some(2));
    assert_eq!(projector.run().await.unwrap(), metrics(2, 2, 1, Some(4)));
}

#[tokio::test]
async fn the_bookmark_is_placed_after_each_run_that_moved_the_cursor() {
    let store = store_with(5).await;
    let storage = InMemoryBookmarkStorage::new();
    let mut tally = Tally {
        fail_once_at: Some(4),
        ..Tally::default()
    };
    let mut projector = Projector::from(&store)
        .towards(&mut tally)
        .batch_size(2)
        .bookmark_progress(reader(&storage, "tally", ReadPolicy::AtCreation))
        .build()
        .await
        .unwrap();

    // A failed run that completed batch [1, 2]: placed at 2, never at the failed event.
    projector.run().await.unwrap_err();
    assert_eq!(storage.load("tally").await.unwrap(), Some(2));

    projector.run().await.unwrap();
    assert_eq!(storage.load("tally").await.unwrap(), Some(5));

    // A run that did not move the cursor places nothing.
    storage.delete("tally").await.unwrap();
    assert_eq!(projector.run().await.unwrap(), metrics(0, 0, 1, None));
    assert_eq!(storage.load("tally").await.unwrap(), None);

    // A failed run that completed no batch places nothing either.
    append(&store, &[added(WIDGET, 1), added(WIDGET, 1)]).await; // 6, 7
    drop(projector);
    tally.fail_once_at = Some(6);
    let mut projector = Projector::from(&store)
        .towards(&mut tally)
        .batch_size(2)
        .bookmark_progress(reader(&storage, "tally", ReadPolicy::AtCreation))
        .starting_after(5)
        .build()
        .await
        .unwrap();
    projector.run().await.unwrap_err();
    assert_eq!(projector.cursor(), Some(5));
    assert_eq!(storage.load("tally").await.unwrap(), None);
}

#[tokio::test]
async fn a_new_projector_continues_after_the_bookmark_of_an_earlier_one() {
    let store = store_with(3).await;
    let storage = InMemoryBookmarkStorage::new();
    let mut first = Tally::default();
    Projector::from(&store)
        .towards(&mut first)
        .bookmark_progress(reader(&storage, "tally", ReadPolicy::BeforeFirstRun))
        .build()
        .await
        .unwrap()
        .run()
        .await
        .unwrap();
    append(&store, &[added(WIDGET, 1)]).await;

    let mut second = Tally::default();
    let run = Projector::from(&store)
        .towards(&mut second)
        .bookmark_progress(reader(&storage, "tally", ReadPolicy::BeforeFirstRun))
        .build()
        .await
        .unwrap()
        .run()
        .await
        .unwrap();
    assert_eq!(run, metrics(1, 1, 1, Some(4)));
    assert_eq!(first.seen, [1, 2, 3]);
    assert_eq!(second.seen, [4]);
}

/// A bookmark storage that fails every operation.
struct BrokenStorage;

#[async_trait]
impl BookmarkStorage for BrokenStorage {
    async fn load(&self, _: &str) -> Result<Option<u64>, BookmarkError> {
        Err(BookmarkError::Backend {
            backend: "broken",
            transient: false,
            source: "disk on fire".into(),
        })
    }
    async fn place(&self, _: &str, _: u64) -> Result<(), BookmarkError> {
        Err(BookmarkError::Backend {
            backend: "broken",
            transient: false,
            source: "disk on fire".into(),
        })
    }
    async fn delete(&self, _: &str) -> Result<(), BookmarkError> {
        Ok(())
    }
}

#[tokio::test]
async fn bookmark_storage_errors_name_the_reader() {
    let store = store_with(2).await;
    let mut tally = Tally::default();
    let err = Projector::from(&store)
        .towards(&mut tally)
        .bookmark_progress(BookmarkReader::new(
            "tally",
            Arc::new(BrokenStorage),
            ReadPolicy::AtCreation,
        ))
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProjectorError::BookmarkLoad { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("`tally`"), "{err}");

    let mut projector = Projector::from(&store)
        .towards(&mut tally)
        .bookmark_progress(BookmarkReader::new(
            "tally",
            Arc::new(BrokenStorage),
            ReadPolicy::OnManualTrigger,
        ))
        .build()
        .await
        .unwrap();
    let err = projector.run().await.unwrap_err();
    assert!(
        matches!(err, ProjectorError::BookmarkPlace { position: 2, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("`tally` at position 2"), "{err}");
    // The events were handled and counted; the next run places the bookmark again.
    assert_eq!(projector.cursor(), Some(2));
    assert_eq!(projector.total_metrics(), metrics(2, 2, 1, Some(2)));
    let err = projector.run().await.unwrap_err();
    assert!(
        matches!(err, ProjectorError::BookmarkPlace { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn in_memory_bookmark_storage() {
    let storage = InMemoryBookmarkStorage::new();
    let handle = storage.clone();
    assert_eq!(storage.load("a").await.unwrap(), None);
    storage.place("a", 7).await.unwrap();
    assert_eq!(
        handle.load("a").await.unwrap(),
        Some(7),
        "clones share bookmarks"
    );
    storage.place("a", 3).await.unwrap();
    assert_eq!(
        storage.load("a").await.unwrap(),
        Some(3),
        "the last write wins"
    );
    storage.place("b", 1).await.unwrap();
    assert_eq!(storage.len(), 2);
    storage.delete("a").await.unwrap();
    storage.delete("a").await.unwrap();
    assert_eq!(storage.load("a").await.unwrap(), None);
    assert_eq!(storage.load("b").await.unwrap(), Some(1));

    let err = storage.place(" ", 1).await.unwrap_err();
    assert!(matches!(err, BookmarkError::InvalidName { .. }), "{err:?}");
    assert!(storage.load("").await.is_err());
    assert!(storage.delete("").await.is_err());
    assert!(validate_reader_name(&"x".repeat(256)).is_err());
    assert!(validate_reader_name(&"x".repeat(255)).is_ok());

    // Object safe.
    let shared: Arc<dyn BookmarkStorage> = Arc::new(storage.clone());
    shared.place("c", 9).await.unwrap();
    assert_eq!(storage.load("c").await.unwrap(), Some(9));
}

// ---------------------------------------------------------------------------------------------
// Metrics, object safety, Send.

#[tokio::test]
async fn metrics_accumulate_over_runs() {
    let store = store_with(3).await;
    let mut tally = Tally {
        fail_once_at: Some(5),
        ..Tally::default()
    };
    let mut projector = Projector::from(&store)
        .towards(&mut tally)
        .batch_size(2)
        .build()
        .await
        .unwrap();
    assert_eq!(projector.total_metrics(), ProjectorMetrics::default());
    assert_eq!(projector.run().await.unwrap(), metrics(3, 3, 2, Some(3)));
    assert_eq!(projector.run().await.unwrap(), metrics(0, 0, 1, None));
    assert_eq!(projector.total_metrics(), metrics(3, 3, 3, Some(3)));

    append(
        &store,
        &[added(WIDGET, 1), added(WIDGET, 1), added(WIDGET, 1)],
    )
    .await; // 4..=6
    projector.run().await.unwrap_err(); // [4, 5] fails at 5
    assert_eq!(projector.total_metrics(), metrics(5, 4, 4, Some(4)));
    assert_eq!(projector.run().await.unwrap(), metrics(3, 3, 2, Some(6)));
    assert_eq!(projector.total_metrics(), metrics(8, 7, 6, Some(6)));
}

#[tokio::test]
async fn works_over_dyn_event_store() {
    let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    append(&*store, &[added(WIDGET, 4), picked(WIDGET, 1)]).await;
    let mut level = StockLevel::new(WIDGET);
    let run = Projector::from(&*store)
        .towards(&mut level)
        .build()
        .await
        .unwrap()
        .run()
        .await
        .unwrap();
    assert_eq!(run.events_handled, 2);
    assert_eq!(level.level, 3);
}

fn assert_send<T: Send>(value: T) -> T {
    value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_futures_are_send_and_can_be_spawned() {
    let store = store_with(3).await;
    let storage = InMemoryBookmarkStorage::new();
    let task_storage = storage.clone();
    let handle = tokio::spawn(async move {
        let mut tally = Tally::default();
        let mut projector = assert_send(
            Projector::from(&store)
                .towards(&mut tally)
                .bookmark_progress(reader(&task_storage, "spawned", ReadPolicy::BeforeEachRun))
                .build(),
        )
        .await?;
        let mut total = assert_send(projector.run()).await?;
        total = ProjectorMetrics {
            queries_done: total.queries_done
                + assert_send(projector.run_until(3)).await?.queries_done,
            ..total
        };
        assert_send(projector.run_single_batch()).await?;
        assert_send(projector.read_bookmark()).await?;
        Ok::<_, ProjectorError>(total)
    });
    let run = handle.await.unwrap().unwrap();
    assert_eq!(run.events_handled, 3);
    assert_eq!(run.queries_done, 2);
    assert_eq!(storage.load("spawned").await.unwrap(), Some(3));

    // The same over a `&dyn EventStore`.
    let dyn_store: Arc<dyn EventStore> = Arc::new(store_with(1).await);
    tokio::spawn(async move {
        let mut tally = Tally::default();
        let mut projector = Projector::from(&*dyn_store)
            .towards(&mut tally)
            .build()
            .await
            .unwrap();
        assert_send(projector.run()).await.unwrap()
    })
    .await
    .unwrap();
}

#[test]
fn public_types_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<ProjectorError>();
    send_sync::<BookmarkError>();
    send_sync::<BookmarkReader>();
    send_sync::<InMemoryBookmarkStorage>();
    send_sync::<ProjectorMetrics>();
    send_sync::<Projector<'static, InMemoryEventStore, Tally>>();
    send_sync::<Projector<'static, dyn EventStore, StockLevel>>();
}

//! Several connections and processes on one file: handles and storages opened separately
//! share positions and rows, and a process that dies between its projection writes and its
//! checkpoint leaves them in agreement.

mod common;

use std::path::Path;
use std::process::Command;

use common::{ItemEvent, checkpoint, create_items_table, event, item_rows, runtime};
use krescent_core::checkpoint::{CheckpointStorage, FixedEventRate};
use krescent_core::model::{ReadModel, ReadModelExt};
use krescent_core::{EventQuery, EventStore, EventStoreExt, HandlerError, QueryItem, Recorded};
use krescent_sqlite::{SqliteCheckpointStorage, SqliteEventStore, SqliteWrites};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_handles_on_one_file_share_positions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let a = SqliteEventStore::open(&path).await.unwrap();
    let b = SqliteEventStore::open(&path).await.unwrap();
    a.append(vec![event("t.a", &[], "{}")], None).await.unwrap();
    let from_b = b.append(vec![event("t.b", &[], "{}")], None).await.unwrap();
    assert_eq!(from_b[0].position, 2);
    assert_eq!(a.head().await.unwrap(), 2);
    let types = EventQuery::item(QueryItem::types(["t.b"]));
    assert_eq!(a.read(&types).await.unwrap(), from_b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn separately_opened_connections_share_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let store = SqliteEventStore::open(&path).await.unwrap();
    // A second writer connection (and thread) on the same file.
    let storage = SqliteCheckpointStorage::open(&path).await.unwrap();

    let appends = {
        let store = store.clone();
        tokio::spawn(async move {
            for item in 0..50 {
                store
                    .append_events(&[ItemEvent::Added { item }], None)
                    .await
                    .unwrap();
            }
        })
    };
    let stores = {
        let storage = storage.clone();
        tokio::spawn(async move {
            for position in 1..=50 {
                storage
                    .store(&checkpoint("shared", position))
                    .await
                    .unwrap();
            }
        })
    };
    appends.await.unwrap();
    stores.await.unwrap();
    assert_eq!(krescent_core::EventStore::head(&store).await.unwrap(), 50);
    assert_eq!(
        store
            .checkpoint_storage()
            .load("shared")
            .await
            .unwrap()
            .unwrap()
            .position,
        50
    );
}

/// Projects every event into a row of `items`; checkpoints count the events handled. When
/// `abort_at` is set, the write of the event at that position is a closure that inserts the
/// row, reports how many rows the transaction holds, and aborts the process.
#[derive(krescent_derive::ReadModel, krescent_derive::CheckpointSupport)]
#[krescent(
    crate = "krescent_core",
    name = "crash.items",
    version = 1,
    events = ItemEvent,
    handles(Added),
    meta(Added),
    writes = writes
)]
struct ItemRows {
    handled: u64,
    #[krescent(skip)]
    abort_at: Option<u64>,
    #[krescent(skip)]
    writes: SqliteWrites,
}

impl ItemRows {
    fn new(abort_at: Option<u64>) -> Self {
        ItemRows {
            handled: 0,
            abort_at,
            writes: SqliteWrites::new(),
        }
    }

    fn on_added(&mut self, item: &u64, event: &Recorded<ItemEvent>) -> Result<(), HandlerError> {
        self.handled += 1;
        let position = i64::try_from(event.position)?;
        let item = i64::try_from(*item)?;
        if self.abort_at == Some(event.position) {
            self.writes.run(move |tx| {
                tx.execute(
                    "INSERT INTO items (position, item) VALUES (?1, ?2)",
                    [position, item],
                )?;
                let rows: i64 = tx.query_row("SELECT count(*) FROM items", [], |r| r.get(0))?;
                eprintln!("{CRASH_MARKER} rows={rows}");
                std::process::abort()
            });
        } else {
            self.writes.execute(
                "INSERT INTO items (position, item) VALUES (?1, ?2)",
                [position, item],
            );
        }
        Ok(())
    }
}

/// Set (to the database path) in the child process of the crash test.
const CRASH_CHILD_ENV: &str = "KRESCENT_SQLITE_CRASH_CHILD";

/// What the child prints just before it aborts.
const CRASH_MARKER: &str = "krescent-crash-child: aborting inside the transaction with";

/// Events in the store.
const EVENTS: u64 = 55;

/// A checkpoint every this many events.
const EVERY: u64 = 10;

/// The child dies while committing the checkpoint of this position (the third).
const ABORT_AT: u64 = 30;

fn item_of(position: u64) -> u64 {
    position * 7
}

/// The child process dies between its projection writes and the checkpoint upsert of the
/// third checkpoint, inside the transaction. The table and the checkpoint then still agree
/// (the second checkpoint and its rows), and a restarted model brings the table to the head
/// with every event in it exactly once.
#[test]
fn crash_between_projection_writes_and_checkpoint_leaves_them_in_agreement() {
    if let Some(path) = std::env::var_os(CRASH_CHILD_ENV) {
        crash_child(Path::new(&path));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.db");
    let rt = runtime();
    rt.block_on(async {
        let store = SqliteEventStore::open(&path).await.unwrap();
        let events: Vec<ItemEvent> = (1..=EVENTS)
            .map(|p| ItemEvent::Added { item: item_of(p) })
            .collect();
        store.append_events(&events, None).await.unwrap();
        create_items_table(&path).await;
    });

    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash_between_projection_writes_and_checkpoint_leaves_them_in_agreement",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_CHILD_ENV, &path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "the child should have aborted; stderr:\n{stderr}"
    );
    assert!(
        stderr.contains(&format!("{CRASH_MARKER} rows={ABORT_AT}")),
        "the child should have died inside the transaction of the checkpoint at {ABORT_AT}, \
         with its rows written; status {:?}, stderr:\n{stderr}",
        output.status
    );
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            output.status.signal(),
            Some(6),
            "SIGABRT; stderr:\n{stderr}"
        );
    }

    rt.block_on(async {
        let store = SqliteEventStore::open(&path).await.unwrap();
        let storage = store.checkpoint_storage();
        let survived = storage
            .load(ItemRows::NAME)
            .await
            .unwrap()
            .expect("the checkpoints before the crash");
        let before = ABORT_AT - EVERY;
        assert_eq!(survived.position, before);
        assert_eq!(survived.state.u64("handled").unwrap(), before);
        let expected = |up_to: u64| -> Vec<(i64, i64)> {
            (1..=up_to).map(|p| (p as i64, item_of(p) as i64)).collect()
        };
        assert_eq!(
            item_rows(&path).await,
            expected(before),
            "the rows are exactly those of the events up to the checkpoint"
        );

        // Restart in this process, to the head.
        let mut runner = ItemRows::new(None)
            .configure(|c| c.use_checkpoints(storage.clone(), FixedEventRate::new(EVERY).unwrap()));
        let metrics = runner.catch_up(&store).await.unwrap();
        assert_eq!(metrics.restored_from, Some(before));
        assert_eq!(metrics.events_handled, EVENTS - before);
        runner.checkpoint_now().await.unwrap();
        assert!(runner.model().writes.is_empty());
        assert_eq!(
            item_rows(&path).await,
            expected(EVENTS),
            "every event is in the table exactly once"
        );
        let last = storage.load(ItemRows::NAME).await.unwrap().unwrap();
        assert_eq!(last.position, EVENTS);
        assert_eq!(last.state.u64("handled").unwrap(), EVENTS);
    });
}

/// The child's side: run the model from scratch; it aborts inside the checkpoint at
/// `ABORT_AT`.
fn crash_child(path: &Path) {
    let rt = runtime();
    let result = rt.block_on(async {
        let store = SqliteEventStore::open(path).await.unwrap();
        let mut runner = ItemRows::new(Some(ABORT_AT)).configure(|c| {
            c.use_checkpoints(
                store.checkpoint_storage(),
                FixedEventRate::new(EVERY).unwrap(),
            )
        });
        runner.catch_up(&store).await
    });
    panic!("the crash child should have aborted, but its model returned {result:?}");
}

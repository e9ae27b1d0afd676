//! Several connections and processes on one file: handles and storages opened separately
//! share positions and rows, a process that dies between its projection writes and its
//! checkpoint leaves them in agreement, and a subscriber sees the appends of another process.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{ItemEvent, checkpoint, create_items_table, event, item_rows, runtime};
use krescent_core::checkpoint::{CheckpointStorage, FixedEventRate};
use krescent_core::model::{ReadModel, ReadModelExt};
use krescent_core::{EventQuery, EventStore, EventStoreExt, HandlerError, QueryItem, Recorded};
use krescent_sqlite::{SqliteCheckpointStorage, SqliteEventStore, SqliteWrites};
use tokio_util::sync::CancellationToken;

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

/// Set (to the database path) in the child process of the foreign-appends test.
const APPEND_CHILD_ENV: &str = "KRESCENT_SQLITE_APPEND_CHILD";

/// What the child prints after each committed batch, followed by the batch's last position.
const COMMITTED_MARKER: &str = "krescent-append-child: committed up to";

/// Batches the child appends, one per line the parent writes to its stdin.
const FOREIGN_BATCHES: u64 = 8;

/// Events per batch of the child.
const FOREIGN_BATCH: u64 = 5;

/// How long the subscriber may take to see a batch once the child reports it committed.
const SEEN_WITHIN: Duration = Duration::from_secs(1);

/// How long the parent waits for the child to report a batch (the child is already built; this
/// only bounds a hung child).
const CHILD_REPORT_WITHIN: Duration = Duration::from_secs(60);

/// The payload of the `n`th event the child appends (at position `n`).
fn foreign_payload(n: u64) -> String {
    format!("{{\"n\":{n}}}")
}

/// The parent subscribes to the whole store (after 0) and never appends; a child process
/// appends batches to the same file. The subscriber sees every event of each batch within
/// `SEEN_WITHIN` of the child reporting the batch committed, once each, in position order.
#[test]
fn subscriber_sees_the_appends_of_another_process() {
    if let Some(path) = std::env::var_os(APPEND_CHILD_ENV) {
        append_child(Path::new(&path));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("foreign.db");
    let rt = runtime();
    rt.block_on(async {
        let store = SqliteEventStore::open(&path).await.unwrap();
        let cancel = CancellationToken::new();
        // The subscriber runs on its own, so it waits at the head when the child appends.
        let mut subscription = store.subscribe(EventQuery::match_all(), 0, cancel.clone());
        let (deliver, mut delivered) = tokio::sync::mpsc::unbounded_channel();
        let subscriber = tokio::spawn(async move {
            while let Some(events) = subscription.next_batch().await {
                if deliver.send(events.unwrap()).is_err() {
                    break;
                }
            }
        });

        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "subscriber_sees_the_appends_of_another_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(APPEND_CHILD_ENV, &path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut to_child = child.stdin.take().unwrap();
        let (reports, mut reported) = tokio::sync::mpsc::unbounded_channel();
        let from_child = BufReader::new(child.stdout.take().unwrap());
        let reader = std::thread::spawn(move || {
            for line in from_child.lines() {
                let line = line.unwrap();
                // libtest may have printed the test's name on the same line.
                if let Some((_, last)) = line.split_once(COMMITTED_MARKER) {
                    let last: u64 = last.trim().parse().unwrap();
                    if reports.send(last).is_err() {
                        break;
                    }
                }
            }
        });

        let mut seen = 0;
        for batch in 1..=FOREIGN_BATCHES {
            writeln!(to_child, "append").unwrap();
            to_child.flush().unwrap();
            let last = tokio::time::timeout(CHILD_REPORT_WITHIN, reported.recv())
                .await
                .unwrap_or_else(|_| panic!("the child did not report batch {batch}"))
                .expect("the child ended before reporting every batch");
            assert_eq!(last, batch * FOREIGN_BATCH);
            let received = tokio::time::timeout(SEEN_WITHIN, async {
                while seen < last {
                    let events = delivered.recv().await.expect("the subscription ended");
                    for event in events {
                        assert_eq!(event.position, seen + 1, "in order, none twice or skipped");
                        assert_eq!(event.data, foreign_payload(event.position).as_bytes());
                        seen = event.position;
                    }
                }
            })
            .await;
            assert!(
                received.is_ok(),
                "batch {batch} (up to position {last}) not seen within {SEEN_WITHIN:?} of its \
                 commit by another process; seen up to {seen}"
            );
            assert_eq!(seen, last, "nothing beyond what the child committed");
        }
        drop(to_child);
        assert!(child.wait().unwrap().success(), "the child failed");
        reader.join().unwrap();
        cancel.cancel();
        subscriber.await.unwrap();
        assert!(
            delivered.recv().await.is_none(),
            "nothing after the last batch"
        );
    });
}

/// The child's side: for each line on stdin, append a batch of `FOREIGN_BATCH` events and
/// report its last position on stdout. Ends at the end of stdin.
fn append_child(path: &Path) {
    let rt = runtime();
    rt.block_on(async {
        let store = SqliteEventStore::open(path).await.unwrap();
        let mut next = 1;
        let mut line = String::new();
        let stdin = std::io::stdin();
        for _ in 0..FOREIGN_BATCHES {
            line.clear();
            if stdin.lock().read_line(&mut line).unwrap() == 0 {
                return;
            }
            let events = (next..next + FOREIGN_BATCH)
                .map(|n| event("t.foreign", &[], &foreign_payload(n)))
                .collect();
            let recorded = store.append(events, None).await.unwrap();
            next += FOREIGN_BATCH;
            let last = recorded.last().unwrap().position;
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "{COMMITTED_MARKER} {last}").unwrap();
            stdout.flush().unwrap();
        }
    });
}

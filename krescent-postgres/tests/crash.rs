//! A process killed between its projection writes and its checkpoint: the table and the
//! checkpoint agree, and a restart brings the table to the head with every event once.
//!
//! It runs against the database named by `KRESCENT_POSTGRES_URL` (for example
//! `postgres://postgres@127.0.0.1:5432/test`). Without that variable the test prints that it
//! was skipped and passes. It works in tables of its own (a random prefix) and drops them at
//! the end.

use std::process::{Command, Stdio};
use std::time::Duration;

use krescent_core::checkpoint::{CheckpointStorage, FixedEventRate};
use krescent_core::model::ReadModelExt;
use krescent_core::{EventStoreExt, Recorded};
use krescent_postgres::{PostgresParam, PostgresWrites};

mod common;
use common::{
    URL_VAR, WAIT, backends, connect_with, drop_tables, fresh_prefix, options, raw_client, runtime,
    wait_until, with_database,
};

#[derive(krescent_derive::Event, serde::Serialize, serde::Deserialize, Clone, Debug)]
#[krescent(crate = "krescent_core", catalog = "pgcrash")]
pub enum ItemEvent {
    #[krescent(name = "item.added")]
    Added {
        #[krescent(tag)]
        item: String,
    },
}

/// Projects every event into the table `<prefix>items`, one row per event, through
/// [`PostgresWrites`]. With `block` set, the statements of the event at `block.0` end with one
/// that waits for the advisory lock `block.1`.
///
/// The table name is part of the checkpointed state: the derive resets `skip` fields to their
/// defaults on restore, so it cannot live in one.
#[derive(krescent_derive::ReadModel, krescent_derive::CheckpointSupport, Default)]
#[krescent(
    crate = "krescent_core",
    name = "pg.items",
    events = ItemEvent,
    handles(Added),
    meta(Added),
    writes = writes
)]
pub struct ItemsTable {
    handled: u64,
    table: String,
    #[krescent(skip)]
    writes: PostgresWrites,
    #[krescent(skip)]
    block: Option<(u64, i64)>,
}

impl ItemsTable {
    fn new(prefix: &str, block: Option<(u64, i64)>) -> Self {
        ItemsTable {
            handled: 0,
            writes: PostgresWrites::new(),
            table: format!("{prefix}items"),
            block,
        }
    }

    fn on_added(&mut self, item: &str, event: &Recorded<ItemEvent>) -> Result<(), String> {
        let position = i64::try_from(event.position).map_err(|e| e.to_string())?;
        let params: Vec<PostgresParam> = vec![Box::new(position), Box::new(item.to_owned())];
        self.writes.execute(
            format!(
                "INSERT INTO {} (position, item) VALUES ($1, $2)",
                self.table
            ),
            params,
        );
        if let Some((at, key)) = self.block {
            if event.position == at {
                self.writes
                    .execute("SELECT pg_advisory_xact_lock($1)", vec![Box::new(key)]);
            }
        }
        self.handled += 1;
        Ok(())
    }
}

/// Events in the crash test, a checkpoint every [`CRASH_RATE`] events, and the checkpoint
/// whose transaction the child never finishes.
const CRASH_EVENTS: u64 = 40;

const CRASH_RATE: u64 = 5;

const CRASH_AT: u64 = 15;

/// Marks the child process and names its table prefix.
const CHILD_PREFIX_VAR: &str = "KRESCENT_PG_CRASH_CHILD_PREFIX";

/// The advisory lock key the child blocks on.
const CHILD_LOCK_VAR: &str = "KRESCENT_PG_CRASH_CHILD_LOCK";

fn child_application_name(prefix: &str) -> String {
    format!("krescent crash child {prefix}")
}

/// The positions in the items table, in order, duplicates included.
async fn items(client: &tokio_postgres::Client, prefix: &str) -> Vec<i64> {
    client
        .query(
            &format!("SELECT position FROM {prefix}items ORDER BY position"),
            &[],
        )
        .await
        .expect("items")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The child: runs the model until its transaction for the checkpoint at [`CRASH_AT`] blocks
/// on the parent's lock, where the parent kills it.
async fn crash_child(url: String, prefix: String, key: i64) {
    let store = connect_with(
        &url,
        options(&prefix)
            .application_name(child_application_name(&prefix))
            .pool_size(2),
    )
    .await;
    let storage = store.checkpoint_storage();
    let mut runner = ItemsTable::new(&prefix, Some((CRASH_AT, key))).configure(|c| {
        c.use_checkpoints(storage, FixedEventRate::new(CRASH_RATE).expect("rate"))
            .batch_size(7)
    });
    let outcome = runner.catch_up(&store).await;
    panic!("the child should have been killed while blocked, but its run ended: {outcome:?}");
}

/// A child process projects events into a table through [`PostgresWrites`], with a
/// checkpoint every five events. Its transaction for the third checkpoint inserts the rows,
/// then blocks on an advisory lock the parent holds; the parent kills it there with SIGKILL.
/// The table and the checkpoint agree (the second checkpoint and exactly its rows), and a
/// restart in this process brings the table to the head with every event exactly once.
#[test]
fn crash_between_projection_writes_and_checkpoint() {
    if let Ok(prefix) = std::env::var(CHILD_PREFIX_VAR) {
        let url = std::env::var(URL_VAR).expect("the child gets the URL");
        let key: i64 = std::env::var(CHILD_LOCK_VAR)
            .expect("the child gets the lock key")
            .parse()
            .expect("a lock key");
        runtime().block_on(crash_child(url, prefix, key));
        return;
    }
    with_database(|url| async move {
        let prefix = fresh_prefix();
        let store = connect_with(&url, options(&prefix)).await;
        let admin = raw_client(&url).await;
        admin
            .batch_execute(&format!(
                "CREATE TABLE {prefix}items (position bigint NOT NULL, item text NOT NULL)"
            ))
            .await
            .expect("items table");
        let events: Vec<ItemEvent> = (1..=CRASH_EVENTS)
            .map(|i| ItemEvent::Added {
                item: format!("item-{i}"),
            })
            .collect();
        store.append_events(&events, None).await.expect("append");

        // The lock the child's third checkpoint waits for, held by this session.
        let key = i64::from_ne_bytes(uuid::Uuid::now_v7().as_u64_pair().1.to_ne_bytes());
        admin
            .execute("SELECT pg_advisory_lock($1)", &[&key])
            .await
            .expect("advisory lock");

        let test_name = "crash_between_projection_writes_and_checkpoint";
        let exe = std::env::current_exe().expect("test binary");
        let child = Command::new(exe)
            .args(["--exact", test_name, "--nocapture", "--test-threads=1"])
            .env(CHILD_PREFIX_VAR, &prefix)
            .env(CHILD_LOCK_VAR, key.to_string())
            .env(URL_VAR, &url)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the child");
        let mut child = child;

        // Wait until the child's transaction waits for the lock (or the child died early).
        let app = child_application_name(&prefix);
        let deadline = tokio::time::Instant::now() + WAIT;
        let blocked = loop {
            let waiting: i64 = admin
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 \
                     AND wait_event_type = 'Lock' AND wait_event = 'advisory'",
                    &[&app],
                )
                .await
                .expect("pg_stat_activity")
                .get(0);
            if waiting == 1 {
                break Ok(());
            }
            if let Some(status) = child.try_wait().expect("child status") {
                break Err(format!("the child exited before blocking: {status}"));
            }
            if tokio::time::Instant::now() > deadline {
                break Err(format!("the child did not block within {WAIT:?}"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        if let Err(problem) = blocked {
            let _ = child.kill();
            let output = tokio::task::spawn_blocking(move || child.wait_with_output())
                .await
                .expect("join")
                .expect("child output");
            panic!(
                "{problem}\n--- child stdout\n{}\n--- child stderr\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }

        // Blocked inside the transaction of the third checkpoint: only the second is visible.
        let storage = store.checkpoint_storage();
        let before = storage
            .load("pg.items")
            .await
            .expect("load")
            .expect("a checkpoint");
        assert_eq!(before.position, CRASH_AT - CRASH_RATE);
        assert_eq!(items(&admin, &prefix).await, (1..=10).collect::<Vec<_>>());

        child.kill().expect("SIGKILL the child");
        let status = tokio::task::spawn_blocking(move || child.wait_with_output())
            .await
            .expect("join")
            .expect("child status")
            .status;
        assert!(!status.success(), "the child was killed: {status}");
        admin
            .execute("SELECT pg_advisory_unlock($1)", &[&key])
            .await
            .expect("advisory unlock");
        wait_until("the child's connections are gone", || async {
            backends(&admin, &app).await.is_empty()
        })
        .await;

        // The table and the checkpoint agree: rows for exactly the events up to the
        // checkpoint's position.
        let after = storage
            .load("pg.items")
            .await
            .expect("load")
            .expect("a checkpoint");
        assert_eq!(after.position, CRASH_AT - CRASH_RATE);
        let positions = items(&admin, &prefix).await;
        assert_eq!(
            positions,
            (1..=after.position as i64).collect::<Vec<_>>(),
            "rows == events up to the checkpoint, nothing of the killed transaction"
        );

        // A restart continues from the checkpoint: every event in the table exactly once.
        let mut runner = ItemsTable::new(&prefix, None).configure(|c| {
            c.use_checkpoints(
                storage.clone(),
                FixedEventRate::new(CRASH_RATE).expect("rate"),
            )
        });
        let metrics = runner.catch_up(&store).await.expect("restart");
        runner.checkpoint_now().await.expect("final checkpoint");
        assert_eq!(metrics.restored_from, Some(after.position));
        assert_eq!(metrics.events_handled, CRASH_EVENTS - after.position);
        assert_eq!(runner.model().handled, CRASH_EVENTS);
        assert_eq!(
            items(&admin, &prefix).await,
            (1..=CRASH_EVENTS as i64).collect::<Vec<_>>(),
            "every event exactly once"
        );
        assert_eq!(
            storage
                .load("pg.items")
                .await
                .expect("load")
                .map(|c| c.position),
            Some(CRASH_EVENTS)
        );

        drop(store);
        drop_tables(&url, &prefix).await;
    });
}

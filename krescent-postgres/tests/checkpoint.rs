//! The checkpoint storage: projection writes committed with checkpoints in one transaction,
//! refused writes and corrupt rows.
//!
//! They run against the database named by `KRESCENT_POSTGRES_URL` (for example
//! `postgres://postgres@127.0.0.1:5432/test`). Without that variable every test prints that it
//! was skipped and passes. Each test works in tables of its own (a random prefix) and drops
//! them at the end.

use std::sync::Arc;

use krescent_core::checkpoint::{CheckpointStorage, CheckpointStorageError, PendingWrites};
use krescent_postgres::tokio_postgres::error::SqlState;
use krescent_postgres::{PostgresWriteError, PostgresWrites};

mod common;
use common::{
    checkpoint, connect_with, create_rows_table, drop_tables, expected_rows, fresh_prefix,
    insert_row, options, raw_client, rows, with_database,
};

/// Statements and the checkpoint commit together; the buffer is cleared; an empty buffer
/// stores the checkpoint alone.
#[test]
fn store_with_writes_commits_rows_and_checkpoint_together() {
    with_database(|url| async move {
        let prefix = fresh_prefix();
        let store = connect_with(&url, options(&prefix)).await;
        let storage = store.checkpoint_storage();
        let admin = raw_client(&url).await;
        let table = create_rows_table(&admin, &prefix).await;

        let mut writes = PostgresWrites::new();
        for position in 1..=3 {
            insert_row(&mut writes, &table, position);
        }
        writes.execute(
            format!("UPDATE {table} SET label = label || $1 WHERE position = $2"),
            vec![Box::new("!".to_owned()), Box::new(3_i64)],
        );
        let first = checkpoint("rows.model", 3);
        storage
            .store_with_writes(&first, &mut writes)
            .await
            .expect("store with writes");
        assert!(writes.is_empty(), "the buffer is cleared once committed");
        assert_eq!(
            rows(&admin, &table).await,
            vec![
                (1, "row 1".to_owned()),
                (2, "row 2".to_owned()),
                (3, "row 3!".to_owned())
            ]
        );
        assert_eq!(storage.load("rows.model").await.expect("load"), Some(first));

        let second = checkpoint("rows.model", 4);
        storage
            .store_with_writes(&second, &mut writes)
            .await
            .expect("an empty buffer");
        assert_eq!(
            storage.load("rows.model").await.expect("load"),
            Some(second)
        );
        assert_eq!(rows(&admin, &table).await.len(), 3);

        // Through `Arc<dyn CheckpointStorage>` and `&mut dyn PendingWrites`, as the runner
        // calls it.
        let shared: Arc<dyn CheckpointStorage> = Arc::new(storage.clone());
        insert_row(&mut writes, &table, 4);
        let pending: &mut dyn PendingWrites = &mut writes;
        shared
            .store_with_writes(&checkpoint("rows.model", 5), pending)
            .await
            .expect("through the trait object");
        assert!(writes.is_empty());
        let mut want = expected_rows(1..=4);
        want[2].1.push('!');
        assert_eq!(rows(&admin, &table).await, want);

        drop(store);
        drop_tables(&url, &prefix).await;
    });
}

/// A failing statement commits neither the statements before it nor the checkpoint; the error
/// names the statement; the buffer is kept; the storage works afterwards.
#[test]
fn a_failing_statement_commits_nothing() {
    with_database(|url| async move {
        let prefix = fresh_prefix();
        let store = connect_with(&url, options(&prefix)).await;
        let storage = store.checkpoint_storage();
        let admin = raw_client(&url).await;
        let table = create_rows_table(&admin, &prefix).await;

        let mut writes = PostgresWrites::new();
        insert_row(&mut writes, &table, 1);
        let first = checkpoint("failing.model", 1);
        storage
            .store_with_writes(&first, &mut writes)
            .await
            .expect("first commit");

        // The second insert repeats position 1: a unique violation.
        for position in [2, 1, 3] {
            insert_row(&mut writes, &table, position);
        }
        let err = storage
            .store_with_writes(&checkpoint("failing.model", 3), &mut writes)
            .await
            .expect_err("a duplicate key");
        let failed = PostgresWriteError::of(&err).unwrap_or_else(|| panic!("{err:?}"));
        assert_eq!(failed.index, 1);
        assert_eq!(failed.model, "failing.model");
        assert_eq!(
            failed.sql,
            format!("INSERT INTO {table} (position, label) VALUES ($1, $2)")
        );
        assert_eq!(failed.source.code(), Some(&SqlState::UNIQUE_VIOLATION));
        let message = err.to_string();
        assert!(
            message.contains("pending write 1 of model `failing.model`"),
            "{message}"
        );
        assert!(message.contains(&failed.sql), "{message}");
        assert!(message.contains("duplicate key"), "{message}");
        assert_eq!(writes.len(), 3, "the buffer is kept after a failure");
        assert_eq!(rows(&admin, &table).await, expected_rows([1]));
        assert_eq!(
            storage.load("failing.model").await.expect("load"),
            Some(first.clone())
        );

        // A parameter of the wrong type (int4 for a bigint) fails before it is sent.
        writes.clear();
        insert_row(&mut writes, &table, 2);
        writes.execute(
            format!("INSERT INTO {table} (position, label) VALUES ($1, $2)"),
            vec![Box::new(5_i32), Box::new("five".to_owned())],
        );
        let err = storage
            .store_with_writes(&checkpoint("failing.model", 5), &mut writes)
            .await
            .expect_err("a parameter of the wrong type");
        let failed = PostgresWriteError::of(&err).unwrap_or_else(|| panic!("{err:?}"));
        assert_eq!(failed.index, 1);
        assert_eq!(rows(&admin, &table).await, expected_rows([1]));

        // SQL that does not parse fails at its statement too.
        writes.clear();
        writes.execute(
            "INSERT INTO nowhere_at_all VALUES ($1)",
            vec![Box::new(1_i64)],
        );
        let err = storage
            .store_with_writes(&checkpoint("failing.model", 6), &mut writes)
            .await
            .expect_err("a missing table");
        let failed = PostgresWriteError::of(&err).unwrap_or_else(|| panic!("{err:?}"));
        assert_eq!(
            (failed.index, failed.source.code()),
            (0, Some(&SqlState::UNDEFINED_TABLE))
        );
        assert_eq!(
            storage.load("failing.model").await.expect("load"),
            Some(first)
        );

        // The pool's connections are usable after the rollbacks.
        writes.clear();
        for position in 2..=4 {
            insert_row(&mut writes, &table, position);
        }
        let last = checkpoint("failing.model", 4);
        storage
            .store_with_writes(&last, &mut writes)
            .await
            .expect("commit after failures");
        assert_eq!(rows(&admin, &table).await, expected_rows(1..=4));
        assert_eq!(
            storage.load("failing.model").await.expect("load"),
            Some(last)
        );

        drop(store);
        drop_tables(&url, &prefix).await;
    });
}

/// A buffer the storage does not know.
#[derive(Debug, Default)]
struct ForeignWrites(Vec<String>);

impl PendingWrites for ForeignWrites {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    fn as_any(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

/// A foreign buffer type, an invalid model name and an unencodable state are refused before
/// anything is written, and the buffer is left alone.
#[test]
fn refused_writes_write_nothing() {
    with_database(|url| async move {
        let prefix = fresh_prefix();
        let store = connect_with(&url, options(&prefix)).await;
        let storage = store.checkpoint_storage();
        let admin = raw_client(&url).await;
        let table = create_rows_table(&admin, &prefix).await;

        let mut foreign = ForeignWrites(vec!["INSERT …".to_owned()]);
        let err = storage
            .store_with_writes(&checkpoint("foreign.model", 1), &mut foreign)
            .await
            .expect_err("a foreign buffer");
        assert!(
            matches!(
                &err,
                CheckpointStorageError::WritesMismatch { model, .. } if model == "foreign.model"
            ),
            "{err:?}"
        );
        assert_eq!(foreign.0.len(), 1);
        assert_eq!(storage.load("foreign.model").await.expect("load"), None);

        let mut writes = PostgresWrites::new();
        insert_row(&mut writes, &table, 1);
        let err = storage
            .store_with_writes(&checkpoint("bad/name", 1), &mut writes)
            .await
            .expect_err("an invalid model name");
        assert!(
            matches!(&err, CheckpointStorageError::InvalidModelName { name, .. } if name == "bad/name"),
            "{err:?}"
        );
        let mut unencodable = checkpoint("encode.model", 1);
        unencodable.state.put_u64("", 1);
        let err = storage
            .store_with_writes(&unencodable, &mut writes)
            .await
            .expect_err("an empty key in the state");
        assert!(
            matches!(&err, CheckpointStorageError::Encode { model, .. } if model == "encode.model"),
            "{err:?}"
        );
        assert_eq!(writes.len(), 1);
        assert_eq!(rows(&admin, &table).await, vec![]);
        assert_eq!(storage.list().await.expect("list"), vec![]);

        drop(store);
        drop_tables(&url, &prefix).await;
    });
}

/// Rows changed behind the storage's back are typed errors, never panics or partial
/// checkpoints.
#[test]
fn corrupt_rows_are_reported() {
    with_database(|url| async move {
        let prefix = fresh_prefix();
        let store = connect_with(&url, options(&prefix)).await;
        let storage = store.checkpoint_storage();
        let admin = raw_client(&url).await;
        let table = storage.table().to_owned();
        for model in ["damaged", "truncated", "moved", "original"] {
            storage.store(&checkpoint(model, 10)).await.expect("store");
        }
        let set = |sql: String| {
            let admin = &admin;
            async move { admin.batch_execute(&sql).await.expect("tamper") }
        };
        set(format!(
            "UPDATE {table} SET checkpoint = '\\x00ff'::bytea WHERE model = 'damaged'"
        ))
        .await;
        set(format!(
            "UPDATE {table} SET checkpoint = substring(checkpoint FROM 1 FOR 30) \
             WHERE model = 'truncated'"
        ))
        .await;
        set(format!(
            "UPDATE {table} SET checkpoint = (SELECT checkpoint FROM {table} WHERE model = \
             'original') WHERE model = 'moved'"
        ))
        .await;

        for model in ["damaged", "truncated"] {
            let err = storage.load(model).await.expect_err("corrupt");
            match &err {
                CheckpointStorageError::Corrupt {
                    model: named,
                    location,
                    ..
                } => {
                    assert_eq!(named, model);
                    assert!(location.contains(&table), "{location}");
                    assert!(location.contains(model), "{location}");
                }
                other => panic!("{model}: expected Corrupt, got {other:?}"),
            }
        }
        let err = storage.load("moved").await.expect_err("moved");
        assert!(
            matches!(
                &err,
                CheckpointStorageError::ModelMismatch { expected, found, .. }
                    if expected == "moved" && found == "original"
            ),
            "{err:?}"
        );
        // The metadata columns are intact, so the listing still works.
        assert_eq!(storage.list().await.expect("list").len(), 4);

        // A time PostgreSQL can hold but a checkpoint cannot.
        set(format!(
            "UPDATE {table} SET taken_at = 'infinity' WHERE model = 'original'"
        ))
        .await;
        let err = storage.list().await.expect_err("infinite time");
        assert!(
            matches!(&err, CheckpointStorageError::Corrupt { model, .. } if model == "original"),
            "{err:?}"
        );
        // Storing again repairs a row.
        storage
            .store(&checkpoint("original", 11))
            .await
            .expect("store");
        storage
            .store(&checkpoint("damaged", 11))
            .await
            .expect("store");
        assert_eq!(
            storage.load("damaged").await.expect("load"),
            Some(checkpoint("damaged", 11))
        );
        assert_eq!(storage.list().await.expect("list").len(), 4);

        drop(store);
        drop_tables(&url, &prefix).await;
    });
}

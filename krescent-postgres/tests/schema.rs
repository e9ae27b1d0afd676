//! The schema: created once under concurrent first uses, versioned, and shared by the store
//! and the storages.
//!
//! They run against the database named by `KRESCENT_POSTGRES_URL` (for example
//! `postgres://postgres@127.0.0.1:5432/test`). Without that variable every test prints that it
//! was skipped and passes. Each test works in tables of its own (a random prefix) and drops
//! them at the end.

use krescent_core::checkpoint::{CheckpointInfo, CheckpointStorage};
use krescent_core::projection::BookmarkStorage;
use krescent_core::{EventQuery, EventStore};
use krescent_postgres::{
    PostgresBookmarkStorage, PostgresCheckpointStorage, PostgresError, PostgresEventStore,
    PostgresOptions,
};

mod common;
use common::{
    checkpoint, connect, connect_with, drop_tables, event, fresh_prefix, options, postgres_error,
    raw_client, with_database,
};

/// Concurrent first uses of a prefix all succeed; connecting again keeps the data; a schema
/// version the code does not know (newer, or below 1) is refused with a typed error.
#[test]
fn schema_creation_is_idempotent_and_versioned() {
    with_database(|url| async move {
        let prefix = fresh_prefix();
        let connects: Vec<_> = (0..8)
            .map(|_| {
                let (url, prefix) = (url.clone(), prefix.clone());
                tokio::spawn(async move {
                    PostgresEventStore::connect(
                        &url,
                        PostgresOptions::default().table_prefix(prefix),
                    )
                    .await
                })
            })
            .collect();
        let mut stores = Vec::new();
        for c in connects {
            stores.push(c.await.expect("task").expect("concurrent first use"));
        }
        stores[0]
            .append(vec![event("pg.kept", &["k:1"], "{}".into())], None)
            .await
            .expect("append");
        drop(stores);
        let again = connect(&url, &prefix).await;
        assert_eq!(again.head().await.expect("head"), 1);
        assert_eq!(
            again
                .read(&EventQuery::match_all())
                .await
                .expect("read")
                .len(),
            1
        );

        let client = raw_client(&url).await;
        let version: i64 = client
            .query_one(
                &format!("SELECT value FROM {prefix}meta WHERE name = 'schema_version'"),
                &[],
            )
            .await
            .expect("version")
            .get(0);
        assert_eq!(version, 1);
        client
            .batch_execute(&format!(
                "UPDATE {prefix}meta SET value = 99 WHERE name = 'schema_version'"
            ))
            .await
            .expect("bump version");
        let err =
            PostgresEventStore::connect(&url, PostgresOptions::default().table_prefix(&prefix))
                .await
                .expect_err("a newer schema is refused");
        match postgres_error(&err) {
            PostgresError::UnsupportedSchemaVersion {
                found: 99,
                supported: 1,
                ..
            } => {}
            other => panic!("expected UnsupportedSchemaVersion, got {other:?}"),
        }
        assert!(err.to_string().contains("schema version 99"), "{err}");
        // A version below 1 was never written by krescent: refused too.
        client
            .batch_execute(&format!(
                "UPDATE {prefix}meta SET value = 0 WHERE name = 'schema_version'"
            ))
            .await
            .expect("set version 0");
        let err =
            PostgresEventStore::connect(&url, PostgresOptions::default().table_prefix(&prefix))
                .await
                .expect_err("version 0 is refused");
        assert!(
            matches!(
                postgres_error(&err),
                PostgresError::UnsupportedSchemaVersion { found: 0, .. }
            ),
            "{err:?}"
        );
        drop(again);
        drop_tables(&url, &prefix).await;
    });
}

/// Storages taken from a store share its tables with standalone storages on the same prefix;
/// the tables are part of the store's schema.
#[test]
fn storages_from_a_store_and_standalone_share_the_tables() {
    with_database(|url| async move {
        let prefix = fresh_prefix();
        let store = connect_with(&url, options(&prefix)).await;
        let from_store = store.checkpoint_storage();
        assert_eq!(from_store.table_prefix(), prefix);
        assert_eq!(from_store.table(), format!("{prefix}checkpoints"));
        let standalone = PostgresCheckpointStorage::connect(&url, options(&prefix).pool_size(2))
            .await
            .expect("standalone checkpoint storage");
        let stored = checkpoint("shared.model", 7);
        from_store.store(&stored).await.expect("store");
        assert_eq!(
            standalone.load("shared.model").await.expect("load"),
            Some(stored.clone())
        );
        assert_eq!(
            standalone.list().await.expect("list"),
            vec![CheckpointInfo::from(&stored)]
        );

        let bookmarks = store.bookmark_storage();
        assert_eq!(bookmarks.table(), format!("{prefix}bookmarks"));
        let other = PostgresBookmarkStorage::connect(&url, options(&prefix))
            .await
            .expect("standalone bookmark storage");
        bookmarks.place("report", u64::MAX).await.expect("place");
        assert_eq!(other.load("report").await.expect("load"), Some(u64::MAX));
        other.delete("report").await.expect("delete");
        assert_eq!(bookmarks.load("report").await.expect("load"), None);

        // A standalone storage on a new prefix creates the whole schema: a store opens on it.
        let second = fresh_prefix();
        let early = PostgresBookmarkStorage::connect(&url, options(&second))
            .await
            .expect("storage before the store");
        early.place("r", 1).await.expect("place");
        let later = connect_with(&url, options(&second)).await;
        assert_eq!(later.head().await.expect("head"), 0);
        assert_eq!(
            later.bookmark_storage().load("r").await.expect("load"),
            Some(1)
        );

        drop((store, later));
        drop_tables(&url, &prefix).await;
        drop_tables(&url, &second).await;
    });
}

//! Connections: invalid settings, an unreachable or unavailable database, and pooled
//! connections terminated under the store and the storages.
//!
//! They run against the database named by `KRESCENT_POSTGRES_URL` (for example
//! `postgres://postgres@127.0.0.1:5432/test`). Without that variable every test prints that it
//! was skipped and passes. Each test works in tables of its own (a random prefix) and drops
//! them at the end.

use std::time::Duration;

use krescent_core::checkpoint::{CheckpointInfo, CheckpointStorage};
use krescent_core::projection::{BookmarkError, BookmarkStorage};
use krescent_core::{EventQuery, EventStore, StoreError};
use krescent_postgres::{
    PostgresBookmarkStorage, PostgresCheckpointStorage, PostgresError, PostgresEventStore,
    PostgresOptions, PostgresWrites,
};

mod common;
use common::{
    checkpoint, connect_with, create_rows_table, drop_tables, event, expected_rows, fresh_prefix,
    insert_row, options, positions, postgres_error, raw_client, rows, runtime, terminate_backends,
    with_database,
};

/// Invalid prefixes, pool sizes and URLs are typed errors, and no table is created.
#[test]
fn invalid_settings_are_rejected() {
    with_database(|url| async move {
        for bad in [
            "",
            "Upper_",
            "1starts_with_digit",
            "has-dash",
            "semi;colon",
            "quote\"",
            "dot.ted",
            "space d",
            "ünïcode",
            "a23456789012345678901234567890123456789012",
        ] {
            let err =
                PostgresEventStore::connect(&url, PostgresOptions::default().table_prefix(bad))
                    .await
                    .expect_err("invalid prefix");
            match postgres_error(&err) {
                PostgresError::InvalidTablePrefix { prefix } => assert_eq!(prefix, bad),
                other => panic!("prefix {bad:?}: expected InvalidTablePrefix, got {other:?}"),
            }
        }
        let err = PostgresEventStore::connect(&url, PostgresOptions::default().pool_size(0))
            .await
            .expect_err("pool size 0");
        assert!(matches!(
            postgres_error(&err),
            PostgresError::InvalidPoolSize
        ));
        let err =
            PostgresEventStore::connect("postgres://host:notaport/db", PostgresOptions::default())
                .await
                .expect_err("bad url");
        assert!(matches!(
            postgres_error(&err),
            PostgresError::InvalidUrl { .. }
        ));
    });
}

/// A database that cannot be reached, or connections the server closed, give
/// `StoreError::Backend` errors, never panics; the store recovers with new connections.
#[test]
fn database_gone_is_a_backend_error() {
    with_database(|url| async move {
        let err = PostgresEventStore::connect(
            "postgres://postgres@127.0.0.1:1/none",
            PostgresOptions::default().connect_timeout(Duration::from_secs(2)),
        )
        .await
        .expect_err("nothing listens on port 1");
        assert!(
            matches!(
                err,
                StoreError::Backend {
                    backend: "postgres",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            err.is_transient(),
            "an unreachable server is transient: {err}"
        );

        let prefix = fresh_prefix();
        let app = format!("krescent test {prefix}");
        let store = connect_with(
            &url,
            PostgresOptions::default()
                .table_prefix(&prefix)
                .application_name(&app)
                .pool_size(2),
        )
        .await;
        store
            .append(vec![event("pg.one", &[], "{}".into())], None)
            .await
            .expect("append");
        let admin = raw_client(&url).await;
        admin
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
                &[&app],
            )
            .await
            .expect("terminate the pool's connections");
        let mut recovered = false;
        for _ in 0..20 {
            match store.read(&EventQuery::match_all()).await {
                Ok(events) => {
                    assert_eq!(positions(&events), [1]);
                    recovered = true;
                    break;
                }
                Err(e) => assert!(
                    matches!(
                        e,
                        StoreError::Backend {
                            backend: "postgres",
                            ..
                        }
                    ) && e.is_transient(),
                    "a terminated connection is a transient backend error: {e:?}"
                ),
            }
        }
        assert!(recovered, "the store did not recover with new connections");
        drop(store);
        drop_tables(&url, &prefix).await;
    });
}

/// Invalid settings and an unreachable database are typed errors of both storages, never
/// panics. Needs no database.
#[test]
fn configuration_errors_and_an_unreachable_database_are_typed() {
    runtime().block_on(async {
        let unreachable = "postgres://postgres@127.0.0.1:1/test";
        let quick = || {
            PostgresOptions::default()
                .table_prefix("krescent_unreachable_")
                .connect_timeout(Duration::from_secs(2))
        };
        let err = PostgresCheckpointStorage::connect(unreachable, quick())
            .await
            .expect_err("nothing listens on port 1");
        assert!(
            matches!(
                PostgresError::of_checkpoint_error(&err),
                Some(PostgresError::Pool(_) | PostgresError::Database(_))
            ),
            "{err:?}"
        );
        let err = PostgresBookmarkStorage::connect(unreachable, quick())
            .await
            .expect_err("nothing listens on port 1");
        assert!(
            matches!(
                PostgresError::of_bookmark_error(&err),
                Some(PostgresError::Pool(_) | PostgresError::Database(_))
            ),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("postgres bookmark storage failed"),
            "{err}"
        );
        assert!(
            err.is_transient(),
            "an unreachable server is transient: {err}"
        );

        let err = PostgresCheckpointStorage::connect(
            unreachable,
            PostgresOptions::default().table_prefix("Bad-Prefix"),
        )
        .await
        .expect_err("invalid prefix");
        assert!(
            matches!(
                PostgresError::of_checkpoint_error(&err),
                Some(PostgresError::InvalidTablePrefix { prefix }) if prefix == "Bad-Prefix"
            ),
            "{err:?}"
        );
        assert!(!err.is_transient(), "an invalid prefix is permanent: {err}");
        let err = PostgresBookmarkStorage::connect(unreachable, quick().pool_size(0))
            .await
            .expect_err("pool size 0");
        assert!(
            matches!(
                PostgresError::of_bookmark_error(&err),
                Some(PostgresError::InvalidPoolSize)
            ),
            "{err:?}"
        );
        let err = PostgresCheckpointStorage::connect("postgres://[not a url", quick())
            .await
            .expect_err("invalid URL");
        assert!(
            matches!(
                PostgresError::of_checkpoint_error(&err),
                Some(PostgresError::InvalidUrl { .. })
            ),
            "{err:?}"
        );
    });
}

/// Errors the server reports for the statement itself (here: the store's tables were dropped
/// under it) are permanent and name the server's message and SQLSTATE; a conflict is
/// permanent too.
#[test]
fn server_errors_are_permanent_and_carry_the_sqlstate() {
    with_database(|url| async move {
        let prefix = fresh_prefix();
        let store = common::connect(&url, &prefix).await;
        let first = store
            .append(vec![event("pg.one", &["k:v"], "{}".into())], None)
            .await
            .expect("append");
        let query = EventQuery::item(krescent_core::QueryItem::tagged([common::tag("k:v")]));
        let conflict = store
            .append(
                vec![event("pg.one", &["k:v"], "{}".into())],
                Some(krescent_core::AppendCondition::none_match(query)),
            )
            .await
            .expect_err("a matching event exists");
        assert_eq!(conflict.conflict_position(), Some(first[0].position));
        assert!(!conflict.is_transient());
        drop_tables(&url, &prefix).await;
        let err = store
            .read(&EventQuery::match_all())
            .await
            .expect_err("the tables are gone");
        assert!(!err.is_transient(), "a missing table is permanent: {err}");
        let text = err.to_string();
        assert!(
            text.contains("does not exist") && text.contains("SQLSTATE 42P01"),
            "the server's message and SQLSTATE: {text}"
        );
    });
}

/// After every pooled connection is terminated, the next operations of both storages work at
/// once: dead connections are dropped and the operations run again on new ones.
#[test]
fn storages_recover_from_terminated_connections() {
    with_database(|url| async move {
        let prefix = fresh_prefix();
        let app = format!("krescent storages {prefix}");
        let store = connect_with(&url, options(&prefix).application_name(&app).pool_size(3)).await;
        let storage = store.checkpoint_storage();
        let bookmarks = store.bookmark_storage();
        let admin = raw_client(&url).await;
        let table = create_rows_table(&admin, &prefix).await;

        let first = checkpoint("lost.model", 1);
        storage.store(&first).await.expect("store");
        bookmarks.place("lost.reader", 1).await.expect("place");
        // Open every connection of the pool.
        let (a, b, c) = tokio::join!(
            storage.load("lost.model"),
            storage.list(),
            bookmarks.load("lost.reader")
        );
        a.expect("load");
        b.expect("list");
        c.expect("load");

        terminate_backends(&admin, &app).await;
        assert_eq!(
            storage
                .load("lost.model")
                .await
                .expect("load after termination"),
            Some(first)
        );
        terminate_backends(&admin, &app).await;
        let second = checkpoint("lost.model", 2);
        storage
            .store(&second)
            .await
            .expect("store after termination");
        terminate_backends(&admin, &app).await;
        let mut writes = PostgresWrites::new();
        insert_row(&mut writes, &table, 3);
        let third = checkpoint("lost.model", 3);
        storage
            .store_with_writes(&third, &mut writes)
            .await
            .expect("store with writes after termination");
        assert_eq!(rows(&admin, &table).await, expected_rows([3]));
        terminate_backends(&admin, &app).await;
        assert_eq!(
            storage.list().await.expect("list after termination"),
            vec![CheckpointInfo::from(&third)]
        );
        terminate_backends(&admin, &app).await;
        assert_eq!(
            bookmarks
                .load("lost.reader")
                .await
                .expect("bookmark load after termination"),
            Some(1)
        );
        terminate_backends(&admin, &app).await;
        bookmarks
            .place("lost.reader", 2)
            .await
            .expect("place after termination");
        terminate_backends(&admin, &app).await;
        assert!(
            storage
                .delete("lost.model")
                .await
                .expect("delete after termination")
        );
        assert_eq!(bookmarks.load("lost.reader").await.expect("load"), Some(2));

        drop(store);
        drop_tables(&url, &prefix).await;
    });
}

/// While the database refuses new connections, operations fail with typed backend errors;
/// once it accepts them again, the same storages work.
#[test]
fn storages_fail_typed_while_the_database_is_unavailable() {
    with_database(|url| async move {
        let prefix = fresh_prefix();
        let role = format!("{prefix}role");
        let admin = raw_client(&url).await;
        admin
            .batch_execute(&format!(
                "CREATE ROLE {role} LOGIN; GRANT USAGE, CREATE ON SCHEMA public TO {role}"
            ))
            .await
            .expect("create a role");
        let role_url = role_url(&url, &role);
        let app = format!("krescent unavailable {prefix}");
        let storage = PostgresCheckpointStorage::connect(
            &role_url,
            options(&prefix)
                .application_name(&app)
                .pool_size(2)
                .connect_timeout(Duration::from_secs(5)),
        )
        .await
        .expect("connect as the role");
        let bookmarks = PostgresBookmarkStorage::connect(
            &role_url,
            options(&prefix)
                .application_name(&app)
                .pool_size(2)
                .connect_timeout(Duration::from_secs(5)),
        )
        .await
        .expect("connect as the role");
        let stored = checkpoint("unavailable.model", 1);
        storage.store(&stored).await.expect("store");
        bookmarks.place("unavailable", 1).await.expect("place");

        admin
            .batch_execute(&format!("ALTER ROLE {role} NOLOGIN"))
            .await
            .expect("refuse logins");
        terminate_backends(&admin, &app).await;
        let err = storage
            .load("unavailable.model")
            .await
            .expect_err("no login");
        assert!(
            matches!(
                PostgresError::of_checkpoint_error(&err),
                Some(PostgresError::Pool(_) | PostgresError::Database(_))
            ),
            "{err:?}"
        );
        let err = storage.store(&stored).await.expect_err("no login");
        assert!(
            PostgresError::of_checkpoint_error(&err).is_some(),
            "{err:?}"
        );
        let err = bookmarks
            .place("unavailable", 2)
            .await
            .expect_err("no login");
        assert!(
            matches!(
                &err,
                BookmarkError::Backend {
                    backend: "postgres",
                    ..
                }
            ),
            "{err:?}"
        );

        admin
            .batch_execute(&format!("ALTER ROLE {role} LOGIN"))
            .await
            .expect("allow logins");
        assert_eq!(
            storage
                .load("unavailable.model")
                .await
                .expect("load once available"),
            Some(stored)
        );
        assert_eq!(
            bookmarks
                .load("unavailable")
                .await
                .expect("load once available"),
            Some(1)
        );

        drop((storage, bookmarks));
        drop_tables(&url, &prefix).await;
        admin
            .batch_execute(&format!("DROP OWNED BY {role}; DROP ROLE {role}"))
            .await
            .expect("drop the role");
    });
}

/// `url` with its user replaced by `role` (trust authentication: no password).
fn role_url(url: &str, role: &str) -> String {
    let config: tokio_postgres::Config = url.parse().expect("URL");
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        other => panic!("the test needs a TCP host, not {other:?}"),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let dbname = config.get_dbname().unwrap_or("postgres");
    format!("postgres://{role}@{host}:{port}/{dbname}")
}

/// Connections terminated just before an operation (without waiting for the pool to notice)
/// fail its first request with the server's shutdown message or a closed connection: the
/// operations run again on new connections and succeed, every time.
#[test]
fn operations_right_after_termination_succeed() {
    with_database(|url| async move {
        let prefix = fresh_prefix();
        let app = format!("krescent racing {prefix}");
        let store = connect_with(&url, options(&prefix).application_name(&app).pool_size(2)).await;
        let storage = store.checkpoint_storage();
        let bookmarks = store.bookmark_storage();
        let admin = raw_client(&url).await;
        let table = create_rows_table(&admin, &prefix).await;
        let terminate = "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                         WHERE application_name = $1";
        for round in 1..=20_i64 {
            let position = round as u64;
            admin
                .query_one(terminate, &[&app])
                .await
                .expect("terminate");
            let mut writes = PostgresWrites::new();
            insert_row(&mut writes, &table, round);
            storage
                .store_with_writes(&checkpoint("racing.model", position), &mut writes)
                .await
                .unwrap_or_else(|e| panic!("round {round}: store_with_writes: {e}"));
            admin
                .query_one(terminate, &[&app])
                .await
                .expect("terminate");
            assert_eq!(
                storage
                    .load("racing.model")
                    .await
                    .unwrap_or_else(|e| panic!("round {round}: load: {e}"))
                    .map(|c| c.position),
                Some(position)
            );
            admin
                .query_one(terminate, &[&app])
                .await
                .expect("terminate");
            bookmarks
                .place("racing", position)
                .await
                .unwrap_or_else(|e| panic!("round {round}: place: {e}"));
        }
        assert_eq!(rows(&admin, &table).await, expected_rows(1..=20));
        assert_eq!(bookmarks.load("racing").await.expect("load"), Some(20));

        drop(store);
        drop_tables(&url, &prefix).await;
    });
}

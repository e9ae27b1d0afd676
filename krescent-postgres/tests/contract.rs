//! The contract suites of `krescent_core::testing` on PostgreSQL: the event store, the
//! checkpoint storage and the bookmark storage, each case on tables of its own.
//!
//! They run against the database named by `KRESCENT_POSTGRES_URL` (for example
//! `postgres://postgres@127.0.0.1:5432/test`). Without that variable every test prints that it
//! was skipped and passes. The tables of each case are dropped at the end.

use std::sync::Arc;

use krescent_core::testing::{BookmarkStorageFactory, CheckpointStorageFactory, EventStoreFactory};
use krescent_postgres::{PostgresBookmarkStorage, PostgresCheckpointStorage, PostgresEventStore};
use parking_lot::Mutex;

mod common;
use common::{connect, drop_tables, fresh_prefix, options, with_database};

/// Makes a store or a standalone storage in fresh tables for each contract case; the tables
/// are dropped after the case.
struct Factory {
    url: String,
    prefixes: Arc<Mutex<Vec<String>>>,
}

impl Factory {
    fn prefix(&self) -> String {
        let prefix = fresh_prefix();
        self.prefixes.lock().push(prefix.clone());
        prefix
    }
}

impl EventStoreFactory for Factory {
    type Store = PostgresEventStore;

    async fn create(&self) -> PostgresEventStore {
        connect(&self.url, &self.prefix()).await
    }
}

impl CheckpointStorageFactory for Factory {
    type Storage = PostgresCheckpointStorage;

    async fn create(&self) -> PostgresCheckpointStorage {
        let prefix = self.prefix();
        match PostgresCheckpointStorage::connect(&self.url, options(&prefix)).await {
            Ok(storage) => storage,
            Err(e) => panic!("cannot connect a checkpoint storage to {}: {e}", self.url),
        }
    }
}

impl BookmarkStorageFactory for Factory {
    type Storage = PostgresBookmarkStorage;

    async fn create(&self) -> PostgresBookmarkStorage {
        let prefix = self.prefix();
        match PostgresBookmarkStorage::connect(&self.url, options(&prefix)).await {
            Ok(storage) => storage,
            Err(e) => panic!("cannot connect a bookmark storage to {}: {e}", self.url),
        }
    }
}

/// One `#[test]` per case of a contract suite, each on fresh tables. (The suites' own
/// `*_contract_tests!` macros cannot skip without a database or drop the tables afterwards;
/// the cases come from the suites' `*_cases!` lists, so a new case runs here too.)
macro_rules! contract_cases {
    ($module:ident, $suite:ident: $($case:ident),+ $(,)?) => {
        mod $module {
            $(
                #[test]
                fn $case() {
                    super::with_database(|url| async move {
                        let prefixes = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
                        let factory = super::Factory {
                            url: url.clone(),
                            prefixes: prefixes.clone(),
                        };
                        let result = krescent_core::testing::$suite::$case(&factory).await;
                        drop(factory);
                        let made: Vec<String> = prefixes.lock().clone();
                        for prefix in made {
                            super::drop_tables(&url, &prefix).await;
                        }
                        if let Err(failure) = result {
                            panic!("{failure}");
                        }
                    });
                }
            )+
        }
    };
}

krescent_core::event_store_cases!(contract_cases, event_store, event_store:);
krescent_core::checkpoint_storage_cases!(contract_cases, checkpoint_storage, checkpoint_storage:);
krescent_core::bookmark_storage_cases!(contract_cases, bookmark_storage, bookmark_storage:);

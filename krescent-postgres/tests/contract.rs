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
/// `*_contract_tests!` macros cannot skip without a database or drop the tables afterwards.)
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

contract_cases!(
    event_store, event_store:
    empty_store,
    append_and_read_back,
    read_position_ranges,
    backward_limit_one_finds_latest_match,
    query_filter_semantics,
    match_none_matches_nothing,
    conditional_append,
    conditional_append_on_several_tags,
    failed_conditional_append_stores_nothing,
    subscribe_from_start_while_appending,
    subscribe_from_head_sees_only_new_events,
    subscription_sees_burst_of_appends,
    concurrent_appenders_with_live_subscribers,
    subscription_filter_delivers_only_matches,
    read_pages_yields_every_event_once,
    tag_values_follow_one_rule,
);

contract_cases!(
    checkpoint_storage, checkpoint_storage:
    load_missing_returns_none,
    store_then_load_round_trips,
    upsert_last_write_wins,
    delete_removes_the_checkpoint,
    list_is_sorted_and_describes_each_checkpoint,
    invalid_model_names_are_rejected,
    valid_model_names_are_accepted,
    models_are_independent,
    unencodable_state_is_rejected,
    concurrent_stores_leave_one_complete_checkpoint,
    loads_during_stores_see_complete_checkpoints,
    deltas_load_in_order_after_their_checkpoint,
    deltas_must_build_on_the_latest_state,
    store_and_delete_drop_the_deltas,
);

contract_cases!(
    bookmark_storage, bookmark_storage:
    load_missing_returns_none,
    place_then_load_round_trips,
    place_last_write_wins,
    delete_removes_the_bookmark,
    readers_are_independent,
    invalid_reader_names_are_rejected,
    concurrent_places_leave_one_written_position,
);

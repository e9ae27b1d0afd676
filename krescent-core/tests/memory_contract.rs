//! The event store contract, run against the in-memory store.

use krescent_core::InMemoryEventStore;
use krescent_core::testing::run_event_store_contract;

/// One test per contract case.
mod in_memory {
    use krescent_core::InMemoryEventStore;

    krescent_core::event_store_contract_tests!(|| async { InMemoryEventStore::new() });
}

/// The whole suite through the runner, also on a current-thread runtime.
#[tokio::test]
async fn whole_contract_on_current_thread_runtime() {
    if let Err(failure) = run_event_store_contract(|| async { InMemoryEventStore::new() }).await {
        panic!("{failure}");
    }
}

/// A factory can be a type of its own.
struct CountingFactory;

impl krescent_core::testing::EventStoreFactory for CountingFactory {
    type Store = InMemoryEventStore;

    async fn create(&self) -> InMemoryEventStore {
        InMemoryEventStore::new()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_contract_with_a_factory_type() {
    run_event_store_contract(CountingFactory).await.unwrap();
}

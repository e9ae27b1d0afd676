//! Contract suites that every store implementation runs (feature `testing`).
//!
//! # The event store contract
//!
//! [`event_store`] holds one `pub async fn` per case of the contract every [`EventStore`]
//! implementation must pass: the in-memory store, SQLite, PostgreSQL and your own. Each case
//! takes an [`EventStoreFactory`], asks it for a fresh, empty store (or several), exercises
//! it and returns `Err(`[`ContractFailure`]`)` naming the case and what went wrong.
//!
//! The easiest way to run the suite is the [`event_store_contract_tests!`] macro. Put it in a
//! module of its own in an integration test; it expands to one `#[test]` per case, so every
//! case passes or fails on its own:
//!
//! ```
//! mod in_memory {
//!     krescent_core::testing::event_store_contract_tests!(|| async {
//!         krescent_core::InMemoryEventStore::new()
//!     });
//! }
//! # fn main() {}
//! ```
//!
//! Or run every case in one test with [`run_event_store_contract`]:
//!
//! ```
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() {
//! use krescent_core::InMemoryEventStore;
//! use krescent_core::testing::run_event_store_contract;
//!
//! if let Err(failure) = run_event_store_contract(|| async { InMemoryEventStore::new() }).await {
//!     panic!("{failure}");
//! }
//! # }
//! ```
//!
//! ## What a store must do to pass
//!
//! Beyond the documentation of [`EventStore`], the suite holds stores to these rules:
//!
//! - Positions start at 1 and are dense: successful appends, also concurrent ones, take
//!   consecutive positions, and a failed append (conflict, invalid event) consumes none.
//! - The events `append` returns are equal (`==`, timestamps included) to what `read` returns
//!   later; a backend that stores timestamps at a coarser precision must return them at that
//!   precision from `append` too. Payload bytes round-trip exactly.
//! - Ids are UUID v7 and unique; timestamps are the time of the append (within a few minutes,
//!   to allow for the clock of a database server).
//! - Conflicts name the *first* conflicting position; the conditional query's direction and
//!   limit do not change which position that is, and the events of the batch being appended
//!   never conflict with their own condition.
//! - Subscriptions deliver history then live events in position order, exactly once, ignore
//!   the query's direction and limit, and end (`next_batch` returns `None`) once cancelled.
//!   Empty batches are tolerated.
//!
//! ## Runtime
//!
//! The cases need a tokio runtime with the time driver enabled (waiting for a subscription is
//! guarded by a generous timeout, never synchronised by sleeping). They spawn tasks for the
//! concurrency cases; a multi-thread runtime is what the macro uses and what gives those cases
//! real parallelism.

pub mod bookmark_storage;
pub mod checkpoint_storage;
pub mod event_store;
pub mod fixtures;

use std::fmt;
use std::future::Future;

use crate::store::EventStore;

/// Also reachable as `testing::bookmark_storage_contract_tests!` (and, through the facade,
/// `krescent::testing::bookmark_storage_contract_tests!`).
#[doc(inline)]
pub use crate::bookmark_storage_contract_tests;
/// Also reachable as `testing::checkpoint_storage_contract_tests!` (and, through the facade,
/// `krescent::testing::checkpoint_storage_contract_tests!`).
#[doc(inline)]
pub use crate::checkpoint_storage_contract_tests;
/// Also reachable as `testing::event_store_contract_tests!`, which is where the `krescent`
/// facade's users find it (`krescent::testing::event_store_contract_tests!`).
#[doc(inline)]
pub use crate::event_store_contract_tests;
/// The case lists of the three suites, for runners of one's own.
#[doc(inline)]
pub use crate::{bookmark_storage_cases, checkpoint_storage_cases, event_store_cases};
pub use bookmark_storage::{BookmarkStorageFactory, run_bookmark_storage_contract};
pub use checkpoint_storage::{CheckpointStorageFactory, run_checkpoint_storage_contract};
pub use event_store::run_event_store_contract;

/// Makes a fresh, empty event store for each contract case.
///
/// Every async closure returning a store is a factory, so most suites need no type of their
/// own:
///
/// ```
/// use krescent_core::InMemoryEventStore;
/// use krescent_core::testing::EventStoreFactory;
///
/// fn assert_factory<F: EventStoreFactory>(_: &F) {}
/// assert_factory(&|| async { InMemoryEventStore::new() });
/// ```
///
/// Implement the trait on a type when creating a store needs configuration (a database URL,
/// a temporary directory). Setting up a store is test code: when it fails, panic with a
/// message that says why. The cases wrap stores in an `Arc` to share them between tasks, so a
/// store must not rely on being cloned to stay alive; resources it needs (a temporary
/// directory) should be owned by the store value or the factory.
pub trait EventStoreFactory: Send + Sync + 'static {
    /// The store the factory makes.
    type Store: EventStore + 'static;

    /// A new, empty store, independent of every store made before.
    fn create(&self) -> impl Future<Output = Self::Store> + Send;
}

impl<F, Fut, S> EventStoreFactory for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = S> + Send,
    S: EventStore + 'static,
{
    type Store = S;

    fn create(&self) -> impl Future<Output = S> + Send {
        self()
    }
}

/// A contract case that did not hold: which case, and what went wrong.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
#[error("contract case `{case}` failed: {message}")]
pub struct ContractFailure {
    case: &'static str,
    message: String,
}

impl ContractFailure {
    /// A failure of `case` described by `message`.
    pub fn new(case: &'static str, message: impl Into<String>) -> Self {
        ContractFailure {
            case,
            message: message.into(),
        }
    }

    /// The name of the failed case (the name of its function).
    pub fn case(&self) -> &'static str {
        self.case
    }

    /// What went wrong.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// Shows the same text as `Display`, so that `.unwrap()` on a case result reads well.
impl fmt::Debug for ContractFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Runs one contract case on a new multi-thread tokio runtime with two worker threads (what
/// `#[tokio::test(flavor = "multi_thread", worker_threads = 2)]` would build) and panics with
/// the failure, if any. Used by [`event_store_contract_tests!`]; not public API.
#[doc(hidden)]
pub fn __run_case<Fut>(case: Fut)
where
    Fut: Future<Output = Result<(), ContractFailure>>,
{
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => panic!("cannot start a tokio runtime for the contract case: {e}"),
    };
    if let Err(failure) = runtime.block_on(case) {
        panic!("{failure}");
    }
}

/// Invokes `callback! { args… <every case of the event store contract>, }`: for a runner of one's
/// own, such as one that needs a database and drops its tables after each case (the
/// PostgreSQL crate's tests). The case list lives here only, so a new case runs everywhere.
#[macro_export]
macro_rules! event_store_cases {
    ($callback:path, $($args:tt)*) => {
        $callback! {
            $($args)*
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
        }
    };
}

/// Expands to one `#[test]` per case of the [event store contract](crate::testing), each
/// running on its own two-worker multi-thread tokio runtime with a fresh store from the
/// factory.
///
/// The argument is an expression evaluated once per test that gives an
/// [`EventStoreFactory`](crate::testing::EventStoreFactory), usually an async closure. The
/// tests are named after the cases; invoke the macro in a module of its own so that the names
/// do not collide with your other tests. Your crate needs no tokio dependency for it.
///
/// ```
/// mod in_memory_store_contract {
///     use krescent_core::InMemoryEventStore;
///
///     krescent_core::event_store_contract_tests!(|| async { InMemoryEventStore::new() });
/// }
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! event_store_contract_tests {
    ($factory:expr $(,)?) => {
        $crate::event_store_cases!($crate::event_store_contract_tests, @cases $factory;);
    };
    (@cases $factory:expr; $($case:ident),+ $(,)?) => {
        $(
            #[test]
            fn $case() {
                let factory = $factory;
                $crate::testing::__run_case(async move {
                    $crate::testing::event_store::$case(&factory).await
                });
            }
        )+
    };
}

//! The contract every [`CheckpointStorage`] implementation must pass: the in-memory and file
//! storages, SQLite, PostgreSQL and your own. One `pub async fn` per case.
//!
//! Every case takes a [`CheckpointStorageFactory`], asks it for a fresh, empty storage,
//! exercises it and returns `Err(`[`ContractFailure`]`)` on the first expectation that does
//! not hold, naming the case and what went wrong.
//!
//! The easiest way to run the suite is the
//! [`checkpoint_storage_contract_tests!`](crate::checkpoint_storage_contract_tests) macro. Put
//! it in a module of its own in an integration test; it expands to one `#[test]` per case:
//!
//! ```
//! mod in_memory {
//!     krescent_core::testing::checkpoint_storage_contract_tests!(|| async {
//!         krescent_core::checkpoint::InMemoryCheckpointStorage::new()
//!     });
//! }
//! # fn main() {}
//! ```
//!
//! Or run every case in one test with [`run_checkpoint_storage_contract`]:
//!
//! ```
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() {
//! use krescent_core::checkpoint::InMemoryCheckpointStorage;
//! use krescent_core::testing::run_checkpoint_storage_contract;
//!
//! let factory = || async { InMemoryCheckpointStorage::new() };
//! if let Err(failure) = run_checkpoint_storage_contract(factory).await {
//!     panic!("{failure}");
//! }
//! # }
//! ```
//!
//! # What a storage must do to pass
//!
//! Beyond the documentation of [`CheckpointStorage`], the suite holds storages to these rules:
//!
//! - A loaded checkpoint equals (`==`) the stored one: every kind of value in the state,
//!   nested buckets, the whole range of the version's numbers and of positions, and the
//!   timestamp at microsecond precision.
//! - Storing replaces the model's checkpoint as a whole, also with a lower position or another
//!   version (the last write wins); concurrent stores to one model leave exactly one of the
//!   written checkpoints, and a load running during stores sees a complete checkpoint, never
//!   an error or a mix.
//! - A checkpoint whose state cannot be encoded is rejected with
//!   [`CheckpointStorageError::Encode`] and leaves the stored one untouched.
//! - Model names follow [`validate_model_name`](crate::checkpoint::validate_model_name):
//!   every valid name works (255 bytes, names that differ only in case are different models,
//!   names that look like file names), and every invalid one is rejected by `load`, `store`
//!   and `delete` with [`CheckpointStorageError::InvalidModelName`] naming it, before anything
//!   is stored.
//! - `list` is sorted by model name in byte order and describes each checkpoint exactly.
//!
//! [`CheckpointStorageError::Encode`]: crate::checkpoint::CheckpointStorageError::Encode
//! [`CheckpointStorageError::InvalidModelName`]:
//!     crate::checkpoint::CheckpointStorageError::InvalidModelName
//!
//! # Runtime
//!
//! The cases need a tokio runtime; the concurrency cases spawn tasks, and a multi-thread
//! runtime (what the macro uses) gives them real parallelism.
//!
//! # Layout
//!
//! The cases are grouped by concern, one file each: storing, loading, deleting and listing;
//! model names; unencodable states; concurrency; deltas. All of them are re-exported here,
//! under the path `testing::checkpoint_storage::<case>`.

mod concurrency;
mod deltas;
mod errors;
mod names;
mod store;
mod support;

use std::future::Future;

pub use concurrency::{
    concurrent_stores_leave_one_complete_checkpoint, loads_during_stores_see_complete_checkpoints,
};
pub use deltas::{
    deltas_load_in_order_after_their_checkpoint, deltas_must_build_on_the_latest_state,
    store_and_delete_drop_the_deltas,
};
pub use errors::unencodable_state_is_rejected;
pub use names::{invalid_model_names_are_rejected, valid_model_names_are_accepted};
pub use store::{
    delete_removes_the_checkpoint, list_is_sorted_and_describes_each_checkpoint,
    load_missing_returns_none, models_are_independent, store_then_load_round_trips,
    upsert_last_write_wins,
};

use super::ContractFailure;
use crate::checkpoint::CheckpointStorage;

/// Makes a fresh, empty checkpoint storage for each contract case.
///
/// Every async closure returning a storage is a factory:
///
/// ```
/// use krescent_core::checkpoint::InMemoryCheckpointStorage;
/// use krescent_core::testing::CheckpointStorageFactory;
///
/// fn assert_factory<F: CheckpointStorageFactory>(_: &F) {}
/// assert_factory(&|| async { InMemoryCheckpointStorage::new() });
/// ```
///
/// Implement the trait on a type when creating a storage needs configuration (a database URL,
/// a temporary directory). Setting up a storage is test code: when it fails, panic with a
/// message that says why. The cases wrap storages in an `Arc` to share them between tasks;
/// resources a storage needs (a temporary directory) should be owned by the storage value or
/// by the factory, which lives until the case ends.
pub trait CheckpointStorageFactory: Send + Sync + 'static {
    /// The storage the factory makes.
    type Storage: CheckpointStorage + 'static;

    /// A new, empty storage, independent of every storage made before.
    fn create(&self) -> impl Future<Output = Self::Storage> + Send;
}

impl<F, Fut, S> CheckpointStorageFactory for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = S> + Send,
    S: CheckpointStorage + 'static,
{
    type Storage = S;

    fn create(&self) -> impl Future<Output = S> + Send {
        self()
    }
}

/// Runs every case of the checkpoint storage contract, each with a fresh storage from
/// `factory`, and returns the first failure.
///
/// To see each case pass or fail on its own, use
/// [`checkpoint_storage_contract_tests!`](crate::checkpoint_storage_contract_tests) instead.
pub async fn run_checkpoint_storage_contract<F: CheckpointStorageFactory>(
    factory: F,
) -> Result<(), ContractFailure> {
    let f = &factory;
    load_missing_returns_none(f).await?;
    store_then_load_round_trips(f).await?;
    upsert_last_write_wins(f).await?;
    delete_removes_the_checkpoint(f).await?;
    list_is_sorted_and_describes_each_checkpoint(f).await?;
    invalid_model_names_are_rejected(f).await?;
    valid_model_names_are_accepted(f).await?;
    models_are_independent(f).await?;
    unencodable_state_is_rejected(f).await?;
    concurrent_stores_leave_one_complete_checkpoint(f).await?;
    loads_during_stores_see_complete_checkpoints(f).await?;
    deltas_load_in_order_after_their_checkpoint(f).await?;
    deltas_must_build_on_the_latest_state(f).await?;
    store_and_delete_drop_the_deltas(f).await?;
    Ok(())
}

/// Invokes `callback! { args… <every case of the checkpoint storage contract>, }`: for a runner of one's
/// own, such as one that needs a database and drops its tables after each case (the
/// PostgreSQL crate's tests). The case list lives here only, so a new case runs everywhere.
#[macro_export]
macro_rules! checkpoint_storage_cases {
    ($callback:path, $($args:tt)*) => {
        $callback! {
            $($args)*
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
        }
    };
}

/// Expands to one `#[test]` per case of the
/// [checkpoint storage contract](crate::testing::checkpoint_storage), each running on its own
/// two-worker multi-thread tokio runtime with a fresh storage from the factory.
///
/// The argument is an expression evaluated once per test that gives a
/// [`CheckpointStorageFactory`](crate::testing::CheckpointStorageFactory), usually an async
/// closure. The tests are named after the cases; invoke the macro in a module of its own so
/// that the names do not collide with your other tests. Your crate needs no tokio dependency
/// for it.
///
/// ```
/// mod in_memory_checkpoint_storage_contract {
///     use krescent_core::checkpoint::InMemoryCheckpointStorage;
///
///     krescent_core::checkpoint_storage_contract_tests!(|| async {
///         InMemoryCheckpointStorage::new()
///     });
/// }
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! checkpoint_storage_contract_tests {
    ($factory:expr $(,)?) => {
        $crate::checkpoint_storage_cases!($crate::checkpoint_storage_contract_tests, @cases $factory;);
    };
    (@cases $factory:expr; $($case:ident),+ $(,)?) => {
        $(
            #[test]
            fn $case() {
                let factory = $factory;
                $crate::testing::__run_case(async move {
                    $crate::testing::checkpoint_storage::$case(&factory).await
                });
            }
        )+
    };
}

//! The contract every [`BookmarkStorage`] implementation must pass: the in-memory and file
//! storages, SQLite, PostgreSQL and your own. One `pub async fn` per case.
//!
//! Every case takes a [`BookmarkStorageFactory`], asks it for a fresh, empty storage,
//! exercises it and returns `Err(`[`ContractFailure`]`)` on the first expectation that does
//! not hold, naming the case and what went wrong.
//!
//! The easiest way to run the suite is the
//! [`bookmark_storage_contract_tests!`](crate::bookmark_storage_contract_tests) macro. Put it
//! in a module of its own in an integration test; it expands to one `#[test]` per case:
//!
//! ```
//! mod in_memory {
//!     krescent_core::testing::bookmark_storage_contract_tests!(|| async {
//!         krescent_core::projection::InMemoryBookmarkStorage::new()
//!     });
//! }
//! # fn main() {}
//! ```
//!
//! Or run every case in one test with [`run_bookmark_storage_contract`]:
//!
//! ```
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() {
//! use krescent_core::projection::InMemoryBookmarkStorage;
//! use krescent_core::testing::run_bookmark_storage_contract;
//!
//! let factory = || async { InMemoryBookmarkStorage::new() };
//! if let Err(failure) = run_bookmark_storage_contract(factory).await {
//!     panic!("{failure}");
//! }
//! # }
//! ```
//!
//! # What a storage must do to pass
//!
//! Beyond the documentation of [`BookmarkStorage`], the suite holds storages to these rules:
//!
//! - Every `u64` position round-trips, `0` and `u64::MAX` included (a database with signed
//!   64-bit integers has to map the upper half, not reject it).
//! - Placing replaces the reader's position, also with a lower one (the last write wins);
//!   concurrent places to one reader leave exactly one of the written positions, and a load
//!   running during them sees one of the written positions, never an error.
//! - Deleting a bookmark that does not exist succeeds; after a delete, the reader has none
//!   until it places one again.
//! - Reader names follow [`validate_reader_name`](crate::projection::validate_reader_name):
//!   every valid name works and is its own reader (names that differ only in case, in trailing
//!   spaces, or that contain quotes, `%`, `_`, `/` or non-ASCII letters), and every invalid
//!   one is rejected by `load`, `place` and `delete` with
//!   [`BookmarkError::InvalidName`] before anything is stored.

use std::future::Future;
use std::sync::Arc;

use tokio::task::JoinSet;

use super::ContractFailure;
use crate::projection::{BookmarkError, BookmarkStorage, MAX_READER_NAME_LEN};

/// Makes a fresh, empty bookmark storage for each contract case.
///
/// Every async closure returning a storage is a factory:
///
/// ```
/// use krescent_core::projection::InMemoryBookmarkStorage;
/// use krescent_core::testing::BookmarkStorageFactory;
///
/// fn assert_factory<F: BookmarkStorageFactory>(_: &F) {}
/// assert_factory(&|| async { InMemoryBookmarkStorage::new() });
/// ```
///
/// Implement the trait on a type when creating a storage needs configuration (a database URL,
/// a temporary directory). Setting up a storage is test code: when it fails, panic with a
/// message that says why. The cases wrap storages in an `Arc` to share them between tasks;
/// resources a storage needs (a temporary directory) should be owned by the storage value or
/// by the factory, which lives until the case ends.
pub trait BookmarkStorageFactory: Send + Sync + 'static {
    /// The storage the factory makes.
    type Storage: BookmarkStorage + 'static;

    /// A new, empty storage, independent of every storage made before.
    fn create(&self) -> impl Future<Output = Self::Storage> + Send;
}

impl<F, Fut, S> BookmarkStorageFactory for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = S> + Send,
    S: BookmarkStorage + 'static,
{
    type Storage = S;

    fn create(&self) -> impl Future<Output = S> + Send {
        self()
    }
}

/// Runs every case of the bookmark storage contract, each with a fresh storage from
/// `factory`, and returns the first failure.
///
/// To see each case pass or fail on its own, use
/// [`bookmark_storage_contract_tests!`](crate::bookmark_storage_contract_tests) instead.
pub async fn run_bookmark_storage_contract<F: BookmarkStorageFactory>(
    factory: F,
) -> Result<(), ContractFailure> {
    let f = &factory;
    load_missing_returns_none(f).await?;
    place_then_load_round_trips(f).await?;
    place_last_write_wins(f).await?;
    delete_removes_the_bookmark(f).await?;
    readers_are_independent(f).await?;
    invalid_reader_names_are_rejected(f).await?;
    concurrent_places_leave_one_written_position(f).await?;
    Ok(())
}

/// The case name and helpers that turn storage errors into failures.
struct Ctx(&'static str);

impl Ctx {
    fn fail(&self, message: impl Into<String>) -> ContractFailure {
        ContractFailure::new(self.0, message)
    }

    fn eq<T: PartialEq + std::fmt::Debug>(
        &self,
        got: T,
        want: T,
        what: impl std::fmt::Display,
    ) -> Result<(), ContractFailure> {
        if got == want {
            Ok(())
        } else {
            Err(self.fail(format!("{what}: expected {want:?}, got {got:?}")))
        }
    }

    async fn load<S: BookmarkStorage + ?Sized>(
        &self,
        storage: &S,
        reader: &str,
    ) -> Result<Option<u64>, ContractFailure> {
        storage
            .load(reader)
            .await
            .map_err(|e| self.fail(format!("load({reader:?}) failed: {e}")))
    }

    async fn place<S: BookmarkStorage + ?Sized>(
        &self,
        storage: &S,
        reader: &str,
        position: u64,
    ) -> Result<(), ContractFailure> {
        storage
            .place(reader, position)
            .await
            .map_err(|e| self.fail(format!("place({reader:?}, {position}) failed: {e}")))
    }

    async fn delete<S: BookmarkStorage + ?Sized>(
        &self,
        storage: &S,
        reader: &str,
    ) -> Result<(), ContractFailure> {
        storage
            .delete(reader)
            .await
            .map_err(|e| self.fail(format!("delete({reader:?}) failed: {e}")))
    }

    /// `result` must be [`BookmarkError::InvalidName`] naming `name`.
    fn invalid<T: std::fmt::Debug>(
        &self,
        result: Result<T, BookmarkError>,
        name: &str,
        op: &str,
    ) -> Result<(), ContractFailure> {
        match result {
            Err(BookmarkError::InvalidName { name: named, .. }) if named == name => Ok(()),
            other => Err(self.fail(format!(
                "{op}({name:?}) should fail with InvalidName naming the reader, got {other:?}"
            ))),
        }
    }
}

/// A fresh storage has no bookmarks: `load` returns `None`, and deleting a bookmark that does
/// not exist succeeds.
pub async fn load_missing_returns_none<F: BookmarkStorageFactory>(
    factory: &F,
) -> Result<(), ContractFailure> {
    let ctx = Ctx("load_missing_returns_none");
    let storage = factory.create().await;
    ctx.eq(
        ctx.load(&storage, "never.placed").await?,
        None,
        "load of a reader without a bookmark",
    )?;
    ctx.delete(&storage, "never.placed").await?;
    ctx.eq(
        ctx.load(&storage, "never.placed").await?,
        None,
        "load after deleting a bookmark that did not exist",
    )
}

/// Placed positions load back exactly, over the whole `u64` range.
pub async fn place_then_load_round_trips<F: BookmarkStorageFactory>(
    factory: &F,
) -> Result<(), ContractFailure> {
    let ctx = Ctx("place_then_load_round_trips");
    let storage = factory.create().await;
    let positions = [
        0,
        1,
        42,
        u64::from(u32::MAX) + 1,
        i64::MAX as u64,
        i64::MAX as u64 + 1,
        u64::MAX - 1,
        u64::MAX,
    ];
    for (k, &position) in positions.iter().enumerate() {
        let reader = format!("round-trip-{k}");
        ctx.place(&storage, &reader, position).await?;
        ctx.eq(
            ctx.load(&storage, &reader).await?,
            Some(position),
            format!("load of `{reader}` after placing {position}"),
        )?;
    }
    for (k, &position) in positions.iter().enumerate() {
        let reader = format!("round-trip-{k}");
        ctx.eq(
            ctx.load(&storage, &reader).await?,
            Some(position),
            format!("load of `{reader}` after placing the others"),
        )?;
    }
    Ok(())
}

/// Placing replaces the reader's position, also with a lower one.
pub async fn place_last_write_wins<F: BookmarkStorageFactory>(
    factory: &F,
) -> Result<(), ContractFailure> {
    let ctx = Ctx("place_last_write_wins");
    let storage = factory.create().await;
    for position in [100, 7, 8, u64::MAX, 0, 3] {
        ctx.place(&storage, "moving", position).await?;
        ctx.eq(
            ctx.load(&storage, "moving").await?,
            Some(position),
            format!("load after placing {position}"),
        )?;
    }
    Ok(())
}

/// Deleting removes the bookmark; the reader can place one again afterwards; other readers
/// keep theirs.
pub async fn delete_removes_the_bookmark<F: BookmarkStorageFactory>(
    factory: &F,
) -> Result<(), ContractFailure> {
    let ctx = Ctx("delete_removes_the_bookmark");
    let storage = factory.create().await;
    ctx.place(&storage, "to.delete", 5).await?;
    ctx.place(&storage, "to.keep", 6).await?;
    ctx.delete(&storage, "to.delete").await?;
    ctx.eq(
        ctx.load(&storage, "to.delete").await?,
        None,
        "load after delete",
    )?;
    ctx.eq(
        ctx.load(&storage, "to.keep").await?,
        Some(6),
        "load of another reader after a delete",
    )?;
    ctx.delete(&storage, "to.delete").await?;
    ctx.place(&storage, "to.delete", 9).await?;
    ctx.eq(
        ctx.load(&storage, "to.delete").await?,
        Some(9),
        "load after placing again after a delete",
    )
}

/// The valid names that must each be a reader of its own.
fn valid_names() -> Vec<String> {
    vec![
        "reader".to_owned(),
        "Reader".to_owned(),
        "READER".to_owned(),
        "reader ".to_owned(),
        " reader".to_owned(),
        "stock.report/P-1".to_owned(),
        "it's \"quoted\"".to_owned(),
        "percent%_underscore".to_owned(),
        "'; DROP TABLE bookmarks; --".to_owned(),
        "..".to_owned(),
        "lecteur-é-名前-🙂".to_owned(),
        "r".repeat(MAX_READER_NAME_LEN),
        format!("{}é", "r".repeat(MAX_READER_NAME_LEN - 2)),
    ]
}

/// Every valid name is a reader of its own: names that differ only in case or in spaces,
/// names with quotes, SQL wildcards, slashes or non-ASCII letters, and names of the maximum
/// length.
pub async fn readers_are_independent<F: BookmarkStorageFactory>(
    factory: &F,
) -> Result<(), ContractFailure> {
    let ctx = Ctx("readers_are_independent");
    let storage = factory.create().await;
    let names = valid_names();
    for (k, name) in names.iter().enumerate() {
        ctx.place(&storage, name, 1000 + k as u64).await?;
    }
    for (k, name) in names.iter().enumerate() {
        ctx.eq(
            ctx.load(&storage, name).await?,
            Some(1000 + k as u64),
            format!("load of {name:?} after placing every reader"),
        )?;
    }
    ctx.delete(&storage, "reader").await?;
    for (k, name) in names.iter().enumerate() {
        let want = (name != "reader").then_some(1000 + k as u64);
        ctx.eq(
            ctx.load(&storage, name).await?,
            want,
            format!("load of {name:?} after deleting `reader`"),
        )?;
    }
    Ok(())
}

/// Invalid names (empty, only whitespace, too long, with control characters) are rejected by
/// every operation with [`BookmarkError::InvalidName`] naming them, and nothing is stored.
pub async fn invalid_reader_names_are_rejected<F: BookmarkStorageFactory>(
    factory: &F,
) -> Result<(), ContractFailure> {
    let ctx = Ctx("invalid_reader_names_are_rejected");
    let storage = factory.create().await;
    ctx.place(&storage, "valid", 1).await?;
    let invalid = [
        String::new(),
        " ".to_owned(),
        "\t \n".to_owned(),
        "line\nbreak".to_owned(),
        "nul\0byte".to_owned(),
        "r".repeat(MAX_READER_NAME_LEN + 1),
        format!("{}é", "r".repeat(MAX_READER_NAME_LEN - 1)),
    ];
    for name in &invalid {
        ctx.invalid(storage.place(name, 2).await, name, "place")?;
        ctx.invalid(storage.load(name).await, name, "load")?;
        ctx.invalid(storage.delete(name).await, name, "delete")?;
    }
    ctx.eq(
        ctx.load(&storage, "valid").await?,
        Some(1),
        "load of a valid reader after the rejected calls",
    )
}

/// Concurrent places to one reader leave exactly one of the written positions, and loads
/// running meanwhile see only written positions.
pub async fn concurrent_places_leave_one_written_position<F: BookmarkStorageFactory>(
    factory: &F,
) -> Result<(), ContractFailure> {
    let ctx = Ctx("concurrent_places_leave_one_written_position");
    let storage: Arc<F::Storage> = Arc::new(factory.create().await);
    ctx.place(&*storage, "contended", 1).await?;
    const WRITERS: u64 = 8;
    const ROUNDS: u64 = 20;
    let written = |w: u64, r: u64| 1_000_000 * (w + 1) + r;
    let mut tasks = JoinSet::new();
    for w in 0..WRITERS {
        let storage = Arc::clone(&storage);
        tasks.spawn(async move {
            for r in 0..ROUNDS {
                storage
                    .place("contended", written(w, r))
                    .await
                    .map_err(|e| format!("place by writer {w} failed: {e}"))?;
            }
            Ok::<Option<u64>, String>(None)
        });
    }
    for _ in 0..2 {
        let storage = Arc::clone(&storage);
        tasks.spawn(async move {
            let mut bad = None;
            for _ in 0..ROUNDS {
                match storage.load("contended").await {
                    Ok(Some(p))
                        if p == 1
                            || ((1..=WRITERS).contains(&(p / 1_000_000))
                                && p % 1_000_000 < ROUNDS) => {}
                    Ok(other) => bad = bad.or(Some(format!("{other:?}"))),
                    Err(e) => return Err(format!("load during places failed: {e}")),
                }
            }
            match bad {
                Some(seen) => Err(format!("a load during places saw {seen}")),
                None => Ok(None),
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(_)) => {}
            Ok(Err(message)) => return Err(ctx.fail(message)),
            Err(e) => return Err(ctx.fail(format!("a task panicked: {e}"))),
        }
    }
    let last = ctx.load(&*storage, "contended").await?;
    let final_ones: Vec<u64> = (0..WRITERS).map(|w| written(w, ROUNDS - 1)).collect();
    match last {
        Some(p) if final_ones.contains(&p) => Ok(()),
        other => Err(ctx.fail(format!(
            "after concurrent places the position should be one writer's last ({final_ones:?}), got {other:?}"
        ))),
    }
}

/// Invokes `callback! { args… <every case of the bookmark storage contract>, }`: for a runner of one's
/// own, such as one that needs a database and drops its tables after each case (the
/// PostgreSQL crate's tests). The case list lives here only, so a new case runs everywhere.
#[macro_export]
macro_rules! bookmark_storage_cases {
    ($callback:path, $($args:tt)*) => {
        $callback! {
            $($args)*
            load_missing_returns_none,
            place_then_load_round_trips,
            place_last_write_wins,
            delete_removes_the_bookmark,
            readers_are_independent,
            invalid_reader_names_are_rejected,
            concurrent_places_leave_one_written_position,
        }
    };
}

/// Expands to one `#[test]` per case of the
/// [bookmark storage contract](crate::testing::bookmark_storage), each running on its own
/// two-worker multi-thread tokio runtime with a fresh storage from the factory.
///
/// The argument is an expression evaluated once per test that gives a
/// [`BookmarkStorageFactory`](crate::testing::BookmarkStorageFactory), usually an async
/// closure. Invoke the macro in a module of its own so that the test names do not collide with
/// your other tests.
///
/// ```
/// mod in_memory_bookmarks {
///     krescent_core::bookmark_storage_contract_tests!(|| async {
///         krescent_core::projection::InMemoryBookmarkStorage::new()
///     });
/// }
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! bookmark_storage_contract_tests {
    ($factory:expr $(,)?) => {
        $crate::bookmark_storage_cases!($crate::bookmark_storage_contract_tests, @cases $factory;);
    };
    (@cases $factory:expr; $($case:ident),+ $(,)?) => {
        $(
            #[test]
            fn $case() {
                let factory = $factory;
                $crate::testing::__run_case(async move {
                    $crate::testing::bookmark_storage::$case(&factory).await
                });
            }
        )+
    };
}

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
//! # Runtime
//!
//! The cases need a tokio runtime; the concurrency cases spawn tasks, and a multi-thread
//! runtime (what the macro uses) gives them real parallelism.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Utc};
use tokio::sync::Barrier;
use tokio::task::JoinError;

use super::ContractFailure;
use crate::checkpoint::storage::MAX_MODEL_NAME_LEN;
use crate::checkpoint::{
    CheckpointBucket, CheckpointDelta, CheckpointInfo, CheckpointStorage, CheckpointStorageError,
    CheckpointVersion, StoredCheckpoint,
};

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

/// A fresh storage has no checkpoints: `load` returns `None`, `delete` returns `false` and
/// `list` is empty.
pub async fn load_missing_returns_none<F: CheckpointStorageFactory>(
    factory: &F,
) -> Result<(), ContractFailure> {
    let ctx = Ctx("load_missing_returns_none");
    let storage = factory.create().await;
    ctx.eq(
        ctx.load(&storage, "never.stored").await?,
        None,
        "load of a model without a checkpoint",
    )?;
    ctx.eq(
        ctx.delete(&storage, "never.stored").await?,
        false,
        "delete of a model without a checkpoint",
    )?;
    ctx.eq(ctx.list(&storage).await?, vec![], "list of a fresh storage")?;
    Ok(())
}

/// A stored checkpoint loads back equal: every kind of value in the state, nested buckets,
/// extreme version numbers and positions, timestamps before and after the epoch at
/// microsecond precision, and an empty state.
pub async fn store_then_load_round_trips<F: CheckpointStorageFactory>(
    factory: &F,
) -> Result<(), ContractFailure> {
    let ctx = Ctx("store_then_load_round_trips");
    let storage = factory.create().await;
    let cases = [
        StoredCheckpoint {
            model: "round.trip".to_owned(),
            version: CheckpointVersion::new(3, 2, 0x0123_4567_89ab_cdef),
            position: 42,
            timestamp: ctx.micros(1_709_210_096_123_456)?,
            state: rich_state(),
            deltas: Vec::new(),
        },
        StoredCheckpoint {
            model: "extremes".to_owned(),
            version: CheckpointVersion::new(u32::MAX, u32::MAX, u64::MAX),
            position: u64::MAX,
            timestamp: ctx.micros(-2_208_988_799_999_999)?,
            state: CheckpointBucket::new(),
            deltas: Vec::new(),
        },
        StoredCheckpoint {
            model: "zeroes".to_owned(),
            version: CheckpointVersion::new(0, 0, 0),
            position: 0,
            timestamp: ctx.micros(0)?,
            state: CheckpointBucket::new().with("only", true),
            deltas: Vec::new(),
        },
    ];
    for checkpoint in &cases {
        ctx.store(&storage, checkpoint).await?;
        ctx.eq(
            ctx.load(&storage, &checkpoint.model).await?.as_ref(),
            Some(checkpoint),
            format!("load of `{}` after storing it", checkpoint.model),
        )?;
    }
    // Once more, after all of them are stored.
    for checkpoint in &cases {
        ctx.eq(
            ctx.load(&storage, &checkpoint.model).await?.as_ref(),
            Some(checkpoint),
            format!("load of `{}` after storing the others", checkpoint.model),
        )?;
    }
    Ok(())
}

/// Storing replaces the model's checkpoint completely, also with a lower position, another
/// version and a smaller state.
pub async fn upsert_last_write_wins<F: CheckpointStorageFactory>(
    factory: &F,
) -> Result<(), ContractFailure> {
    let ctx = Ctx("upsert_last_write_wins");
    let storage = factory.create().await;
    let first = checkpoint(&ctx, "upsert", 100, rich_state())?;
    let mut second = checkpoint(
        &ctx,
        "upsert",
        7,
        CheckpointBucket::new().with("count", 7_u64),
    )?;
    second.version = CheckpointVersion::new(9, 8, 7);
    second.timestamp = ctx.micros(1_800_000_000_000_001)?;
    let mut third = second.clone();
    third.position = 8;
    third.state.put_u64("count", 8);

    ctx.store(&storage, &first).await?;
    ctx.store(&storage, &second).await?;
    ctx.eq(
        ctx.load(&storage, "upsert").await?,
        Some(second.clone()),
        "load after storing a second checkpoint with a lower position",
    )?;
    ctx.store(&storage, &third).await?;
    ctx.eq(
        ctx.load(&storage, "upsert").await?,
        Some(third.clone()),
        "load after storing a third checkpoint",
    )?;
    ctx.eq(
        ctx.list(&storage).await?,
        vec![CheckpointInfo::from(&third)],
        "list after three stores to one model",
    )?;
    Ok(())
}

/// `delete` returns `true` and removes the checkpoint when there is one, `false` when there is
/// none; a model can be stored again after its checkpoint was deleted.
pub async fn delete_removes_the_checkpoint<F: CheckpointStorageFactory>(
    factory: &F,
) -> Result<(), ContractFailure> {
    let ctx = Ctx("delete_removes_the_checkpoint");
    let storage = factory.create().await;
    let stored = checkpoint(&ctx, "to.delete", 5, rich_state())?;
    ctx.store(&storage, &stored).await?;
    ctx.eq(
        ctx.delete(&storage, "to.delete").await?,
        true,
        "delete of a stored checkpoint",
    )?;
    ctx.eq(
        ctx.load(&storage, "to.delete").await?,
        None,
        "load after delete",
    )?;
    ctx.eq(ctx.list(&storage).await?, vec![], "list after delete")?;
    ctx.eq(
        ctx.delete(&storage, "to.delete").await?,
        false,
        "a second delete",
    )?;
    let again = checkpoint(&ctx, "to.delete", 6, CheckpointBucket::new())?;
    ctx.store(&storage, &again).await?;
    ctx.eq(
        ctx.load(&storage, "to.delete").await?,
        Some(again),
        "load after storing again after delete",
    )?;
    Ok(())
}

/// `list` returns one info per model, sorted by name in byte order (`-` < `.` < digits <
/// capitals < `_` < lower case), each equal to what was stored.
pub async fn list_is_sorted_and_describes_each_checkpoint<F: CheckpointStorageFactory>(
    factory: &F,
) -> Result<(), ContractFailure> {
    let ctx = Ctx("list_is_sorted_and_describes_each_checkpoint");
    let storage = factory.create().await;
    let names = [
        "zeta", "alpha", "Mid", "beta_3", "beta.2", "beta-1", "beta", "0day", "_under",
    ];
    let mut expected = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let i = i as u64;
        let mut stored = checkpoint(&ctx, name, 10 * i + 1, CheckpointBucket::new().with("i", i))?;
        stored.version = CheckpointVersion::new(i as u32, 2 * i as u32, i.wrapping_mul(0x9e37));
        stored.timestamp = ctx.micros(1_700_000_000_000_000 + i as i64 * 1_000_001)?;
        ctx.store(&storage, &stored).await?;
        expected.push(CheckpointInfo::from(&stored));
    }
    expected.sort_by(|a, b| a.model.as_bytes().cmp(b.model.as_bytes()));
    ctx.eq(
        ctx.list(&storage).await?,
        expected,
        "list of nine stored checkpoints",
    )?;
    Ok(())
}

/// `load`, `store` and `delete` reject invalid model names with
/// [`CheckpointStorageError::InvalidModelName`] naming them, and store nothing.
pub async fn invalid_model_names_are_rejected<F: CheckpointStorageFactory>(
    factory: &F,
) -> Result<(), ContractFailure> {
    let ctx = Ctx("invalid_model_names_are_rejected");
    let storage = factory.create().await;
    let too_long = "a".repeat(MAX_MODEL_NAME_LEN + 1);
    let names = [
        "",
        "a/b",
        "/abs",
        "..",
        ".",
        "../escape",
        "a\\b",
        too_long.as_str(),
        "has space",
        " ",
        "tab\there",
        "nul\0byte",
        "new\nline",
        "grüße",
        "colon:name",
        "star*",
        "tilde~1",
    ];
    for name in names {
        let shown = shorten(name);
        let stored = checkpoint(&ctx, name, 1, CheckpointBucket::new())?;
        let results = [
            ("load", storage.load(name).await.map(|_| ())),
            ("store", storage.store(&stored).await),
            ("delete", storage.delete(name).await.map(|_| ())),
        ];
        for (operation, result) in results {
            match result {
                Err(CheckpointStorageError::InvalidModelName { name: named, .. })
                    if named == name => {}
                Err(CheckpointStorageError::InvalidModelName { name: named, .. }) => {
                    return Err(ctx.fail(format!(
                        "{operation} of model {shown} was rejected as invalid, but the error \
                         names {} instead",
                        shorten(&named)
                    )));
                }
                Err(e) => {
                    return Err(ctx.fail(format!(
                        "{operation} of model {shown}: expected InvalidModelName, got: {e}"
                    )));
                }
                Ok(()) => {
                    return Err(ctx.fail(format!(
                        "{operation} of the invalid model name {shown} succeeded"
                    )));
                }
            }
        }
    }
    ctx.eq(
        ctx.list(&storage).await?,
        vec![],
        "list after rejected stores",
    )?;
    Ok(())
}

/// Every valid model name works: one byte, 255 bytes, names that differ only in case (they are
/// different models), names of dots and dashes, and names that look like file names.
pub async fn valid_model_names_are_accepted<F: CheckpointStorageFactory>(
    factory: &F,
) -> Result<(), ContractFailure> {
    let ctx = Ctx("valid_model_names_are_accepted");
    let storage = factory.create().await;
    let longest = "L".repeat(MAX_MODEL_NAME_LEN);
    let long_lower = "l".repeat(MAX_MODEL_NAME_LEN);
    // Differs from `long_lower` only in its last byte.
    let long_lower_other = format!("{}m", "l".repeat(MAX_MODEL_NAME_LEN - 1));
    let names = [
        "a",
        "Stock",
        "stock",
        "STOCK",
        "...",
        "-",
        "-dash.first",
        "_",
        "a.ckpt",
        "a.ckpt.tmp-0123456789abcdef0123456789abcdef",
        "book.available-v2_EU.0",
        "0123456789",
        longest.as_str(),
        long_lower.as_str(),
        long_lower_other.as_str(),
    ];
    let mut stored = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let i = i as u64;
        let checkpoint = checkpoint(
            &ctx,
            name,
            i + 1,
            CheckpointBucket::new().with("name", *name).with("i", i),
        )?;
        ctx.store(&storage, &checkpoint).await?;
        stored.push(checkpoint);
    }
    for checkpoint in &stored {
        ctx.eq(
            ctx.load(&storage, &checkpoint.model).await?.as_ref(),
            Some(checkpoint),
            format!("load of model {}", shorten(&checkpoint.model)),
        )?;
    }
    let mut expected: Vec<CheckpointInfo> = stored.iter().map(CheckpointInfo::from).collect();
    expected.sort_by(|a, b| a.model.as_bytes().cmp(b.model.as_bytes()));
    ctx.eq(
        ctx.list(&storage).await?,
        expected,
        "list of the models with unusual names",
    )?;
    for checkpoint in &stored {
        ctx.eq(
            ctx.delete(&storage, &checkpoint.model).await?,
            true,
            format!("delete of model {}", shorten(&checkpoint.model)),
        )?;
    }
    ctx.eq(
        ctx.list(&storage).await?,
        vec![],
        "list after deleting them all",
    )?;
    Ok(())
}

/// Storing, overwriting and deleting one model's checkpoint leaves the others as they were,
/// also a model whose name is a prefix of the other's.
pub async fn models_are_independent<F: CheckpointStorageFactory>(
    factory: &F,
) -> Result<(), ContractFailure> {
    let ctx = Ctx("models_are_independent");
    let storage = factory.create().await;
    let a = checkpoint(&ctx, "model", 1, CheckpointBucket::new().with("who", "a"))?;
    let b = checkpoint(&ctx, "model.b", 2, CheckpointBucket::new().with("who", "b"))?;
    let c = checkpoint(&ctx, "other", 3, CheckpointBucket::new().with("who", "c"))?;
    for stored in [&a, &b, &c] {
        ctx.store(&storage, stored).await?;
    }
    let a2 = checkpoint(&ctx, "model", 10, CheckpointBucket::new().with("who", "a2"))?;
    ctx.store(&storage, &a2).await?;
    ctx.eq(
        ctx.load(&storage, "model.b").await?,
        Some(b.clone()),
        "`model.b` after overwriting `model`",
    )?;
    ctx.eq(
        ctx.load(&storage, "other").await?,
        Some(c.clone()),
        "`other` after overwriting `model`",
    )?;
    ctx.eq(
        ctx.delete(&storage, "model").await?,
        true,
        "delete of `model`",
    )?;
    ctx.eq(
        ctx.load(&storage, "model.b").await?,
        Some(b.clone()),
        "`model.b` after deleting `model`",
    )?;
    ctx.eq(
        ctx.load(&storage, "other").await?,
        Some(c.clone()),
        "`other` after deleting `model`",
    )?;
    ctx.eq(
        ctx.list(&storage).await?,
        vec![CheckpointInfo::from(&b), CheckpointInfo::from(&c)],
        "list after deleting `model`",
    )?;
    Ok(())
}

/// A checkpoint whose state cannot be encoded (an empty key) is rejected with
/// [`CheckpointStorageError::Encode`], and the checkpoint stored before stays as it was.
pub async fn unencodable_state_is_rejected<F: CheckpointStorageFactory>(
    factory: &F,
) -> Result<(), ContractFailure> {
    let ctx = Ctx("unencodable_state_is_rejected");
    let storage = factory.create().await;
    let good = checkpoint(&ctx, "encode", 1, rich_state())?;
    ctx.store(&storage, &good).await?;
    let mut bad_state = rich_state();
    bad_state.put_u64("", 1);
    let bad = checkpoint(&ctx, "encode", 2, bad_state)?;
    match storage.store(&bad).await {
        Err(CheckpointStorageError::Encode { model, .. }) if model == "encode" => {}
        Err(e) => {
            return Err(ctx.fail(format!(
                "store of a state with an empty key: expected an Encode error naming model \
                 `encode`, got: {e}"
            )));
        }
        Ok(()) => {
            return Err(ctx.fail("store of a state with an empty key succeeded"));
        }
    }
    ctx.eq(
        ctx.load(&storage, "encode").await?,
        Some(good),
        "load after a rejected store",
    )?;
    Ok(())
}

/// Eight tasks storing checkpoints of one model at once (several rounds each, with states
/// large enough to need several writes) leave exactly one complete checkpoint, equal to one of
/// those written.
pub async fn concurrent_stores_leave_one_complete_checkpoint<F: CheckpointStorageFactory>(
    factory: &F,
) -> Result<(), ContractFailure> {
    const TASKS: u64 = 8;
    const ROUNDS: u64 = 4;
    let ctx = Ctx("concurrent_stores_leave_one_complete_checkpoint");
    let storage = Arc::new(factory.create().await);
    let mut written = Vec::new();
    for task in 0..TASKS {
        let mut per_task = Vec::new();
        for round in 0..ROUNDS {
            per_task.push(big_checkpoint(
                &ctx,
                "contended",
                task * ROUNDS + round + 1,
            )?);
        }
        written.push(per_task);
    }
    let written = Arc::new(written);
    let barrier = Arc::new(Barrier::new(TASKS as usize));
    let mut handles = Vec::new();
    for task in 0..written.len() {
        let storage = Arc::clone(&storage);
        let written = Arc::clone(&written);
        let barrier = Arc::clone(&barrier);
        handles.push(tokio::spawn(async move {
            barrier.wait().await;
            for checkpoint in &written[task] {
                storage.store(checkpoint).await?;
            }
            Ok::<(), CheckpointStorageError>(())
        }));
    }
    for (task, handle) in handles.into_iter().enumerate() {
        let result = ctx.joined(handle.await, "a storing task")?;
        ctx.storage(result, &format!("a concurrent store of task {task}"))?;
    }
    let loaded = ctx
        .load(&*storage, "contended")
        .await?
        .ok_or_else(|| ctx.fail("load after the concurrent stores returned None".to_owned()))?;
    let all: Vec<&StoredCheckpoint> = written.iter().flatten().collect();
    if !all.contains(&&loaded) {
        return Err(ctx.fail(format!(
            "load after the concurrent stores returned a checkpoint that was never written \
             (position {}, {} state entries)",
            loaded.position,
            loaded.state.len()
        )));
    }
    ctx.eq(
        ctx.list(&*storage).await?,
        vec![CheckpointInfo::from(&loaded)],
        "list after the concurrent stores",
    )?;
    Ok(())
}

/// While one task keeps replacing a model's checkpoint, loads running at the same time always
/// see a complete checkpoint, one of those written, never an error or a mix.
pub async fn loads_during_stores_see_complete_checkpoints<F: CheckpointStorageFactory>(
    factory: &F,
) -> Result<(), ContractFailure> {
    const STORES: u64 = 24;
    const READERS: usize = 3;
    let ctx = Ctx("loads_during_stores_see_complete_checkpoints");
    let storage = Arc::new(factory.create().await);
    let mut written = Vec::new();
    for position in 1..=STORES {
        written.push(big_checkpoint(&ctx, "replaced", position)?);
    }
    ctx.store(&*storage, &written[0]).await?;
    let written = Arc::new(written);
    let done = Arc::new(AtomicBool::new(false));

    let mut readers = Vec::new();
    for _ in 0..READERS {
        let storage = Arc::clone(&storage);
        let written = Arc::clone(&written);
        let done = Arc::clone(&done);
        readers.push(tokio::spawn(async move {
            let mut loads = 0_u64;
            loop {
                // Read `done` first, so that at least one load follows the last store.
                let finished = done.load(Ordering::Acquire);
                match storage.load("replaced").await {
                    Ok(Some(loaded)) if written.contains(&loaded) => {}
                    Ok(Some(loaded)) => {
                        return Err(format!(
                            "a load returned a checkpoint that was never written (position {})",
                            loaded.position
                        ));
                    }
                    Ok(None) => return Err("a load returned None".to_owned()),
                    Err(e) => return Err(format!("a load failed: {e}")),
                }
                loads += 1;
                if finished {
                    return Ok(loads);
                }
                tokio::task::yield_now().await;
            }
        }));
    }
    let writer = {
        let storage = Arc::clone(&storage);
        let written = Arc::clone(&written);
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            let result = async {
                for checkpoint in written.iter().skip(1) {
                    storage.store(checkpoint).await?;
                    tokio::task::yield_now().await;
                }
                Ok::<(), CheckpointStorageError>(())
            }
            .await;
            done.store(true, Ordering::Release);
            result
        })
    };
    let stored = ctx.joined(writer.await, "the storing task")?;
    ctx.storage(stored, "a store while loads were running")?;
    for reader in readers {
        let outcome = ctx.joined(reader.await, "a loading task")?;
        outcome.map_err(|problem| ctx.fail(problem))?;
    }
    ctx.eq(
        ctx.load(&*storage, "replaced").await?.as_ref(),
        written.last(),
        "load after the last store",
    )?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// A state with every kind of value, nested two levels deep.
fn rich_state() -> CheckpointBucket {
    let mut inner = CheckpointBucket::new();
    inner
        .put_u64("position", 17)
        .put_bucket("deeper", CheckpointBucket::new().with("leaf", "grüße"));
    let mut state = CheckpointBucket::new();
    state
        .put_bool("flag", true)
        .put_i64("negative", i64::MIN)
        .put_u64("big", u64::MAX)
        .put_f64("ratio", -0.0)
        .put_f64("nan", f64::NAN)
        .put_str("text", "quoted \"text\", ünïcödé and a\nnewline")
        .put_bytes("raw", vec![0_u8, 0xff, 0x7f, 0x80])
        .put_json(
            "json",
            serde_json::json!({ "list": [1, -2, 3.5, null, "s"], "nested": { "ok": true } }),
        )
        .put_bucket("inner", inner)
        .put_bucket("empty", CheckpointBucket::new());
    state
}

/// Deltas stored after a checkpoint load with it, oldest first, and `list` reports the last
/// one's position and time. A storage without deltas refuses them with
/// [`CheckpointStorageError::DeltasUnsupported`] and keeps the checkpoint as it was.
pub async fn deltas_load_in_order_after_their_checkpoint<F: CheckpointStorageFactory>(
    factory: &F,
) -> Result<(), ContractFailure> {
    let ctx = Ctx("deltas_load_in_order_after_their_checkpoint");
    let storage = factory.create().await;
    let base = checkpoint(&ctx, "with.deltas", 10, rich_state())?;
    ctx.store(&storage, &base).await?;
    let first = delta(&ctx, "with.deltas", 10, 20)?;
    if !storage.supports_deltas() {
        match storage.store_delta(&first).await {
            Err(CheckpointStorageError::DeltasUnsupported { model }) if model == "with.deltas" => {}
            other => {
                return Err(ctx.fail(format!(
                    "store_delta on a storage without deltas: expected DeltasUnsupported, got \
                     {other:?}"
                )));
            }
        }
        return ctx.eq(
            ctx.load(&storage, "with.deltas").await?,
            Some(base),
            "load after a refused delta",
        );
    }
    let second = delta(&ctx, "with.deltas", 20, 35)?;
    for d in [&first, &second] {
        ctx.storage(storage.store_delta(d).await, "store_delta")?;
    }
    let mut expected = base.clone();
    expected.deltas = vec![first, second.clone()];
    ctx.eq(
        ctx.load(&storage, "with.deltas").await?,
        Some(expected),
        "load after two deltas",
    )?;
    ctx.eq(
        ctx.list(&storage).await?,
        vec![CheckpointInfo {
            model: "with.deltas".to_owned(),
            version: base.version,
            position: 35,
            timestamp: second.timestamp,
        }],
        "list after two deltas",
    )
}

/// A delta is refused with [`CheckpointStorageError::DeltaBaseMismatch`] when the model has
/// no checkpoint, or when it does not build on the latest stored position; nothing changes.
pub async fn deltas_must_build_on_the_latest_state<F: CheckpointStorageFactory>(
    factory: &F,
) -> Result<(), ContractFailure> {
    let ctx = Ctx("deltas_must_build_on_the_latest_state");
    let storage = factory.create().await;
    if !storage.supports_deltas() {
        return Ok(());
    }
    let mismatch = |result: Result<(), CheckpointStorageError>, latest: Option<u64>, what: &str| {
        match result {
            Err(CheckpointStorageError::DeltaBaseMismatch { latest: found, .. })
                if found == latest =>
            {
                Ok(())
            }
            other => Err(ctx.fail(format!(
                "{what}: expected DeltaBaseMismatch with latest {latest:?}, got {other:?}"
            ))),
        }
    };
    mismatch(
        storage.store_delta(&delta(&ctx, "no.base", 0, 5)?).await,
        None,
        "a delta without a checkpoint",
    )?;
    ctx.eq(ctx.load(&storage, "no.base").await?, None, "load after it")?;
    let base = checkpoint(&ctx, "chained", 10, CheckpointBucket::new())?;
    ctx.store(&storage, &base).await?;
    mismatch(
        storage.store_delta(&delta(&ctx, "chained", 9, 15)?).await,
        Some(10),
        "a delta on an older position",
    )?;
    let good = delta(&ctx, "chained", 10, 15)?;
    ctx.storage(storage.store_delta(&good).await, "store_delta")?;
    mismatch(
        storage.store_delta(&delta(&ctx, "chained", 10, 20)?).await,
        Some(15),
        "a second delta on the checkpoint instead of the first delta",
    )?;
    let mut expected = base;
    expected.deltas = vec![good];
    ctx.eq(
        ctx.load(&storage, "chained").await?,
        Some(expected),
        "load after the refused deltas",
    )
}

/// Storing a checkpoint drops the deltas of the one it replaces; deleting removes the
/// checkpoint with its deltas, and a delta after that is refused.
pub async fn store_and_delete_drop_the_deltas<F: CheckpointStorageFactory>(
    factory: &F,
) -> Result<(), ContractFailure> {
    let ctx = Ctx("store_and_delete_drop_the_deltas");
    let storage = factory.create().await;
    if !storage.supports_deltas() {
        return Ok(());
    }
    ctx.store(
        &storage,
        &checkpoint(&ctx, "replaced", 10, CheckpointBucket::new())?,
    )
    .await?;
    ctx.storage(
        storage.store_delta(&delta(&ctx, "replaced", 10, 20)?).await,
        "store_delta",
    )?;
    let newer = checkpoint(&ctx, "replaced", 30, rich_state())?;
    ctx.store(&storage, &newer).await?;
    ctx.eq(
        ctx.load(&storage, "replaced").await?,
        Some(newer.clone()),
        "load after a full store replaced a checkpoint with a delta",
    )?;
    let after = delta(&ctx, "replaced", 30, 31)?;
    ctx.storage(
        storage.store_delta(&after).await,
        "store_delta on the new checkpoint",
    )?;
    let mut expected = newer;
    expected.deltas = vec![after];
    ctx.eq(
        ctx.load(&storage, "replaced").await?,
        Some(expected),
        "load with the new delta",
    )?;
    ctx.eq(ctx.delete(&storage, "replaced").await?, true, "delete")?;
    ctx.eq(
        ctx.load(&storage, "replaced").await?,
        None,
        "load after delete",
    )?;
    match storage.store_delta(&delta(&ctx, "replaced", 31, 40)?).await {
        Err(CheckpointStorageError::DeltaBaseMismatch { latest: None, .. }) => {}
        other => {
            return Err(ctx.fail(format!(
                "a delta after delete: expected DeltaBaseMismatch without a latest state, got \
                 {other:?}"
            )));
        }
    }
    ctx.eq(ctx.list(&storage).await?, vec![], "list after delete")
}

/// A checkpoint of `model` at `position` with a fixed timestamp.
fn checkpoint(
    ctx: &Ctx,
    model: &str,
    position: u64,
    state: CheckpointBucket,
) -> Result<StoredCheckpoint, ContractFailure> {
    Ok(StoredCheckpoint {
        model: model.to_owned(),
        version: CheckpointVersion::new(1, 1, 0xc0ff_ee00),
        position,
        timestamp: ctx.micros(1_720_000_000_000_000 + position as i64)?,
        state,
        deltas: Vec::new(),
    })
}

/// A delta of `model` from `base` to `position` with a fixed timestamp.
fn delta(
    ctx: &Ctx,
    model: &str,
    base: u64,
    position: u64,
) -> Result<CheckpointDelta, ContractFailure> {
    Ok(CheckpointDelta {
        model: model.to_owned(),
        version: CheckpointVersion::new(1, 1, 0xc0ff_ee00),
        base_position: base,
        position,
        timestamp: ctx.micros(1_720_000_000_000_000 + position as i64)?,
        state: CheckpointBucket::new()
            .with("changed", position)
            .with("bytes", vec![position as u8; 3]),
    })
}

/// A checkpoint with a state of about 256 KiB whose every byte depends on `position`, so that
/// a mix of two checkpoints is never equal to either.
fn big_checkpoint(
    ctx: &Ctx,
    model: &str,
    position: u64,
) -> Result<StoredCheckpoint, ContractFailure> {
    let fill: Vec<u8> = (0..256 * 1024_u64)
        .map(|i| (i.wrapping_mul(31) ^ position.wrapping_mul(0x9e37_79b9)) as u8)
        .collect();
    let state = CheckpointBucket::new()
        .with("position", position)
        .with("fill", fill);
    checkpoint(ctx, model, position, state)
}

/// A name for a failure message, shortened if long.
fn shorten(name: &str) -> String {
    match name.get(..40) {
        Some(head) if name.len() > 40 => format!("{head:?}… ({} bytes)", name.len()),
        _ => format!("{name:?}"),
    }
}

/// The case being run: builds failures that name it.
#[derive(Clone, Copy)]
struct Ctx(&'static str);

impl Ctx {
    fn fail(self, message: impl Into<String>) -> ContractFailure {
        ContractFailure::new(self.0, message)
    }

    fn eq<T: PartialEq + std::fmt::Debug>(
        self,
        actual: T,
        expected: T,
        what: impl std::fmt::Display,
    ) -> Result<(), ContractFailure> {
        if actual == expected {
            Ok(())
        } else {
            Err(self.fail(format!("{what}: expected {expected:?}, got {actual:?}")))
        }
    }

    fn storage<T>(
        self,
        result: Result<T, CheckpointStorageError>,
        what: &str,
    ) -> Result<T, ContractFailure> {
        result.map_err(|e| self.fail(format!("{what} failed: {e}")))
    }

    fn joined<T>(self, result: Result<T, JoinError>, what: &str) -> Result<T, ContractFailure> {
        result.map_err(|e| self.fail(format!("{what} failed: {e}")))
    }

    /// A timestamp the suite spells; every such value is in range.
    fn micros(self, micros: i64) -> Result<DateTime<Utc>, ContractFailure> {
        DateTime::from_timestamp_micros(micros)
            .ok_or_else(|| self.fail(format!("bad timestamp {micros} in the suite itself")))
    }

    async fn load<S: CheckpointStorage + ?Sized>(
        self,
        storage: &S,
        model: &str,
    ) -> Result<Option<StoredCheckpoint>, ContractFailure> {
        self.storage(
            storage.load(model).await,
            &format!("load({})", shorten(model)),
        )
    }

    async fn store<S: CheckpointStorage + ?Sized>(
        self,
        storage: &S,
        checkpoint: &StoredCheckpoint,
    ) -> Result<(), ContractFailure> {
        self.storage(
            storage.store(checkpoint).await,
            &format!(
                "store of model {} at position {}",
                shorten(&checkpoint.model),
                checkpoint.position
            ),
        )
    }

    async fn delete<S: CheckpointStorage + ?Sized>(
        self,
        storage: &S,
        model: &str,
    ) -> Result<bool, ContractFailure> {
        self.storage(
            storage.delete(model).await,
            &format!("delete({})", shorten(model)),
        )
    }

    async fn list<S: CheckpointStorage + ?Sized>(
        self,
        storage: &S,
    ) -> Result<Vec<CheckpointInfo>, ContractFailure> {
        self.storage(storage.list().await, "list()")
    }
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
        $crate::checkpoint_storage_contract_tests! {
            @cases $factory;
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

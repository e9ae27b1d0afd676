//! Cases on deltas: they load in order after their checkpoint, must build on the latest
//! state, and go when their checkpoint is replaced or deleted.

use crate::checkpoint::{
    CheckpointBucket, CheckpointInfo, CheckpointStorage, CheckpointStorageError,
};
use crate::testing::ContractFailure;

use super::CheckpointStorageFactory;
use super::support::{Ctx, checkpoint, delta, rich_state};

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

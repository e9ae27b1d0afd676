//! Cases on storing, loading, replacing, deleting and listing checkpoints, model by model.

use crate::checkpoint::{CheckpointBucket, CheckpointInfo, CheckpointVersion, StoredCheckpoint};
use crate::testing::ContractFailure;

use super::CheckpointStorageFactory;
use super::support::{Ctx, checkpoint, rich_state};

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

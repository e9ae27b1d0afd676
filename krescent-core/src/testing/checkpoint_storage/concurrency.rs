//! Cases on concurrent stores and loads of one model: one complete checkpoint wins, and a
//! load never sees a mix.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Barrier;

use crate::checkpoint::{
    CheckpointInfo, CheckpointStorage, CheckpointStorageError, StoredCheckpoint,
};
use crate::testing::ContractFailure;

use super::CheckpointStorageFactory;
use super::support::{Ctx, big_checkpoint};

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

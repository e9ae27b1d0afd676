//! Cases on states a storage cannot encode.

use crate::checkpoint::{CheckpointStorage, CheckpointStorageError};
use crate::testing::ContractFailure;

use super::CheckpointStorageFactory;
use super::support::{Ctx, checkpoint, rich_state};

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

//! Cases on model names: every valid name works, every invalid one is rejected before
//! anything is stored.

use crate::checkpoint::storage::MAX_MODEL_NAME_LEN;
use crate::checkpoint::{
    CheckpointBucket, CheckpointInfo, CheckpointStorage, CheckpointStorageError,
};
use crate::testing::ContractFailure;

use super::CheckpointStorageFactory;
use super::support::{Ctx, checkpoint, shorten};

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

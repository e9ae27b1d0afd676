//! The helpers the checkpoint storage cases share: the case context that builds failures
//! naming the case, and checkpoints and deltas to store.

use chrono::{DateTime, Utc};
use tokio::task::JoinError;

use crate::checkpoint::{
    CheckpointBucket, CheckpointDelta, CheckpointInfo, CheckpointStorage, CheckpointStorageError,
    CheckpointVersion, StoredCheckpoint,
};
use crate::testing::ContractFailure;

/// A state with every kind of value, nested two levels deep.
pub(super) fn rich_state() -> CheckpointBucket {
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

/// A checkpoint of `model` at `position` with a fixed timestamp.
pub(super) fn checkpoint(
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
pub(super) fn delta(
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
pub(super) fn big_checkpoint(
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
pub(super) fn shorten(name: &str) -> String {
    match name.get(..40) {
        Some(head) if name.len() > 40 => format!("{head:?}… ({} bytes)", name.len()),
        _ => format!("{name:?}"),
    }
}

/// The case being run: builds failures that name it.
#[derive(Clone, Copy)]
pub(super) struct Ctx(pub(super) &'static str);

impl Ctx {
    pub(super) fn fail(self, message: impl Into<String>) -> ContractFailure {
        ContractFailure::new(self.0, message)
    }

    pub(super) fn eq<T: PartialEq + std::fmt::Debug>(
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

    pub(super) fn storage<T>(
        self,
        result: Result<T, CheckpointStorageError>,
        what: &str,
    ) -> Result<T, ContractFailure> {
        result.map_err(|e| self.fail(format!("{what} failed: {e}")))
    }

    pub(super) fn joined<T>(
        self,
        result: Result<T, JoinError>,
        what: &str,
    ) -> Result<T, ContractFailure> {
        result.map_err(|e| self.fail(format!("{what} failed: {e}")))
    }

    /// A timestamp the suite spells; every such value is in range.
    pub(super) fn micros(self, micros: i64) -> Result<DateTime<Utc>, ContractFailure> {
        DateTime::from_timestamp_micros(micros)
            .ok_or_else(|| self.fail(format!("bad timestamp {micros} in the suite itself")))
    }

    pub(super) async fn load<S: CheckpointStorage + ?Sized>(
        self,
        storage: &S,
        model: &str,
    ) -> Result<Option<StoredCheckpoint>, ContractFailure> {
        self.storage(
            storage.load(model).await,
            &format!("load({})", shorten(model)),
        )
    }

    pub(super) async fn store<S: CheckpointStorage + ?Sized>(
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

    pub(super) async fn delete<S: CheckpointStorage + ?Sized>(
        self,
        storage: &S,
        model: &str,
    ) -> Result<bool, ContractFailure> {
        self.storage(
            storage.delete(model).await,
            &format!("delete({})", shorten(model)),
        )
    }

    pub(super) async fn list<S: CheckpointStorage + ?Sized>(
        self,
        storage: &S,
    ) -> Result<Vec<CheckpointInfo>, ContractFailure> {
        self.storage(storage.list().await, "list()")
    }
}

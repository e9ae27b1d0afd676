//! The model runner: restore from a checkpoint, catch up, stream live, checkpoint by strategy.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::{EventOutcome, ReadModel};
use crate::checkpoint::{
    CheckpointBucket, CheckpointDelta, CheckpointError, CheckpointStorage, CheckpointStorageError,
    CheckpointStrategy, CheckpointVersion, StoredCheckpoint, chain_problem,
};
use crate::event::{DecodeError, Event, RecordedEvent};
use crate::projection::HandlerError;
use crate::query::Limit;
use crate::store::{Backoff, EventStore, PageLoop, StoreError};

/// The default number of events per read.
pub const DEFAULT_MODEL_BATCH: u64 = 500;

/// The default for [`ModelConfig::max_delta_chain`]: deltas written after a full checkpoint
/// before the next full one.
pub const DEFAULT_MAX_DELTA_CHAIN: u32 = 64;

/// Why a model stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// A handler failed. No checkpoint was written for this event or after it.
    #[error(
        "model `{model}` failed to handle event `{event_type}` at position {position}: {source}"
    )]
    Handler {
        /// The model's name.
        model: &'static str,
        /// The failing event's position.
        position: u64,
        /// Its type name.
        event_type: String,
        /// What the handler said.
        #[source]
        source: HandlerError,
    },
    /// A stored event could not be decoded.
    #[error("model `{model}` cannot decode an event: {source}")]
    Decode {
        /// The model's name.
        model: &'static str,
        /// The decode error (it names the position and type).
        #[source]
        source: DecodeError,
    },
    /// The stored checkpoint cannot be used and rebuilding is turned off.
    #[error("checkpoint of model `{model}` is invalid: {reason}")]
    CheckpointInvalid {
        /// The model's name.
        model: &'static str,
        /// Why.
        reason: String,
    },
    /// The checkpoint storage failed.
    #[error("checkpoint storage of model `{model}` failed: {source}")]
    Storage {
        /// The model's name.
        model: &'static str,
        /// What the storage said.
        #[source]
        source: CheckpointStorageError,
    },
    /// The model could not write its state into a checkpoint.
    #[error("model `{model}` cannot create a checkpoint at position {position}: {source}")]
    CreateCheckpoint {
        /// The model's name.
        model: &'static str,
        /// The position of the checkpoint.
        position: u64,
        /// What failed.
        #[source]
        source: CheckpointError,
    },
    /// The event store failed.
    #[error("event store of model `{model}` failed: {source}")]
    Store {
        /// The model's name.
        model: &'static str,
        /// What the store said.
        #[source]
        source: StoreError,
    },
    /// The batch size was zero.
    #[error("model `{model}`: batch size must be at least 1")]
    ZeroBatchSize {
        /// The model's name.
        model: &'static str,
    },
    /// The model buffers projection writes ([`ReadModel::pending_writes`] returns `Some`) but
    /// no checkpoint storage is configured, so nothing would ever commit them.
    #[error(
        "model `{model}` buffers projection writes but has no checkpoint storage to commit them \
         with; configure `use_checkpoints` with a storage of the same database"
    )]
    WritesWithoutCheckpoints {
        /// The model's name.
        model: &'static str,
    },
    /// A model with pending projection writes failed earlier (a handler, the store or the
    /// storage): its buffer may hold writes of events the runner will hand it again, so this
    /// runner refuses to go on. Start a new runner with a fresh model: it restores the last
    /// checkpoint, which agrees with the tables.
    #[error(
        "model `{model}` failed earlier with projection writes pending; start a new runner \
         with a fresh model to resume from its last checkpoint"
    )]
    WritesLost {
        /// The model's name.
        model: &'static str,
    },
}

/// Counts of one runner, accumulated since it was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ModelMetrics {
    /// Events the model handled.
    pub events_handled: u64,
    /// Events the model skipped (they moved the position only).
    pub events_skipped: u64,
    /// Checkpoints written, full or as deltas.
    pub checkpoints_written: u64,
    /// How many of [`checkpoints_written`](Self::checkpoints_written) were deltas.
    pub deltas_written: u64,
    /// The position of the checkpoint the model was restored from, if any.
    pub restored_from: Option<u64>,
    /// The position of the last event processed (0: none).
    pub position: u64,
}

impl ModelMetrics {
    /// Handled plus skipped events.
    pub fn events_processed(&self) -> u64 {
        self.events_handled + self.events_skipped
    }
}

/// How a model runs: checkpoint storage and strategy, rebuild policy, batch size.
pub struct ModelConfig {
    checkpoints: Option<(Arc<dyn CheckpointStorage>, Box<dyn CheckpointStrategy>)>,
    rebuild_on_invalid: bool,
    batch_size: u64,
    max_delta_chain: u32,
    retry: Backoff,
}

impl std::fmt::Debug for ModelConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelConfig")
            .field("checkpoints", &self.checkpoints.is_some())
            .field("rebuild_on_invalid", &self.rebuild_on_invalid)
            .field("batch_size", &self.batch_size)
            .field("max_delta_chain", &self.max_delta_chain)
            .field("retry", &self.retry)
            .finish()
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            checkpoints: None,
            rebuild_on_invalid: true,
            batch_size: DEFAULT_MODEL_BATCH,
            max_delta_chain: DEFAULT_MAX_DELTA_CHAIN,
            retry: Backoff::default(),
        }
    }
}

impl ModelConfig {
    /// Saves checkpoints in `storage` when `strategy` says so, and restores from the latest
    /// one on start.
    pub fn use_checkpoints(
        self,
        storage: impl CheckpointStorage + 'static,
        strategy: impl CheckpointStrategy,
    ) -> Self {
        self.use_shared_checkpoints(Arc::new(storage), strategy)
    }

    /// Like [`use_checkpoints`](Self::use_checkpoints), with a storage already shared.
    pub fn use_shared_checkpoints(
        mut self,
        storage: Arc<dyn CheckpointStorage>,
        strategy: impl CheckpointStrategy,
    ) -> Self {
        self.checkpoints = Some((storage, Box::new(strategy)));
        self
    }

    /// What to do with a checkpoint that cannot be used (its version does not match, it fails
    /// validation, it is corrupt, or it belongs to another model): discard it with a warning
    /// and rebuild from the beginning (`true`, the default) or fail with
    /// [`ModelError::CheckpointInvalid`].
    pub fn rebuild_on_invalid(mut self, rebuild: bool) -> Self {
        self.rebuild_on_invalid = rebuild;
        self
    }

    /// Events per read (default 500; zero fails when the model runs).
    pub fn batch_size(mut self, events: u64) -> Self {
        self.batch_size = events;
        self
    }

    /// How many checkpoint deltas may follow a full checkpoint before the next one is written
    /// in full (default [`DEFAULT_MAX_DELTA_CHAIN`]; 0 writes every checkpoint in full).
    ///
    /// Deltas are written when the model can write them
    /// ([`CheckpointSupport::create_checkpoint_delta`](crate::checkpoint::CheckpointSupport::create_checkpoint_delta),
    /// e.g. a [`CheckpointMap`](crate::checkpoint::CheckpointMap) field marked
    /// `#[krescent(delta)]`), the storage keeps them
    /// ([`CheckpointStorage::supports_deltas`]) and the model has no pending projection writes.
    /// A longer chain makes checkpoints cheaper on average and restarts slower: a restart
    /// applies every delta of the chain.
    pub fn max_delta_chain(mut self, deltas: u32) -> Self {
        self.max_delta_chain = deltas;
        self
    }

    /// How [`stream`](ModelRunner::stream) retries transient store errors
    /// ([`StoreError::is_transient`]): reading, catching up and following live events resume
    /// strictly after the last handled position once `backoff` has waited (default
    /// [`Backoff::default`]; [`Backoff::none`] returns the first error).
    pub fn retry_transient(mut self, backoff: Backoff) -> Self {
        self.retry = backoff;
        self
    }
}

/// `configure` and `runner` for every [`ReadModel`].
pub trait ReadModelExt: ReadModel + Sized {
    /// A runner for this model with the configuration `f` builds.
    fn configure(self, f: impl FnOnce(ModelConfig) -> ModelConfig) -> ModelRunner<Self> {
        ModelRunner::new(self, f(ModelConfig::default()))
    }

    /// A runner without checkpoints: every start is a full replay.
    fn runner(self) -> ModelRunner<Self> {
        ModelRunner::new(self, ModelConfig::default())
    }
}

impl<M: ReadModel + Sized> ReadModelExt for M {}

/// Runs a [`ReadModel`]: restores it from its checkpoint, feeds it events strictly after the
/// checkpoint's position, and writes checkpoints when the strategy says so.
pub struct ModelRunner<M: ReadModel> {
    model: M,
    config: ModelConfig,
    started: bool,
    /// A model with pending writes failed: its buffer may hold writes of events after its
    /// position, so it must not go on.
    broken: bool,
    position: u64,
    last_checkpoint: Option<u64>,
    /// Deltas stored (or restored) since the last full checkpoint.
    delta_chain: u32,
    metrics: ModelMetrics,
}

impl<M: ReadModel + std::fmt::Debug> std::fmt::Debug for ModelRunner<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelRunner")
            .field("model", &self.model)
            .field("config", &self.config)
            .field("position", &self.position)
            .field("metrics", &self.metrics)
            .finish()
    }
}

impl<M: ReadModel> ModelRunner<M> {
    /// A runner for `model` with `config`.
    pub fn new(model: M, config: ModelConfig) -> Self {
        ModelRunner {
            model,
            config,
            started: false,
            broken: false,
            position: 0,
            last_checkpoint: None,
            delta_chain: 0,
            metrics: ModelMetrics::default(),
        }
    }

    /// The checkpoint version of this model: catalog revision, model version, shape.
    pub fn version() -> CheckpointVersion {
        CheckpointVersion {
            catalog_revision: <M::Event as Event>::REVISION,
            model_version: M::VERSION,
            shape: M::SHAPE,
        }
    }

    /// The model.
    pub fn model(&self) -> &M {
        &self.model
    }

    /// The model, mutably (changes are not checkpointed until the next checkpoint).
    pub fn model_mut(&mut self) -> &mut M {
        &mut self.model
    }

    /// The model, consuming the runner.
    pub fn into_model(self) -> M {
        self.model
    }

    /// The position of the last event processed (0: none).
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Counts since the runner was created.
    pub fn metrics(&self) -> ModelMetrics {
        self.metrics
    }

    /// Restores the model from its checkpoint without reading events. Returns the restored
    /// position (`None`: no usable checkpoint, the model starts from the beginning).
    pub async fn restore_only(&mut self) -> Result<Option<u64>, ModelError> {
        self.usable()?;
        let result = self.start().await;
        self.note(result)?;
        Ok(self.metrics.restored_from)
    }

    /// Restores, then handles every event up to the head of `store`.
    pub async fn catch_up<S: EventStore + ?Sized>(
        &mut self,
        store: &S,
    ) -> Result<ModelMetrics, ModelError> {
        self.usable()?;
        let result = self.catch_up_inner(store).await;
        self.note(result)
    }

    /// Fails once a model with pending writes has failed (see [`ModelError::WritesLost`]).
    fn usable(&self) -> Result<(), ModelError> {
        if self.broken {
            return Err(ModelError::WritesLost { model: M::NAME });
        }
        Ok(())
    }

    /// Marks a model with pending writes as unusable after an error.
    fn note<T>(&mut self, result: Result<T, ModelError>) -> Result<T, ModelError> {
        if result.is_err() && self.model.pending_writes().is_some() {
            self.broken = true;
        }
        result
    }

    async fn catch_up_inner<S: EventStore + ?Sized>(
        &mut self,
        store: &S,
    ) -> Result<ModelMetrics, ModelError> {
        self.start().await?;
        self.read_to_head(store).await?;
        if self.strategy_says(|s| s.idle()) {
            self.write_checkpoint().await?;
        }
        Ok(self.metrics)
    }

    /// Catches up, then handles live events until `shutdown` fires; on shutdown writes a
    /// termination checkpoint if the strategy asks for one.
    pub async fn stream<S: EventStore + ?Sized>(
        &mut self,
        store: &S,
        shutdown: CancellationToken,
    ) -> Result<ModelMetrics, ModelError> {
        self.usable()?;
        let result = self.stream_inner(store, shutdown).await;
        self.note(result)
    }

    async fn stream_inner<S: EventStore + ?Sized>(
        &mut self,
        store: &S,
        shutdown: CancellationToken,
    ) -> Result<ModelMetrics, ModelError> {
        self.start().await?;
        let mut failed = 0;
        while let Err(e) = self.read_to_head(store).await {
            failed += 1;
            let delay = self.retry_delay(e, failed)?;
            if !wait_or_shutdown(delay, &shutdown).await {
                return self.finish_stream().await;
            }
        }
        failed = 0;
        if self.strategy_says(|s| s.idle()) {
            self.write_checkpoint().await?;
        }
        let waker = self
            .config
            .checkpoints
            .as_ref()
            .and_then(|(_, s)| s.waker());
        let mut subscription = store.subscribe(
            self.model.event_query(),
            self.position,
            shutdown.child_token(),
        );
        loop {
            // A time-based strategy saves unsaved progress once its interval passes, even
            // when no further event arrives.
            let deadline = if self.has_unsaved_progress() {
                self.config
                    .checkpoints
                    .as_ref()
                    .and_then(|(_, s)| s.idle_deadline())
            } else {
                None
            };
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                () = wait_for(waker.as_deref()) => {
                    if self.strategy_says(|s| s.idle()) {
                        self.write_checkpoint().await?;
                    }
                }
                () = sleep_until(deadline) => {
                    if self.strategy_says(|s| s.idle()) {
                        self.write_checkpoint().await?;
                    }
                }
                batch = subscription.next_batch() => match batch {
                    None => break,
                    Some(Err(source)) => {
                        failed += 1;
                        let error = ModelError::Store { model: M::NAME, source };
                        let delay = self.retry_delay(error, failed)?;
                        if !wait_or_shutdown(delay, &shutdown).await {
                            break;
                        }
                        subscription = store.subscribe(
                            self.model.event_query(),
                            self.position,
                            shutdown.child_token(),
                        );
                    }
                    Some(Ok(events)) => {
                        failed = 0;
                        let at_head = (events.len() as u64) < crate::store::SUBSCRIPTION_BATCH.get();
                        self.handle_page(&events).await?;
                        if at_head && self.strategy_says(|s| s.idle()) {
                            self.write_checkpoint().await?;
                        }
                    }
                },
            }
        }
        self.finish_stream().await
    }

    /// The end of [`stream`](Self::stream): a termination checkpoint if the strategy asks
    /// for one.
    async fn finish_stream(&mut self) -> Result<ModelMetrics, ModelError> {
        let on_shutdown = self
            .config
            .checkpoints
            .as_ref()
            .is_some_and(|(_, s)| s.on_shutdown());
        if on_shutdown {
            self.write_checkpoint().await?;
        }
        Ok(self.metrics)
    }

    /// After the `failed`-th error in a row while streaming: `Err(error)` when it is not a
    /// transient store error or the backoff gives up; otherwise how long to wait before the
    /// next attempt.
    fn retry_delay(&self, error: ModelError, failed: u32) -> Result<Duration, ModelError> {
        let transient = matches!(&error, ModelError::Store { source, .. } if source.is_transient());
        if !transient || self.config.retry.gives_up_after(failed) {
            return Err(error);
        }
        let delay = self.config.retry.delay(failed);
        tracing::warn!(
            model = M::NAME,
            %error,
            attempt = failed,
            ?delay,
            position = self.position,
            "streaming failed; retrying"
        );
        Ok(delay)
    }

    /// Writes a checkpoint at the current position now (if checkpoints are configured and the
    /// position moved since the last one).
    pub async fn checkpoint_now(&mut self) -> Result<bool, ModelError> {
        self.usable()?;
        let result = self.write_checkpoint().await;
        self.note(result)
    }

    /// Whether events were processed since the last checkpoint.
    fn has_unsaved_progress(&self) -> bool {
        self.position > self.last_checkpoint.unwrap_or(0)
    }

    fn strategy_says(&mut self, ask: impl FnOnce(&mut dyn CheckpointStrategy) -> bool) -> bool {
        match &mut self.config.checkpoints {
            Some((_, strategy)) => ask(strategy.as_mut()),
            None => false,
        }
    }

    /// Loads the checkpoint once: restores it, or discards it and starts from the beginning.
    async fn start(&mut self) -> Result<(), ModelError> {
        if self.started {
            return Ok(());
        }
        if self.config.batch_size == 0 {
            return Err(ModelError::ZeroBatchSize { model: M::NAME });
        }
        if self.config.checkpoints.is_none() && self.model.pending_writes().is_some() {
            return Err(ModelError::WritesWithoutCheckpoints { model: M::NAME });
        }
        if let Some((storage, _)) = &self.config.checkpoints {
            let storage = storage.clone();
            let loaded = match storage.load(M::NAME).await {
                Ok(loaded) => loaded,
                Err(CheckpointStorageError::Corrupt {
                    location, source, ..
                }) => {
                    self.discard(format!("corrupt checkpoint at {location}: {source}"))?;
                    None
                }
                // Another model's checkpoint under this model's name (a file copied or
                // renamed by hand): invalid like any other.
                Err(CheckpointStorageError::ModelMismatch {
                    found, location, ..
                }) => {
                    self.discard(format!("it belongs to model `{found}` (at {location})"))?;
                    None
                }
                Err(source) => {
                    return Err(ModelError::Storage {
                        model: M::NAME,
                        source,
                    });
                }
            };
            if let Some(checkpoint) = loaded {
                match self.check(&checkpoint) {
                    Ok(()) => match self.model.restore_checkpoint(&checkpoint.state) {
                        Ok(()) => {
                            let position = self.apply_deltas(&checkpoint);
                            self.model.checkpoint_stored();
                            self.position = position;
                            self.last_checkpoint = Some(position);
                            self.metrics.restored_from = Some(position);
                            self.metrics.position = position;
                            tracing::info!(
                                model = M::NAME,
                                position,
                                deltas = self.delta_chain,
                                "restored from checkpoint"
                            );
                        }
                        Err(e) => self.discard(format!("restore failed: {e}"))?,
                    },
                    Err(reason) => self.discard(reason)?,
                }
            }
        }
        self.started = true;
        if let Some((_, strategy)) = &mut self.config.checkpoints {
            strategy.started();
        }
        Ok(())
    }

    /// Applies the deltas of a restored checkpoint in order, up to the first that does not
    /// continue the chain or does not apply (each prefix of the chain is a valid state).
    /// Returns the position of the state reached.
    fn apply_deltas(&mut self, checkpoint: &StoredCheckpoint) -> u64 {
        let mut position = checkpoint.position;
        self.delta_chain = 0;
        for delta in &checkpoint.deltas {
            let problem = chain_problem(&checkpoint.model, checkpoint.version, position, delta)
                .or_else(|| {
                    self.model
                        .restore_checkpoint_delta(&delta.state)
                        .err()
                        .map(|e| e.to_string())
                });
            if let Some(problem) = problem {
                tracing::warn!(
                    model = M::NAME,
                    position,
                    delta = delta.position,
                    %problem,
                    "ignoring a checkpoint delta and those after it"
                );
                break;
            }
            position = delta.position;
            self.delta_chain += 1;
        }
        position
    }

    fn check(&self, checkpoint: &StoredCheckpoint) -> Result<(), String> {
        let expected = Self::version();
        if checkpoint.model != M::NAME {
            return Err(format!("it belongs to model `{}`", checkpoint.model));
        }
        if checkpoint.version != expected {
            return Err(format!(
                "its version ({}) does not match the model's ({expected})",
                checkpoint.version
            ));
        }
        if !self.model.validate_checkpoint(&checkpoint.state) {
            return Err("the model's validation rejected it".into());
        }
        Ok(())
    }

    /// A checkpoint cannot be used: rebuild from the beginning, or fail.
    fn discard(&self, reason: String) -> Result<(), ModelError> {
        if self.config.rebuild_on_invalid {
            tracing::warn!(model = M::NAME, %reason, "discarding checkpoint; rebuilding from the beginning");
            Ok(())
        } else {
            Err(ModelError::CheckpointInvalid {
                model: M::NAME,
                reason,
            })
        }
    }

    async fn read_to_head<S: EventStore + ?Sized>(&mut self, store: &S) -> Result<(), ModelError> {
        let limit = Limit::new(self.config.batch_size)
            .map_err(|_| ModelError::ZeroBatchSize { model: M::NAME })?;
        let query = self.model.event_query().after(self.position);
        let mut pages = PageLoop::new(store, query, limit);
        while let Some(page) = pages.next().await {
            let page = page.map_err(|source| ModelError::Store {
                model: M::NAME,
                source,
            })?;
            self.handle_page(&page).await?;
        }
        Ok(())
    }

    /// Handles a page event by event; checkpoints at the boundaries the strategy picks.
    async fn handle_page(&mut self, page: &[RecordedEvent]) -> Result<(), ModelError> {
        for raw in page {
            if raw.position <= self.position {
                continue;
            }
            let event = raw
                .decode::<M::Event>()
                .map_err(|source| ModelError::Decode {
                    model: M::NAME,
                    source,
                })?;
            let outcome = self
                .model
                .when(&event)
                .map_err(|source| ModelError::Handler {
                    model: M::NAME,
                    position: raw.position,
                    event_type: raw.event_type.to_string(),
                    source,
                })?;
            self.position = raw.position;
            self.metrics.position = raw.position;
            let handled = outcome == EventOutcome::Handled;
            if handled {
                self.metrics.events_handled += 1;
            } else {
                self.metrics.events_skipped += 1;
            }
            if self.strategy_says(|s| s.event_done(handled)) {
                self.write_checkpoint().await?;
            }
        }
        Ok(())
    }

    async fn write_checkpoint(&mut self) -> Result<bool, ModelError> {
        let Some((storage, _)) = &self.config.checkpoints else {
            return Ok(false);
        };
        if self.last_checkpoint == Some(self.position)
            || (self.last_checkpoint.is_none() && self.position == 0)
        {
            return Ok(false);
        }
        let storage = storage.clone();
        if !self.write_delta(storage.as_ref()).await? {
            self.write_full(storage.as_ref()).await?;
        }
        self.model.checkpoint_stored();
        self.last_checkpoint = Some(self.position);
        self.metrics.checkpoints_written += 1;
        if let Some((_, strategy)) = &mut self.config.checkpoints {
            strategy.written();
        }
        tracing::debug!(
            model = M::NAME,
            position = self.position,
            "checkpoint written"
        );
        Ok(true)
    }
}

impl<M: ReadModel> ModelRunner<M> {
    /// Writes a delta if the model, the storage and the chain allow; `false` if a full
    /// checkpoint is needed instead.
    async fn write_delta(&mut self, storage: &dyn CheckpointStorage) -> Result<bool, ModelError> {
        let Some(base_position) = self.last_checkpoint else {
            return Ok(false);
        };
        if self.delta_chain >= self.config.max_delta_chain
            || !storage.supports_deltas()
            || self.model.pending_writes().is_some()
        {
            return Ok(false);
        }
        let mut state = CheckpointBucket::new();
        let ready = self
            .model
            .create_checkpoint_delta(&mut state)
            .map_err(|source| ModelError::CreateCheckpoint {
                model: M::NAME,
                position: self.position,
                source,
            })?;
        if !ready {
            return Ok(false);
        }
        let delta = CheckpointDelta::new(
            M::NAME,
            Self::version(),
            base_position,
            self.position,
            state,
        );
        match storage.store_delta(&delta).await {
            Ok(()) => {
                self.delta_chain += 1;
                self.metrics.deltas_written += 1;
                Ok(true)
            }
            Err(
                reason @ (CheckpointStorageError::DeltaBaseMismatch { .. }
                | CheckpointStorageError::DeltasUnsupported { .. }),
            ) => {
                tracing::debug!(model = M::NAME, %reason, "writing a full checkpoint instead of a delta");
                Ok(false)
            }
            Err(source) => Err(ModelError::Storage {
                model: M::NAME,
                source,
            }),
        }
    }

    /// Writes the whole state, with the model's pending projection writes if it has any.
    async fn write_full(&mut self, storage: &dyn CheckpointStorage) -> Result<(), ModelError> {
        let mut state = CheckpointBucket::new();
        self.model.create_checkpoint(&mut state).map_err(|source| {
            ModelError::CreateCheckpoint {
                model: M::NAME,
                position: self.position,
                source,
            }
        })?;
        let checkpoint = StoredCheckpoint {
            model: M::NAME.to_owned(),
            version: Self::version(),
            position: self.position,
            timestamp: Utc::now(),
            state,
            deltas: Vec::new(),
        };
        let stored = match self.model.pending_writes() {
            Some(writes) => storage.store_with_writes(&checkpoint, writes).await,
            None => storage.store(&checkpoint).await,
        };
        stored.map_err(|source| ModelError::Storage {
            model: M::NAME,
            source,
        })?;
        self.delta_chain = 0;
        Ok(())
    }
}

/// Waits for the manual trigger, or forever when there is none.
async fn wait_for(waker: Option<&tokio::sync::Notify>) {
    match waker {
        Some(notify) => notify.notified().await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `deadline`, or forever when there is none.
async fn sleep_until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

/// Waits `delay`; `false` when `shutdown` fires first.
async fn wait_or_shutdown(delay: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => false,
        () = tokio::time::sleep(delay) => true,
    }
}

//! Read models: long-lived state fed by an event query, checkpointed so that a restart
//! continues after the last saved position instead of replaying the whole history.
//!
//! A model implements [`ReadModel`] (usually `#[derive(ReadModel, CheckpointSupport)]`) and
//! runs through a [`ModelRunner`]: `model.configure(|c| c.use_checkpoints(storage,
//! strategy)).catch_up(&store)`.
//!
//! # Deleting a model's checkpoints
//!
//! Call [`CheckpointStorage::delete`](crate::checkpoint::CheckpointStorage::delete) with the
//! model's [`ReadModel::NAME`] (or remove `<dir>/<name>.ckpt` of a file storage, or the row of
//! a SQL storage). The next start replays from the beginning.
//!
//! **Model extensions that store references.** A model extension may write only a reference
//! into the checkpoint (a table name, a revision) to data it keeps elsewhere. That data is not
//! deleted with the checkpoint: delete it together with the checkpoint, or the rebuilt model
//! will meet stale data.

mod registry;
mod runner;

use crate::checkpoint::CheckpointSupport;
use crate::event::{Event, Recorded};
use crate::projection::HandlerError;
use crate::query::EventQuery;

pub use registry::{ModelRegistration, ModelRegistry, ModelRegistryError};
pub use runner::{
    DEFAULT_MAX_DELTA_CHAIN, DEFAULT_MODEL_BATCH, ModelConfig, ModelError, ModelMetrics,
    ModelRunner, ReadModelExt,
};

/// What a model did with one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventOutcome {
    /// The event changed (or could have changed) the state; it counts for checkpoint
    /// strategies.
    Handled,
    /// The model ignored the event: the position moves, but it does not count as handled.
    Skipped,
}

/// What a handler method of a derived read model may return: nothing (handled), an
/// [`EventOutcome`], or a `Result` of either whose error converts into [`HandlerError`].
#[diagnostic::on_unimplemented(
    message = "a read model handler cannot return `{Self}`",
    note = "return `()`, `EventOutcome`, or a `Result` of either whose error converts into `krescent::HandlerError`"
)]
pub trait ModelHandlerResult {
    /// The result as the model's.
    fn into_outcome(self) -> Result<EventOutcome, HandlerError>;
}

impl ModelHandlerResult for () {
    #[inline]
    fn into_outcome(self) -> Result<EventOutcome, HandlerError> {
        Ok(EventOutcome::Handled)
    }
}

impl ModelHandlerResult for EventOutcome {
    #[inline]
    fn into_outcome(self) -> Result<EventOutcome, HandlerError> {
        Ok(self)
    }
}

impl<E: Into<HandlerError>> ModelHandlerResult for Result<(), E> {
    #[inline]
    fn into_outcome(self) -> Result<EventOutcome, HandlerError> {
        self.map(|()| EventOutcome::Handled).map_err(Into::into)
    }
}

impl<E: Into<HandlerError>> ModelHandlerResult for Result<EventOutcome, E> {
    #[inline]
    fn into_outcome(self) -> Result<EventOutcome, HandlerError> {
        self.map_err(Into::into)
    }
}

/// A long-lived model with a name and a version, fed by an event query, whose state can be
/// checkpointed.
///
/// The checkpoint version of a model combines `Self::Event::REVISION`, [`Self::VERSION`] and
/// [`CheckpointSupport::SHAPE`]: changing any of them discards old checkpoints.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a krescent read model",
    note = "consider adding `#[derive(ReadModel, CheckpointSupport)]` to `{Self}`"
)]
pub trait ReadModel: CheckpointSupport + Send {
    /// The events the model reads.
    type Event: Event;
    /// The model's name: its checkpoints are stored under it (1 to 255 bytes of
    /// `[A-Za-z0-9._-]`).
    const NAME: &'static str;
    /// The model's version; bump it when the meaning of the state changes.
    const VERSION: u32;

    /// The events to handle (the runner sets direction, cursor and limit).
    fn event_query(&self) -> EventQuery;

    /// Handles one event.
    fn when(&mut self, event: &Recorded<Self::Event>) -> Result<EventOutcome, HandlerError>;

    /// Projection writes buffered since the last checkpoint, for models that project into
    /// tables of the checkpoint storage's database. When this returns `Some`, the runner
    /// writes each checkpoint with
    /// [`CheckpointStorage::store_with_writes`](crate::checkpoint::CheckpointStorage::store_with_writes),
    /// so the tables and the checkpoint change in one transaction. Default: `None`.
    ///
    /// Writes buffered after the last checkpoint are dropped when the model stops on a
    /// handler error or is killed; the next start resumes after the checkpoint and buffers
    /// them again, so the tables never hold an event twice. A model with pending writes needs
    /// checkpoints ([`ModelError::WritesWithoutCheckpoints`](crate::model::ModelError) otherwise).
    /// When its checkpoint is discarded (a version change, a failed validation) the model
    /// rebuilds from the first event: clear its tables then, e.g. keep a checkpointed
    /// `cleared: bool` (false in a fresh model, true once restored) and queue a `DELETE`
    /// before the first write while it is false.
    fn pending_writes(&mut self) -> Option<&mut dyn crate::checkpoint::PendingWrites> {
        None
    }
}

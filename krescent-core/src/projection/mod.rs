//! Projections: state built by handling the events of two queries, and the [`Projector`] that
//! runs them.
//!
//! A projection declares an optional *init query* (typically: the latest savepoint event for
//! its tags, backwards, limit 1) and an *event query* (the movements). The projector runs the
//! init query once, hands what it returns to the projection, then processes only the events
//! of the event query after it. See `#[derive(Projection)]` in the `krescent` crate.

use crate::event::{Event, Recorded};
use crate::query::EventQuery;

pub mod bookmark;
mod error;
mod metrics;
mod projector;

pub use bookmark::{
    BookmarkError, BookmarkReader, BookmarkStorage, FileBookmarkError, FileBookmarkStorage,
    InMemoryBookmarkStorage, MAX_READER_NAME_LEN, ReadPolicy, validate_reader_name,
};
pub use error::ProjectorError;
pub use metrics::ProjectorMetrics;
pub use projector::{DEFAULT_BATCH_SIZE, Projector, ProjectorBuilder};

/// The error a handler returns; any error type converts into it with `?` or `.into()`.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// State built from the events of an init query and an event query.
///
/// Implement it with `#[derive(Projection)]`, which generates both queries and the dispatch
/// of each event to one handler method per variant, or by hand.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a krescent projection",
    note = "consider adding `#[derive(Projection)]` to `{Self}`"
)]
pub trait Projection: Send {
    /// The events this projection reads.
    type Event: Event;

    /// The query run once before the event query, when the projector has no cursor yet and no
    /// bookmark: usually the latest savepoint (backwards, limit 1). `None` (the default): no
    /// init phase.
    fn init_query(&self) -> Option<EventQuery> {
        None
    }

    /// The events to handle, read forward strictly after the projector's cursor. The
    /// projector sets the direction, cursor and limit; only the items matter.
    fn event_query(&self) -> EventQuery;

    /// Handles one event from either query. An error ends the projector's run.
    fn when(&mut self, event: &Recorded<Self::Event>) -> Result<(), HandlerError>;
}

/// What a handler method may return: nothing, or a `Result` whose error converts into
/// [`HandlerError`].
#[diagnostic::on_unimplemented(
    message = "a projection handler cannot return `{Self}`",
    note = "return `()` or a `Result<(), E>` whose error converts into `krescent::HandlerError`"
)]
pub trait HandlerResult {
    /// The result as the projection's.
    fn into_handler_result(self) -> Result<(), HandlerError>;
}

impl HandlerResult for () {
    #[inline]
    fn into_handler_result(self) -> Result<(), HandlerError> {
        Ok(())
    }
}

impl<E: Into<HandlerError>> HandlerResult for Result<(), E> {
    #[inline]
    fn into_handler_result(self) -> Result<(), HandlerError> {
        self.map_err(Into::into)
    }
}

/// How a handler receives one field of an event variant: `&T` as stored, or a borrowed view
/// of it — `&str` for a `String` field, `&[T]` for a `Vec<T>` field — so that handlers can
/// take the idiomatic parameter types.
pub trait FieldArg<'a, T: ?Sized>: Sized {
    /// The view of `field`.
    fn from_field(field: &'a T) -> Self;
}

impl<'a, T: ?Sized> FieldArg<'a, T> for &'a T {
    #[inline(always)]
    fn from_field(field: &'a T) -> Self {
        field
    }
}

impl<'a> FieldArg<'a, String> for &'a str {
    #[inline(always)]
    fn from_field(field: &'a String) -> Self {
        field.as_str()
    }
}

impl<'a, T> FieldArg<'a, Vec<T>> for &'a [T] {
    #[inline(always)]
    fn from_field(field: &'a Vec<T>) -> Self {
        field.as_slice()
    }
}

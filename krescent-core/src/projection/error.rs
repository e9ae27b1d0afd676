//! Why a projector could not be built or could not finish a run: [`ProjectorError`].

use crate::event::DecodeError;
use crate::store::StoreError;

use super::HandlerError;
use super::bookmark::BookmarkError;
use super::projector::projection_name;

/// Why a projector could not be built, or why a run ended early.
///
/// After a run error the projector stays usable: its cursor is at the end of the last batch
/// that was handled completely, and the next run continues from there.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProjectorError {
    /// [`ProjectorBuilder::batch_size`](super::ProjectorBuilder::batch_size) was given 0.
    #[error("projector batch size must be at least 1, got 0")]
    ZeroBatchSize,
    /// The bookmark reader name is not acceptable (empty, only whitespace, too long, or with
    /// control characters).
    #[error("invalid bookmark reader name {name:?}: {reason}")]
    InvalidBookmarkName {
        /// The offending name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// [`Projector::read_bookmark`](super::Projector::read_bookmark) was called on a projector
    /// built without a bookmark reader.
    #[error("projector of `{projection}` has no bookmark reader to read")]
    NoBookmarkReader {
        /// The type name of the projection.
        projection: &'static str,
    },
    /// The event store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored event could not be decoded as the projection's event type.
    #[error("cannot decode event `{event_type}` at position {position} for `{projection}`")]
    Decode {
        /// The position of the event.
        position: u64,
        /// The stored type name.
        event_type: String,
        /// The type name of the projection.
        projection: &'static str,
        /// What the decoder said.
        #[source]
        source: DecodeError,
    },
    /// The projection's handler returned an error.
    #[error("`{projection}` failed to handle event `{event_type}` at position {position}")]
    Handler {
        /// The position of the event.
        position: u64,
        /// The stored type name.
        event_type: String,
        /// The type name of the projection.
        projection: &'static str,
        /// What the handler said.
        #[source]
        source: HandlerError,
    },
    /// The bookmark could not be loaded.
    #[error("cannot load the bookmark of reader `{reader}`")]
    BookmarkLoad {
        /// The reader name.
        reader: String,
        /// What the storage said.
        #[source]
        source: BookmarkError,
    },
    /// The bookmark could not be placed.
    #[error("cannot place the bookmark of reader `{reader}` at position {position}")]
    BookmarkPlace {
        /// The reader name.
        reader: String,
        /// The position that was to be saved.
        position: u64,
        /// What the storage said.
        #[source]
        source: BookmarkError,
    },
}

impl ProjectorError {
    /// The position of the event the error is about, for decode and handler errors.
    pub fn position(&self) -> Option<u64> {
        match self {
            ProjectorError::Decode { position, .. } | ProjectorError::Handler { position, .. } => {
                Some(*position)
            }
            _ => None,
        }
    }

    pub(crate) fn no_bookmark_reader<P: ?Sized>() -> Self {
        ProjectorError::NoBookmarkReader {
            projection: projection_name::<P>(),
        }
    }
}

//! Bookmarks: the position a projector reached, saved under a reader name so that a later
//! projector (another process, a restart) continues after it instead of from the beginning.
//!
//! A [`BookmarkStorage`] keeps one position per reader name: [`InMemoryBookmarkStorage`] in
//! the process, [`FileBookmarkStorage`] in one JSON file; the backend crates add database
//! storages. A [`BookmarkReader`] ties a reader name to a storage and a [`ReadPolicy`], and is
//! handed to
//! [`ProjectorBuilder::bookmark_progress`](super::ProjectorBuilder::bookmark_progress).

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

mod file;
mod memory;

pub use file::{FileBookmarkError, FileBookmarkStorage};
pub use memory::InMemoryBookmarkStorage;

/// The longest reader name accepted, in bytes.
pub const MAX_READER_NAME_LEN: usize = 255;

/// Why a bookmark operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BookmarkError {
    /// The reader name is not acceptable (see [`validate_reader_name`]).
    #[error("invalid bookmark reader name {name:?}: {reason}")]
    InvalidName {
        /// The offending name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The backend (a database, a file) failed or went away.
    #[error("{backend} bookmark storage failed: {source}")]
    Backend {
        /// Which backend.
        backend: &'static str,
        /// What it said.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
        /// Whether trying again may succeed: the connection was lost, the server is shutting
        /// down or starting, the database was busy, or a transaction lost a serialization or
        /// deadlock race. Set by the backend.
        transient: bool,
    },
}

impl BookmarkError {
    /// Whether trying the operation again may succeed: a [`Backend`](Self::Backend) error its
    /// backend marks transient (see [`StoreError::is_transient`](crate::store::StoreError::is_transient)).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            BookmarkError::Backend {
                transient: true,
                ..
            }
        )
    }
}

/// What is wrong with a reader name, if anything.
pub(crate) fn reader_name_problem(name: &str) -> Option<&'static str> {
    if name.trim().is_empty() {
        Some("the name is empty or only whitespace")
    } else if name.len() > MAX_READER_NAME_LEN {
        Some("the name is longer than 255 bytes")
    } else if name.chars().any(char::is_control) {
        Some("the name contains a control character")
    } else {
        None
    }
}

/// Checks a reader name: not empty or only whitespace, at most [`MAX_READER_NAME_LEN`] bytes,
/// no control characters. Every [`BookmarkStorage`] applies this rule.
pub fn validate_reader_name(name: &str) -> Result<(), BookmarkError> {
    match reader_name_problem(name) {
        None => Ok(()),
        Some(reason) => Err(BookmarkError::InvalidName {
            name: name.into(),
            reason,
        }),
    }
}

/// Where bookmarks live: one position per reader name.
///
/// Object safe: use it as `Arc<dyn BookmarkStorage>`. Every operation rejects an invalid
/// reader name with [`BookmarkError::InvalidName`] (see [`validate_reader_name`]).
#[async_trait]
pub trait BookmarkStorage: Send + Sync {
    /// The position saved for `reader`, or `None` when it has none.
    async fn load(&self, reader: &str) -> Result<Option<u64>, BookmarkError>;

    /// Saves `position` for `reader`, replacing any earlier position (the last write wins,
    /// even when it is lower).
    async fn place(&self, reader: &str, position: u64) -> Result<(), BookmarkError>;

    /// Removes the bookmark of `reader`; removing one that does not exist is not an error.
    async fn delete(&self, reader: &str) -> Result<(), BookmarkError>;
}

/// When a projector reads its bookmark from storage.
///
/// Whatever the policy, the projector places the bookmark after every run that moved its
/// cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ReadPolicy {
    /// Only when [`Projector::read_bookmark`](super::Projector::read_bookmark) is called.
    OnManualTrigger,
    /// Once, in [`ProjectorBuilder::build`](super::ProjectorBuilder::build).
    AtCreation,
    /// Once, at the start of the projector's first run (retried by the next run if that read
    /// fails).
    BeforeFirstRun,
    /// At the start of every run, so that the storage is the truth: a bookmark moved by
    /// someone else is followed.
    BeforeEachRun,
}

/// A reader name, the storage of its bookmark and when to read it.
///
/// The name is checked when the projector is built.
///
/// ```
/// # use std::sync::Arc;
/// # use krescent_core::projection::{BookmarkReader, InMemoryBookmarkStorage, ReadPolicy};
/// let storage = InMemoryBookmarkStorage::new();
/// let reader = BookmarkReader::new("stock-report", Arc::new(storage), ReadPolicy::AtCreation);
/// assert_eq!(reader.name(), "stock-report");
/// ```
#[derive(Clone)]
pub struct BookmarkReader {
    name: Arc<str>,
    storage: Arc<dyn BookmarkStorage>,
    policy: ReadPolicy,
}

impl BookmarkReader {
    /// A reader called `name` whose bookmark lives in `storage`, read as `policy` says.
    pub fn new(
        name: impl Into<Arc<str>>,
        storage: Arc<dyn BookmarkStorage>,
        policy: ReadPolicy,
    ) -> Self {
        BookmarkReader {
            name: name.into(),
            storage,
            policy,
        }
    }

    /// The reader name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// When the bookmark is read.
    pub fn policy(&self) -> ReadPolicy {
        self.policy
    }

    /// The storage of the bookmark.
    pub fn storage(&self) -> &Arc<dyn BookmarkStorage> {
        &self.storage
    }

    /// Loads this reader's bookmark.
    pub async fn load(&self) -> Result<Option<u64>, BookmarkError> {
        self.storage.load(&self.name).await
    }

    /// Places this reader's bookmark at `position`.
    pub async fn place(&self, position: u64) -> Result<(), BookmarkError> {
        self.storage.place(&self.name, position).await
    }
}

impl fmt::Debug for BookmarkReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BookmarkReader")
            .field("name", &self.name)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

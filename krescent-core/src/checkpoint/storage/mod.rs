//! *Where* checkpoints are kept: the [`CheckpointStorage`] trait, its errors, and the
//! in-memory and file implementations.
//!
//! A storage keeps at most one [`StoredCheckpoint`] per model name: storing replaces the
//! previous checkpoint of that model as a whole (the last write wins), and a checkpoint that
//! could not be read completely is reported as [`CheckpointStorageError::Corrupt`], never
//! returned in part.
//!
//! Every storage passes the contract suite in `krescent_core::testing::checkpoint_storage`
//! (feature `testing`).
//!
//! # Model names
//!
//! Model names are 1 to [`MAX_MODEL_NAME_LEN`] bytes of ASCII letters, digits, `.`, `_` and
//! `-`, and neither `.` nor `..` ([`validate_model_name`]). Names are case-sensitive. The rule
//! keeps names safe to use as file names, keys and table values in every storage; every
//! storage rejects other names with [`CheckpointStorageError::InvalidModelName`].

pub(crate) mod file;
mod memory;

use std::error::Error as StdError;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::error::BucketError;
use super::stored::{CheckpointDelta, CheckpointVersion, StoredCheckpoint};

pub use file::FileCheckpointStorage;
pub use memory::InMemoryCheckpointStorage;

/// The longest model name accepted, in bytes.
pub const MAX_MODEL_NAME_LEN: usize = 255;

/// Keeps the latest checkpoint of each model.
///
/// Object safe: use it as `Arc<dyn CheckpointStorage>`. Every operation rejects an invalid
/// model name (see [`validate_model_name`]) with
/// [`CheckpointStorageError::InvalidModelName`] before touching the backend.
#[async_trait]
pub trait CheckpointStorage: Send + Sync {
    /// The checkpoint stored for `model`, or `None` if it has none.
    ///
    /// A checkpoint that is torn, truncated or otherwise unreadable is reported as
    /// [`CheckpointStorageError::Corrupt`], never returned in part.
    async fn load(&self, model: &str) -> Result<Option<StoredCheckpoint>, CheckpointStorageError>;

    /// Stores `checkpoint` for `checkpoint.model`, replacing the previous one atomically: a
    /// concurrent or later `load` sees either the old or the new checkpoint, complete. When
    /// several stores for one model race, the last write wins.
    async fn store(&self, checkpoint: &StoredCheckpoint) -> Result<(), CheckpointStorageError>;

    /// Removes the checkpoint of `model`; `true` if there was one.
    async fn delete(&self, model: &str) -> Result<bool, CheckpointStorageError>;

    /// What is stored: one [`CheckpointInfo`] per model, sorted by model name (byte order).
    async fn list(&self) -> Result<Vec<CheckpointInfo>, CheckpointStorageError>;

    /// Stores `checkpoint` and applies the model's pending projection `writes` in ONE
    /// transaction, so that after a crash the projection tables and the checkpoint always
    /// agree. Only storages in the same database as the projection tables can do this; the
    /// default refuses with [`CheckpointStorageError::WritesUnsupported`] and writes nothing.
    ///
    /// A storage takes the writes it understands (e.g. SQL statements for its own database)
    /// through [`PendingWrites::as_any`]; the writes are cleared once committed.
    async fn store_with_writes(
        &self,
        checkpoint: &StoredCheckpoint,
        writes: &mut (dyn PendingWrites + '_),
    ) -> Result<(), CheckpointStorageError> {
        let _ = writes;
        Err(CheckpointStorageError::WritesUnsupported {
            model: checkpoint.model.clone(),
        })
    }

    /// Whether this storage keeps checkpoint deltas ([`store_delta`](Self::store_delta)).
    /// Default: `false`; the model runner then writes every checkpoint in full.
    fn supports_deltas(&self) -> bool {
        false
    }

    /// Appends `delta` to the stored checkpoint of `delta.model`, atomically: a `load` sees
    /// the checkpoint with or without it, never a part. [`load`](Self::load) returns the
    /// checkpoint with its deltas in [`StoredCheckpoint::deltas`]; [`store`](Self::store)
    /// replaces the checkpoint and drops its deltas; [`delete`](Self::delete) removes both;
    /// [`list`](Self::list) reports the position of the last delta.
    ///
    /// Refused with [`CheckpointStorageError::DeltaBaseMismatch`] unless
    /// `delta.base_position` is the position of the latest stored state (the checkpoint's or
    /// its last delta's). The default refuses with
    /// [`CheckpointStorageError::DeltasUnsupported`].
    async fn store_delta(&self, delta: &CheckpointDelta) -> Result<(), CheckpointStorageError> {
        Err(CheckpointStorageError::DeltasUnsupported {
            model: delta.model.clone(),
        })
    }
}

/// Projection writes a read model buffers between checkpoints (for example SQL statements
/// against tables in the checkpoint's database). The runner hands them to
/// [`CheckpointStorage::store_with_writes`], which commits them together with the checkpoint.
pub trait PendingWrites: Send {
    /// Whether there is nothing to write.
    fn is_empty(&self) -> bool;
    /// The concrete buffer, for the storage that knows its type.
    fn as_any(&mut self) -> &mut dyn std::any::Any;
    /// The buffer's type name, for error messages (default: [`std::any::type_name`]).
    fn type_name(&self) -> &'static str {
        std::any::type_name::<Self>()
    }
}

impl dyn PendingWrites + '_ {
    /// The buffer as the storage's own type `W`, or
    /// [`CheckpointStorageError::WritesMismatch`] naming `model` and the type it is: the
    /// first step of a [`CheckpointStorage::store_with_writes`] that commits writes.
    pub fn downcast<W: 'static>(&mut self, model: &str) -> Result<&mut W, CheckpointStorageError> {
        let found = self.type_name();
        self.as_any()
            .downcast_mut::<W>()
            .ok_or_else(|| CheckpointStorageError::WritesMismatch {
                model: model.to_owned(),
                found,
            })
    }
}

/// A shared storage is a storage: `Arc<FileCheckpointStorage>` and
/// `Arc<dyn CheckpointStorage>` work wherever a [`CheckpointStorage`] is expected.
#[async_trait]
impl<S: CheckpointStorage + ?Sized> CheckpointStorage for Arc<S> {
    async fn load(&self, model: &str) -> Result<Option<StoredCheckpoint>, CheckpointStorageError> {
        (**self).load(model).await
    }

    async fn store(&self, checkpoint: &StoredCheckpoint) -> Result<(), CheckpointStorageError> {
        (**self).store(checkpoint).await
    }

    async fn delete(&self, model: &str) -> Result<bool, CheckpointStorageError> {
        (**self).delete(model).await
    }

    async fn list(&self) -> Result<Vec<CheckpointInfo>, CheckpointStorageError> {
        (**self).list().await
    }

    async fn store_with_writes(
        &self,
        checkpoint: &StoredCheckpoint,
        writes: &mut (dyn PendingWrites + '_),
    ) -> Result<(), CheckpointStorageError> {
        (**self).store_with_writes(checkpoint, writes).await
    }

    fn supports_deltas(&self) -> bool {
        (**self).supports_deltas()
    }

    async fn store_delta(&self, delta: &CheckpointDelta) -> Result<(), CheckpointStorageError> {
        (**self).store_delta(delta).await
    }
}

/// What [`CheckpointStorage::list`] tells about one stored checkpoint: everything but the
/// state.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CheckpointInfo {
    /// The model the checkpoint belongs to.
    pub model: String,
    /// What the checkpoint was written for.
    pub version: CheckpointVersion,
    /// The position of the last event the checkpoint reflects (with its deltas, if any).
    pub position: u64,
    /// When the checkpoint was taken.
    pub timestamp: DateTime<Utc>,
}

impl From<&StoredCheckpoint> for CheckpointInfo {
    fn from(checkpoint: &StoredCheckpoint) -> Self {
        CheckpointInfo {
            model: checkpoint.model.clone(),
            version: checkpoint.version,
            position: checkpoint.latest_position(),
            timestamp: checkpoint
                .deltas
                .last()
                .map_or(checkpoint.timestamp, |d| d.timestamp),
        }
    }
}

impl From<StoredCheckpoint> for CheckpointInfo {
    fn from(checkpoint: StoredCheckpoint) -> Self {
        CheckpointInfo::from(&checkpoint)
    }
}

/// Why a checkpoint storage operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointStorageError {
    /// The storage cannot commit projection writes with a checkpoint (it does not share a
    /// database with them). Nothing was written.
    #[error(
        "the checkpoint storage of model `{model}` cannot write projection changes in the same transaction"
    )]
    WritesUnsupported {
        /// The model.
        model: String,
    },
    /// The storage does not understand the pending writes' type. Nothing was written.
    #[error(
        "the checkpoint storage of model `{model}` does not understand pending writes of type `{found}`"
    )]
    WritesMismatch {
        /// The model.
        model: String,
        /// What it got.
        found: &'static str,
    },
    /// The storage keeps no checkpoint deltas (see [`CheckpointStorage::supports_deltas`]).
    /// Nothing was written.
    #[error("the checkpoint storage of model `{model}` keeps no checkpoint deltas")]
    DeltasUnsupported {
        /// The model.
        model: String,
    },
    /// A delta does not build on the latest stored state of its model: there is no stored
    /// checkpoint (`latest` is `None`), or the latest checkpoint or delta is at another
    /// position (another writer stored one, or it was deleted). Nothing was written; write a
    /// full checkpoint instead.
    #[error(
        "the checkpoint delta of model `{model}` builds on position {base_position}, but the \
         latest stored state is {}",
        match .latest { Some(p) => format!("at position {p}"), None => "absent".to_owned() }
    )]
    DeltaBaseMismatch {
        /// The model.
        model: String,
        /// The position the delta builds on.
        base_position: u64,
        /// The position of the latest stored state, if any.
        latest: Option<u64>,
    },
    /// The stored deltas of `model` do not form a chain on its checkpoint (see
    /// [`StoredCheckpoint::push_delta`]). Nothing of it is returned.
    #[error("the checkpoint deltas of model `{model}` at {location} are inconsistent: {source}")]
    BrokenChain {
        /// The model.
        model: String,
        /// Where the deltas live.
        location: String,
        /// What is wrong (boxed to keep the error small).
        #[source]
        source: Box<super::DeltaChainError>,
    },
    /// The model name is not acceptable (see [`validate_model_name`]).
    #[error("invalid checkpoint model name {}: {reason}", abbreviate(.name))]
    InvalidModelName {
        /// The offending name.
        name: String,
        /// What is wrong with it.
        reason: ModelNameError,
    },
    /// The stored checkpoint of `model` cannot be read: torn, truncated, its checksum does not
    /// match, or its content is not a [`StoredCheckpoint`]. Nothing of it is returned.
    #[error("the checkpoint of model `{model}` at {location} is corrupt: {source}")]
    Corrupt {
        /// The model whose checkpoint is corrupt.
        model: String,
        /// Where the checkpoint lives: a file path, a table row, `memory`.
        location: String,
        /// What the decoder found (boxed to keep the error small).
        #[source]
        source: Box<BucketError>,
    },
    /// A stored checkpoint names another model than the one it is stored under (a file that
    /// was renamed or copied by hand). Nothing of it is returned.
    #[error(
        "the checkpoint at {location} should belong to model `{expected}` but belongs to \
         `{found}`"
    )]
    ModelMismatch {
        /// The model the checkpoint is stored under.
        expected: String,
        /// The model named inside the checkpoint.
        found: String,
        /// Where the checkpoint lives.
        location: String,
    },
    /// The checkpoint of `model` could not be encoded (an invalid key in its state, nesting
    /// too deep, a value too large); nothing was stored.
    #[error("cannot encode the checkpoint of model `{model}`: {source}")]
    Encode {
        /// The model whose checkpoint was being stored.
        model: String,
        /// What the encoder reported (boxed to keep the error small).
        #[source]
        source: Box<BucketError>,
    },
    /// A file operation failed.
    #[error("checkpoint storage I/O error on {}{}: {source}", .path.display(), for_model(.model))]
    Io {
        /// The model the operation was for; `None` for operations on the whole storage
        /// (creating or listing the directory).
        model: Option<String>,
        /// The file or directory involved.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The backend (a database) failed or went away.
    #[error("{backend} checkpoint storage failed: {source}")]
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

impl CheckpointStorageError {
    /// Whether trying the operation again may succeed: a [`Backend`](Self::Backend) error its
    /// backend marks transient (see [`StoreError::is_transient`](crate::store::StoreError::is_transient)).
    /// Everything else, file system errors included, is permanent.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            CheckpointStorageError::Backend {
                transient: true,
                ..
            }
        )
    }

    /// A [`Corrupt`](Self::Corrupt) error: the checkpoint of `model` at `location` does not
    /// decode.
    pub fn corrupt(
        model: impl Into<String>,
        location: impl Into<String>,
        source: BucketError,
    ) -> Self {
        CheckpointStorageError::Corrupt {
            model: model.into(),
            location: location.into(),
            source: Box::new(source),
        }
    }

    /// An [`Encode`](Self::Encode) error: the checkpoint of `model` does not encode.
    pub fn encode(model: impl Into<String>, source: BucketError) -> Self {
        CheckpointStorageError::Encode {
            model: model.into(),
            source: Box::new(source),
        }
    }
}

/// What is wrong with a model name; see [`validate_model_name`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ModelNameError {
    /// The name is the empty string.
    #[error("model names may not be empty")]
    Empty,
    /// The name is longer than [`MAX_MODEL_NAME_LEN`] bytes.
    #[error("the name is {len} bytes long; model names may be at most 255 bytes")]
    TooLong {
        /// The length of the name in bytes.
        len: usize,
    },
    /// The name holds a character other than ASCII letters, digits, `.`, `_` and `-`.
    #[error(
        "{character:?} at byte {index} is not allowed; model names consist of ASCII letters, \
         digits, `.`, `_` and `-`"
    )]
    InvalidCharacter {
        /// The first character that is not allowed.
        character: char,
        /// Its byte offset in the name.
        index: usize,
    },
    /// The name is `.` or `..`.
    #[error("model names may not be `.` or `..`")]
    DotName,
}

/// Checks a model name: 1 to [`MAX_MODEL_NAME_LEN`] bytes, only ASCII letters, digits, `.`,
/// `_` and `-`, and neither `.` nor `..`. Every [`CheckpointStorage`] applies this rule, so a
/// model name is always safe to use as a file name.
///
/// ```
/// use krescent_core::checkpoint::storage::{validate_model_name, ModelNameError};
/// use krescent_core::checkpoint::CheckpointStorageError;
///
/// assert!(validate_model_name("book.available-v2_eu").is_ok());
/// assert!(matches!(
///     validate_model_name("../etc/passwd"),
///     Err(CheckpointStorageError::InvalidModelName {
///         reason: ModelNameError::InvalidCharacter { character: '/', index: 2 },
///         ..
///     })
/// ));
/// ```
///
/// # Errors
///
/// [`CheckpointStorageError::InvalidModelName`] with the name and a [`ModelNameError`].
pub fn validate_model_name(name: &str) -> Result<(), CheckpointStorageError> {
    match model_name_problem(name) {
        None => Ok(()),
        Some(reason) => Err(CheckpointStorageError::InvalidModelName {
            name: name.to_owned(),
            reason,
        }),
    }
}

/// What is wrong with a model name, if anything.
fn model_name_problem(name: &str) -> Option<ModelNameError> {
    if name.is_empty() {
        return Some(ModelNameError::Empty);
    }
    if name.len() > MAX_MODEL_NAME_LEN {
        return Some(ModelNameError::TooLong { len: name.len() });
    }
    if let Some((index, character)) = name
        .char_indices()
        .find(|&(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Some(ModelNameError::InvalidCharacter { character, index });
    }
    if name == "." || name == ".." {
        return Some(ModelNameError::DotName);
    }
    None
}

/// Renders a name for an error message, shortening very long ones.
fn abbreviate(name: &str) -> String {
    const SHOWN: usize = 64;
    if name.chars().count() > SHOWN {
        let head: String = name.chars().take(SHOWN).collect();
        format!("{head:?}… ({} bytes)", name.len())
    } else {
        format!("{name:?}")
    }
}

/// ` for model `x`` or nothing.
fn for_model(model: &Option<String>) -> String {
    match model {
        Some(model) => format!(" for model `{model}`"),
        None => String::new(),
    }
}

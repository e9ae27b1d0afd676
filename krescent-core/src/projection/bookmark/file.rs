//! [`FileBookmarkStorage`]: every reader's bookmark in one JSON file, replaced atomically.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;

use super::{BookmarkError, BookmarkStorage, validate_reader_name};
use crate::atomic_file::{self, temp_path};

/// The backend name in [`BookmarkError::Backend`].
const BACKEND: &str = "file";

/// Bookmarks in one file: a JSON object mapping reader names to positions.
///
/// The file is read once when the storage is opened and kept in memory; every
/// [`place`](BookmarkStorage::place) and [`delete`](BookmarkStorage::delete) writes the whole
/// object to a temporary file next to it, flushes it to disk (`fsync`), renames it over the
/// file and flushes the directory, so after a crash the file holds the bookmarks before or
/// after the change, completely. Bookmarks are written once per projector run, so rewriting
/// the file is cheap; for thousands of readers use a database storage.
///
/// The file belongs to one process at a time (a second process writing it would overwrite
/// the first one's changes). File operations run on tokio's blocking pool, never on the
/// runtime's workers.
///
/// A file that is not such a JSON object is reported when the storage is opened, as
/// [`BookmarkError::Backend`] naming the file; it is never overwritten.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use krescent_core::projection::{BookmarkStorage, FileBookmarkStorage};
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("bookmarks.json");
/// let storage = FileBookmarkStorage::open(&path).await?;
/// storage.place("stock-report", 42).await?;
///
/// let reopened = FileBookmarkStorage::open(&path).await?;
/// assert_eq!(reopened.load("stock-report").await?, Some(42));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct FileBookmarkStorage {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// The bookmarks as last written; the lock also serialises writes.
    bookmarks: tokio::sync::Mutex<BTreeMap<String, u64>>,
}

/// A problem with the bookmark file, the source of [`BookmarkError::Backend`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileBookmarkError {
    /// Reading, writing or renaming the file failed.
    #[error("bookmark file `{path}`: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// The file exists but does not hold a JSON object of reader names and positions.
    #[error("bookmark file `{path}` is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

impl From<FileBookmarkError> for BookmarkError {
    fn from(error: FileBookmarkError) -> Self {
        BookmarkError::Backend {
            backend: BACKEND,
            source: Box::new(error),
            transient: false,
        }
    }
}

impl FileBookmarkStorage {
    /// Opens the bookmark file at `path`, or starts an empty one there (created on the first
    /// write; the directory must exist).
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, BookmarkError> {
        let path = path.as_ref().to_path_buf();
        let read_path = path.clone();
        let bookmarks = blocking(move || read_file(&read_path)).await?;
        Ok(FileBookmarkStorage {
            inner: Arc::new(Inner {
                path,
                bookmarks: tokio::sync::Mutex::new(bookmarks),
            }),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Applies `change` to a copy of the bookmarks, writes the copy and keeps it once it is
    /// on disk; on failure the bookmarks stay as they were.
    async fn update(
        &self,
        change: impl FnOnce(&mut BTreeMap<String, u64>),
    ) -> Result<(), BookmarkError> {
        let mut current = self.inner.bookmarks.lock().await;
        let mut next = current.clone();
        change(&mut next);
        if next == *current {
            return Ok(());
        }
        let path = self.inner.path.clone();
        let bytes = match serde_json::to_vec_pretty(&next) {
            Ok(bytes) => bytes,
            Err(e) => {
                return Err(FileBookmarkError::Corrupt {
                    path,
                    reason: format!("cannot encode the bookmarks: {e}"),
                }
                .into());
            }
        };
        blocking(move || write_file(&path, &bytes)).await?;
        *current = next;
        Ok(())
    }
}

impl std::fmt::Debug for FileBookmarkStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileBookmarkStorage")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl BookmarkStorage for FileBookmarkStorage {
    async fn load(&self, reader: &str) -> Result<Option<u64>, BookmarkError> {
        validate_reader_name(reader)?;
        Ok(self.inner.bookmarks.lock().await.get(reader).copied())
    }

    async fn place(&self, reader: &str, position: u64) -> Result<(), BookmarkError> {
        validate_reader_name(reader)?;
        self.update(|b| {
            b.insert(reader.to_owned(), position);
        })
        .await
    }

    async fn delete(&self, reader: &str) -> Result<(), BookmarkError> {
        validate_reader_name(reader)?;
        self.update(|b| {
            b.remove(reader);
        })
        .await
    }
}

/// Runs file work on the blocking pool.
async fn blocking<T: Send + 'static>(
    op: impl FnOnce() -> Result<T, FileBookmarkError> + Send + 'static,
) -> Result<T, BookmarkError> {
    match tokio::task::spawn_blocking(op).await {
        Ok(result) => result.map_err(BookmarkError::from),
        Err(e) => Err(BookmarkError::Backend {
            backend: BACKEND,
            source: Box::new(e),
            transient: false,
        }),
    }
}

fn read_file(path: &Path) -> Result<BTreeMap<String, u64>, FileBookmarkError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(source) => {
            return Err(FileBookmarkError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let corrupt = |reason: String| FileBookmarkError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let bookmarks: BTreeMap<String, u64> =
        serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    if let Some(bad) = bookmarks.keys().find(|k| validate_reader_name(k).is_err()) {
        return Err(corrupt(format!("it holds an invalid reader name {bad:?}")));
    }
    Ok(bookmarks)
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), FileBookmarkError> {
    atomic_file::replace(&temp_path(path), path, bytes, || Ok(()))
        .map_err(|(path, source)| FileBookmarkError::Io { path, source })
}

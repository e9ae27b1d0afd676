//! [`InMemoryBookmarkStorage`]: bookmarks in a map, for tests and short-lived processes.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::RwLock;

use super::{BookmarkError, BookmarkStorage, validate_reader_name};

/// Bookmarks in memory, lost when the process ends. Cloning gives another handle to the same
/// bookmarks.
#[derive(Clone, Default)]
pub struct InMemoryBookmarkStorage {
    bookmarks: Arc<RwLock<HashMap<String, u64>>>,
}

impl InMemoryBookmarkStorage {
    /// An empty storage.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many readers have a bookmark.
    pub fn len(&self) -> usize {
        self.bookmarks.read().len()
    }

    /// Whether no reader has a bookmark.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for InMemoryBookmarkStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemoryBookmarkStorage")
            .field("bookmarks", &*self.bookmarks.read())
            .finish()
    }
}

#[async_trait]
impl BookmarkStorage for InMemoryBookmarkStorage {
    async fn load(&self, reader: &str) -> Result<Option<u64>, BookmarkError> {
        validate_reader_name(reader)?;
        Ok(self.bookmarks.read().get(reader).copied())
    }

    async fn place(&self, reader: &str, position: u64) -> Result<(), BookmarkError> {
        validate_reader_name(reader)?;
        self.bookmarks.write().insert(reader.to_owned(), position);
        Ok(())
    }

    async fn delete(&self, reader: &str) -> Result<(), BookmarkError> {
        validate_reader_name(reader)?;
        self.bookmarks.write().remove(reader);
        Ok(())
    }
}

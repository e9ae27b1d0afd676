//! The contract suites of `krescent::testing`, run against the SQLite event store and the
//! SQLite checkpoint and bookmark storages: a fresh temporary file per case, and in memory.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use krescent_core::testing::{BookmarkStorageFactory, CheckpointStorageFactory, EventStoreFactory};
use krescent_sqlite::{SqliteBookmarkStorage, SqliteCheckpointStorage, SqliteEventStore};
use tempfile::TempDir;

/// Makes each store in a new file of one temporary directory, which the factory owns and
/// removes when the test is over.
struct TempFileFactory {
    dir: TempDir,
    next: AtomicU64,
}

impl TempFileFactory {
    fn new() -> Self {
        TempFileFactory {
            dir: tempfile::tempdir().expect("cannot create a temporary directory"),
            next: AtomicU64::new(0),
        }
    }
}

impl EventStoreFactory for TempFileFactory {
    type Store = SqliteEventStore;

    async fn create(&self) -> SqliteEventStore {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.path().join(format!("store-{n}.db"));
        SqliteEventStore::open(&path)
            .await
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()))
    }
}

/// One test per contract case, each on a new file.
mod file {
    krescent_core::event_store_contract_tests!(super::TempFileFactory::new());
}

/// One test per contract case, in memory.
mod in_memory {
    use krescent_sqlite::SqliteEventStore;

    krescent_core::event_store_contract_tests!(|| async {
        SqliteEventStore::open_in_memory().expect("cannot open an in-memory SQLite store")
    });
}

/// Makes each storage in a new file of one temporary directory, which the factory owns and
/// removes when the test is over.
struct TempFiles {
    dir: TempDir,
    next: AtomicU64,
}

impl TempFiles {
    fn new() -> Self {
        TempFiles {
            dir: tempfile::tempdir().expect("cannot create a temporary directory"),
            next: AtomicU64::new(0),
        }
    }

    fn next_path(&self) -> PathBuf {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.dir.path().join(format!("storage-{n}.db"))
    }
}

impl CheckpointStorageFactory for TempFiles {
    type Storage = SqliteCheckpointStorage;

    async fn create(&self) -> SqliteCheckpointStorage {
        let path = self.next_path();
        SqliteCheckpointStorage::open(&path)
            .await
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()))
    }
}

impl BookmarkStorageFactory for TempFiles {
    type Storage = SqliteBookmarkStorage;

    async fn create(&self) -> SqliteBookmarkStorage {
        let path = self.next_path();
        SqliteBookmarkStorage::open(&path)
            .await
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()))
    }
}

/// The checkpoint contract, one file per case.
mod checkpoint_contract_file {
    krescent_core::checkpoint_storage_contract_tests!(super::TempFiles::new());
}

/// The checkpoint contract, in memory (reads go through the writer thread).
mod checkpoint_contract_in_memory {
    krescent_core::checkpoint_storage_contract_tests!(|| async {
        krescent_sqlite::SqliteCheckpointStorage::open_in_memory()
            .expect("cannot open an in-memory SQLite checkpoint storage")
    });
}

/// The bookmark contract, one file per case.
mod bookmark_contract_file {
    krescent_core::bookmark_storage_contract_tests!(super::TempFiles::new());
}

/// The bookmark contract, in memory.
mod bookmark_contract_in_memory {
    krescent_core::bookmark_storage_contract_tests!(|| async {
        krescent_sqlite::SqliteBookmarkStorage::open_in_memory()
            .expect("cannot open an in-memory SQLite bookmark storage")
    });
}

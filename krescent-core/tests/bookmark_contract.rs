//! The bookmark storage contract, run against the in-memory and file storages (SQLite and
//! PostgreSQL run it in their own test files).

use krescent_core::projection::{
    BookmarkError, BookmarkStorage, FileBookmarkStorage, InMemoryBookmarkStorage,
};
use krescent_core::testing::{BookmarkStorageFactory, run_bookmark_storage_contract};

mod in_memory {
    krescent_core::bookmark_storage_contract_tests!(|| async {
        krescent_core::projection::InMemoryBookmarkStorage::new()
    });
}

/// A file storage in a temporary directory that lives as long as the storage.
struct TempFile;

/// The storage and the directory it lives in (removed when dropped).
struct InTempDir {
    storage: FileBookmarkStorage,
    _dir: tempfile::TempDir,
}

#[async_trait::async_trait]
impl BookmarkStorage for InTempDir {
    async fn load(&self, reader: &str) -> Result<Option<u64>, BookmarkError> {
        self.storage.load(reader).await
    }
    async fn place(&self, reader: &str, position: u64) -> Result<(), BookmarkError> {
        self.storage.place(reader, position).await
    }
    async fn delete(&self, reader: &str) -> Result<(), BookmarkError> {
        self.storage.delete(reader).await
    }
}

impl BookmarkStorageFactory for TempFile {
    type Storage = InTempDir;

    async fn create(&self) -> InTempDir {
        let dir = tempfile::tempdir().expect("a temporary directory for the bookmark file");
        let storage = FileBookmarkStorage::open(dir.path().join("bookmarks.json"))
            .await
            .expect("opening a fresh bookmark file");
        InTempDir { storage, _dir: dir }
    }
}

mod file {
    krescent_core::bookmark_storage_contract_tests!(super::TempFile);
}

/// The whole suite through the runner, on a current-thread runtime.
#[tokio::test]
async fn whole_contract_on_current_thread_runtime() {
    run_bookmark_storage_contract(|| async { InMemoryBookmarkStorage::new() })
        .await
        .unwrap();
    run_bookmark_storage_contract(TempFile).await.unwrap();
}

#[tokio::test]
async fn file_bookmarks_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bookmarks.json");
    let storage = FileBookmarkStorage::open(&path).await.unwrap();
    storage.place("a", 1).await.unwrap();
    storage.place("b", u64::MAX).await.unwrap();
    storage.place("a", 3).await.unwrap();
    storage.delete("b").await.unwrap();
    storage.place("c", 0).await.unwrap();
    drop(storage);
    let reopened = FileBookmarkStorage::open(&path).await.unwrap();
    assert_eq!(reopened.load("a").await.unwrap(), Some(3));
    assert_eq!(reopened.load("b").await.unwrap(), None);
    assert_eq!(reopened.load("c").await.unwrap(), Some(0));
    // No temporary file is left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["bookmarks.json"]);
}

#[tokio::test]
async fn a_corrupt_bookmark_file_is_a_typed_error_and_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    for (content, what) in [
        (&b"{\"a\": 1, \"b\": "[..], "truncated"),
        (&b"[1, 2]"[..], "not an object"),
        (&b"{\"a\": -1}"[..], "negative position"),
        (&b"{\"\": 1}"[..], "invalid reader name"),
        (&[0xff, 0x00, 0x13][..], "binary garbage"),
    ] {
        let path = dir.path().join("bookmarks.json");
        std::fs::write(&path, content).unwrap();
        let err = FileBookmarkStorage::open(&path).await.unwrap_err();
        let BookmarkError::Backend {
            backend, source, ..
        } = &err
        else {
            panic!("{what}: expected a backend error, got {err:?}");
        };
        assert_eq!(*backend, "file");
        let file_err = source
            .downcast_ref::<krescent_core::projection::FileBookmarkError>()
            .unwrap_or_else(|| panic!("{what}: the source should be a FileBookmarkError"));
        assert!(
            matches!(
                file_err,
                krescent_core::projection::FileBookmarkError::Corrupt { .. }
            ),
            "{what}: {file_err:?}"
        );
        assert!(err.to_string().contains("bookmarks.json"), "{what}: {err}");
        assert_eq!(std::fs::read(&path).unwrap(), content, "{what}: file kept");
    }
}

#[tokio::test]
async fn an_unwritable_location_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing-dir").join("bookmarks.json");
    let storage = FileBookmarkStorage::open(&path).await.unwrap();
    let err = storage.place("a", 1).await.unwrap_err();
    assert!(
        matches!(
            err,
            BookmarkError::Backend {
                backend: "file",
                ..
            }
        ),
        "{err:?}"
    );
    // Nothing changed in memory either.
    assert_eq!(storage.load("a").await.unwrap(), None);
}

/// A storage with two classic bugs: positions clamped to `i64::MAX` and reader names folded
/// to lower case. The suite must catch both.
#[derive(Default)]
struct Sloppy(InMemoryBookmarkStorage, bool);

#[async_trait::async_trait]
impl BookmarkStorage for Sloppy {
    async fn load(&self, reader: &str) -> Result<Option<u64>, BookmarkError> {
        self.0.load(&self.key(reader)).await
    }
    async fn place(&self, reader: &str, position: u64) -> Result<(), BookmarkError> {
        let position = if self.1 {
            position
        } else {
            position.min(i64::MAX as u64)
        };
        self.0.place(&self.key(reader), position).await
    }
    async fn delete(&self, reader: &str) -> Result<(), BookmarkError> {
        self.0.delete(&self.key(reader)).await
    }
}

impl Sloppy {
    fn key(&self, reader: &str) -> String {
        if self.1 {
            reader.to_lowercase()
        } else {
            reader.to_owned()
        }
    }
}

#[tokio::test]
async fn the_contract_catches_broken_storages() {
    let clamped = run_bookmark_storage_contract(|| async { Sloppy(Default::default(), false) })
        .await
        .unwrap_err();
    assert_eq!(clamped.case(), "place_then_load_round_trips", "{clamped}");
    let folded = run_bookmark_storage_contract(|| async { Sloppy(Default::default(), true) })
        .await
        .unwrap_err();
    assert_eq!(folded.case(), "readers_are_independent", "{folded}");
}

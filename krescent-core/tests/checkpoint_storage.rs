//! Checkpoint storages: the contract on the in-memory and file storages, the file storage's
//! crash safety and corruption reports, `StoredCheckpoint` encoding and model names.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use krescent_core::checkpoint::storage::MAX_MODEL_NAME_LEN;
use krescent_core::checkpoint::{
    BucketError, CheckpointBucket, CheckpointInfo, CheckpointStorage, CheckpointStorageError,
    CheckpointVersion, Corruption, FileCheckpointStorage, InMemoryCheckpointStorage,
    ModelNameError, StoredCheckpoint, ValueKind, validate_model_name,
};
use tempfile::TempDir;

#[cfg(feature = "testing")]
mod contract {
    use std::sync::Mutex;

    use krescent_core::checkpoint::{FileCheckpointStorage, InMemoryCheckpointStorage};
    use krescent_core::testing::{CheckpointStorageFactory, run_checkpoint_storage_contract};
    use tempfile::TempDir;

    /// One test per contract case on the in-memory storage.
    mod in_memory {
        use krescent_core::checkpoint::InMemoryCheckpointStorage;

        krescent_core::checkpoint_storage_contract_tests!(|| async {
            InMemoryCheckpointStorage::new()
        });
    }

    /// Makes file storages in temporary directories that live as long as the factory.
    #[derive(Default)]
    pub(super) struct TempDirFactory {
        dirs: Mutex<Vec<TempDir>>,
    }

    impl CheckpointStorageFactory for TempDirFactory {
        type Storage = FileCheckpointStorage;

        async fn create(&self) -> FileCheckpointStorage {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let storage = FileCheckpointStorage::new(dir.path()).expect("a file storage");
            self.dirs.lock().expect("the directory list").push(dir);
            storage
        }
    }

    /// One test per contract case on the file storage.
    mod file {
        krescent_core::checkpoint_storage_contract_tests!(super::TempDirFactory::default());
    }

    /// The whole suite through the runner, on a current-thread runtime.
    #[tokio::test]
    async fn whole_contract_on_current_thread_runtime() {
        if let Err(failure) =
            run_checkpoint_storage_contract(|| async { InMemoryCheckpointStorage::new() }).await
        {
            panic!("{failure}");
        }
        if let Err(failure) = run_checkpoint_storage_contract(TempDirFactory::default()).await {
            panic!("{failure}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn at(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap()
}

fn checkpoint(model: &str, position: u64) -> StoredCheckpoint {
    let mut nested = CheckpointBucket::new();
    nested.put_str("note", format!("at {position}"));
    let mut state = CheckpointBucket::new();
    state
        .put_u64("position", position)
        .put_bytes("fill", vec![position as u8; 4096])
        .put_bucket("nested", nested);
    StoredCheckpoint {
        model: model.to_owned(),
        version: CheckpointVersion::new(2, 3, 0xabcd),
        position,
        timestamp: at(1_720_000_000_000_000 + position as i64),
        state,
        deltas: Vec::new(),
    }
}

fn storage() -> (TempDir, FileCheckpointStorage) {
    let dir = tempfile::tempdir().unwrap();
    let storage = FileCheckpointStorage::new(dir.path()).unwrap();
    (dir, storage)
}

/// The names of the entries in `dir`, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// The name of a temporary file a crashed store of `path` could have left.
fn temp_path(path: &Path, unique: &str) -> PathBuf {
    let mut name = path.file_name().unwrap().to_os_string();
    name.push(format!(".tmp-{unique}"));
    path.with_file_name(name)
}

const UNIQUE_A: &str = "0190a1b2c3d47e5f8a9b0c1d2e3f4a5b";
const UNIQUE_B: &str = "ffffffffffffffffffffffffffffffff";

#[test]
fn storages_are_send_sync_and_object_safe() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<InMemoryCheckpointStorage>();
    assert_send_sync::<FileCheckpointStorage>();
    assert_send_sync::<Arc<dyn CheckpointStorage>>();
    assert_send_sync::<CheckpointStorageError>();
    assert_send_sync::<StoredCheckpoint>();
    let _: Arc<dyn CheckpointStorage> = Arc::new(InMemoryCheckpointStorage::new());
}

// ---------------------------------------------------------------------------------------------
// File storage

#[tokio::test]
async fn file_layout_is_one_file_per_model() {
    let (dir, storage) = storage();
    let stored = checkpoint("book.available", 7);
    storage.store(&stored).await.unwrap();

    let path = storage.file_path("book.available").unwrap();
    assert_eq!(path, storage.dir().join("book.available.ckpt"));
    assert_eq!(entries(dir.path()), vec!["book.available.ckpt"]);
    // The file holds exactly the encoding of the checkpoint.
    assert_eq!(fs::read(&path).unwrap(), stored.encode().unwrap());
    assert_eq!(
        storage.dir(),
        fs::canonicalize(dir.path()).unwrap().as_path()
    );
}

#[tokio::test]
async fn checkpoints_survive_a_new_storage_on_the_same_directory() {
    let (dir, storage) = storage();
    let stored = checkpoint("persisted", 3);
    storage.store(&stored).await.unwrap();
    drop(storage);

    let reopened = FileCheckpointStorage::new(dir.path()).unwrap();
    assert_eq!(
        reopened.load("persisted").await.unwrap(),
        Some(stored.clone())
    );
    assert_eq!(
        reopened.list().await.unwrap(),
        vec![CheckpointInfo::from(&stored)]
    );
}

#[tokio::test]
async fn new_creates_missing_directories_and_reports_io_errors() {
    let root = tempfile::tempdir().unwrap();
    let nested = root.path().join("a").join("b").join("checkpoints");
    let storage = FileCheckpointStorage::new(&nested).unwrap();
    assert!(nested.is_dir());
    storage.store(&checkpoint("m", 1)).await.unwrap();

    let file = root.path().join("plain-file");
    fs::write(&file, b"not a directory").unwrap();
    match FileCheckpointStorage::new(&file) {
        Err(error @ CheckpointStorageError::Io { model: None, .. }) => {
            let CheckpointStorageError::Io { path, .. } = &error else {
                unreachable!()
            };
            assert_eq!(path, &file);
            assert!(error.to_string().contains("plain-file"), "{error}");
        }
        other => panic!("expected an Io error, got {other:?}"),
    }
}

#[tokio::test]
async fn crash_between_temp_write_and_rename_keeps_the_old_checkpoint() {
    let (dir, storage) = storage();
    let old = checkpoint("crashy", 10);
    let new = checkpoint("crashy", 20);
    storage.store(&old).await.unwrap();

    // A store of `new` crashed after writing its temporary file completely, but before the
    // rename; another one crashed halfway through writing.
    let path = storage.file_path("crashy").unwrap();
    let complete_temp = temp_path(&path, UNIQUE_A);
    let torn_temp = temp_path(&path, UNIQUE_B);
    let new_bytes = new.encode().unwrap();
    fs::write(&complete_temp, &new_bytes).unwrap();
    fs::write(&torn_temp, &new_bytes[..new_bytes.len() / 2]).unwrap();

    // After the restart: load and list see the old checkpoint only.
    let restarted = FileCheckpointStorage::new(dir.path()).unwrap();
    assert_eq!(restarted.load("crashy").await.unwrap(), Some(old.clone()));
    assert_eq!(
        restarted.list().await.unwrap(),
        vec![CheckpointInfo::from(&old)]
    );
    assert_eq!(entries(dir.path()).len(), 3);

    // The next store works and removes the leftovers.
    let newer = checkpoint("crashy", 30);
    restarted.store(&newer).await.unwrap();
    assert_eq!(restarted.load("crashy").await.unwrap(), Some(newer.clone()));
    assert_eq!(entries(dir.path()), vec!["crashy.ckpt"]);
}

#[tokio::test]
async fn crash_before_the_first_rename_leaves_no_checkpoint() {
    let (dir, storage) = storage();
    let path = storage.file_path("first").unwrap();
    fs::write(
        temp_path(&path, UNIQUE_A),
        checkpoint("first", 1).encode().unwrap(),
    )
    .unwrap();
    assert_eq!(storage.load("first").await.unwrap(), None);
    assert_eq!(storage.list().await.unwrap(), vec![]);
    // Deleting the model also clears what the crash left.
    assert!(!storage.delete("first").await.unwrap());
    assert_eq!(entries(dir.path()), Vec::<String>::new());
}

#[tokio::test]
async fn cleanup_touches_only_the_models_own_temporary_files() {
    let (dir, storage) = storage();
    let a_path = storage.file_path("a").unwrap();
    let b_path = storage.file_path("b").unwrap();
    let a_temp = temp_path(&a_path, UNIQUE_A);
    let b_temp = temp_path(&b_path, UNIQUE_A);
    // Not the exact temporary name pattern: left alone.
    let lookalike = temp_path(&a_path, "not-hex");
    let notes = dir.path().join("notes.txt");
    for file in [&a_temp, &b_temp, &lookalike, &notes] {
        fs::write(file, b"leftover").unwrap();
    }
    // A model whose file name starts like a's temporary files.
    let tricky = checkpoint(&format!("a.ckpt.tmp-{UNIQUE_B}"), 5);
    storage.store(&tricky).await.unwrap();

    storage.store(&checkpoint("a", 1)).await.unwrap();
    let names = entries(dir.path());
    assert!(!names.contains(&"a.ckpt.tmp-0190a1b2c3d47e5f8a9b0c1d2e3f4a5b".to_owned()));
    assert!(names.contains(&"b.ckpt.tmp-0190a1b2c3d47e5f8a9b0c1d2e3f4a5b".to_owned()));
    assert!(names.contains(&"a.ckpt.tmp-not-hex".to_owned()));
    assert!(names.contains(&"notes.txt".to_owned()));
    assert_eq!(
        storage.load(&tricky.model).await.unwrap(),
        Some(tricky.clone())
    );

    let listed: Vec<String> = storage
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|info| info.model)
        .collect();
    assert_eq!(listed, vec!["a".to_owned(), tricky.model.clone()]);
}

#[tokio::test]
async fn a_corrupt_file_is_reported_with_its_path_and_never_half_read() {
    let (_dir, storage) = storage();
    let stored = checkpoint("fragile", 9);
    storage.store(&stored).await.unwrap();
    let path = storage.file_path("fragile").unwrap();
    let good = fs::read(&path).unwrap();

    let mut damaged: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("one byte", good[..1].to_vec()),
        ("header only", good[..9].to_vec()),
        ("half", good[..good.len() / 2].to_vec()),
        ("all but the last byte", good[..good.len() - 1].to_vec()),
        ("an extra byte", [good.as_slice(), &[0]].concat()),
        ("garbage", b"this is not a checkpoint at all".to_vec()),
    ];
    for offset in [0, 4, 20, good.len() / 2, good.len() - 1] {
        let mut flipped = good.clone();
        flipped[offset] ^= 0x40;
        damaged.push(("a flipped bit", flipped));
    }

    for (what, bytes) in damaged {
        fs::write(&path, &bytes).unwrap();
        for result in [
            storage.load("fragile").await.map(|_| ()),
            storage.list().await.map(|_| ()),
        ] {
            match result {
                Err(
                    ref error @ CheckpointStorageError::Corrupt {
                        ref model,
                        ref location,
                        ref source,
                    },
                ) => {
                    assert_eq!(model, "fragile", "{what}");
                    assert_eq!(location, &path.display().to_string(), "{what}");
                    assert!(source.corruption().is_some(), "{what}: {source:?}");
                    let message = error.to_string();
                    assert!(message.contains(&path.display().to_string()), "{message}");
                    assert!(message.contains("fragile"), "{message}");
                }
                other => panic!("{what}: expected Corrupt, got {other:?}"),
            }
        }
    }

    // A truncated file fails the checksum or the length check: never a shorter state.
    fs::write(&path, &good[..good.len() - 4]).unwrap();
    let error = storage.load("fragile").await.unwrap_err();
    let CheckpointStorageError::Corrupt { source, .. } = &error else {
        panic!("expected Corrupt, got {error:?}");
    };
    assert!(
        matches!(source.corruption(), Some(Corruption::Truncated { .. })),
        "{source:?}"
    );

    // Storing again replaces the corrupt file.
    let replacement = checkpoint("fragile", 10);
    storage.store(&replacement).await.unwrap();
    assert_eq!(storage.load("fragile").await.unwrap(), Some(replacement));
}

#[tokio::test]
async fn a_file_under_another_models_name_is_a_mismatch() {
    let (_dir, storage) = storage();
    storage.store(&checkpoint("original", 1)).await.unwrap();
    fs::copy(
        storage.file_path("original").unwrap(),
        storage.file_path("copy").unwrap(),
    )
    .unwrap();
    match storage.load("copy").await {
        Err(CheckpointStorageError::ModelMismatch {
            expected, found, ..
        }) => {
            assert_eq!(expected, "copy");
            assert_eq!(found, "original");
        }
        other => panic!("expected ModelMismatch, got {other:?}"),
    }
    assert!(matches!(
        storage.list().await,
        Err(CheckpointStorageError::ModelMismatch { .. })
    ));
}

#[tokio::test]
async fn list_skips_files_that_are_not_checkpoints() {
    let (dir, storage) = storage();
    storage.store(&checkpoint("kept", 1)).await.unwrap();
    fs::write(dir.path().join("README"), b"hello").unwrap();
    fs::write(dir.path().join("kept.ckpt.bak"), b"old").unwrap();
    fs::create_dir(dir.path().join("folder.ckpt")).unwrap();
    let models: Vec<String> = storage
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|info| info.model)
        .collect();
    assert_eq!(models, vec!["kept"]);
}

#[tokio::test]
async fn file_names_cannot_escape_the_directory() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("checkpoints");
    let storage = FileCheckpointStorage::new(&dir).unwrap();
    let attempts = [
        "../escape",
        "..",
        ".",
        "/etc/passwd",
        "a/../../b",
        "..\\windows",
        "C:evil",
        "nested/model",
        "~home",
        "",
    ];
    for name in attempts {
        assert!(
            matches!(
                storage.file_path(name),
                Err(CheckpointStorageError::InvalidModelName { .. })
            ),
            "file_path({name:?})"
        );
        let mut bad = checkpoint("x", 1);
        bad.model = name.to_owned();
        assert!(
            matches!(
                storage.store(&bad).await,
                Err(CheckpointStorageError::InvalidModelName { .. })
            ),
            "store({name:?})"
        );
    }
    assert_eq!(entries(root.path()), vec!["checkpoints"]);
    assert_eq!(entries(&dir), Vec::<String>::new());

    // Every valid name stays a direct child of the directory, however unusual.
    let canonical = fs::canonicalize(&dir).unwrap();
    let long = "x".repeat(MAX_MODEL_NAME_LEN);
    for name in ["...", "-", "Stock", long.as_str(), "a.b.c"] {
        let path = storage.file_path(name).unwrap();
        assert_eq!(path.parent(), Some(canonical.as_path()), "{name}");
        storage.store(&checkpoint(name, 1)).await.unwrap();
    }
    assert_eq!(entries(&dir).len(), 5);
    assert_eq!(entries(root.path()), vec!["checkpoints"]);
}

#[tokio::test]
async fn capitals_and_long_names_get_hashed_file_names() {
    let (dir, storage) = storage();
    let long = format!("{}-end", "n".repeat(230));
    for name in ["Stock", "stock", "STOCK", long.as_str()] {
        storage.store(&checkpoint(name, 1)).await.unwrap();
    }
    let names = entries(dir.path());
    assert_eq!(names.len(), 4);
    assert!(names.contains(&"stock.ckpt".to_owned()));
    // No two files differ only in case, so a case-insensitive file system keeps them apart.
    let mut lower: Vec<String> = names.iter().map(|n| n.to_ascii_lowercase()).collect();
    lower.sort();
    lower.dedup();
    assert_eq!(lower.len(), 4, "{names:?}");
    for name in &names {
        assert!(name.len() + ".tmp-".len() + 32 <= 255, "{name} is too long");
    }
    let hashed = storage.file_path("Stock").unwrap();
    let hashed = hashed.file_name().unwrap().to_str().unwrap();
    assert!(
        hashed.starts_with("Stock~") && hashed.ends_with(".ckpt") && hashed.len() == 27,
        "{hashed}"
    );
    // The hash is stable: a later build finds the same file.
    assert_eq!(
        storage.file_path("Stock").unwrap(),
        storage.file_path("Stock").unwrap()
    );
}

#[tokio::test]
async fn clones_and_storages_on_one_directory_serialise_stores() {
    let (dir, storage) = storage();
    let other = FileCheckpointStorage::new(dir.path()).unwrap();
    let mut tasks = Vec::new();
    for i in 0..16_u64 {
        let storage = if i % 2 == 0 {
            storage.clone()
        } else {
            other.clone()
        };
        tasks.push(tokio::spawn(async move {
            storage.store(&checkpoint("shared", i + 1)).await
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let loaded = storage.load("shared").await.unwrap().unwrap();
    assert_eq!(loaded, checkpoint("shared", loaded.position));
    assert_eq!(entries(dir.path()), vec!["shared.ckpt"]);
}

#[tokio::test]
async fn store_and_delete_report_io_errors_naming_the_model() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("gone");
    let storage = FileCheckpointStorage::new(&dir).unwrap();
    fs::remove_dir(&dir).unwrap();
    match storage.store(&checkpoint("orphan", 1)).await {
        Err(error @ CheckpointStorageError::Io { .. }) => {
            let message = error.to_string();
            assert!(message.contains("orphan"), "{message}");
        }
        other => panic!("expected Io, got {other:?}"),
    }
    assert!(matches!(
        storage.list().await,
        Err(CheckpointStorageError::Io { model: None, .. })
    ));
    assert_eq!(storage.load("orphan").await.unwrap(), None);
}

// ---------------------------------------------------------------------------------------------
// In-memory storage

#[tokio::test]
async fn in_memory_clones_share_checkpoints() {
    let storage = InMemoryCheckpointStorage::new();
    let clone = storage.clone();
    assert!(storage.is_empty());
    clone.store(&checkpoint("shared", 1)).await.unwrap();
    assert_eq!(storage.len(), 1);
    assert_eq!(
        storage.load("shared").await.unwrap(),
        Some(checkpoint("shared", 1))
    );
    assert!(format!("{storage:?}").contains("shared"));
}

#[tokio::test]
async fn in_memory_storage_goes_through_the_codec() {
    let storage = InMemoryCheckpointStorage::new();
    let mut bad = checkpoint("bad", 1);
    bad.state
        .put_bucket("inner", CheckpointBucket::new().with("", 1_u64));
    match storage.store(&bad).await {
        Err(CheckpointStorageError::Encode { model, source }) => {
            assert_eq!(model, "bad");
            assert!(
                matches!(*source, BucketError::InvalidKey { .. }),
                "{source:?}"
            );
        }
        other => panic!("expected Encode, got {other:?}"),
    }
    assert!(storage.is_empty());
}

// ---------------------------------------------------------------------------------------------
// StoredCheckpoint

#[test]
fn stored_checkpoint_round_trips() {
    let stored = checkpoint("round", 99);
    let bytes = stored.encode().unwrap();
    assert_eq!(StoredCheckpoint::decode(&bytes).unwrap(), stored);
    // The outer bucket holds the documented keys.
    let outer = CheckpointBucket::decode(&bytes).unwrap();
    assert_eq!(
        outer.keys().collect::<Vec<_>>(),
        vec![
            "catalog_revision",
            "model",
            "model_version",
            "position",
            "shape",
            "state",
            "timestamp_micros"
        ]
    );
    assert_eq!(outer.str("model").unwrap(), "round");
    assert_eq!(outer.u64("catalog_revision").unwrap(), 2);
    assert_eq!(outer.u64("model_version").unwrap(), 3);
    assert_eq!(outer.u64("shape").unwrap(), 0xabcd);
    assert_eq!(outer.u64("position").unwrap(), 99);
    assert_eq!(
        outer.i64("timestamp_micros").unwrap(),
        stored.timestamp.timestamp_micros()
    );
    assert_eq!(outer.bucket("state").unwrap(), &stored.state);
}

#[test]
fn stored_checkpoint_keeps_microseconds() {
    let mut stored = checkpoint("precise", 1);
    stored.timestamp = Utc
        .with_ymd_and_hms(2024, 2, 29, 23, 59, 59)
        .unwrap()
        .checked_add_signed(chrono::TimeDelta::nanoseconds(123_456_789))
        .unwrap();
    let decoded = StoredCheckpoint::decode(&stored.encode().unwrap()).unwrap();
    assert_eq!(
        decoded.timestamp,
        Utc.with_ymd_and_hms(2024, 2, 29, 23, 59, 59).unwrap()
            + chrono::TimeDelta::microseconds(123_456)
    );

    // `new` takes the current time at microsecond precision, so it round-trips exactly.
    let now = StoredCheckpoint::new(
        "now",
        CheckpointVersion::new(1, 1, 1),
        1,
        CheckpointBucket::new(),
    );
    assert_eq!(now.timestamp.timestamp_subsec_nanos() % 1000, 0);
    assert_eq!(
        StoredCheckpoint::decode(&now.encode().unwrap()).unwrap(),
        now
    );
    assert!((Utc::now() - now.timestamp).num_seconds().abs() < 3600);
}

#[test]
fn stored_checkpoint_decode_names_missing_and_mistyped_keys() {
    let full = CheckpointBucket::decode(&checkpoint("keys", 1).encode().unwrap()).unwrap();
    for key in [
        "model",
        "catalog_revision",
        "model_version",
        "shape",
        "position",
        "timestamp_micros",
        "state",
    ] {
        let mut missing = full.clone();
        missing.remove(key);
        match StoredCheckpoint::decode(&missing.encode().unwrap()) {
            Err(BucketError::MissingKey { key: named }) => assert_eq!(named, key),
            other => panic!("without {key}: expected MissingKey, got {other:?}"),
        }

        let mut mistyped = full.clone();
        mistyped.put_bool(key, true);
        match StoredCheckpoint::decode(&mistyped.encode().unwrap()) {
            Err(BucketError::WrongType {
                key: named, found, ..
            }) => {
                assert_eq!(named, key);
                assert_eq!(found, ValueKind::Bool);
            }
            other => panic!("{key} as bool: expected WrongType, got {other:?}"),
        }
    }

    // Keys a later version might add are ignored.
    let mut extra = full.clone();
    extra.put_str("comment", "added later");
    assert_eq!(
        StoredCheckpoint::decode(&extra.encode().unwrap()).unwrap(),
        checkpoint("keys", 1)
    );
}

#[test]
fn stored_checkpoint_decode_rejects_out_of_range_values() {
    let full = CheckpointBucket::decode(&checkpoint("range", 1).encode().unwrap()).unwrap();
    for key in ["catalog_revision", "model_version"] {
        let mut wide = full.clone();
        wide.put_u64(key, u64::from(u32::MAX) + 1);
        match StoredCheckpoint::decode(&wide.encode().unwrap()) {
            Err(error @ BucketError::Json { .. }) => {
                let message = error.to_string();
                assert!(message.contains(key), "{message}");
                assert!(message.contains("4294967296"), "{message}");
            }
            other => panic!("{key} too large: expected an error, got {other:?}"),
        }
    }
    let mut far = full.clone();
    far.put_i64("timestamp_micros", i64::MAX);
    match StoredCheckpoint::decode(&far.encode().unwrap()) {
        Err(error @ BucketError::Json { .. }) => {
            assert!(error.to_string().contains("timestamp_micros"), "{error}");
        }
        other => panic!("timestamp out of range: expected an error, got {other:?}"),
    }
}

#[test]
fn stored_checkpoint_decode_rejects_corrupt_bytes() {
    let bytes = checkpoint("corrupt", 1).encode().unwrap();
    for cut in [0, 1, 8, bytes.len() / 2, bytes.len() - 1] {
        let error = StoredCheckpoint::decode(&bytes[..cut]).unwrap_err();
        assert!(error.corruption().is_some(), "cut at {cut}: {error:?}");
    }
    let mut flipped = bytes.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 1;
    assert!(matches!(
        StoredCheckpoint::decode(&flipped).unwrap_err().corruption(),
        Some(Corruption::ChecksumMismatch { .. })
    ));
}

#[test]
fn checkpoint_version_displays_its_parts() {
    let version = CheckpointVersion::new(3, 2, 0xdead_beef);
    assert_eq!(
        version.to_string(),
        "revision 3 / version 2 / shape 0x00000000deadbeef"
    );
}

// ---------------------------------------------------------------------------------------------
// Model names

#[test]
fn model_name_rules() {
    for valid in [
        "a",
        "book.available",
        "A-Z_a-z.0-9",
        "...",
        "-",
        &"m".repeat(MAX_MODEL_NAME_LEN),
    ] {
        assert!(validate_model_name(valid).is_ok(), "{valid:?}");
    }
    let reason = |name: &str| match validate_model_name(name) {
        Err(CheckpointStorageError::InvalidModelName {
            name: named,
            reason,
        }) => {
            assert_eq!(named, name);
            reason
        }
        other => panic!("{name:?}: expected InvalidModelName, got {other:?}"),
    };
    assert_eq!(reason(""), ModelNameError::Empty);
    assert_eq!(
        reason(&"m".repeat(MAX_MODEL_NAME_LEN + 1)),
        ModelNameError::TooLong { len: 256 }
    );
    assert_eq!(reason("."), ModelNameError::DotName);
    assert_eq!(reason(".."), ModelNameError::DotName);
    assert_eq!(
        reason("a/b"),
        ModelNameError::InvalidCharacter {
            character: '/',
            index: 1
        }
    );
    assert_eq!(
        reason("has space"),
        ModelNameError::InvalidCharacter {
            character: ' ',
            index: 3
        }
    );
    assert_eq!(
        reason("aü"),
        ModelNameError::InvalidCharacter {
            character: 'ü',
            index: 1
        }
    );

    let message = validate_model_name("a/b").unwrap_err().to_string();
    assert!(message.contains("\"a/b\""), "{message}");
    assert!(message.contains("'/'"), "{message}");
    // Very long names are shortened in messages.
    let long = "x".repeat(10_000);
    let message = validate_model_name(&long).unwrap_err().to_string();
    assert!(message.len() < 400, "{message}");
    assert!(message.contains("10000"), "{message}");
}

#[test]
fn storage_errors_stay_small() {
    // Large error types make every `Result` that carries them large (clippy's
    // `result_large_err`); the decoder's error is boxed.
    assert!(std::mem::size_of::<CheckpointStorageError>() <= 80);
}

// ---------------------------------------------------------------------------------------------
// Deltas in files

fn delta(model: &str, base: u64, position: u64) -> krescent_core::checkpoint::CheckpointDelta {
    krescent_core::checkpoint::CheckpointDelta {
        model: model.to_owned(),
        version: CheckpointVersion::new(2, 3, 0xabcd),
        base_position: base,
        position,
        timestamp: at(1_720_000_000_000_000 + position as i64),
        state: CheckpointBucket::new().with("changed", position),
    }
}

/// A checkpoint at 10 with deltas to 20 and 30; returns the deltas file.
async fn chain(storage: &FileCheckpointStorage) -> PathBuf {
    storage.store(&checkpoint("chain", 10)).await.unwrap();
    storage.store_delta(&delta("chain", 10, 20)).await.unwrap();
    storage.store_delta(&delta("chain", 20, 30)).await.unwrap();
    let mut path = storage.file_path("chain").unwrap().into_os_string();
    path.push(".deltas");
    PathBuf::from(path)
}

fn positions(checkpoint: &StoredCheckpoint) -> Vec<u64> {
    checkpoint.deltas.iter().map(|d| d.position).collect()
}

#[tokio::test]
async fn a_torn_delta_is_ignored_and_cut_off_by_the_next_one() {
    let (dir, storage) = storage();
    let deltas = chain(&storage).await;
    assert_eq!(entries(dir.path()), ["chain.ckpt", "chain.ckpt.deltas"]);
    let whole = fs::read(&deltas).unwrap();
    // A crash in the middle of appending a third delta.
    let mut torn = whole.clone();
    torn.extend_from_slice(&200_u32.to_le_bytes());
    torn.extend_from_slice(&30_u64.to_le_bytes());
    torn.extend_from_slice(&[7; 9]);
    fs::write(&deltas, &torn).unwrap();
    let loaded = storage.load("chain").await.unwrap().unwrap();
    assert_eq!(positions(&loaded), [20, 30]);
    // The next delta replaces the torn bytes.
    storage.store_delta(&delta("chain", 30, 40)).await.unwrap();
    let loaded = storage.load("chain").await.unwrap().unwrap();
    assert_eq!(positions(&loaded), [20, 30, 40]);
    assert_eq!(storage.list().await.unwrap()[0].position, 40);
    // Every prefix of the file is a valid chain: a crash at any byte loses at most the
    // delta being written.
    for cut in 0..whole.len() {
        fs::write(&deltas, &whole[..cut]).unwrap();
        let loaded = storage.load("chain").await.unwrap().unwrap();
        assert!(positions(&loaded).len() < 2, "cut at {cut}");
    }
}

#[tokio::test]
async fn a_damaged_delta_is_reported_as_corrupt() {
    let (_dir, storage) = storage();
    let deltas = chain(&storage).await;
    let mut bytes = fs::read(&deltas).unwrap();
    // A bit flip inside the first delta's encoding (after the file and record headers).
    bytes[16 + 20 + 10] ^= 0x40;
    fs::write(&deltas, &bytes).unwrap();
    match storage.load("chain").await {
        Err(CheckpointStorageError::Corrupt {
            model, location, ..
        }) => {
            assert_eq!(model, "chain");
            assert!(location.ends_with("chain.ckpt.deltas"), "{location}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[tokio::test]
async fn deltas_of_an_older_checkpoint_are_ignored() {
    let (_dir, storage) = storage();
    let deltas = chain(&storage).await;
    let stale = fs::read(&deltas).unwrap();
    // A crash during a full store after the deltas were removed... and a file system that
    // kept them anyway: the new checkpoint is at 50, the deltas extend 10.
    storage.store(&checkpoint("chain", 50)).await.unwrap();
    assert!(!deltas.exists(), "a full store removes the deltas");
    fs::write(&deltas, &stale).unwrap();
    let loaded = storage.load("chain").await.unwrap().unwrap();
    assert_eq!((loaded.position, positions(&loaded)), (50, vec![]));
    // A delta on the new checkpoint starts the file over.
    storage.store_delta(&delta("chain", 50, 60)).await.unwrap();
    assert_eq!(
        positions(&storage.load("chain").await.unwrap().unwrap()),
        [60]
    );
    // One that builds on the stale chain is refused.
    match storage.store_delta(&delta("chain", 30, 70)).await {
        Err(CheckpointStorageError::DeltaBaseMismatch { latest, .. }) => {
            assert_eq!(latest, Some(60))
        }
        other => panic!("expected DeltaBaseMismatch, got {other:?}"),
    }
}

#[tokio::test]
async fn delete_removes_the_deltas_file() {
    let (dir, storage) = storage();
    chain(&storage).await;
    assert!(storage.delete("chain").await.unwrap());
    assert!(entries(dir.path()).is_empty());
}

//! [`FileCheckpointStorage`]: one file per model in a directory, replaced atomically.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use parking_lot::{Mutex, MutexGuard};

use super::{CheckpointInfo, CheckpointStorage, CheckpointStorageError, validate_model_name};
use crate::atomic_file::{self, TEMP_MARKER, sync_dir, temp_path};
use crate::checkpoint::continues_chain;
use crate::checkpoint::stored::{CheckpointDelta, StoredCheckpoint};

/// The extension of checkpoint files.
const EXTENSION: &str = ".ckpt";
/// What follows a checkpoint file's name in the name of its deltas file.
const DELTAS_SUFFIX: &str = ".deltas";
/// The first bytes of a deltas file, followed by the position of the checkpoint it extends.
const DELTAS_MAGIC: &[u8; 8] = b"KRDELTA1";
/// A deltas file's header: magic and checkpoint position.
const DELTAS_HEADER: usize = 16;
/// A delta record's header: length, base position, position.
const RECORD_HEADER: usize = 20;
/// Length of the unique part of a temporary file's name (a UUID in lowercase hex).
const TEMP_UNIQUE_LEN: usize = 32;
/// Model names up to this length (and without capitals) are used as file names as they are.
const PLAIN_NAME_MAX: usize = 200;
/// How much of a longer name is kept in front of its hash.
const HASHED_PREFIX_LEN: usize = 180;

/// Checkpoints in files: one file per model in one directory, each replaced atomically.
///
/// # Layout
///
/// The checkpoint of model `book.available` lives in `<dir>/book.available.ckpt` and holds
/// the [encoding](StoredCheckpoint::encode) of the [`StoredCheckpoint`], whose checksum covers
/// every byte. Two kinds of model names get a file name with a hash instead:
///
/// - names with capital letters, so that models whose names differ only in case (they are
///   distinct models) never share a file on a case-insensitive file system (macOS, Windows):
///   `Stock` is stored in `Stock~<16 hex digits>.ckpt`;
/// - names longer than 200 bytes, so that file names stay within the usual limit of 255
///   bytes: the first 180 bytes, `~` and the hash.
///
/// [`file_path`](Self::file_path) tells the file of a model. Model names never contain `/`,
/// `\` or `~` and are never `.` or `..` ([`validate_model_name`]), so no model's file lies
/// outside the directory or collides with another model's.
///
/// # Writing
///
/// [`store`](CheckpointStorage::store) writes the encoding to a temporary file
/// `<file>.tmp-<unique>` in the same directory, flushes it to disk (`fsync`), renames it over
/// the checkpoint file and flushes the directory (on Unix), so that after a crash the file
/// holds either the old or the new checkpoint, completely. Stores to one model are
/// serialised within the process; after the rename the store removes temporary files of the
/// same model that a crash left behind. [`load`](CheckpointStorage::load) and
/// [`list`](CheckpointStorage::list) ignore temporary files.
///
/// The directory is meant for one process at a time: a second process storing the same
/// model concurrently cannot corrupt a checkpoint, but one may remove the other's temporary
/// file, failing that store with an [`Io`](CheckpointStorageError::Io) error.
///
/// File operations run on tokio's blocking thread pool
/// ([`spawn_blocking`](tokio::task::spawn_blocking)), so the runtime's workers are never
/// blocked; they need a tokio runtime. A store whose future is dropped may still complete in
/// the background, but never leaves a partial checkpoint.
///
/// # Reading
///
/// A checkpoint file that is torn, truncated or damaged fails the checksum or the decoder and
/// is reported as [`Corrupt`](CheckpointStorageError::Corrupt) with its path; nothing of it is
/// returned. A file that names another model than the one it is stored under (renamed by
/// hand) is a [`ModelMismatch`](CheckpointStorageError::ModelMismatch).
///
/// # Deltas
///
/// [Checkpoint deltas](CheckpointStorage::supports_deltas) of a model are appended to
/// `<file>.deltas` (`book.available.ckpt.deltas`) and flushed to disk (`fsync`) one by one.
/// The file starts with the position of the checkpoint it extends; each record holds its
/// length, the positions it goes from and to, and the delta's
/// [encoding](CheckpointDelta::encode) with its own checksum. A record torn by a crash
/// while it was appended is ignored on load and cut off by the next append. A complete
/// record that does not decode is [`Corrupt`](CheckpointStorageError::Corrupt).
/// [`store`](CheckpointStorage::store) removes the deltas file before it renames the new
/// checkpoint into place, and a deltas file that names another checkpoint position than the
/// checkpoint file's (left behind by a crash) is ignored.
///
/// [`list`](CheckpointStorage::list) decodes every `*.ckpt` file in the directory (it reads
/// the whole file: the checksum covers the state too). A corrupt file fails the whole
/// listing with `Corrupt` naming the file, rather than hiding the checkpoint it should hold;
/// other files are ignored.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = std::env::temp_dir().join(format!("krescent-doc-{}", uuid::Uuid::now_v7()));
/// use krescent_core::checkpoint::{
///     CheckpointBucket, CheckpointStorage, CheckpointVersion, FileCheckpointStorage,
///     StoredCheckpoint,
/// };
///
/// let storage = FileCheckpointStorage::new(&dir)?;
/// let checkpoint = StoredCheckpoint::new(
///     "book.available",
///     CheckpointVersion::new(1, 1, 0),
///     42,
///     CheckpointBucket::new().with("copies", 3_u64),
/// );
/// storage.store(&checkpoint).await?;
/// assert!(storage.file_path("book.available")?.ends_with("book.available.ckpt"));
/// assert_eq!(storage.load("book.available").await?, Some(checkpoint));
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct FileCheckpointStorage {
    dir: Arc<Path>,
}

impl FileCheckpointStorage {
    /// A storage keeping its files in `dir`, which is created (with its parents) if it does
    /// not exist. This does blocking file I/O, once.
    ///
    /// # Errors
    ///
    /// [`CheckpointStorageError::Io`] if the directory cannot be created or resolved.
    pub fn new(dir: impl AsRef<Path>) -> Result<Self, CheckpointStorageError> {
        let dir = dir.as_ref();
        let io_error = |source| CheckpointStorageError::Io {
            model: None,
            path: dir.to_path_buf(),
            source,
        };
        fs::create_dir_all(dir).map_err(io_error)?;
        let dir = fs::canonicalize(dir).map_err(io_error)?;
        Ok(FileCheckpointStorage { dir: dir.into() })
    }

    /// The directory holding the checkpoint files (as an absolute, canonical path).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file holding the checkpoint of `model` (whether it exists or not).
    ///
    /// # Errors
    ///
    /// [`CheckpointStorageError::InvalidModelName`] if `model` is not a valid model name.
    pub fn file_path(&self, model: &str) -> Result<PathBuf, CheckpointStorageError> {
        validate_model_name(model)?;
        Ok(self.dir.join(file_name(model)))
    }

    /// Runs `op` on the blocking thread pool.
    async fn blocking<T, F>(&self, model: Option<&str>, op: F) -> Result<T, CheckpointStorageError>
    where
        T: Send + 'static,
        F: FnOnce(&Path) -> Result<T, CheckpointStorageError> + Send + 'static,
    {
        let dir = Arc::clone(&self.dir);
        match tokio::task::spawn_blocking(move || op(&dir)).await {
            Ok(result) => result,
            Err(join) => Err(CheckpointStorageError::Io {
                model: model.map(str::to_owned),
                path: self.dir.to_path_buf(),
                source: io::Error::other(format!("the blocking file operation failed: {join}")),
            }),
        }
    }
}

#[async_trait]
impl CheckpointStorage for FileCheckpointStorage {
    async fn load(&self, model: &str) -> Result<Option<StoredCheckpoint>, CheckpointStorageError> {
        validate_model_name(model)?;
        let owned = model.to_owned();
        self.blocking(Some(model), move |dir| load_blocking(dir, &owned))
            .await
    }

    async fn store(&self, checkpoint: &StoredCheckpoint) -> Result<(), CheckpointStorageError> {
        validate_model_name(&checkpoint.model)?;
        let bytes = checkpoint
            .encode()
            .map_err(|source| CheckpointStorageError::encode(&checkpoint.model, source))?;
        let model = checkpoint.model.clone();
        self.blocking(Some(&checkpoint.model), move |dir| {
            store_blocking(dir, &model, &bytes)
        })
        .await
    }

    async fn delete(&self, model: &str) -> Result<bool, CheckpointStorageError> {
        validate_model_name(model)?;
        let owned = model.to_owned();
        self.blocking(Some(model), move |dir| delete_blocking(dir, &owned))
            .await
    }

    async fn list(&self) -> Result<Vec<CheckpointInfo>, CheckpointStorageError> {
        self.blocking(None, list_blocking).await
    }

    fn supports_deltas(&self) -> bool {
        true
    }

    async fn store_delta(&self, delta: &CheckpointDelta) -> Result<(), CheckpointStorageError> {
        let bytes = crate::__backend::encode_delta(delta)?;
        let (model, base, position) = (delta.model.clone(), delta.base_position, delta.position);
        self.blocking(Some(&delta.model), move |dir| {
            store_delta_blocking(dir, &model, base, position, &bytes)
        })
        .await
    }
}

// ---------------------------------------------------------------------------------------------
// Blocking operations

fn load_blocking(
    dir: &Path,
    model: &str,
) -> Result<Option<StoredCheckpoint>, CheckpointStorageError> {
    let path = dir.join(file_name(model));
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(io_error(model, &path, source)),
    };
    let mut checkpoint = decode_file(model, &path, &bytes)?;
    let deltas = deltas_path(&path);
    let Some(file) = read_deltas(model, &deltas, checkpoint.position)? else {
        return Ok(Some(checkpoint));
    };
    for record in file.records {
        let delta =
            CheckpointDelta::decode(&file.bytes[record.body.clone()]).map_err(|source| {
                CheckpointStorageError::corrupt(model, deltas.display().to_string(), source)
            })?;
        checkpoint
            .push_delta(delta)
            .map_err(|source| CheckpointStorageError::BrokenChain {
                model: model.to_owned(),
                location: deltas.display().to_string(),
                source: Box::new(source),
            })?;
    }
    Ok(Some(checkpoint))
}

/// The deltas file next to the checkpoint file `target`.
fn deltas_path(target: &Path) -> PathBuf {
    let mut name = target.as_os_str().to_owned();
    name.push(DELTAS_SUFFIX);
    PathBuf::from(name)
}

/// A deltas file as read: its bytes, its complete records and where they end.
struct DeltasFile {
    bytes: Vec<u8>,
    records: Vec<Record>,
    /// The length of the header and the complete records; beyond it lies a torn record.
    valid_len: u64,
}

struct Record {
    position: u64,
    body: std::ops::Range<usize>,
}

/// Reads the deltas file at `path` if it extends the checkpoint at `checkpoint_position`;
/// `None` if there is none, if it belongs to an older checkpoint (left by a crash during a
/// store), or if its header is unreadable.
fn read_deltas(
    model: &str,
    path: &Path,
    checkpoint_position: u64,
) -> Result<Option<DeltasFile>, CheckpointStorageError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(io_error(model, path, source)),
    };
    let header = bytes.get(..DELTAS_HEADER).and_then(|h| {
        let (magic, position) = h.split_at(DELTAS_MAGIC.len());
        (magic == DELTAS_MAGIC).then(|| u64::from_le_bytes(position.try_into().unwrap_or([0; 8])))
    });
    match header {
        Some(position) if position == checkpoint_position => {}
        Some(position) => {
            tracing::warn!(
                model,
                path = %path.display(),
                extends = position,
                checkpoint = checkpoint_position,
                "ignoring checkpoint deltas left from an older checkpoint"
            );
            return Ok(None);
        }
        None => {
            // Torn before its header was complete (never, as it is written whole under a
            // temporary name), or not a deltas file: the checkpoint alone is consistent.
            tracing::warn!(model, path = %path.display(), "ignoring an unreadable checkpoint deltas file");
            return Ok(None);
        }
    }
    let mut records = Vec::new();
    let mut at = DELTAS_HEADER;
    while let Some(head) = bytes.get(at..at + RECORD_HEADER) {
        let word = |i: usize| u64::from_le_bytes(head[i..i + 8].try_into().unwrap_or([0; 8]));
        let len = u32::from_le_bytes(head[..4].try_into().unwrap_or([0; 4])) as usize;
        let start = at + RECORD_HEADER;
        let Some(end) = start.checked_add(len).filter(|&end| end <= bytes.len()) else {
            break;
        };
        let (base_position, position) = (word(4), word(12));
        let tip = records
            .last()
            .map_or(checkpoint_position, |r: &Record| r.position);
        if !continues_chain(tip, base_position, position) {
            // Not written by this storage: keep the chain up to here.
            tracing::warn!(model, path = %path.display(), tip, base_position, position, "ignoring checkpoint deltas that do not continue the chain");
            break;
        }
        records.push(Record {
            position,
            body: start..end,
        });
        at = end;
    }
    Ok(Some(DeltasFile {
        bytes,
        records,
        valid_len: at as u64,
    }))
}

fn store_delta_blocking(
    dir: &Path,
    model: &str,
    base_position: u64,
    position: u64,
    bytes: &[u8],
) -> Result<(), CheckpointStorageError> {
    let target = dir.join(file_name(model));
    let lock = ModelLock::acquire(&target);
    let _guard = lock.lock();

    let checkpoint = match fs::read(&target) {
        Ok(bytes) => decode_file(model, &target, &bytes)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(CheckpointStorageError::DeltaBaseMismatch {
                model: model.to_owned(),
                base_position,
                latest: None,
            });
        }
        Err(source) => return Err(io_error(model, &target, source)),
    };
    let path = deltas_path(&target);
    let existing = read_deltas(model, &path, checkpoint.position)?;
    let latest = existing
        .as_ref()
        .and_then(|f| f.records.last())
        .map_or(checkpoint.position, |r| r.position);
    if !continues_chain(latest, base_position, position) {
        return Err(CheckpointStorageError::DeltaBaseMismatch {
            model: model.to_owned(),
            base_position,
            latest: Some(latest),
        });
    }
    let len = u32::try_from(bytes.len()).map_err(|_| {
        CheckpointStorageError::encode(
            model,
            crate::checkpoint::BucketError::TooLarge {
                path: Vec::new(),
                len: bytes.len(),
            },
        )
    })?;
    let mut record = Vec::with_capacity(RECORD_HEADER + bytes.len());
    record.extend_from_slice(&len.to_le_bytes());
    record.extend_from_slice(&base_position.to_le_bytes());
    record.extend_from_slice(&position.to_le_bytes());
    record.extend_from_slice(bytes);
    let appended = match existing {
        Some(file) => append_record(&path, file.valid_len, &record)
            .map_err(|source| io_error(model, &path, source)),
        None => {
            // A new file, or one of an older checkpoint: start it over under a temporary
            // name, so that a crash never leaves a header without the checkpoint's position.
            let mut content = Vec::with_capacity(DELTAS_HEADER + record.len());
            content.extend_from_slice(DELTAS_MAGIC);
            content.extend_from_slice(&checkpoint.position.to_le_bytes());
            content.extend_from_slice(&record);
            // The temporary file is named like the checkpoint's, so the next store's clean-up
            // finds it after a crash.
            atomic_file::replace(&temp_path(&target), &path, &content, || Ok(()))
                .map_err(|(at, source)| io_error(model, &at, source))
        }
    };
    appended?;
    tracing::debug!(model, path = %path.display(), position, "checkpoint delta stored");
    Ok(())
}

/// Cuts a torn record off the deltas file at `valid_len`, appends `record` and flushes it.
fn append_record(path: &Path, valid_len: u64, record: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).open(path)?;
    if file.metadata()?.len() != valid_len {
        file.set_len(valid_len)?;
    }
    use std::io::{Seek, SeekFrom};
    file.seek(SeekFrom::Start(valid_len))?;
    file.write_all(record)?;
    file.sync_data()
}

fn store_blocking(dir: &Path, model: &str, bytes: &[u8]) -> Result<(), CheckpointStorageError> {
    let name = file_name(model);
    let target = dir.join(&name);
    let lock = ModelLock::acquire(&target);
    let _guard = lock.lock();

    // The deltas of the old checkpoint go before the rename: a crash in between leaves the
    // old checkpoint without them, an older but consistent state.
    let deltas = deltas_path(&target);
    atomic_file::replace(&temp_path(&target), &target, bytes, || {
        remove_if_present(&deltas)
            .map(drop)
            .map_err(|source| (deltas.clone(), source))
    })
    .map_err(|(at, source)| io_error(model, &at, source))?;
    tracing::debug!(model, path = %target.display(), bytes = bytes.len(), "checkpoint stored");
    remove_temp_files(dir, &name);
    Ok(())
}

fn delete_blocking(dir: &Path, model: &str) -> Result<bool, CheckpointStorageError> {
    let name = file_name(model);
    let target = dir.join(&name);
    let lock = ModelLock::acquire(&target);
    let _guard = lock.lock();

    let deltas = deltas_path(&target);
    remove_if_present(&deltas).map_err(|source| io_error(model, &deltas, source))?;
    let existed = remove_if_present(&target).map_err(|source| io_error(model, &target, source))?;
    remove_temp_files(dir, &name);
    if existed {
        sync_dir(dir).map_err(|source| io_error(model, dir, source))?;
    }
    Ok(existed)
}

fn list_blocking(dir: &Path) -> Result<Vec<CheckpointInfo>, CheckpointStorageError> {
    let dir_error = |source| CheckpointStorageError::Io {
        model: None,
        path: dir.to_path_buf(),
        source,
    };
    let mut infos = Vec::new();
    for entry in fs::read_dir(dir).map_err(dir_error)? {
        let entry = entry.map_err(dir_error)?;
        let os_name = entry.file_name();
        let Some(name) = os_name.to_str() else {
            continue;
        };
        let Some(stem) = name.strip_suffix(EXTENSION) else {
            continue;
        };
        let path = entry.path();
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            // Deleted since the directory was read.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            // Not a checkpoint file.
            Err(_) if path.is_dir() => continue,
            Err(source) => return Err(io_error(stem, &path, source)),
        };
        let checkpoint = StoredCheckpoint::decode(&bytes).map_err(|source| {
            CheckpointStorageError::corrupt(stem, path.display().to_string(), source)
        })?;
        if validate_model_name(&checkpoint.model).is_err() || file_name(&checkpoint.model) != name {
            return Err(CheckpointStorageError::ModelMismatch {
                expected: stem.to_owned(),
                found: checkpoint.model,
                location: path.display().to_string(),
            });
        }
        let deltas = deltas_path(&path);
        let last = read_deltas(stem, &deltas, checkpoint.position)?
            .and_then(|f| f.records.last().map(|r| f.bytes[r.body.clone()].to_vec()));
        let mut info = CheckpointInfo::from(checkpoint);
        if let Some(bytes) = last {
            let delta = CheckpointDelta::decode(&bytes).map_err(|source| {
                CheckpointStorageError::corrupt(stem, deltas.display().to_string(), source)
            })?;
            info.position = delta.position;
            info.timestamp = delta.timestamp;
        }
        infos.push(info);
    }
    infos.sort_by(|a, b| a.model.cmp(&b.model));
    Ok(infos)
}

/// Decodes a checkpoint file of `model` and checks that it belongs to `model`.
fn decode_file(
    model: &str,
    path: &Path,
    bytes: &[u8],
) -> Result<StoredCheckpoint, CheckpointStorageError> {
    let checkpoint = StoredCheckpoint::decode(bytes).map_err(|source| {
        CheckpointStorageError::corrupt(model, path.display().to_string(), source)
    })?;
    if checkpoint.model != model {
        return Err(CheckpointStorageError::ModelMismatch {
            expected: model.to_owned(),
            found: checkpoint.model,
            location: path.display().to_string(),
        });
    }
    Ok(checkpoint)
}

/// Removes leftover temporary files of the checkpoint file `name`: `<name>.tmp-<32 hex>`.
/// Failures are logged, not reported: the checkpoint itself is in place.
fn remove_temp_files(dir: &Path, name: &str) {
    let prefix = format!("{name}{TEMP_MARKER}");
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            tracing::warn!(
                dir = %dir.display(),
                error = %e,
                "cannot scan for leftover temporary checkpoint files"
            );
            return;
        }
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(unique) = file_name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        if !is_temp_unique(unique) {
            continue;
        }
        let path = entry.path();
        match fs::remove_file(&path) {
            Ok(()) => {
                tracing::info!(
                    path = %path.display(),
                    "removed a leftover temporary checkpoint file"
                );
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(
                    path = %path.display(),
                    error = %e,
                    "cannot remove a leftover temporary checkpoint file"
                );
            }
        }
    }
}

/// Whether `unique` is the unique part of a temporary file's name.
fn is_temp_unique(unique: &str) -> bool {
    unique.len() == TEMP_UNIQUE_LEN
        && unique
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Removes `path`; `false` if it did not exist.
fn remove_if_present(path: &Path) -> io::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

fn io_error(model: &str, path: &Path, source: io::Error) -> CheckpointStorageError {
    CheckpointStorageError::Io {
        model: Some(model.to_owned()),
        path: path.to_path_buf(),
        source,
    }
}

// ---------------------------------------------------------------------------------------------
// File names

/// The file name of a valid model name's checkpoint.
fn file_name(model: &str) -> String {
    if model.len() <= PLAIN_NAME_MAX && !model.bytes().any(|b| b.is_ascii_uppercase()) {
        format!("{model}{EXTENSION}")
    } else {
        // Valid model names are ASCII, so any byte offset is a character boundary.
        let prefix = model
            .get(..HASHED_PREFIX_LEN.min(model.len()))
            .unwrap_or(model);
        format!("{prefix}~{:016x}{EXTENSION}", fnv1a_64(model.as_bytes()))
    }
}

/// The 64-bit FNV-1a hash: stable across builds and platforms, unlike `std`'s hashers.
fn fnv1a_64(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes
        .iter()
        .fold(OFFSET, |hash, &b| (hash ^ u64::from(b)).wrapping_mul(PRIME))
}

// ---------------------------------------------------------------------------------------------
// Per-file locks

/// Serialises stores and deletes of one checkpoint file within the process, across all
/// storages on the same directory. The last user leaving removes the entry (two users leaving
/// at once may both leave it in place; it is then reused by the next user and removed later).
struct ModelLock {
    key: PathBuf,
    lock: Arc<Mutex<()>>,
}

/// The locks in use, by checkpoint file path.
fn locks() -> &'static Mutex<HashMap<PathBuf, Arc<Mutex<()>>>> {
    static LOCKS: OnceLock<Mutex<HashMap<PathBuf, Arc<Mutex<()>>>>> = OnceLock::new();
    LOCKS.get_or_init(Mutex::default)
}

impl ModelLock {
    fn acquire(target: &Path) -> Self {
        let lock = Arc::clone(locks().lock().entry(target.to_path_buf()).or_default());
        ModelLock {
            key: target.to_path_buf(),
            lock,
        }
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        self.lock.lock()
    }
}

impl Drop for ModelLock {
    fn drop(&mut self) {
        let mut map = locks().lock();
        // Held by the map and by this handle only: the last user is leaving.
        if Arc::strong_count(&self.lock) == 2 {
            map.remove(&self.key);
        }
    }
}

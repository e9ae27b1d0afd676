//! Replacing a file atomically, for the file checkpoint and bookmark storages.
//!
//! The new content is written to a temporary file beside the target (`<name>.tmp-<uuid>`),
//! flushed, renamed over the target, and the directory is flushed, so a crash at any moment
//! leaves either the old file or the new one, never a torn one. A temporary file left by a
//! crash is ignored by readers and removed by the next write that cleans up.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// What marks a temporary file: `<name>.tmp-<32 hex digits>`.
pub(crate) const TEMP_MARKER: &str = ".tmp-";

/// A failed step, with the path it was about.
pub(crate) type PathError = (PathBuf, io::Error);

/// A fresh temporary path beside `path`.
pub(crate) fn temp_path(path: &Path) -> PathBuf {
    let mut temp = path.as_os_str().to_owned();
    temp.push(format!("{TEMP_MARKER}{}", uuid::Uuid::now_v7().simple()));
    PathBuf::from(temp)
}

/// The directory holding `path` (`.` for a bare file name).
pub(crate) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Replaces the content of `path` with `bytes` atomically (see the module documentation),
/// through the temporary file `temp` (from [`temp_path`]). `before_rename` runs once the new
/// content is flushed and before it takes the target's place (the checkpoint storage removes
/// the old checkpoint's deltas there). On failure the temporary file is removed and the error
/// names the path of the failing step.
pub(crate) fn replace(
    temp: &Path,
    path: &Path,
    bytes: &[u8],
    before_rename: impl FnOnce() -> Result<(), PathError>,
) -> Result<(), PathError> {
    let written = write_synced(temp, bytes)
        .map_err(|e| (temp.to_path_buf(), e))
        .and_then(|()| before_rename())
        .and_then(|()| fs::rename(temp, path).map_err(|e| (path.to_path_buf(), e)));
    if let Err(e) = written {
        let _ = fs::remove_file(temp);
        return Err(e);
    }
    let dir = parent_dir(path);
    sync_dir(dir).map_err(|e| (dir.to_path_buf(), e))
}

/// Creates `path` (which must not exist), writes `bytes` and flushes them to disk.
pub(crate) fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).create_new(true).open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Flushes the directory entry changes (a rename, a removal) to disk.
#[cfg(unix)]
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Directories cannot be opened for flushing on this platform; renames are flushed with the
/// file system's own journal.
#[cfg(not(unix))]
pub(crate) fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_swaps_the_content_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("target");
        replace(&temp_path(&path), &path, b"one", || Ok(())).expect("first write");
        replace(&temp_path(&path), &path, b"two", || Ok(())).expect("second write");
        assert_eq!(fs::read(&path).expect("read"), b"two");
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("target")]);
    }

    #[test]
    fn a_failing_step_keeps_the_old_content_and_removes_the_temporary_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("target");
        replace(&temp_path(&path), &path, b"old", || Ok(())).expect("first write");
        let failed = replace(&temp_path(&path), &path, b"new", || {
            Err((PathBuf::from("step"), io::Error::other("refused")))
        });
        assert_eq!(failed.expect_err("the step fails").0, PathBuf::from("step"));
        assert_eq!(fs::read(&path).expect("read"), b"old");
        assert_eq!(fs::read_dir(dir.path()).expect("list").count(), 1);
    }

    #[test]
    fn temporary_paths_carry_the_marker() {
        let temp = temp_path(Path::new("dir/name.ckpt"));
        let text = temp.to_string_lossy();
        assert!(text.starts_with("dir/name.ckpt.tmp-"), "{text}");
        assert_eq!(text.len(), "dir/name.ckpt.tmp-".len() + 32);
        assert_eq!(parent_dir(Path::new("bare")), Path::new("."));
    }
}

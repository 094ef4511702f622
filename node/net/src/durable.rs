//! Replacing a file on disk, atomically and durably: the one way Leak's
//! node and client write a file they must not lose or half-write.
//!
//! | step | why |
//! |---|---|
//! | write a new temporary file beside the target (`.NAME.PID.N.tmp`, created fresh with the requested mode) | readers never see half a file; the mode holds from the first byte, whatever an old leftover had |
//! | `fsync` the temporary file | its bytes are on disk before its name is |
//! | rename it over the target | a crash leaves the old version or the new one, never a mix |
//! | `fsync` the directory | the rename itself survives a power loss |
//!
//! On failure the temporary file is removed and the target is untouched.
//! Files that hold secrets (mix keys, a pending leak's reply keys) are
//! written [`Access::Private`]; documents meant to be handed on (a signed
//! policy) [`Access::Shared`].
//!
//! What this cannot do: erase an older version's blocks. Files that must
//! not survive deletion are overwritten in place before they are unlinked
//! (the node's `scrub`).

use std::{
    fs,
    io::{self, Write as _},
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

/// Who may read the file written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Its owner only (mode 0600).
    Private,
    /// Anyone its directory lets in (mode 0644, less the umask).
    Shared,
}

impl Access {
    fn mode(self) -> u32 {
        match self {
            Self::Private => 0o600,
            Self::Shared => 0o644,
        }
    }
}

/// Distinguishes the temporary files of concurrent writes in one process.
static NEXT_TMP: AtomicU64 = AtomicU64::new(0);

/// The directory `path` is in (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

fn tmp_path(path: &Path) -> io::Result<PathBuf> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} has no file name", path.display()),
        )
    })?;
    let mut tmp = std::ffi::OsString::from(".");
    tmp.push(name);
    tmp.push(format!(
        ".{}.{}.tmp",
        std::process::id(),
        NEXT_TMP.fetch_add(1, Ordering::Relaxed)
    ));
    Ok(parent_dir(path).join(tmp))
}

/// Replaces `path` with `bytes` (see the module doc for the steps). When it
/// returns `Ok`, the new contents and the file's name are on disk.
pub fn write(path: &Path, bytes: &[u8], access: Access) -> io::Result<()> {
    let tmp = tmp_path(path)?;
    // A leftover of a crashed process that had this pid: its mode is not
    // ours to keep.
    let _ = fs::remove_file(&tmp);
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(access.mode())
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)?;
        sync_dir(parent_dir(path))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Makes the creation, renaming or removal of entries in `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn replaces_the_file_with_the_mode_asked_for_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write(&path, b"one", Access::Private).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"one");
        assert_eq!(mode(&path), 0o600);
        write(&path, b"two", Access::Private).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let shared = dir.path().join("policy.signed");
        write(&shared, b"signed", Access::Shared).unwrap();
        // 0644 less the umask: never more, and always the owner's.
        assert_eq!(mode(&shared) & !0o644, 0);
        assert_eq!(mode(&shared) & 0o600, 0o600);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn a_failed_write_leaves_the_target_and_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("target");
        write(&path, b"old", Access::Private).unwrap();
        // Renaming a file over a non-empty directory fails.
        let blocked = dir.path().join("blocked");
        fs::create_dir(&blocked).unwrap();
        fs::write(blocked.join("inside"), b"x").unwrap();
        assert!(write(&blocked, b"new", Access::Private).is_err());
        assert_eq!(fs::read(&path).unwrap(), b"old");
        let leftovers = fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".tmp")
            })
            .count();
        assert_eq!(leftovers, 0);
        assert!(write(Path::new("/"), b"x", Access::Private).is_err());
    }
}

//! Safe rewrites of the files that `portcullis clients` and `portcullis keys` edit while a
//! gateway reads them: an exclusive lock so that two commands run at once cannot lose each
//! other's change, and an atomic replace so that the gateway's reload never reads half a
//! file.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Where a rewrite of `path` lands: its target when it is a symlink (a ConfigMap's, another
/// instance's), so the link keeps pointing at the new contents.
fn resolved(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned())
}

fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// An exclusive `flock` on the folder of `path`, held until the guard is dropped.
///
/// The lock is on the folder, not on `path`: [`write_atomically`] replaces `path`'s inode,
/// so a lock on the old inode would not stop a command that opened the new one; and a lock
/// file of its own would be left beside the keys for every reader of the folder to see.
pub(crate) struct Lock {
    _folder: File,
}

/// Takes the [`Lock`] of `path`, waiting for another command's.
pub(crate) fn lock(path: &Path) -> std::io::Result<Lock> {
    let path = resolved(path);
    let folder = File::open(folder_of(&path))?;
    folder.lock()?;
    Ok(Lock { _folder: folder })
}

/// Replaces `path` with `text` so that a reader (the gateway's reload) sees the old file or
/// the new one, never a part: a temporary file in the same folder (a rename does not cross
/// file systems), flushed to disk, renamed over the old one, then the folder flushed so the
/// rename survives a crash. Owner-only (0600) when new: the file holds secret hashes.
/// A symlinked file is written at its target; an existing file keeps its owner, group and
/// mode, so `sudo portcullis keys revoke` leaves a file the gateway's own user can still
/// read (a revocation the gateway cannot read would be silently ignored).
pub(crate) fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let path = resolved(path);
    let dir = folder_of(&path);
    let before = std::fs::metadata(&path).ok();
    let mut temp = tempfile::Builder::new()
        .prefix(".rewrite-")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
        let mode = before.as_ref().map_or(0o600, |m| m.mode() & 0o7777);
        temp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))?;
        if let Some(before) = &before {
            std::os::unix::fs::fchown(temp.as_file(), Some(before.uid()), Some(before.gid()))?;
        }
    }
    temp.write_all(text.as_bytes())?;
    temp.as_file().sync_all()?;
    temp.persist(&path).map_err(|e| e.error)?;
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    Ok(())
}

//! Giving a verified copy its final name without ever replacing a file.

use std::fs;
use std::io;
use std::path::Path;

use super::write_error;
use crate::destination::DestinationError;

/// What [`publish`] did with the temporary copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Published {
    /// Renamed: the temporary name is gone.
    Moved,
    /// Linked: the temporary name is still there.
    Linked,
    /// The name was taken meanwhile: nothing changed.
    Taken,
}

/// Gives `temp` its final name without ever replacing an existing file.
pub(super) fn publish(temp: &Path, target: &Path) -> Result<Published, DestinationError> {
    // One atomic step where the file system offers it (Linux: ext4, XFS,
    // Btrfs, tmpfs…); a link, then the temporary name's removal, elsewhere.
    #[cfg(target_os = "linux")]
    match rustix::fs::renameat_with(rustix::fs::CWD, temp, rustix::fs::CWD, target, rustix::fs::RenameFlags::NOREPLACE)
    {
        Ok(()) => return Ok(Published::Moved),
        Err(rustix::io::Errno::EXIST) => return Ok(Published::Taken),
        // Not offered here (an old kernel, a network or FUSE file system),
        // or refused: the link below says why if it fails too.
        Err(_) => {}
    }
    match fs::hard_link(temp, target) {
        Ok(()) => Ok(Published::Linked),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(Published::Taken),
        // Some file systems (FAT, some network mounts) have no hard links:
        // fall back to check-then-rename, which only races with other writers.
        Err(e) if matches!(e.raw_os_error(), Some(code) if is_no_link_support(code)) => {
            if target.exists() {
                return Ok(Published::Taken);
            }
            fs::rename(temp, target).map_err(|e| write_error(target, &e))?;
            Ok(Published::Moved)
        }
        Err(e) => Err(write_error(target, &e)),
    }
}

fn is_no_link_support(code: i32) -> bool {
    // EPERM, EXDEV, EOPNOTSUPP / ENOTSUP, ENOSYS on Linux and macOS.
    const EPERM: i32 = 1;
    const EXDEV: i32 = 18;
    #[cfg(target_os = "linux")]
    const CODES: [i32; 5] = [EPERM, EXDEV, 95, 38, 524];
    #[cfg(not(target_os = "linux"))]
    const CODES: [i32; 5] = [EPERM, EXDEV, 45, 78, 102];
    CODES.contains(&code)
}

//! photosync's per-user runtime folder: where the control socket and the
//! sockets of helpers it runs (rclone) live, private to its user.

use std::io;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// Environment variable that overrides the runtime directory.
pub const RUNTIME_DIR_ENV: &str = "PHOTOSYNC_RUNTIME_DIR";

/// The runtime folder: `$PHOTOSYNC_RUNTIME_DIR`, else the config's
/// `runtime_dir`, else `$XDG_RUNTIME_DIR/photosync`, else
/// `/run/user/UID/photosync` when that exists (cron jobs lack
/// `XDG_RUNTIME_DIR`), else `<state_dir>/run` (macOS: Application Support).
pub fn runtime_dir(configured: Option<&Path>, state_dir: &Path) -> PathBuf {
    if let Some(dir) = std::env::var_os(RUNTIME_DIR_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = configured {
        return dir.to_owned();
    }
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("photosync");
    }
    let run_user = PathBuf::from(format!("/run/user/{}", rustix::process::getuid().as_raw()));
    if run_user.is_dir() {
        return run_user.join("photosync");
    }
    state_dir.join("run")
}

/// Why a folder could not be made private.
#[derive(Debug, thiserror::Error)]
pub enum PrivateDirError {
    /// It belongs to another user.
    #[error("{0} belongs to another user")]
    NotOurs(PathBuf),
    /// It could not be created or its mode set.
    #[error("cannot create {path}: {source}")]
    Io {
        /// The folder.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// Makes `dir` private: created 0700 if missing, ours, and closed to
/// everyone else.
pub fn make_private(dir: &Path) -> Result<(), PrivateDirError> {
    let io_error = |source| PrivateDirError::Io { path: dir.to_owned(), source };
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io_error)?;
    let meta = std::fs::metadata(dir).map_err(io_error)?;
    if meta.uid() != rustix::process::getuid().as_raw() {
        return Err(PrivateDirError::NotOurs(dir.to_owned()));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io_error)?;
    }
    Ok(())
}

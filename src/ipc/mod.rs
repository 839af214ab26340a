//! The control socket between the daemon and the `photosync` CLI.
//!
//! A Unix socket in the per-user runtime directory ([`socket_path`]), mode
//! 0600 in a 0700 directory; the daemon also checks each peer's uid.
//! Messages are length-framed JSON ([`framing`]) with a size cap per
//! direction. The first exchange is a hello carrying [`protocol::VERSION`];
//! every failure travels as a typed `{code, message}` error. [`wire`] holds
//! the answers' payloads, owned by the protocol. [`server`] is the
//! daemon side, [`client`] the CLI side; neither knows what the requests do.

pub mod client;
pub mod framing;
pub mod protocol;
pub mod server;
pub mod wire;

use std::path::{Path, PathBuf};

/// Environment variable that overrides the runtime directory.
pub const RUNTIME_DIR_ENV: &str = "PHOTOSYNC_RUNTIME_DIR";

/// Where the control socket lives: `$PHOTOSYNC_RUNTIME_DIR`, else the
/// config's `runtime_dir`, else `$XDG_RUNTIME_DIR/photosync`, else
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

/// The socket inside a runtime directory.
pub fn socket_path(runtime_dir: &Path) -> PathBuf {
    runtime_dir.join("photosync.sock")
}

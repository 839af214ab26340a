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

pub use crate::runtime::{RUNTIME_DIR_ENV, runtime_dir};

/// The socket inside a runtime directory.
pub fn socket_path(runtime_dir: &Path) -> PathBuf {
    runtime_dir.join("photosync.sock")
}

//! The library's top-level error: what can stop a whole run, as opposed to
//! one job. Per-job failures never become an `Error`; they are recorded on
//! the job ([`crate::destination::DestinationError`] says whether a retry can
//! help) and the run goes on.

use crate::catalog::CatalogError;
use crate::config::ConfigError;

/// Something that stops a run before or while it works.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is missing or invalid (exit code 2).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The catalog cannot be opened, is locked by another process, or failed.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The control socket could not be set up (e.g. a daemon already runs).
    #[error("{0}")]
    Socket(String),
    /// The async runtime could not start.
    #[error("cannot start the runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

impl Error {
    /// Whether running again later may succeed without anyone changing anything
    /// (another process holds the catalog, or it was busy).
    pub fn retryable(&self) -> bool {
        matches!(self, Self::Catalog(CatalogError::Locked { .. } | CatalogError::Outdated { .. } | CatalogError::Busy))
    }
}

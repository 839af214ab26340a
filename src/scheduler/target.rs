//! The configured destinations, opened, and where each job's file goes in
//! one: the destination's layout rendered for the file.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::catalog::{Catalog, CatalogError, PendingJob};
use crate::config::{Config, SourceConfig};
use crate::destination::{self, Destination};
use crate::layout::{Layout, Subject};
use crate::model::{DestinationId, RemoteKey};

/// A configured destination, ready to upload.
#[derive(Clone)]
pub struct Target {
    /// Its catalog id.
    pub id: DestinationId,
    /// Its label.
    pub name: String,
    /// The implementation.
    pub destination: Arc<dyn Destination>,
    /// Where each photo goes in it.
    pub layout: Layout,
    /// The configured sources by folder: their names for a layout's
    /// `{source}`, their rules for describing files.
    pub sources: Arc<HashMap<PathBuf, SourceConfig>>,
}

/// Records the configured destinations in the catalog and opens each one
/// (helpers they run listen in photosync's runtime folder).
pub fn open_targets(catalog: &mut Catalog, config: &Config) -> Result<Vec<Target>, CatalogError> {
    let destinations = &config.destinations;
    let runtime_dir = crate::runtime::runtime_dir(config.runtime_dir.as_deref(), &config.state_dir);
    let ids = catalog.sync_destinations(destinations)?;
    let sessions: Arc<dyn destination::SessionStore> = Arc::new(catalog.session_log()?);
    let sources: Arc<HashMap<PathBuf, SourceConfig>> =
        Arc::new(config.sources.iter().map(|s| (s.path.clone(), s.clone())).collect());
    Ok(destinations
        .iter()
        .zip(ids)
        .map(|(d, id)| Target {
            id,
            name: d.name.clone(),
            destination: d.kind.open(&sessions, &runtime_dir),
            layout: d.layout.clone(),
            sources: Arc::clone(&sources),
        })
        .collect())
}

impl Target {
    /// The key `pending` has in this destination's layout.
    pub fn key_for(&self, pending: &PendingJob) -> RemoteKey {
        let source = self.source_name(pending);
        self.layout.render(&Subject { rel_path: &pending.rel_path, source: &source, info: pending.info.as_ref() })
    }

    /// The name of `pending`'s source (for a source no longer configured,
    /// its folder's name).
    pub fn source_name<'p>(&'p self, pending: &'p PendingJob) -> std::borrow::Cow<'p, str> {
        match self.sources.get(&pending.source) {
            Some(source) => std::borrow::Cow::Borrowed(source.name.as_str()),
            None => pending.source.file_name().map(|n| n.to_string_lossy()).unwrap_or_default(),
        }
    }
}

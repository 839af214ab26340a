//! `type = "folder"`: its keys.

use std::path::PathBuf;

use serde::Deserialize;

use crate::config::{ConfigError, Section};

/// The keys of a folder destination, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    /// The target folder.
    path: Option<String>,
}

/// A folder destination's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderConfig {
    /// Absolute path of the folder.
    pub path: PathBuf,
}

impl FolderConfig {
    /// Validates the keys of a `type = "folder"` destination.
    pub fn parse(table: toml::Table, section: &Section<'_>) -> Result<FolderConfig, ConfigError> {
        let raw: Raw = section.fields(table)?;
        let path = raw.path.ok_or_else(|| section.error("path", "required for type = \"folder\""))?;
        Ok(FolderConfig { path: section.path("path", &path)? })
    }
}

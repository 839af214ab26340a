//! `[[source]]`: a watched folder and its include/exclude rules.

use std::path::{Path, PathBuf};

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::Deserialize;

use super::{ConfigError, Section};

/// `[[source]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    /// The folder.
    pub path: String,
    /// What a layout's `{source}` renders (default: the folder's name).
    pub name: Option<String>,
    /// Globs (relative to the folder) a file must match; empty: everything.
    #[serde(default)]
    pub include: Vec<String>,
    /// Globs (relative to the folder) that exclude a file.
    #[serde(default)]
    pub exclude: Vec<String>,
}

/// A watched folder.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// Absolute path.
    pub path: PathBuf,
    /// Its name, as a layout's `{source}` renders it.
    pub name: String,
    /// Whether a scan also computes each file's SHA-1 (set when a
    /// destination knows content by it: Immich), in the same read.
    pub sha1: bool,
    include: Option<GlobSet>,
    exclude: GlobSet,
}

impl SourceConfig {
    /// A source with no include or exclude rules.
    pub fn new(path: PathBuf) -> Self {
        Self { name: default_name(&path), path, sha1: false, include: None, exclude: GlobSet::empty() }
    }

    /// Whether the include/exclude rules admit this path (relative to the source).
    pub fn admits(&self, relative: &Path) -> bool {
        self.include.as_ref().is_none_or(|set| set.is_match(relative)) && !self.exclude.is_match(relative)
    }
}

impl SourceConfig {
    /// Validates one `[[source]]`.
    pub fn parse(raw: &RawSource, section: &Section<'_>) -> Result<SourceConfig, ConfigError> {
        let path = section.path("path", &raw.path)?;
        let include = if raw.include.is_empty() { None } else { Some(globs(section, "include", &raw.include)?) };
        let exclude = globs(section, "exclude", &raw.exclude)?;
        let name = match raw.name.as_deref().map(str::trim) {
            None => default_name(&path),
            Some(name) if name.is_empty() || name.chars().any(char::is_control) => {
                return Err(section.error("name", "must be a non-empty printable label"));
            }
            Some(name) => name.to_owned(),
        };
        Ok(SourceConfig { path, name, sha1: false, include, exclude })
    }
}

/// A source's name when it has none: its folder's name.
fn default_name(path: &Path) -> String {
    path.file_name().map_or_else(|| "source".to_owned(), |n| n.to_string_lossy().into_owned())
}

fn globs(section: &Section<'_>, name: &str, patterns: &[String]) -> Result<GlobSet, ConfigError> {
    let mut builder = GlobSetBuilder::new();
    for pattern in patterns {
        let glob = Glob::new(pattern).map_err(|e| section.error(name, &format!("bad glob `{pattern}`: {e}")))?;
        builder.add(glob);
    }
    builder.build().map_err(|e| section.error(name, &e.to_string()))
}

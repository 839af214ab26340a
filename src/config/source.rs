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
    include: Option<GlobSet>,
    exclude: GlobSet,
}

impl SourceConfig {
    /// A source with no include or exclude rules.
    pub fn new(path: PathBuf) -> Self {
        Self { path, include: None, exclude: GlobSet::empty() }
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
        Ok(SourceConfig { path, include, exclude })
    }
}

fn globs(section: &Section<'_>, name: &str, patterns: &[String]) -> Result<GlobSet, ConfigError> {
    let mut builder = GlobSetBuilder::new();
    for pattern in patterns {
        let glob = Glob::new(pattern).map_err(|e| section.error(name, &format!("bad glob `{pattern}`: {e}")))?;
        builder.add(glob);
    }
    builder.build().map_err(|e| section.error(name, &e.to_string()))
}

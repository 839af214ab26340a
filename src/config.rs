//! The configuration file: TOML in, validated [`Config`] out.
//!
//! Two stages: [`RawConfig`] mirrors the file exactly (`deny_unknown_fields`,
//! so a typo is an error naming the key), then [`Config::from_raw`] resolves
//! paths (`~`, relative to the file), parses durations and globs, and checks
//! cross-field rules. Every error names the key it is about. This module reads
//! the file and the home directory; it touches nothing else.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::Deserialize;

use crate::policy::Backoff;

/// A configuration problem. Maps to exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No file at the path.
    #[error("no config file at {path}; create one with `photosync init --source DIR --destination DIR`")]
    Missing {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML is malformed or has unknown keys or wrong types.
    #[error("invalid config file {path}:\n{message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message, which names the key and line.
        message: String,
    },
    /// A value is well-formed TOML but not acceptable.
    #[error("invalid config file {path}: `{key}`: {message}")]
    Value {
        /// The file.
        path: PathBuf,
        /// The key, e.g. `destination[0].path`.
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// No default location could be determined (no home directory).
    #[error("cannot find the home directory to place {what}; set {hint}")]
    NoHome {
        /// What needed a default location.
        what: &'static str,
        /// How to set it explicitly.
        hint: &'static str,
    },
}

/// The file as written. Field names are the TOML keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Where the catalog lives.
    pub state_dir: Option<String>,
    /// Upload slots.
    pub max_concurrent: Option<u32>,
    /// Where the daemon's control socket lives.
    pub runtime_dir: Option<String>,
    /// How long a file must be unchanged before the daemon reads it.
    pub settle: Option<String>,
    /// Time between the daemon's full reconcile scans.
    pub rescan_interval: Option<String>,
    /// Retry tuning.
    pub retry: Option<RawRetry>,
    /// Watched folders.
    #[serde(default)]
    pub source: Vec<RawSource>,
    /// Upload targets.
    #[serde(default)]
    pub destination: Vec<RawDestination>,
}

/// `[retry]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    /// Backoff ceiling after the first failure.
    pub base: Option<String>,
    /// Largest backoff ceiling.
    pub cap: Option<String>,
    /// Attempts before a job fails for good (0: never).
    pub max_attempts: Option<u32>,
    /// Attempts a one-shot run makes before leaving a job in `retry_wait`.
    pub attempts_per_run: Option<u32>,
    /// Delay between attempts within one run (doubles each time).
    pub run_delay: Option<String>,
}

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

/// `[[destination]]`: one flat table for every type, so that each key's
/// error can name it; [`Config::from_raw`] checks which keys a type takes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDestination {
    /// A label unique among destinations.
    pub name: String,
    /// `folder` (more types come later).
    #[serde(rename = "type")]
    pub kind: String,
    /// For `folder`: the target folder.
    pub path: Option<String>,
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from.
    pub file: PathBuf,
    /// Directory of the catalog and lock file.
    pub state_dir: PathBuf,
    /// Upload slots.
    pub max_concurrent: usize,
    /// Configured directory of the control socket, if any (see
    /// [`crate::ipc::runtime_dir`] for the default).
    pub runtime_dir: Option<PathBuf>,
    /// How long a file must be unchanged before the daemon reads it.
    pub settle: Duration,
    /// Time between the daemon's full reconcile scans.
    pub rescan_interval: Duration,
    /// Retry tuning.
    pub retry: RetryConfig,
    /// Watched folders.
    pub sources: Vec<SourceConfig>,
    /// Upload targets.
    pub destinations: Vec<DestinationConfig>,
}

/// Retry tuning, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryConfig {
    /// Backoff between runs (or in the daemon).
    pub backoff: Backoff,
    /// Failures after which a job fails for good (0: never).
    pub max_attempts: u32,
    /// Attempts within one `photosync backup` run.
    pub attempts_per_run: u32,
    /// Backoff between attempts within one run.
    pub in_run: Backoff,
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

/// An upload target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationConfig {
    /// Its label.
    pub name: String,
    /// Its type and type-specific settings.
    pub kind: DestinationKind,
}

/// Type-specific destination settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DestinationKind {
    /// A local or mounted folder.
    Folder {
        /// Absolute path of the folder.
        path: PathBuf,
    },
}

impl DestinationKind {
    /// The `type` spelling.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Folder { .. } => "folder",
        }
    }

    /// What identifies the physical target (a folder path, later a bucket
    /// URL): a destination whose location changes is a new destination.
    pub fn location(&self) -> String {
        match self {
            Self::Folder { path } => path.display().to_string(),
        }
    }
}

/// Default upload slots.
pub const DEFAULT_MAX_CONCURRENT: usize = 4;

/// Default time a file must be unchanged before the daemon reads it.
pub const DEFAULT_SETTLE: Duration = Duration::from_secs(5);

/// Default time between the daemon's full reconcile scans.
pub const DEFAULT_RESCAN: Duration = Duration::from_hours(3);

impl Config {
    /// The config file to use when none is named: `$XDG_CONFIG_HOME/photosync/config.toml`
    /// (`~/Library/Application Support/photosync/config.toml` on macOS).
    pub fn default_path() -> Result<PathBuf, ConfigError> {
        project_dirs()
            .map(|d| d.config_dir().join("config.toml"))
            .ok_or(ConfigError::NoHome { what: "the config file", hint: "--config or PHOTOSYNC_CONFIG" })
    }

    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                ConfigError::Missing { path: path.to_owned() }
            } else {
                ConfigError::Unreadable { path: path.to_owned(), source }
            }
        })?;
        Self::parse(&text, path)
    }

    /// Validates `text` as if read from `path` (relative paths in it resolve
    /// against `path`'s directory).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| ConfigError::Syntax { path: path.to_owned(), message: e.to_string() })?;
        Self::from_raw(raw, path)
    }

    /// The second stage: resolve and check.
    pub fn from_raw(raw: RawConfig, path: &Path) -> Result<Config, ConfigError> {
        let v = Validator { file: path, base: path.parent().unwrap_or(Path::new(".")) };

        let state_dir = match raw.state_dir {
            Some(dir) => v.path("state_dir", &dir)?,
            None => project_dirs()
                .map(|d| d.data_dir().to_owned())
                .ok_or(ConfigError::NoHome { what: "the catalog", hint: "state_dir in the config" })?,
        };

        let max_concurrent = match raw.max_concurrent {
            None => DEFAULT_MAX_CONCURRENT,
            Some(0) => return Err(v.error("max_concurrent", "must be at least 1")),
            Some(n) if n > 64 => return Err(v.error("max_concurrent", "must be at most 64")),
            Some(n) => n as usize,
        };

        let runtime_dir = raw.runtime_dir.as_deref().map(|dir| v.path("runtime_dir", dir)).transpose()?;
        let settle = match raw.settle.as_deref() {
            Some("0s" | "0") => Duration::ZERO,
            other => v.duration("settle", other, DEFAULT_SETTLE)?,
        };
        let rescan_interval = v.duration("rescan_interval", raw.rescan_interval.as_deref(), DEFAULT_RESCAN)?;

        let retry = v.retry(&raw.retry.unwrap_or(RawRetry {
            base: None,
            cap: None,
            max_attempts: None,
            attempts_per_run: None,
            run_delay: None,
        }))?;

        if raw.source.is_empty() {
            return Err(v.error("source", "at least one [[source]] is required"));
        }
        let sources =
            raw.source.into_iter().enumerate().map(|(i, s)| v.source(i, &s)).collect::<Result<Vec<_>, _>>()?;

        if raw.destination.is_empty() {
            return Err(v.error("destination", "at least one [[destination]] is required"));
        }
        let mut names = HashSet::new();
        let mut destinations = Vec::new();
        for (i, d) in raw.destination.into_iter().enumerate() {
            let dest = v.destination(i, d)?;
            if !names.insert(dest.name.clone()) {
                return Err(v.error(&format!("destination[{i}].name"), &format!("`{}` is used twice", dest.name)));
            }
            destinations.push(dest);
        }

        for (d, dest) in destinations.iter().enumerate() {
            let DestinationKind::Folder { path: dest_path } = &dest.kind;
            if let Some(s) =
                sources.iter().position(|s| dest_path.starts_with(&s.path) || s.path.starts_with(dest_path))
            {
                return Err(v.error(
                    &format!("destination[{d}].path"),
                    &format!(
                        "{} overlaps source[{s}].path {}; photosync would back up its own copies",
                        dest_path.display(),
                        sources[s].path.display()
                    ),
                ));
            }
        }

        Ok(Config {
            file: path.to_owned(),
            state_dir,
            max_concurrent,
            runtime_dir,
            settle,
            rescan_interval,
            retry,
            sources,
            destinations,
        })
    }

    /// Where the catalog database lives.
    pub fn catalog_path(&self) -> PathBuf {
        self.state_dir.join("catalog.sqlite")
    }
}

fn project_dirs() -> Option<directories::ProjectDirs> {
    directories::ProjectDirs::from("", "", "photosync")
}

/// Expands a leading `~` to the home directory.
pub fn expand_home(path: &str) -> Option<PathBuf> {
    if path == "~" {
        return directories::BaseDirs::new().map(|d| d.home_dir().to_owned());
    }
    match path.strip_prefix("~/") {
        Some(rest) => directories::BaseDirs::new().map(|d| d.home_dir().join(rest)),
        None => Some(PathBuf::from(path)),
    }
}

struct Validator<'a> {
    file: &'a Path,
    base: &'a Path,
}

impl Validator<'_> {
    fn error(&self, key: &str, message: &str) -> ConfigError {
        ConfigError::Value { path: self.file.to_owned(), key: key.to_owned(), message: message.to_owned() }
    }

    fn path(&self, key: &str, value: &str) -> Result<PathBuf, ConfigError> {
        if value.is_empty() {
            return Err(self.error(key, "must not be empty"));
        }
        let expanded = expand_home(value).ok_or_else(|| self.error(key, "cannot expand `~`: no home directory"))?;
        Ok(if expanded.is_absolute() { expanded } else { self.base.join(expanded) })
    }

    fn duration(&self, key: &str, value: Option<&str>, default: Duration) -> Result<Duration, ConfigError> {
        let Some(text) = value else { return Ok(default) };
        let parsed = humantime::parse_duration(text)
            .map_err(|e| self.error(key, &format!("`{text}` is not a duration like \"30s\" or \"5h\" ({e})")))?;
        if parsed.is_zero() {
            return Err(self.error(key, "must be longer than zero"));
        }
        Ok(parsed)
    }

    fn retry(&self, raw: &RawRetry) -> Result<RetryConfig, ConfigError> {
        let base = self.duration("retry.base", raw.base.as_deref(), Duration::from_secs(30))?;
        let cap = self.duration("retry.cap", raw.cap.as_deref(), Duration::from_hours(5))?;
        if cap < base {
            return Err(self.error("retry.cap", "must not be shorter than retry.base"));
        }
        let run_delay = self.duration("retry.run_delay", raw.run_delay.as_deref(), Duration::from_secs(2))?;
        let attempts_per_run = raw.attempts_per_run.unwrap_or(3);
        if attempts_per_run == 0 {
            return Err(self.error("retry.attempts_per_run", "must be at least 1"));
        }
        Ok(RetryConfig {
            backoff: Backoff { base, cap },
            max_attempts: raw.max_attempts.unwrap_or(30),
            attempts_per_run,
            in_run: Backoff { base: run_delay, cap: run_delay.saturating_mul(8) },
        })
    }

    fn source(&self, i: usize, raw: &RawSource) -> Result<SourceConfig, ConfigError> {
        let path = self.path(&format!("source[{i}].path"), &raw.path)?;
        let include = if raw.include.is_empty() {
            None
        } else {
            Some(self.globs(&format!("source[{i}].include"), &raw.include)?)
        };
        let exclude = self.globs(&format!("source[{i}].exclude"), &raw.exclude)?;
        Ok(SourceConfig { path, include, exclude })
    }

    fn globs(&self, key: &str, patterns: &[String]) -> Result<GlobSet, ConfigError> {
        let mut builder = GlobSetBuilder::new();
        for pattern in patterns {
            let glob = Glob::new(pattern).map_err(|e| self.error(key, &format!("bad glob `{pattern}`: {e}")))?;
            builder.add(glob);
        }
        builder.build().map_err(|e| self.error(key, &e.to_string()))
    }

    fn destination(&self, i: usize, raw: RawDestination) -> Result<DestinationConfig, ConfigError> {
        let name = raw.name.trim().to_owned();
        if name.is_empty() || name.chars().any(char::is_control) {
            return Err(self.error(&format!("destination[{i}].name"), "must be a non-empty printable label"));
        }
        let kind = match raw.kind.as_str() {
            "folder" => {
                let key = format!("destination[{i}].path");
                let path = raw.path.ok_or_else(|| self.error(&key, "required for type = \"folder\""))?;
                DestinationKind::Folder { path: self.path(&key, &path)? }
            }
            other => {
                return Err(self.error(
                    &format!("destination[{i}].type"),
                    &format!("unknown type `{other}`; supported: \"folder\""),
                ));
            }
        };
        Ok(DestinationConfig { name, kind })
    }
}

/// The commented starter file `photosync init` writes.
pub fn starter(source: &Path, destination: &Path) -> String {
    format!(
        r#"# photosync configuration. Reference: README.md, "Configuration".

# Where the catalog (the upload queue and receipts) lives.
# Default: the per-user data directory.
# state_dir = "~/.local/share/photosync"

# How many uploads run at once.
# max_concurrent = {DEFAULT_MAX_CONCURRENT}

# The daemon reads a file once it has been unchanged this long (so a photo
# still being copied in is never uploaded half-written), and rescans every
# source this often in case the file watcher missed something.
# settle = "5s"
# rescan_interval = "3h"

# [retry]
# base = "30s"            # backoff after the first failure, doubling each time
# cap = "5h"              # longest backoff
# max_attempts = 30       # then the job fails for good (0: never give up)
# attempts_per_run = 3    # tries within one `photosync backup` run
# run_delay = "2s"        # pause between those tries (doubling)

[[source]]
path = {source}
# include = ["**/*.jpg"]  # globs relative to path; default: every photo and video
# exclude = ["**/Screenshots/**"]

[[destination]]
name = "backup"
type = "folder"
path = {destination}
"#,
        source = toml_string(source),
        destination = toml_string(destination),
    )
}

fn toml_string(path: &Path) -> String {
    toml::Value::String(path.display().to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/photosync/config.toml"))
    }

    const MINIMAL: &str = r#"
        state_dir = "state"
        [[source]]
        path = "/photos"
        [[destination]]
        name = "nas"
        type = "folder"
        path = "/mnt/nas"
    "#;

    #[test]
    fn minimal_file_gets_defaults_and_resolves_relative_paths() {
        let config = parse(MINIMAL).expect("valid");
        assert_eq!(config.state_dir, Path::new("/etc/photosync/state"));
        assert_eq!(config.max_concurrent, DEFAULT_MAX_CONCURRENT);
        assert_eq!(config.retry.backoff.base, Duration::from_secs(30));
        assert_eq!(config.retry.backoff.cap, Duration::from_hours(5));
        assert_eq!(
            config.destinations,
            vec![DestinationConfig { name: "nas".into(), kind: DestinationKind::Folder { path: "/mnt/nas".into() } }]
        );
    }

    #[test]
    fn errors_name_the_key() {
        let table = [
            (format!("{MINIMAL}\nbogus = 1"), "bogus"),
            (MINIMAL.replace("state_dir = \"state\"", "max_concurrent = \"four\""), "max_concurrent"),
            (MINIMAL.replace("state_dir = \"state\"", "max_concurrent = 0"), "max_concurrent"),
            (format!("{MINIMAL}\n[retry]\nbase = \"soon\""), "retry.base"),
            (MINIMAL.replace("state_dir = \"state\"", "settle = \"a bit\""), "settle"),
            (MINIMAL.replace("type = \"folder\"", "type = \"ftp\""), "destination[0].type"),
            (MINIMAL.replace("path = \"/mnt/nas\"", ""), "destination[0].path"),
            (MINIMAL.replace("path = \"/photos\"", "path = \"/p\"\ninclude = [\"[\"]"), "source[0].include"),
            (MINIMAL.replace("[[source]]\n        path = \"/photos\"", ""), "source"),
            (
                format!("{MINIMAL}\n[[destination]]\nname = \"nas\"\ntype = \"folder\"\npath = \"/x\""),
                "destination[1].name",
            ),
            ("state_dir = [".to_owned(), "state_dir"),
        ];
        for (text, key) in table {
            let message = parse(&text).expect_err(&text).to_string();
            assert!(message.contains(key), "{message:?} should name {key}");
        }
    }

    #[test]
    fn starter_config_is_valid() {
        let text = starter(Path::new("/home/me/Pictures"), Path::new("/mnt/nas/\"quoted\""));
        let config = parse(&text.replace("# state_dir", "state_dir")).expect("starter parses");
        assert_eq!(config.sources[0].path, Path::new("/home/me/Pictures"));
        assert_eq!(config.destinations[0].kind.location(), "/mnt/nas/\"quoted\"");
    }

    #[test]
    fn include_and_exclude_filter_relative_paths() {
        let text = MINIMAL
            .replace("path = \"/photos\"", "path = \"/photos\"\ninclude = [\"**/*.jpg\"]\nexclude = [\"tmp/**\"]");
        let source = &parse(&text).expect("valid").sources[0];
        assert!(source.admits(Path::new("2024/a.jpg")));
        assert!(!source.admits(Path::new("2024/a.png")));
        assert!(!source.admits(Path::new("tmp/a.jpg")));
    }
}

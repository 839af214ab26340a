//! The configuration file: TOML in, validated [`Config`] out.
//!
//! Two stages: [`RawConfig`] mirrors the file (`deny_unknown_fields`, so a
//! typo is an error naming the key), then [`Config::from_raw`] resolves
//! paths (`~`, relative to the file), parses durations and globs, and checks
//! cross-field rules, each part with a [`Section`] that names the key of
//! every error. `[retry]`, `[policy]` and `[[source]]` are validated here;
//! a `[[destination]]` keeps `name` and `type` and hands the rest of its
//! table to the destination named by `type`
//! ([`crate::destination::registry`]), which owns its keys. This module reads
//! the file and the home directory; it touches nothing else.

mod policy;
mod retry;
mod section;
mod source;
mod starter;

pub use policy::{PolicyConfig, RawPolicy};
pub use retry::{RawRetry, RetryConfig};
pub use section::{Section, expand_home};
pub use source::{RawSource, SourceConfig};
pub use starter::{Power, Starter, starter};

pub use crate::destination::registry::DestinationKind;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::layout::Layout;

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
    /// Which photos of a backlog go first: `newest` or `oldest`.
    pub order: Option<String>,
    /// Retry tuning.
    pub retry: Option<RawRetry>,
    /// When uploads may run.
    pub policy: Option<RawPolicy>,
    /// Watched folders.
    #[serde(default)]
    pub source: Vec<RawSource>,
    /// Upload targets: `name`, `type`, and the keys of that type.
    #[serde(default)]
    pub destination: Vec<toml::Table>,
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
    /// Which photos of a backlog go first.
    pub order: Order,
    /// Retry tuning.
    pub retry: RetryConfig,
    /// When uploads may run, and how conditions are read.
    pub policy: PolicyConfig,
    /// Watched folders.
    pub sources: Vec<SourceConfig>,
    /// Upload targets.
    pub destinations: Vec<DestinationConfig>,
}

/// An upload target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationConfig {
    /// Its label.
    pub name: String,
    /// Its type and that type's settings.
    pub kind: DestinationKind,
    /// Where each photo goes in it (`layout`; default `{dir}/{filename}`).
    pub layout: Layout,
}

/// Which photos of a backlog are uploaded first. Photos the daemon sees
/// appear go before either.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// The most recently taken first: those with no other copy yet.
    #[default]
    Newest,
    /// The longest ago first, so the backup fills in year by year.
    Oldest,
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
        let top = Section::top(path);
        let state_dir = match raw.state_dir {
            Some(dir) => top.path("state_dir", &dir)?,
            None => project_dirs()
                .map(|d| d.data_dir().to_owned())
                .ok_or(ConfigError::NoHome { what: "the catalog", hint: "state_dir in the config" })?,
        };

        let max_concurrent = match raw.max_concurrent {
            None => DEFAULT_MAX_CONCURRENT,
            Some(0) => return Err(top.error("max_concurrent", "must be at least 1")),
            Some(n) if n > 64 => return Err(top.error("max_concurrent", "must be at most 64")),
            Some(n) => n as usize,
        };

        let runtime_dir = raw.runtime_dir.as_deref().map(|dir| top.path("runtime_dir", dir)).transpose()?;
        let settle = match raw.settle.as_deref() {
            Some("0s" | "0") => Duration::ZERO,
            other => top.duration("settle", other, DEFAULT_SETTLE)?,
        };
        let rescan_interval = top.duration("rescan_interval", raw.rescan_interval.as_deref(), DEFAULT_RESCAN)?;
        let order = match raw.order.as_deref() {
            None | Some("newest") => Order::Newest,
            Some("oldest") => Order::Oldest,
            Some(other) => return Err(top.error("order", &format!("`{other}`: must be \"newest\" or \"oldest\""))),
        };
        let retry = RetryConfig::parse(&raw.retry.unwrap_or_default(), &top.nested("retry"))?;
        let policy = PolicyConfig::parse(raw.policy.unwrap_or_default(), &top.nested("policy"))?;

        if raw.source.is_empty() {
            return Err(top.error("source", "at least one [[source]] is required"));
        }
        let sources = raw
            .source
            .iter()
            .enumerate()
            .map(|(i, s)| SourceConfig::parse(s, &top.nested(&format!("source[{i}]"))))
            .collect::<Result<Vec<_>, _>>()?;

        if raw.destination.is_empty() {
            return Err(top.error("destination", "at least one [[destination]] is required"));
        }
        let mut names = HashSet::new();
        let mut destinations = Vec::new();
        for (i, table) in raw.destination.into_iter().enumerate() {
            let section = top.nested(&format!("destination[{i}]"));
            let destination = destination(table, &section)?;
            if !names.insert(destination.name.clone()) {
                return Err(section.error("name", &format!("`{}` is used twice", destination.name)));
            }
            destinations.push(destination);
        }

        for (d, destination) in destinations.iter().enumerate() {
            let Some(folder) = destination.kind.local_path() else { continue };
            if let Some(s) = sources.iter().position(|s| folder.starts_with(&s.path) || s.path.starts_with(folder)) {
                return Err(top.error(
                    &format!("destination[{d}].path"),
                    &format!(
                        "{} overlaps source[{s}].path {}; photosync would back up its own copies",
                        folder.display(),
                        sources[s].path.display()
                    ),
                ));
            }
        }

        // The catalog changes all the time: inside a source, every write would
        // wake the watcher; inside a folder destination, it would sit among
        // the copies.
        let folders = sources.iter().enumerate().map(|(i, s)| (format!("source[{i}].path"), s.path.as_path()));
        let folders = folders.chain(destinations.iter().enumerate().filter_map(|(d, destination)| {
            destination.kind.local_path().map(|folder| (format!("destination[{d}].path"), folder))
        }));
        for (key, folder) in folders {
            if state_dir.starts_with(folder) {
                return Err(top.error(
                    "state_dir",
                    &format!(
                        "{} is inside {key} {}; keep the catalog in a folder of its own",
                        state_dir.display(),
                        folder.display()
                    ),
                ));
            }
        }

        // Immich knows content by its SHA-1: scans compute it in the same read.
        let sha1 = destinations.iter().any(|d| matches!(d.kind, DestinationKind::Immich(_)));
        let mut sources = sources;
        for source in &mut sources {
            source.sha1 = sha1;
        }
        Ok(Config {
            file: path.to_owned(),
            state_dir,
            max_concurrent,
            runtime_dir,
            settle,
            rescan_interval,
            order,
            retry,
            policy,
            sources,
            destinations,
        })
    }

    /// Where the catalog database lives.
    pub fn catalog_path(&self) -> PathBuf {
        self.state_dir.join("catalog.sqlite")
    }
}

/// One `[[destination]]`: its `name` and `type` here, the rest of its keys
/// by the destination of that type.
fn destination(mut table: toml::Table, section: &Section<'_>) -> Result<DestinationConfig, ConfigError> {
    let mut text = |key: &str| match table.remove(key) {
        Some(toml::Value::String(value)) => Ok(value),
        Some(_) => Err(section.error(key, "must be a string")),
        None => Err(section.error(key, "is required")),
    };
    let name = text("name")?.trim().to_owned();
    let kind = text("type")?;
    if name.is_empty() || name.chars().any(char::is_control) {
        return Err(section.error("name", "must be a non-empty printable label"));
    }
    let layout = match table.remove("layout") {
        None => Layout::default(),
        Some(toml::Value::String(text)) => Layout::parse(&text).map_err(|e| section.error("layout", &e.to_string()))?,
        Some(_) => return Err(section.error("layout", "must be a string")),
    };
    let kind = crate::destination::registry::parse(&kind, &name, table, section)?;
    Ok(DestinationConfig { name, kind, layout })
}

fn project_dirs() -> Option<directories::ProjectDirs> {
    directories::ProjectDirs::from("", "", "photosync")
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
        assert_eq!(config.destinations.len(), 1);
        assert_eq!(config.destinations[0].name, "nas");
        assert_eq!(config.destinations[0].kind.local_path(), Some(Path::new("/mnt/nas")));
    }

    #[test]
    fn errors_name_the_key() {
        let table = [
            (format!("{MINIMAL}\nbogus = 1"), "bogus"),
            (MINIMAL.replace("state_dir = \"state\"", "max_concurrent = \"four\""), "max_concurrent"),
            (MINIMAL.replace("state_dir = \"state\"", "max_concurrent = 0"), "max_concurrent"),
            (format!("{MINIMAL}\n[retry]\nbase = \"soon\""), "retry.base"),
            (MINIMAL.replace("state_dir = \"state\"", "settle = \"a bit\""), "settle"),
            (MINIMAL.replace("state_dir = \"state\"", "order = \"random\""), "order"),
            (format!("{MINIMAL}\n[policy]\non_battery = \"maybe\""), "policy.on_battery"),
            (format!("{MINIMAL}\n[policy]\nwindows = [\"late\"]"), "policy.windows"),
            (format!("{MINIMAL}\n[policy]\nmin_battery_percent = 120"), "policy.min_battery_percent"),
            (format!("{MINIMAL}\n[policy]\nbandwidth = \"fast\""), "policy.bandwidth"),
            (MINIMAL.replace("type = \"folder\"", "type = \"ftp\""), "destination[0].type"),
            (MINIMAL.replace("path = \"/mnt/nas\"", ""), "destination[0].path"),
            (MINIMAL.replace("path = \"/mnt/nas\"", "path = \"/mnt/nas\"\nbucket = \"b\""), "`bucket`"),
            (MINIMAL.replace("name = \"nas\"\n", ""), "destination[0].name"),
            (MINIMAL.replace("path = \"/mnt/nas\"", "path = \"/n\"\nlayout = \"{yeer}/{filename}\""), "`{yeer}`"),
            (MINIMAL.replace("path = \"/mnt/nas\"", "path = \"/n\"\nlayout = \"{year}\""), "destination[0].layout"),
            (MINIMAL.replace("path = \"/photos\"", "path = \"/p\"\nname = \" \""), "source[0].name"),
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
    fn a_catalog_inside_a_source_or_a_folder_destination_is_refused() {
        for (state_dir, key) in [("/photos/.photosync", "source[0].path"), ("/mnt/nas", "destination[0].path")] {
            let text = MINIMAL.replace("state_dir = \"state\"", &format!("state_dir = \"{state_dir}\""));
            let message = parse(&text).expect_err(&text).to_string();
            assert!(message.contains("state_dir") && message.contains(key), "{message}");
        }
        let beside = MINIMAL.replace("state_dir = \"state\"", "state_dir = \"/photos-state\"");
        parse(&beside).expect("a folder whose name begins like a source's is not inside it");
    }

    #[test]
    fn starter_config_is_valid() {
        use crate::policy::Rule;
        let found = [Some(true), None, Some(false)].map(Power::Found);
        for power in found.into_iter().chain([Power::Asked(Rule::Hold), Power::Asked(Rule::Allow)]) {
            let choice = Starter {
                source: Path::new("/home/me/Pictures"),
                destination: Path::new("/mnt/nas/\"quoted\""),
                state_dir: None,
                power,
            };
            let text = starter(&choice);
            let config = parse(&text.replace("# state_dir", "state_dir")).expect("starter parses");
            assert_eq!(config.sources[0].path, Path::new("/home/me/Pictures"));
            assert_eq!(config.destinations[0].kind.location(), "/mnt/nas/\"quoted\"");
            assert_eq!(config.policy.rules.on_battery, power.rule(), "{text}");
            let expected = if power.rule() == Rule::Allow { "allow" } else { "hold" };
            assert!(text.lines().any(|l| l == format!("on_battery = \"{expected}\"")), "{text}");
        }
        let state = Path::new("/home/me/try/state \"x\"");
        let choice = Starter {
            source: Path::new("/p"),
            destination: Path::new("/d"),
            state_dir: Some(state),
            power: Power::Found(None),
        };
        let text = starter(&choice);
        assert_eq!(parse(&text).expect("starter parses").state_dir, state, "{text}");
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

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
    /// When uploads may run.
    pub policy: Option<RawPolicy>,
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

/// `[policy]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    /// `hold` or `allow`.
    pub on_battery: Option<String>,
    /// Hold below this charge even when battery use is allowed.
    pub min_battery_percent: Option<u8>,
    /// `hold` or `allow`.
    pub metered: Option<String>,
    /// Interfaces to treat as metered (without `NetworkManager`).
    #[serde(default)]
    pub metered_interfaces: Vec<String>,
    /// Interfaces to treat as unmetered.
    #[serde(default)]
    pub unmetered_interfaces: Vec<String>,
    /// Allowed time-of-day windows, `HH:MM-HH:MM`.
    #[serde(default)]
    pub windows: Vec<String>,
    /// How long conditions must be good before work starts again.
    pub hysteresis: Option<String>,
    /// How often the daemon reads power and network.
    pub poll_interval: Option<String>,
    /// Where the power-supply tree is (default `/sys/class/power_supply`).
    pub power_supply_dir: Option<String>,
    /// Upload rate limit, e.g. `"2MiB"` or `"08:00,2MiB 18:00,off"`.
    pub bandwidth: Option<String>,
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
    /// `folder` or `s3`.
    #[serde(rename = "type")]
    pub kind: String,
    /// For `folder`: the target folder.
    pub path: Option<String>,
    /// For `s3`: the service URL, e.g. `https://s3.eu-west-1.amazonaws.com`.
    pub endpoint: Option<String>,
    /// For `s3`: the signing region (default `us-east-1`).
    pub region: Option<String>,
    /// For `s3`: the bucket.
    pub bucket: Option<String>,
    /// For `s3`: a key prefix, e.g. `photos/`.
    pub prefix: Option<String>,
    /// For `s3`: path-style addressing (`endpoint/bucket/key`) instead of virtual-hosted.
    pub path_style: Option<bool>,
    /// For `s3`: name of the environment variable holding the access key id.
    pub access_key_id_env: Option<String>,
    /// For `s3`: name of the environment variable holding the secret key.
    pub secret_access_key_env: Option<String>,
    /// For `s3`: an AWS-style credentials file.
    pub credentials_file: Option<String>,
    /// For `s3`: the profile in that file (default `default`).
    pub profile: Option<String>,
    /// For `s3`: files at least this large use multipart upload (default 64 MiB).
    pub multipart_threshold: Option<String>,
    /// For `s3`: multipart part size (default 16 MiB, 5 MiB to 5 GiB).
    pub part_size: Option<String>,
    /// For `s3`: how long the server may stay silent before a request is
    /// given up and retried (default 2 min).
    pub timeout: Option<String>,
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
    /// When uploads may run, and how conditions are read.
    pub policy: PolicyConfig,
    /// Watched folders.
    pub sources: Vec<SourceConfig>,
    /// Upload targets.
    pub destinations: Vec<DestinationConfig>,
}

/// `[policy]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyConfig {
    /// The decision's settings.
    pub rules: crate::policy::Policy,
    /// How the daemon reads conditions.
    pub probe: crate::conditions::Probe,
    /// How often the daemon reads them.
    pub poll_interval: Duration,
    /// Upload rate limits by time of day (all uploads together).
    pub bandwidth: crate::policy::Timetable,
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
    /// S3-compatible object storage.
    S3(Box<S3Config>),
}

/// An S3-compatible bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Config {
    /// Service URL (`http` allowed for local servers).
    pub endpoint: url::Url,
    /// Signing region.
    pub region: String,
    /// Bucket name.
    pub bucket: String,
    /// Key prefix, empty or ending in `/`.
    pub prefix: String,
    /// Path-style addressing.
    pub path_style: bool,
    /// Where the access keys come from.
    pub credentials: S3CredentialSource,
    /// Files at least this large use multipart upload.
    pub multipart_threshold: u64,
    /// Multipart part size.
    pub part_size: u64,
    /// How long the server may stay silent (connecting, or mid-request).
    pub timeout: Duration,
}

/// Where an S3 destination's access keys come from. The keys themselves
/// are read when the destination is used (and again for every upload, so
/// rotated session credentials are picked up): a command that never talks
/// to the bucket (`status`, `jobs`) needs none of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum S3CredentialSource {
    /// The named environment variables.
    Vars {
        /// Variable holding the access key id.
        access_key_id: String,
        /// Variable holding the secret access key.
        secret_access_key: String,
    },
    /// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (+ `AWS_SESSION_TOKEN`)
    /// when `file` is not set and they are, else a credentials file in the
    /// AWS profile format.
    Standard {
        /// The credentials file (default `AWS_SHARED_CREDENTIALS_FILE` or
        /// `~/.aws/credentials`).
        file: Option<PathBuf>,
        /// The profile (default `AWS_PROFILE` or `default`).
        profile: Option<String>,
    },
}

/// Smallest part S3 accepts (except the last).
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;

/// The largest S3 multipart part.
pub const MAX_PART_SIZE: u64 = 5 << 30;

impl DestinationKind {
    /// The `type` spelling.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Folder { .. } => "folder",
            Self::S3(_) => "s3",
        }
    }

    /// What identifies the physical target (a folder path, a bucket URL and
    /// prefix): a destination whose location changes is a new destination.
    pub fn location(&self) -> String {
        match self {
            Self::Folder { path } => path.display().to_string(),
            Self::S3(s3) => format!("{}#{}/{}", s3.endpoint, s3.bucket, s3.prefix),
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

        let policy = v.policy(raw.policy.unwrap_or_default())?;

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
            let dest = v.destination(i, &d)?;
            if !names.insert(dest.name.clone()) {
                return Err(v.error(&format!("destination[{i}].name"), &format!("`{}` is used twice", dest.name)));
            }
            destinations.push(dest);
        }

        for (d, dest) in destinations.iter().enumerate() {
            let DestinationKind::Folder { path: dest_path } = &dest.kind else { continue };
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

    fn rule(&self, key: &str, value: Option<&str>) -> Result<crate::policy::Rule, ConfigError> {
        match value {
            None | Some("hold") => Ok(crate::policy::Rule::Hold),
            Some("allow") => Ok(crate::policy::Rule::Allow),
            Some(other) => Err(self.error(key, &format!("`{other}` must be \"hold\" or \"allow\""))),
        }
    }

    #[allow(clippy::needless_pass_by_value)] // consumes the raw table
    fn policy(&self, raw: RawPolicy) -> Result<PolicyConfig, ConfigError> {
        let min_battery_percent = raw.min_battery_percent.unwrap_or(0);
        if min_battery_percent > 100 {
            return Err(self.error("policy.min_battery_percent", "must be between 0 and 100"));
        }
        let windows = raw
            .windows
            .iter()
            .map(|w| {
                crate::policy::Window::parse(w)
                    .ok_or_else(|| self.error("policy.windows", &format!("`{w}` is not a window like \"22:00-07:00\"")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let hysteresis = match raw.hysteresis.as_deref() {
            Some("0s" | "0") => Duration::ZERO,
            other => self.duration("policy.hysteresis", other, Duration::from_secs(30))?,
        };
        let rules = crate::policy::Policy {
            on_battery: self.rule("policy.on_battery", raw.on_battery.as_deref())?,
            min_battery_percent,
            metered: self.rule("policy.metered", raw.metered.as_deref())?,
            windows,
            hysteresis,
        };
        let power_supply_dir = match raw.power_supply_dir.as_deref() {
            Some(dir) => self.path("policy.power_supply_dir", dir)?,
            None => PathBuf::from("/sys/class/power_supply"),
        };
        let bandwidth = match raw.bandwidth.as_deref() {
            None => crate::policy::Timetable::unlimited(),
            Some(text) => crate::policy::Timetable::parse(text).ok_or_else(|| {
                self.error(
                    "policy.bandwidth",
                    &format!("`{text}` is not a rate like \"2MiB\" or \"08:00,2MiB 18:00,off\""),
                )
            })?,
        };
        Ok(PolicyConfig {
            bandwidth,
            rules,
            probe: crate::conditions::Probe {
                power_supply_dir,
                route_file: PathBuf::from("/proc/net/route"),
                metered_interfaces: raw.metered_interfaces,
                unmetered_interfaces: raw.unmetered_interfaces,
            },
            poll_interval: self.duration(
                "policy.poll_interval",
                raw.poll_interval.as_deref(),
                Duration::from_secs(30),
            )?,
        })
    }

    fn size(&self, key: &str, value: Option<&str>, default: u64) -> Result<u64, ConfigError> {
        let Some(text) = value else { return Ok(default) };
        crate::policy::parse_size(text)
            .ok_or_else(|| self.error(key, &format!("`{text}` is not a size like \"16MiB\" or \"8MB\"")))
    }

    fn s3(&self, i: usize, raw: &RawDestination) -> Result<S3Config, ConfigError> {
        let key = |name: &str| format!("destination[{i}].{name}");
        let required = |value: &Option<String>, name: &str| {
            value.clone().filter(|v| !v.is_empty()).ok_or_else(|| self.error(&key(name), "required for type = \"s3\""))
        };
        let endpoint_text = required(&raw.endpoint, "endpoint")?;
        let endpoint = url::Url::parse(&endpoint_text)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
            .ok_or_else(|| self.error(&key("endpoint"), &format!("`{endpoint_text}` is not an http(s) URL")))?;
        let bucket = required(&raw.bucket, "bucket")?;
        let mut prefix = raw.prefix.clone().unwrap_or_default().trim_start_matches('/').to_owned();
        if prefix.split('/').any(|c| c == ".." || c == ".") || prefix.chars().any(char::is_control) {
            return Err(self.error(&key("prefix"), "must not contain `.`/`..` segments or control characters"));
        }
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        let multipart_threshold =
            self.size(&key("multipart_threshold"), raw.multipart_threshold.as_deref(), 64 << 20)?;
        let part_size = self.size(&key("part_size"), raw.part_size.as_deref(), 16 << 20)?;
        if part_size < MIN_PART_SIZE {
            return Err(self.error(&key("part_size"), "must be at least 5 MiB (the S3 minimum)"));
        }
        if part_size > MAX_PART_SIZE {
            return Err(self.error(&key("part_size"), "must be at most 5 GiB (the S3 maximum)"));
        }
        Ok(S3Config {
            endpoint,
            region: raw.region.clone().unwrap_or_else(|| "us-east-1".into()),
            bucket,
            prefix,
            path_style: raw.path_style.unwrap_or(false),
            credentials: self.s3_credentials(i, raw)?,
            multipart_threshold: multipart_threshold.max(MIN_PART_SIZE),
            part_size,
            timeout: self.duration(&key("timeout"), raw.timeout.as_deref(), Duration::from_mins(2))?,
        })
    }

    /// Where the keys come from: the named environment variables (both or
    /// neither), else the standard AWS variables or a credentials file.
    fn s3_credentials(&self, i: usize, raw: &RawDestination) -> Result<S3CredentialSource, ConfigError> {
        let key = |name: &str| format!("destination[{i}].{name}");
        match (&raw.access_key_id_env, &raw.secret_access_key_env) {
            (Some(id), Some(secret)) if !id.is_empty() && !secret.is_empty() => {
                Ok(S3CredentialSource::Vars { access_key_id: id.clone(), secret_access_key: secret.clone() })
            }
            (None, None) => Ok(S3CredentialSource::Standard {
                file: raw.credentials_file.as_deref().map(|f| self.path(&key("credentials_file"), f)).transpose()?,
                profile: raw.profile.clone(),
            }),
            _ => Err(self.error(
                &key("access_key_id_env"),
                "access_key_id_env and secret_access_key_env go together, each naming a variable",
            )),
        }
    }

    fn destination(&self, i: usize, raw: &RawDestination) -> Result<DestinationConfig, ConfigError> {
        let name = raw.name.trim().to_owned();
        if name.is_empty() || name.chars().any(char::is_control) {
            return Err(self.error(&format!("destination[{i}].name"), "must be a non-empty printable label"));
        }
        let kind = match raw.kind.as_str() {
            "folder" => {
                let key = format!("destination[{i}].path");
                let path = raw.path.clone().ok_or_else(|| self.error(&key, "required for type = \"folder\""))?;
                DestinationKind::Folder { path: self.path(&key, &path)? }
            }
            "s3" => DestinationKind::S3(Box::new(self.s3(i, raw)?)),
            other => {
                return Err(self.error(
                    &format!("destination[{i}].type"),
                    &format!("unknown type `{other}`; supported: \"folder\", \"s3\""),
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
            (format!("{MINIMAL}\n[policy]\non_battery = \"maybe\""), "policy.on_battery"),
            (format!("{MINIMAL}\n[policy]\nwindows = [\"late\"]"), "policy.windows"),
            (format!("{MINIMAL}\n[policy]\nmin_battery_percent = 120"), "policy.min_battery_percent"),
            (format!("{MINIMAL}\n[policy]\nbandwidth = \"fast\""), "policy.bandwidth"),
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

    /// Regression: the keys were read while the config loaded, so `status`
    /// and `jobs` failed for a user without the service's secrets.
    #[test]
    fn s3_destination_loads_without_its_keys() {
        let text = "[[source]]\npath = \"/p\"\n[[destination]]\nname = \"b2\"\ntype = \"s3\"\n\
             endpoint = \"http://127.0.0.1:9000\"\nbucket = \"photos\"\nprefix = \"me\"\npath_style = true\n\
             access_key_id_env = \"PHOTOSYNC_TEST_UNSET_ID\"\nsecret_access_key_env = \"PHOTOSYNC_TEST_UNSET_SECRET\"\n\
             part_size = \"8MiB\"\n";
        let config = parse(text).expect("valid without the variables set");
        let DestinationKind::S3(s3) = &config.destinations[0].kind else { panic!("not s3") };
        assert_eq!(s3.prefix, "me/");
        assert_eq!(s3.part_size, 8 << 20);
        assert_eq!(
            s3.credentials,
            S3CredentialSource::Vars {
                access_key_id: "PHOTOSYNC_TEST_UNSET_ID".into(),
                secret_access_key: "PHOTOSYNC_TEST_UNSET_SECRET".into()
            }
        );
        let profile = text.replace("access_key_id_env = \"PHOTOSYNC_TEST_UNSET_ID\"\nsecret_access_key_env = \"PHOTOSYNC_TEST_UNSET_SECRET\"\n", "credentials_file = \"creds\"\nprofile = \"nas\"\n");
        let DestinationKind::S3(s3) = &parse(&profile).expect("valid").destinations[0].kind else { panic!("not s3") };
        let expected = S3CredentialSource::Standard {
            file: Some(PathBuf::from("/etc/photosync/creds")),
            profile: Some("nas".into()),
        };
        assert_eq!(s3.credentials, expected, "relative to the config file");
        for (bad, key) in [
            (text.replace("part_size = \"8MiB\"", "part_size = \"1MiB\""), "part_size"),
            (text.replace("part_size = \"8MiB\"", "part_size = \"6GiB\""), "part_size"),
            (text.replace("http://127.0.0.1:9000", "ftp://x"), "endpoint"),
            (text.replace("bucket = \"photos\"\n", ""), "bucket"),
            (text.replace("prefix = \"me\"", "prefix = \"../up\""), "prefix"),
            (text.replace("secret_access_key_env = \"PHOTOSYNC_TEST_UNSET_SECRET\"\n", ""), "access_key_id_env"),
        ] {
            let message = parse(&bad).expect_err(key).to_string();
            assert!(message.contains(key), "{message}");
        }
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

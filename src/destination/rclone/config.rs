//! `type = "rclone"`: its keys, validated.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::config::{ConfigError, Section};

/// The keys of an rclone destination, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    /// `REMOTE:PATH` of the user's rclone config.
    remote: Option<String>,
    /// The rclone program (default: `rclone` on `PATH`).
    rclone: Option<String>,
    /// The rclone config file (default: rclone's own).
    rclone_config: Option<String>,
    /// How long rclone may stay silent before a call is given up.
    timeout: Option<String>,
}

/// An rclone remote as a destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RcloneConfig {
    /// `REMOTE:PATH`, as rclone takes it (`gphotos:album/Backup`).
    pub remote: String,
    /// The rclone program: a path, or a name looked up on `PATH`.
    pub program: PathBuf,
    /// The rclone config file, when not rclone's default.
    pub config_file: Option<PathBuf>,
    /// How long one call to rclone may go unanswered (not a transfer: a
    /// transfer is watched while it runs).
    pub timeout: Duration,
}

impl RcloneConfig {
    /// Validates the keys of a `type = "rclone"` destination.
    pub fn parse(table: toml::Table, section: &Section<'_>) -> Result<RcloneConfig, ConfigError> {
        let raw: Raw = section.fields(table)?;
        let remote = raw.remote.ok_or_else(|| section.error("remote", "required for type = \"rclone\""))?;
        if remote_name(&remote).is_none() {
            return Err(section.error(
                "remote",
                &format!(
                    "`{remote}` is not REMOTE:PATH (a remote of your rclone config, e.g. \"gphotos:album/Backup\")"
                ),
            ));
        }
        let program = match raw.rclone.as_deref() {
            None => PathBuf::from("rclone"),
            Some(name) if !name.contains('/') && !name.starts_with('~') => PathBuf::from(name),
            Some(path) => section.path("rclone", path)?,
        };
        let config_file = raw.rclone_config.map(|path| section.path("rclone_config", &path)).transpose()?;
        Ok(RcloneConfig {
            remote,
            program,
            config_file,
            timeout: section.duration("timeout", raw.timeout.as_deref(), Duration::from_mins(2))?,
        })
    }

    /// The name of the remote in rclone's config (`gphotos` of
    /// `gphotos:album/Backup`).
    pub fn remote_name(&self) -> &str {
        remote_name(&self.remote).unwrap_or_default()
    }
}

/// `NAME` of `NAME:PATH`, when it is that shape.
fn remote_name(remote: &str) -> Option<&str> {
    let (name, _) = remote.split_once(':')?;
    let valid = |c: char| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '+' | '@' | ' ');
    (!name.is_empty() && !name.starts_with(['-', ' ']) && name.chars().all(valid)).then_some(name)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{Config, DestinationKind};

    fn destination(keys: &str) -> Result<RcloneConfig, ConfigError> {
        let text = format!("[[source]]\npath = \"/p\"\n[[destination]]\nname = \"cloud\"\ntype = \"rclone\"\n{keys}");
        let config = Config::parse(&text, Path::new("/etc/photosync/config.toml"))?;
        match config.destinations[0].kind.clone() {
            DestinationKind::Rclone(rclone) => Ok(*rclone),
            other => panic!("not rclone: {other:?}"),
        }
    }

    #[test]
    fn a_remote_and_where_rclone_is() {
        let gphotos = destination("remote = \"gphotos:album/Backup\"").expect("valid");
        assert_eq!(gphotos.remote_name(), "gphotos");
        assert_eq!(gphotos.program, PathBuf::from("rclone"));
        assert_eq!(gphotos.config_file, None);

        let own = destination("remote = \"my-box:\"\nrclone = \"bin/rclone\"\nrclone_config = \"rclone.conf\"")
            .expect("valid");
        assert_eq!(own.program, PathBuf::from("/etc/photosync/bin/rclone"));
        assert_eq!(own.config_file, Some(PathBuf::from("/etc/photosync/rclone.conf")));

        for (keys, key) in [
            ("", "remote"),
            ("remote = \"/local/path\"", "REMOTE:PATH"),
            ("remote = \":memory:x\"", "REMOTE:PATH"),
            ("remote = \"--config:x\"", "REMOTE:PATH"),
            ("remote = \"a:b\"\nbucket = \"x\"", "bucket"),
        ] {
            let message = destination(keys).expect_err(keys).to_string();
            assert!(message.contains(key), "{keys}: {message}");
        }
    }
}

//! One table of the config file while it is validated: where its relative
//! paths are resolved from, and the key prefix every error names
//! (`policy.bandwidth`, `destination[1].part_size`). Each part of the
//! config, a destination's own section among them, validates its table with
//! a [`Section`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;

use super::ConfigError;

/// A table of the config file being validated.
#[derive(Debug, Clone)]
pub struct Section<'a> {
    file: &'a Path,
    base: &'a Path,
    prefix: String,
}

impl<'a> Section<'a> {
    /// The whole file at `file` (relative paths resolve against its folder).
    pub fn top(file: &'a Path) -> Section<'a> {
        Section { file, base: file.parent().unwrap_or(Path::new(".")), prefix: String::new() }
    }

    /// The table at `name` below this one (`policy`, `destination[2]`).
    #[must_use]
    pub fn nested(&self, name: &str) -> Section<'a> {
        Section { file: self.file, base: self.base, prefix: self.key(name) }
    }

    /// The full name of key `name` in this table.
    pub fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() { name.to_owned() } else { format!("{}.{name}", self.prefix) }
    }

    /// An error about key `name`.
    pub fn error(&self, name: &str, message: &str) -> ConfigError {
        ConfigError::Value { path: self.file.to_owned(), key: self.key(name), message: message.to_owned() }
    }

    /// The table's keys as `T` (whose serde shape should deny unknown
    /// fields): a wrong key or type is an error naming this table.
    pub fn fields<T: DeserializeOwned>(&self, table: toml::Table) -> Result<T, ConfigError> {
        toml::Value::Table(table).try_into().map_err(|e: toml::de::Error| ConfigError::Value {
            path: self.file.to_owned(),
            key: self.prefix.clone(),
            message: e.message().to_owned(),
        })
    }

    /// A path: `~` expanded, relative to the config file's folder. A
    /// leading `$CREDENTIALS_DIRECTORY/` is where systemd's `LoadCredential=`
    /// put the service's secrets; outside such a service it stays as written
    /// (so commands that never read the file still work, and one that does
    /// says which file it could not read).
    pub fn path(&self, name: &str, value: &str) -> Result<PathBuf, ConfigError> {
        if value.is_empty() {
            return Err(self.error(name, "must not be empty"));
        }
        if let Some(path) = in_credentials(value, std::env::var_os("CREDENTIALS_DIRECTORY")) {
            return Ok(path);
        }
        let expanded = expand_home(value).ok_or_else(|| self.error(name, "cannot expand `~`: no home directory"))?;
        Ok(if expanded.is_absolute() { expanded } else { self.base.join(expanded) })
    }

    /// A duration like `30s` or `5h`, above zero; `default` when unset.
    pub fn duration(&self, name: &str, value: Option<&str>, default: Duration) -> Result<Duration, ConfigError> {
        let Some(text) = value else { return Ok(default) };
        let parsed = humantime::parse_duration(text)
            .map_err(|e| self.error(name, &format!("`{text}` is not a duration like \"30s\" or \"5h\" ({e})")))?;
        if parsed.is_zero() {
            return Err(self.error(name, "must be longer than zero"));
        }
        Ok(parsed)
    }

    /// A size like `16MiB` or `8MB`; `default` when unset.
    pub fn size(&self, name: &str, value: Option<&str>, default: u64) -> Result<u64, ConfigError> {
        let Some(text) = value else { return Ok(default) };
        crate::policy::parse_size(text)
            .ok_or_else(|| self.error(name, &format!("`{text}` is not a size like \"16MiB\" or \"8MB\"")))
    }
}

/// `value` with a leading `$CREDENTIALS_DIRECTORY/` replaced by `dir`,
/// or as written when `dir` is unset; `None` if it does not start so.
fn in_credentials(value: &str, dir: Option<std::ffi::OsString>) -> Option<PathBuf> {
    let rest = value.strip_prefix("$CREDENTIALS_DIRECTORY/")?;
    Some(match dir {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join(rest),
        _ => PathBuf::from(value),
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A secret handed over by systemd's `LoadCredential=` is named through
    /// `$CREDENTIALS_DIRECTORY`; outside the service the name stays as
    /// written (and reading it says which file was missing).
    #[test]
    fn secrets_in_the_credentials_directory() {
        let dir = Some("/run/user/1000/credentials/photosync.service".into());
        assert_eq!(
            in_credentials("$CREDENTIALS_DIRECTORY/webdav", dir),
            Some(PathBuf::from("/run/user/1000/credentials/photosync.service/webdav"))
        );
        assert_eq!(
            in_credentials("$CREDENTIALS_DIRECTORY/webdav", None),
            Some(PathBuf::from("$CREDENTIALS_DIRECTORY/webdav"))
        );
        assert_eq!(in_credentials("~/webdav.pass", Some("/x".into())), None);
        assert_eq!(in_credentials("/etc/$CREDENTIALS_DIRECTORY/w", Some("/x".into())), None);
    }
}

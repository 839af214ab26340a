//! Where a destination's secret comes from, and reading it when needed.

use std::path::PathBuf;

/// Where a secret (a WebDAV password, an Immich API key) comes from. It is
/// read when the destination is used, never when the config loads, and
/// never shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    /// No password (a server that needs none).
    None,
    /// The named environment variable.
    Env(String),
    /// The first line of this file.
    File(PathBuf),
    /// The OS keyring's entry for this account (service `photosync`).
    Keyring(String),
}

impl PasswordSource {
    /// Reads the secret now (`None` when there is none to read); never
    /// logged. `what` names it in errors ("password", "API key").
    pub fn read(&self, what: &str) -> Result<Option<String>, crate::destination::DestinationError> {
        use crate::destination::DestinationError;
        Ok(match self {
            PasswordSource::None => None,
            PasswordSource::Env(var) => Some(
                std::env::var(var)
                    .ok()
                    .filter(|p| !p.is_empty())
                    .ok_or_else(|| DestinationError::permanent(format!("environment variable {var} is not set")))?,
            ),
            PasswordSource::File(path) => Some(
                std::fs::read_to_string(path).map(|text| text.lines().next().unwrap_or_default().to_owned()).map_err(
                    |e| DestinationError::permanent(format!("cannot read the {what} file {}: {e}", path.display())),
                )?,
            ),
            // A keyring that is not there may come (a desktop session
            // starting); an entry that is not there needs the user.
            PasswordSource::Keyring(account) => Some(crate::secrets::read(account).map_err(|e| match e {
                crate::secrets::SecretError::Missing(_) => DestinationError::permanent(e.to_string()),
                crate::secrets::SecretError::Unavailable(_) => DestinationError::transient(e.to_string()),
            })?),
        })
    }

    /// The OS keyring account it is filed under, if it is kept there.
    pub fn keyring_account(&self) -> Option<&str> {
        match self {
            PasswordSource::Keyring(account) => Some(account),
            _ => None,
        }
    }
}

//! Where a destination's grant is kept: the OS keyring (Secret Service on
//! Linux, the login Keychain on macOS) where one answers, else a file
//! readable by the user alone (0600, in a 0700 folder) under the config
//! folder, replaced atomically (written aside, flushed, renamed, the
//! folder flushed), so a crash mid-save leaves the old grant or the new
//! one, never half of either.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use super::Grant;
use crate::secrets::{self, SecretError};

/// Which store a destination's grant goes to (`token_store`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TokenStoreKind {
    /// The keyring where one answers, else the file.
    #[default]
    Auto,
    /// The keyring only.
    Keyring,
    /// The file only (a headless server).
    File,
}

impl TokenStoreKind {
    /// The config spelling.
    pub fn parse(text: &str) -> Option<TokenStoreKind> {
        match text {
            "auto" => Some(Self::Auto),
            "keyring" => Some(Self::Keyring),
            "file" => Some(Self::File),
            _ => None,
        }
    }
}

/// Where a grant is, for `photosync auth --status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// The OS keyring, service `photosync`, this account.
    Keyring(String),
    /// This file.
    File(PathBuf),
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Keyring(account) => write!(f, "the keyring (service {}, account {account})", secrets::SERVICE),
            Self::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// One destination's grant store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenStore {
    /// Which store.
    pub kind: TokenStoreKind,
    /// The keyring account (`oauth:NAME`).
    pub account: String,
    /// The file.
    pub file: PathBuf,
}

impl TokenStore {
    /// The store of destination `name`, whose file is `file`.
    pub fn new(kind: TokenStoreKind, name: &str, file: PathBuf) -> TokenStore {
        TokenStore { kind, account: format!("oauth:{name}"), file }
    }

    /// The grant, and where it was, if there is one. With `auto`, a grant
    /// may be in both places (signed in again where no keyring answered):
    /// the newer one counts.
    pub fn load(&self) -> Result<Option<(Grant, Place)>, String> {
        let in_keyring = match self.kind {
            TokenStoreKind::File => None,
            _ => match secrets::read(&self.account) {
                Ok(text) => Some(parse(&text).map_err(|e| {
                    format!("the sign-in kept in the keyring (account {}) is damaged ({e})", self.account)
                })?),
                Err(e @ SecretError::Unavailable(_)) if self.kind == TokenStoreKind::Keyring => {
                    return Err(e.to_string());
                }
                // Not there, or no keyring: it may be in the file.
                Err(SecretError::Missing(_) | SecretError::Unavailable(_)) => None,
            },
        };
        let keyring = in_keyring.map(|grant| (grant, Place::Keyring(self.account.clone())));
        if self.kind == TokenStoreKind::Keyring {
            return Ok(keyring);
        }
        let file = match std::fs::read_to_string(&self.file) {
            Ok(text) => Some((
                parse(&text).map_err(|e| format!("{} is damaged ({e})", self.file.display()))?,
                Place::File(self.file.clone()),
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(format!("cannot read {}: {e}", self.file.display())),
        };
        Ok(match (keyring, file) {
            (Some(k), Some(f)) => Some(if renewed(&f.0) > renewed(&k.0) { f } else { k }),
            (k, f) => k.or(f),
        })
    }

    /// Saves `grant`, replacing the one kept before; says where.
    pub fn save(&self, grant: &Grant) -> Result<Place, String> {
        let text = serde_json::to_string(grant).map_err(|e| format!("cannot encode the sign-in: {e}"))?;
        if self.kind != TokenStoreKind::File {
            match secrets::store(&self.account, &text) {
                Ok(()) => {
                    // A grant kept in the file while no keyring answered is stale now.
                    let _ = std::fs::remove_file(&self.file);
                    return Ok(Place::Keyring(self.account.clone()));
                }
                Err(e) if self.kind == TokenStoreKind::Keyring => return Err(e.to_string()),
                Err(_) => {}
            }
        }
        write_private(&self.file, text.as_bytes())
            .map_err(|e| format!("cannot save the sign-in to {}: {e}", self.file.display()))?;
        Ok(Place::File(self.file.clone()))
    }

    /// Removes the grant from wherever it is kept; false when there was none.
    pub fn forget(&self) -> Result<bool, String> {
        let mut removed = false;
        if self.kind != TokenStoreKind::File {
            match secrets::forget(&self.account) {
                Ok(gone) => removed |= gone,
                Err(e) if self.kind == TokenStoreKind::Keyring => return Err(e.to_string()),
                Err(_) => {}
            }
        }
        match std::fs::remove_file(&self.file) {
            Ok(()) => removed = true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot remove {}: {e}", self.file.display())),
        }
        Ok(removed)
    }
}

/// The store of destination `name` from its `token_store` key: the file
/// is `tokens/NAME.json` beside the config (the name escaped).
pub fn from_config(
    section: &crate::config::Section<'_>,
    name: &str,
    token_store: Option<&str>,
) -> Result<TokenStore, crate::config::ConfigError> {
    let kind = match token_store {
        None => TokenStoreKind::Auto,
        Some(text) => TokenStoreKind::parse(text)
            .ok_or_else(|| section.error("token_store", &format!("`{text}` is not one of auto, keyring, file")))?,
    };
    let file = section.path("token_store", &format!("tokens/{}.json", file_name(name)))?;
    Ok(TokenStore::new(kind, name, file))
}

/// `name` as a file name: anything but letters, digits, `-` and `_`
/// escaped as `%XX`.
fn file_name(name: &str) -> String {
    use std::fmt::Write as _;
    name.bytes().fold(String::new(), |mut out, b| {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
        out
    })
}

/// When a grant was last made or replaced (RFC 3339 in UTC: compares as text).
fn renewed(grant: &Grant) -> &str {
    grant.rotated_at.as_deref().unwrap_or(&grant.signed_in_at)
}

fn parse(text: &str) -> Result<Grant, serde_json::Error> {
    serde_json::from_str(text)
}

/// Replaces `path` with `bytes`, readable by the user alone, atomically.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let folder = path.parent().ok_or_else(|| std::io::Error::other("the token file has no folder"))?;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(folder)?;
    std::fs::set_permissions(folder, std::fs::Permissions::from_mode(0o700))?;
    let name = path.file_name().ok_or_else(|| std::io::Error::other("the token file has no name"))?;
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(name);
    temp_name.push(".tmp");
    let temp = folder.join(temp_name);
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&temp)?;
    // An older temp file may have been made with other permissions.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temp, path)?;
    std::fs::File::open(folder)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(token: &str) -> Grant {
        Grant {
            refresh_token: token.into(),
            scope: Some("files.content.write".into()),
            account: None,
            signed_in_at: "2026-12-03T10:00:00Z".into(),
            rotated_at: None,
        }
    }

    #[test]
    fn the_file_store_is_private_and_replaced_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("tokens").join("dropbox.json");
        let store = TokenStore::new(TokenStoreKind::File, "dropbox", file.clone());
        assert_eq!(store.load().expect("load"), None);
        assert_eq!(store.save(&grant("first")).expect("save"), Place::File(file.clone()));
        assert_eq!(store.save(&grant("second")).expect("save"), Place::File(file.clone()));
        let (loaded, place) = store.load().expect("load").expect("a grant");
        assert_eq!((loaded.refresh_token.as_str(), place), ("second", Place::File(file.clone())));
        let mode = |p: &Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(file.parent().expect("folder")), 0o700);
        let names: Vec<_> = std::fs::read_dir(file.parent().expect("folder")).expect("list").collect();
        assert_eq!(names.len(), 1, "no temporary file is left behind");
        assert!(!format!("{loaded:?}").contains("second"), "the token is not printed");
        std::fs::write(&file, "{not json").expect("damage");
        assert!(store.load().expect_err("damaged").contains("damaged"));
        assert!(store.forget().expect("forget"));
        assert!(!store.forget().expect("forget"));
    }
}

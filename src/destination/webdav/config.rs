//! `type = "webdav"`: its keys, validated, and where its password comes from.

use std::time::Duration;

use serde::Deserialize;

use crate::config::{ConfigError, Section};
use crate::destination::http::is_loopback;
pub use crate::destination::secret::PasswordSource;

/// The keys of a WebDAV destination, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    /// The collection photos go under.
    url: Option<String>,
    /// The user to sign in as.
    username: Option<String>,
    /// Name of the environment variable holding the password.
    password_env: Option<String>,
    /// A file whose first line is the password.
    password_file: Option<String>,
    /// The account the password is filed under in the OS keyring.
    password_keyring: Option<String>,
    /// `nextcloud` (also ownCloud) or `generic`; default: told by the URL.
    vendor: Option<String>,
    /// Allow `http://` to a host other than this machine.
    insecure_http: Option<bool>,
    /// Nextcloud: files at least this large go up in chunks (default 32 MiB).
    chunked_threshold: Option<String>,
    /// Nextcloud: chunk size (default 16 MiB, 5 MiB to 5 GiB).
    chunk_size: Option<String>,
    /// How long the server may stay silent before a request is retried.
    timeout: Option<String>,
}

/// The kind of server, for the features only some have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Vendor {
    /// Plain WebDAV (RFC 4918): a NAS, Apache, rclone, wsgidav…
    Generic,
    /// Nextcloud or ownCloud: chunked uploads (v2) to `uploads`, checksums,
    /// modification times.
    Nextcloud {
        /// The user's upload area: `…/remote.php/dav/uploads/USER/`.
        uploads: url::Url,
    },
}

/// A WebDAV destination's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebDavConfig {
    /// The collection photos go under (ends with `/`).
    pub url: url::Url,
    /// The user to sign in as.
    pub username: Option<String>,
    /// Where the password comes from.
    pub password: PasswordSource,
    /// What kind of server it is.
    pub vendor: Vendor,
    /// Nextcloud: files at least this large go up in chunks.
    pub chunked_threshold: u64,
    /// Nextcloud: chunk size.
    pub chunk_size: u64,
    /// How long the server may stay silent.
    pub timeout: Duration,
}

/// Nextcloud's limits on a chunk (all but the last): 5 MiB to 5 GiB.
const CHUNK_LIMITS: (u64, u64) = (5 << 20, 5 << 30);

impl WebDavConfig {
    /// Validates the keys of a `type = "webdav"` destination.
    pub fn parse(table: toml::Table, section: &Section<'_>) -> Result<WebDavConfig, ConfigError> {
        let raw: Raw = section.fields(table)?;
        let text = raw.url.ok_or_else(|| section.error("url", "required for type = \"webdav\""))?;
        let mut url = url::Url::parse(&text)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
            .ok_or_else(|| section.error("url", &format!("`{text}` is not an http(s) URL")))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(section.error(
                "url",
                "put the user in `username` and the password in `password_env`, `password_file` or `password_keyring`, not in the URL",
            ));
        }
        if url.scheme() == "http" && !is_loopback(&url) && raw.insecure_http != Some(true) {
            return Err(section.error(
                "url",
                "http:// sends the password and photos unencrypted; use https://, or set insecure_http = true",
            ));
        }
        if !url.path().ends_with('/') {
            url.set_path(&format!("{}/", url.path()));
        }
        let password = match (raw.password_env, raw.password_file, raw.password_keyring) {
            (Some(var), None, None) => PasswordSource::Env(var),
            (None, Some(file), None) => PasswordSource::File(section.path("password_file", &file)?),
            (None, None, Some(account)) if account.trim().is_empty() => {
                return Err(section.error("password_keyring", "names the keyring account; it cannot be empty"));
            }
            (None, None, Some(account)) => PasswordSource::Keyring(account),
            (None, None, None) => PasswordSource::None,
            _ => {
                return Err(
                    section.error("password_env", "choose one of password_env, password_file and password_keyring")
                );
            }
        };
        let vendor = match raw.vendor.as_deref() {
            Some("generic") => Vendor::Generic,
            Some("nextcloud" | "owncloud") => Vendor::Nextcloud {
                uploads: nextcloud_uploads(&url).ok_or_else(|| {
                    section.error("url", "for Nextcloud, use https://HOST/remote.php/dav/files/USER/FOLDER/")
                })?,
            },
            Some(other) => {
                return Err(section.error("vendor", &format!("`{other}` must be \"nextcloud\" or \"generic\"")));
            }
            None => nextcloud_uploads(&url).map_or(Vendor::Generic, |uploads| Vendor::Nextcloud { uploads }),
        };
        let chunk_size = section.size("chunk_size", raw.chunk_size.as_deref(), 16 << 20)?;
        if !(CHUNK_LIMITS.0..=CHUNK_LIMITS.1).contains(&chunk_size) {
            return Err(section.error("chunk_size", "must be between 5 MiB and 5 GiB (Nextcloud's limits)"));
        }
        Ok(WebDavConfig {
            url,
            username: raw.username.filter(|u| !u.is_empty()),
            password,
            vendor,
            chunked_threshold: section.size("chunked_threshold", raw.chunked_threshold.as_deref(), 32 << 20)?,
            chunk_size,
            timeout: section.duration("timeout", raw.timeout.as_deref(), Duration::from_mins(2))?,
        })
    }
}

/// For a Nextcloud files URL (`…/remote.php/dav/files/USER/…`), the user's
/// upload area (`…/remote.php/dav/uploads/USER/`).
fn nextcloud_uploads(url: &url::Url) -> Option<url::Url> {
    let path = url.path();
    let at = path.find("/remote.php/dav/files/")?;
    let rest = &path[at + "/remote.php/dav/files/".len()..];
    let user = rest.split('/').next().filter(|u| !u.is_empty())?;
    let mut uploads = url.clone();
    uploads.set_path(&format!("{}/remote.php/dav/uploads/{user}/", &path[..at]));
    Some(uploads)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{Config, DestinationKind};

    fn destination(keys: &str) -> Result<WebDavConfig, ConfigError> {
        let text = format!("[[source]]\npath = \"/p\"\n[[destination]]\nname = \"dav\"\ntype = \"webdav\"\n{keys}");
        let config = Config::parse(&text, Path::new("/etc/photosync/config.toml"))?;
        match config.destinations[0].kind.clone() {
            DestinationKind::WebDav(webdav) => Ok(*webdav),
            other => panic!("not webdav: {other:?}"),
        }
    }

    #[test]
    fn nextcloud_is_told_by_its_url_and_http_only_goes_to_this_machine() {
        let nc = destination("url = \"https://cloud.example/remote.php/dav/files/alice/Photos\"\nusername = \"alice\"\npassword_env = \"NC_PASS\"").expect("valid");
        assert_eq!(nc.url.as_str(), "https://cloud.example/remote.php/dav/files/alice/Photos/");
        let uploads = url::Url::parse("https://cloud.example/remote.php/dav/uploads/alice/").expect("url");
        assert_eq!(nc.vendor, Vendor::Nextcloud { uploads });
        assert_eq!(nc.password, PasswordSource::Env("NC_PASS".into()));

        let nas =
            destination("url = \"https://nas.local:5006/photo/backup/\"\npassword_file = \"dav-pass\"").expect("valid");
        assert_eq!(nas.vendor, Vendor::Generic);
        assert_eq!(nas.password, PasswordSource::File("/etc/photosync/dav-pass".into()));
        let keyring = destination("url = \"https://nas.local/\"\npassword_keyring = \"nas\"").expect("valid");
        assert_eq!(keyring.password, PasswordSource::Keyring("nas".into()));

        assert!(destination("url = \"http://127.0.0.1:8080/\"").is_ok(), "loopback may be plain http");
        for (keys, key) in [
            ("url = \"http://nas.local/dav/\"", "insecure_http"),
            ("url = \"https://u:p@nas.local/dav/\"", "username"),
            ("url = \"ftp://nas.local/\"", "url"),
            ("url = \"https://nas.local/\"\nvendor = \"nextcloud\"", "remote.php"),
            ("url = \"https://nas.local/\"\nchunk_size = \"1MiB\"", "chunk_size"),
            ("url = \"https://nas.local/\"\npassword = \"in-the-file\"", "password"),
            ("url = \"https://nas.local/\"\npassword_keyring = \"\"", "password_keyring"),
            ("url = \"https://nas.local/\"\npassword_env = \"A\"\npassword_keyring = \"b\"", "choose one"),
        ] {
            let message = destination(keys).expect_err(keys).to_string();
            assert!(message.contains(key), "{message}");
        }
        assert!(destination("url = \"http://nas.local/dav/\"\ninsecure_http = true").is_ok());
    }
}

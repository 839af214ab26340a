//! `type = "dropbox"`: its keys, validated.

use std::time::Duration;

use serde::Deserialize;

use crate::config::{ConfigError, Section};
use crate::destination::http::service_url;
use crate::oauth::{Provider, TokenStore};

/// Dropbox takes at most 150 MiB in one request; chunks are whole 4 MiB
/// blocks (the unit of its content hash) below that.
const BLOCK: u64 = 4 * 1024 * 1024;
const MAX_CHUNK: u64 = 37 * BLOCK;

/// The keys of a Dropbox destination, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    /// The app key of the user's own Dropbox app.
    client_id: Option<String>,
    /// The folder in Dropbox the photos go into (`/` is the app's folder
    /// for an App-folder app).
    folder: Option<String>,
    /// How much one request carries: files up to this size go in one
    /// request, larger ones in an upload session of chunks this size.
    chunk_size: Option<String>,
    /// `auto`, `keyring` or `file`.
    token_store: Option<String>,
    /// How long the server may stay silent before a request is retried.
    timeout: Option<String>,
    api_url: Option<String>,
    content_url: Option<String>,
    auth_url: Option<String>,
}

/// A Dropbox destination's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropboxConfig {
    /// The destination's name (what `photosync auth` takes).
    pub name: String,
    /// The app key.
    pub client_id: String,
    /// The folder the layout's keys go below: `/` or `/A/B/`.
    pub folder: String,
    /// Bytes per request (a multiple of 4 MiB).
    pub chunk_size: u64,
    /// Where the grant is kept.
    pub tokens: TokenStore,
    /// How long the server may stay silent.
    pub timeout: Duration,
    /// The RPC host (`https://api.dropboxapi.com`), also the token endpoint's.
    pub api_url: url::Url,
    /// The content host (`https://content.dropboxapi.com`).
    pub content_url: url::Url,
    /// The sign-in page's host (`https://www.dropbox.com`).
    pub auth_url: url::Url,
}

impl DropboxConfig {
    /// Validates the keys of a `type = "dropbox"` destination called `name`.
    pub fn parse(name: &str, table: toml::Table, section: &Section<'_>) -> Result<DropboxConfig, ConfigError> {
        let raw: Raw = section.fields(table)?;
        let client_id = raw.client_id.filter(|id| !id.trim().is_empty()).ok_or_else(|| {
            section.error(
                "client_id",
                "required: the app key of your Dropbox app (the README says how to make one; no secret is needed)",
            )
        })?;
        let folder = match raw.folder.as_deref().map(|f| f.trim_matches('/')) {
            None | Some("") => "/".to_owned(),
            Some(f) if f.split('/').any(|s| s.is_empty() || s == "." || s == "..") => {
                return Err(section.error("folder", &format!("`{f}` is not a folder path like \"/Photos\"")));
            }
            Some(f) => format!("/{f}/"),
        };
        let chunk_size = section.size("chunk_size", raw.chunk_size.as_deref(), 2 * BLOCK)?;
        if chunk_size == 0 || chunk_size % BLOCK != 0 || chunk_size > MAX_CHUNK {
            return Err(section.error("chunk_size", "must be a multiple of 4MiB, at most 148MiB"));
        }
        Ok(DropboxConfig {
            name: name.to_owned(),
            client_id: client_id.trim().to_owned(),
            folder,
            chunk_size,
            tokens: crate::oauth::store::from_config(section, name, raw.token_store.as_deref())?,
            timeout: section.duration("timeout", raw.timeout.as_deref(), Duration::from_mins(2))?,
            api_url: service_url(section, "api_url", raw.api_url, "https://api.dropboxapi.com")?,
            content_url: service_url(section, "content_url", raw.content_url, "https://content.dropboxapi.com")?,
            auth_url: service_url(section, "auth_url", raw.auth_url, "https://www.dropbox.com")?,
        })
    }

    /// The sign-in: this app at Dropbox's token endpoint.
    pub fn provider(&self) -> Provider {
        Provider {
            service: "Dropbox",
            destination: self.name.clone(),
            client_id: self.client_id.clone(),
            client_secret: None,
            token_url: self.api_url.join("oauth2/token").expect("a relative path joins"),
        }
    }

    /// Signing in: PKCE without a redirect (Dropbox shows a code to
    /// paste), asking for a refresh token (`token_access_type=offline`).
    pub fn sign_in(&self) -> crate::oauth::SignIn {
        let mut authorize = self.auth_url.join("oauth2/authorize").expect("a relative path joins");
        authorize
            .query_pairs_mut()
            .append_pair("client_id", &self.client_id)
            .append_pair("response_type", "code")
            .append_pair("token_access_type", "offline");
        crate::oauth::SignIn {
            provider: self.provider(),
            store: self.tokens.clone(),
            authorize,
            scope: None,
            device_url: None,
            default_flow: crate::oauth::signin::Flow::Paste,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{Config, DestinationKind};
    use crate::oauth::TokenStoreKind;

    fn destination(keys: &str) -> Result<DropboxConfig, ConfigError> {
        let text = format!("[[source]]\npath = \"/p\"\n[[destination]]\nname = \"my box\"\ntype = \"dropbox\"\n{keys}");
        let config = Config::parse(&text, Path::new("/etc/photosync/config.toml"))?;
        match config.destinations[0].kind.clone() {
            DestinationKind::Dropbox(dropbox) => Ok(*dropbox),
            other => panic!("not dropbox: {other:?}"),
        }
    }

    #[test]
    fn defaults_and_checks() {
        let config = destination("client_id = \"abc\"").expect("valid");
        assert_eq!(config.folder, "/");
        assert_eq!(config.chunk_size, 8 * 1024 * 1024);
        assert_eq!(config.tokens.kind, TokenStoreKind::Auto);
        assert_eq!(config.tokens.file, Path::new("/etc/photosync/tokens/my%20box.json"));
        assert_eq!(config.tokens.account, "oauth:my box");
        assert_eq!(config.provider().token_url.as_str(), "https://api.dropboxapi.com/oauth2/token");
        let pkce = crate::oauth::pkce::Pkce::from_verifier("v".repeat(43));
        let authorize = config.sign_in().authorize_url(&pkce);
        assert_eq!(
            authorize.as_str(),
            format!(
                "https://www.dropbox.com/oauth2/authorize?client_id=abc&response_type=code&token_access_type=offline\
                 &code_challenge={}&code_challenge_method=S256",
                pkce.challenge
            )
        );
        let config =
            destination("client_id = \"abc\"\nfolder = \"Photos/Phone/\"\ntoken_store = \"file\"").expect("ok");
        assert_eq!((config.folder.as_str(), config.tokens.kind), ("/Photos/Phone/", TokenStoreKind::File));
        let fake = destination("client_id = \"a\"\napi_url = \"http://127.0.0.1:9/base\"").expect("loopback");
        assert_eq!(fake.provider().token_url.as_str(), "http://127.0.0.1:9/base/oauth2/token");
        for (keys, complaint) in [
            ("", "client_id"),
            ("client_id = \"a\"\napi_url = \"http://dropbox.example\"", "api_url"),
            ("client_id = \"a\"\nchunk_size = \"5MiB\"", "multiple of 4MiB"),
            ("client_id = \"a\"\nchunk_size = \"152MiB\"", "multiple of 4MiB"),
            ("client_id = \"a\"\nfolder = \"/a/../b\"", "folder"),
            ("client_id = \"a\"\ntoken_store = \"cloud\"", "token_store"),
        ] {
            let error = destination(keys).expect_err(keys).to_string();
            assert!(error.contains(complaint), "{keys}: {error}");
        }
    }
}

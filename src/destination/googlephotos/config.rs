//! `type = "googlephotos"`: its keys, validated.

use std::time::Duration;

use serde::Deserialize;

use crate::config::{ConfigError, Section};
use crate::destination::http::service_url;
use crate::oauth::signin::Flow;
use crate::oauth::{Provider, SignIn, TokenStore};

/// The permissions asked for since Google's 2025 change: adding items and
/// albums, and reading and editing what this app made.
pub const SCOPES: &str = "https://www.googleapis.com/auth/photoslibrary.appendonly \
     https://www.googleapis.com/auth/photoslibrary.readonly.appcreateddata \
     https://www.googleapis.com/auth/photoslibrary.edit.appcreateddata";

/// The keys of a Google Photos destination, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    /// The OAuth client id of the user's own Google Cloud project.
    client_id: Option<String>,
    /// Its client secret (Google gives desktop apps one; it is not
    /// confidential, Google says), or the variable holding it.
    client_secret: Option<String>,
    client_secret_env: Option<String>,
    /// The album photos go into, a template like a layout's; `""` for none.
    album: Option<String>,
    /// How much one request carries (rounded down to Google's granularity).
    chunk_size: Option<String>,
    /// The least wait after a 429 (Google asks for 30 s).
    rate_limit_wait: Option<String>,
    /// The longest an upload token waits for others to share its
    /// `mediaItems:batchCreate`.
    batch_wait: Option<String>,
    /// The project's daily request quota (10,000 unless Google raised it).
    daily_quota: Option<u64>,
    /// `auto`, `keyring` or `file`.
    token_store: Option<String>,
    /// How long the server may stay silent before a request is retried.
    timeout: Option<String>,
    api_url: Option<String>,
    upload_url: Option<String>,
    auth_url: Option<String>,
    token_url: Option<String>,
}

/// Where the client secret comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientSecret {
    /// Written in the config.
    Given(String),
    /// In this environment variable.
    Env(String),
}

/// A Google Photos destination's settings.
#[derive(Clone, PartialEq, Eq)]
pub struct GooglePhotosConfig {
    /// The destination's name (what `photosync auth` takes).
    pub name: String,
    /// The OAuth client id.
    pub client_id: String,
    /// The client secret.
    pub client_secret: ClientSecret,
    /// The album each photo goes into (created when first needed).
    pub album: Option<crate::layout::Layout>,
    /// Bytes per upload request, at most.
    pub chunk_size: u64,
    /// The least wait after a 429.
    pub rate_limit_wait: Duration,
    /// The longest a token waits for others to share a `batchCreate`.
    pub batch_wait: Duration,
    /// Requests the project may send per day.
    pub daily_quota: u64,
    /// Where the grant is kept.
    pub tokens: TokenStore,
    /// How long the server may stay silent.
    pub timeout: Duration,
    /// The Library API (`https://photoslibrary.googleapis.com/`).
    pub api_url: url::Url,
    /// Where uploads start (`https://photoslibrary.googleapis.com/v1/uploads`).
    pub upload_url: url::Url,
    /// The authorization page.
    pub auth_url: url::Url,
    /// The token endpoint.
    pub token_url: url::Url,
}

impl std::fmt::Debug for GooglePhotosConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GooglePhotosConfig")
            .field("name", &self.name)
            .field("client_id", &self.client_id)
            .field("api_url", &self.api_url.as_str())
            .finish_non_exhaustive()
    }
}

impl GooglePhotosConfig {
    /// Validates the keys of a `type = "googlephotos"` destination called `name`.
    pub fn parse(name: &str, table: toml::Table, section: &Section<'_>) -> Result<GooglePhotosConfig, ConfigError> {
        let raw: Raw = section.fields(table)?;
        let client_id = raw.client_id.filter(|id| !id.trim().is_empty()).ok_or_else(|| {
            section.error(
                "client_id",
                "required: the client id of your Google Cloud project's desktop app (the README says how to make one)",
            )
        })?;
        let client_secret = match (raw.client_secret, raw.client_secret_env) {
            (Some(secret), None) if !secret.trim().is_empty() => ClientSecret::Given(secret.trim().to_owned()),
            (None, Some(var)) if !var.trim().is_empty() => ClientSecret::Env(var),
            (None, None) => {
                return Err(section.error(
                    "client_secret",
                    "required: Google gives its desktop apps a client secret (client_secret, or client_secret_env)",
                ));
            }
            _ => return Err(section.error("client_secret", "choose one of client_secret and client_secret_env")),
        };
        let album = match raw.album.as_deref().map(str::trim) {
            None => Some(crate::layout::Layout::label("photosync").expect("a plain label")),
            Some("") => None,
            Some(text) => Some(
                crate::layout::Layout::label(text).map_err(|e| section.error("album", &format!("`{text}`: {e}")))?,
            ),
        };
        let chunk_size = section.size("chunk_size", raw.chunk_size.as_deref(), 8 * 1024 * 1024)?;
        if chunk_size < 256 * 1024 {
            return Err(section.error("chunk_size", "must be at least 256KiB"));
        }
        let daily_quota = raw.daily_quota.unwrap_or(10_000);
        if daily_quota == 0 {
            return Err(section.error("daily_quota", "must be at least 1 (Google's default is 10000)"));
        }
        Ok(GooglePhotosConfig {
            name: name.to_owned(),
            client_id: client_id.trim().to_owned(),
            client_secret,
            album,
            chunk_size,
            rate_limit_wait: section.duration(
                "rate_limit_wait",
                raw.rate_limit_wait.as_deref(),
                Duration::from_secs(30),
            )?,
            batch_wait: section.duration("batch_wait", raw.batch_wait.as_deref(), Duration::from_secs(5))?,
            daily_quota,
            tokens: crate::oauth::store::from_config(section, name, raw.token_store.as_deref())?,
            timeout: section.duration("timeout", raw.timeout.as_deref(), Duration::from_mins(2))?,
            api_url: service_url(section, "api_url", raw.api_url, "https://photoslibrary.googleapis.com/")?,
            upload_url: service_url(
                section,
                "upload_url",
                raw.upload_url,
                "https://photoslibrary.googleapis.com/v1/uploads",
            )?,
            auth_url: service_url(section, "auth_url", raw.auth_url, "https://accounts.google.com/o/oauth2/v2/auth")?,
            token_url: service_url(section, "token_url", raw.token_url, "https://oauth2.googleapis.com/token")?,
        })
    }

    /// The sign-in: this app at Google's token endpoint, with its secret
    /// (read now: from the environment, it may have changed).
    pub fn provider(&self) -> Provider {
        let client_secret = match &self.client_secret {
            ClientSecret::Given(secret) => Some(secret.clone()),
            ClientSecret::Env(var) => std::env::var(var).ok().filter(|s| !s.is_empty()),
        };
        let mut token_url = self.token_url.clone();
        // A URL key ends in `/`; Google's token endpoint does not.
        if token_url.path() != "/" {
            let path = token_url.path().trim_end_matches('/').to_owned();
            token_url.set_path(&path);
        }
        Provider {
            service: "Google Photos",
            destination: self.name.clone(),
            client_id: self.client_id.clone(),
            client_secret,
            token_url,
        }
    }

    /// Signing in: a browser on this machine (the only way Google allows
    /// for these permissions), asking for a refresh token.
    pub fn sign_in(&self) -> SignIn {
        let mut authorize = self.auth_url.clone();
        let path = authorize.path().trim_end_matches('/').to_owned();
        authorize.set_path(&path);
        authorize
            .query_pairs_mut()
            .append_pair("client_id", &self.client_id)
            .append_pair("response_type", "code")
            .append_pair("access_type", "offline")
            .append_pair("prompt", "consent");
        SignIn {
            provider: self.provider(),
            store: self.tokens.clone(),
            authorize,
            scope: Some(SCOPES.to_owned()),
            device_url: None,
            default_flow: Flow::Browser,
        }
    }

    /// The upload endpoint, without the `/` a URL key is given.
    pub fn uploads(&self) -> url::Url {
        let mut url = self.upload_url.clone();
        let path = url.path().trim_end_matches('/').to_owned();
        url.set_path(&path);
        url
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{Config, DestinationKind};

    fn destination(keys: &str) -> Result<GooglePhotosConfig, ConfigError> {
        let text =
            format!("[[source]]\npath = \"/p\"\n[[destination]]\nname = \"gp\"\ntype = \"googlephotos\"\n{keys}");
        let config = Config::parse(&text, Path::new("/etc/photosync/config.toml"))?;
        match config.destinations[0].kind.clone() {
            DestinationKind::GooglePhotos(google) => Ok(*google),
            other => panic!("not google photos: {other:?}"),
        }
    }

    #[test]
    fn defaults_and_checks() {
        let config = destination("client_id = \"id\"\nclient_secret = \"s\"").expect("valid");
        assert_eq!(config.album.as_ref().map(ToString::to_string).as_deref(), Some("photosync"));
        assert_eq!(config.provider().token_url.as_str(), "https://oauth2.googleapis.com/token");
        assert_eq!(config.uploads().as_str(), "https://photoslibrary.googleapis.com/v1/uploads");
        let sign_in = config.sign_in();
        assert!(sign_in.authorize.as_str().starts_with("https://accounts.google.com/o/oauth2/v2/auth?client_id=id"));
        assert!(sign_in.authorize.as_str().contains("access_type=offline"));
        assert_eq!(sign_in.default_flow, Flow::Browser);
        assert!(!format!("{config:?}").contains("\"s\""), "the secret is not printed");
        let none = destination("client_id = \"id\"\nclient_secret_env = \"GP_SECRET\"\nalbum = \"\"").expect("ok");
        assert_eq!((none.album, none.client_secret), (None, ClientSecret::Env("GP_SECRET".into())));
        for (keys, complaint) in [
            ("client_secret = \"s\"", "client_id"),
            ("client_id = \"id\"", "client_secret"),
            ("client_id = \"id\"\nclient_secret = \"s\"\nclient_secret_env = \"V\"", "choose one"),
            ("client_id = \"id\"\nclient_secret = \"s\"\napi_url = \"http://photos.example\"", "api_url"),
        ] {
            let error = destination(keys).expect_err(keys).to_string();
            assert!(error.contains(complaint), "{keys}: {error}");
        }
    }
}

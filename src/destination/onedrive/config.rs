//! `type = "onedrive"`: its keys, validated.

use std::time::Duration;

use serde::Deserialize;

use crate::config::{ConfigError, Section};
use crate::destination::http::service_url;
use crate::oauth::signin::Flow;
use crate::oauth::{Provider, SignIn, TokenStore};

/// Graph takes fragments in multiples of 320 KiB, each under 60 MiB.
pub const FRAGMENT_UNIT: u64 = 320 * 1024;
const MAX_FRAGMENT: u64 = 191 * FRAGMENT_UNIT;

/// The keys of a OneDrive destination, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    /// The application (client) id of the user's own app registration.
    client_id: Option<String>,
    /// `common`, `consumers`, `organizations` or a tenant id.
    tenant: Option<String>,
    /// The folder in the drive the photos go into.
    folder: Option<String>,
    /// Whether to use the app's own folder (`Apps/<app>`) and the narrower
    /// `Files.ReadWrite.AppFolder` permission.
    app_folder: Option<bool>,
    /// How much one request carries (a multiple of 320KiB, under 60MiB).
    fragment_size: Option<String>,
    /// `auto`, `keyring` or `file`.
    token_store: Option<String>,
    /// How long the server may stay silent before a request is retried.
    timeout: Option<String>,
    graph_url: Option<String>,
    login_url: Option<String>,
}

/// A OneDrive destination's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneDriveConfig {
    /// The destination's name (what `photosync auth` takes).
    pub name: String,
    /// The app registration's client id.
    pub client_id: String,
    /// The tenant to sign in at.
    pub tenant: String,
    /// The folder the layout's keys go below: `/` or `/A/B/`.
    pub folder: String,
    /// The app's own folder instead of the drive's root.
    pub app_folder: bool,
    /// Bytes per upload request.
    pub fragment_size: u64,
    /// Where the grant is kept.
    pub tokens: TokenStore,
    /// How long the server may stay silent.
    pub timeout: Duration,
    /// Microsoft Graph (`https://graph.microsoft.com/v1.0/`).
    pub graph_url: url::Url,
    /// The identity platform (`https://login.microsoftonline.com/`).
    pub login_url: url::Url,
}

impl OneDriveConfig {
    /// Validates the keys of a `type = "onedrive"` destination called `name`.
    pub fn parse(name: &str, table: toml::Table, section: &Section<'_>) -> Result<OneDriveConfig, ConfigError> {
        let raw: Raw = section.fields(table)?;
        let client_id = raw.client_id.filter(|id| !id.trim().is_empty()).ok_or_else(|| {
            section.error(
                "client_id",
                "required: the application (client) id of your app registration (the README says how to make one; \
                 no secret is needed)",
            )
        })?;
        let tenant = raw.tenant.unwrap_or_else(|| "common".to_owned());
        if tenant.is_empty() || !tenant.chars().all(|c| c.is_ascii_alphanumeric() || "-.".contains(c)) {
            return Err(section.error("tenant", "must be common, consumers, organizations, or a tenant id or domain"));
        }
        let folder = match raw.folder.as_deref().map(|f| f.trim_matches('/')) {
            None => "/photosync/".to_owned(),
            Some("") => "/".to_owned(),
            Some(f) if f.split('/').any(|s| s.is_empty() || s == "." || s == "..") => {
                return Err(section.error("folder", &format!("`{f}` is not a folder path like \"/Pictures/Backup\"")));
            }
            Some(f) => format!("/{f}/"),
        };
        let fragment_size = section.size("fragment_size", raw.fragment_size.as_deref(), 32 * FRAGMENT_UNIT)?;
        if fragment_size == 0 || fragment_size % FRAGMENT_UNIT != 0 || fragment_size > MAX_FRAGMENT {
            return Err(section.error("fragment_size", "must be a multiple of 320KiB, at most 60MiB"));
        }
        Ok(OneDriveConfig {
            name: name.to_owned(),
            client_id: client_id.trim().to_owned(),
            tenant,
            folder,
            app_folder: raw.app_folder.unwrap_or(false),
            fragment_size,
            tokens: crate::oauth::store::from_config(section, name, raw.token_store.as_deref())?,
            timeout: section.duration("timeout", raw.timeout.as_deref(), Duration::from_mins(2))?,
            graph_url: service_url(section, "graph_url", raw.graph_url, "https://graph.microsoft.com/v1.0/")?,
            login_url: service_url(section, "login_url", raw.login_url, "https://login.microsoftonline.com/")?,
        })
    }

    /// The identity platform's endpoint `name` (`token`, `devicecode`,
    /// `authorize`) for the tenant.
    fn endpoint(&self, name: &str) -> url::Url {
        self.login_url.join(&format!("{}/oauth2/v2.0/{name}", self.tenant)).expect("a relative path joins")
    }

    /// The permissions asked for.
    pub fn scope(&self) -> &'static str {
        if self.app_folder { "Files.ReadWrite.AppFolder offline_access" } else { "Files.ReadWrite offline_access" }
    }

    /// The sign-in: this app at the tenant's token endpoint.
    pub fn provider(&self) -> Provider {
        Provider {
            service: "OneDrive",
            destination: self.name.clone(),
            client_id: self.client_id.clone(),
            client_secret: None,
            token_url: self.endpoint("token"),
        }
    }

    /// Signing in: the device code flow, or the browser on this machine.
    pub fn sign_in(&self) -> SignIn {
        let mut authorize = self.endpoint("authorize");
        authorize
            .query_pairs_mut()
            .append_pair("client_id", &self.client_id)
            .append_pair("response_type", "code")
            .append_pair("response_mode", "query");
        SignIn {
            provider: self.provider(),
            store: self.tokens.clone(),
            authorize,
            scope: Some(self.scope().to_owned()),
            device_url: Some(self.endpoint("devicecode")),
            default_flow: Flow::Device,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{Config, DestinationKind};

    fn destination(keys: &str) -> Result<OneDriveConfig, ConfigError> {
        let text = format!("[[source]]\npath = \"/p\"\n[[destination]]\nname = \"od\"\ntype = \"onedrive\"\n{keys}");
        let config = Config::parse(&text, Path::new("/etc/photosync/config.toml"))?;
        match config.destinations[0].kind.clone() {
            DestinationKind::OneDrive(onedrive) => Ok(*onedrive),
            other => panic!("not onedrive: {other:?}"),
        }
    }

    #[test]
    fn defaults_and_checks() {
        let config = destination("client_id = \"app\"").expect("valid");
        assert_eq!((config.folder.as_str(), config.fragment_size), ("/photosync/", 10 * 1024 * 1024));
        assert_eq!(config.provider().token_url.as_str(), "https://login.microsoftonline.com/common/oauth2/v2.0/token");
        let sign_in = config.sign_in();
        assert_eq!(
            sign_in.device_url.map(|u| u.to_string()).as_deref(),
            Some("https://login.microsoftonline.com/common/oauth2/v2.0/devicecode")
        );
        assert_eq!(sign_in.scope.as_deref(), Some("Files.ReadWrite offline_access"));
        let narrow = destination("client_id = \"app\"\napp_folder = true\ntenant = \"consumers\"\nfolder = \"/\"")
            .expect("valid");
        assert_eq!((narrow.scope(), narrow.folder.as_str()), ("Files.ReadWrite.AppFolder offline_access", "/"));
        assert!(narrow.provider().token_url.as_str().contains("/consumers/"));
        for (keys, complaint) in [
            ("", "client_id"),
            ("client_id = \"a\"\nfragment_size = \"1MiB\"", "320KiB"),
            ("client_id = \"a\"\nfragment_size = \"60MiB\"", "320KiB"),
            ("client_id = \"a\"\ntenant = \"a/b\"", "tenant"),
            ("client_id = \"a\"\ngraph_url = \"http://graph.example\"", "graph_url"),
        ] {
            let error = destination(keys).expect_err(keys).to_string();
            assert!(error.contains(complaint), "{keys}: {error}");
        }
    }
}

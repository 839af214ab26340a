//! `type = "immich"`: its keys, validated.

use std::time::Duration;

use serde::Deserialize;

use crate::config::{ConfigError, Section};
use crate::destination::http::is_loopback;
use crate::destination::secret::PasswordSource;

/// The keys of an Immich destination, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    /// The server, e.g. `https://photos.example.org` (with or without `/api`).
    url: Option<String>,
    /// Name of the environment variable holding the API key.
    api_key_env: Option<String>,
    /// A file whose first line is the API key.
    api_key_file: Option<String>,
    /// The account the API key is filed under in the OS keyring.
    api_key_keyring: Option<String>,
    /// Allow `http://` to a host other than this machine.
    insecure_http: Option<bool>,
    /// How long the server may stay silent before a request is retried.
    timeout: Option<String>,
    /// The album each photo goes into, a template like a layout's
    /// (`"{year}"`, `"{source}"`); none by default.
    album: Option<String>,
}

/// An Immich destination's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImmichConfig {
    /// The API's base, ending in `/api/`.
    pub api: url::Url,
    /// Where the API key comes from (read when used, never logged).
    pub api_key: PasswordSource,
    /// How long the server may stay silent.
    pub timeout: Duration,
    /// The album each photo goes into (created when first needed).
    pub album: Option<crate::layout::Layout>,
}

impl ImmichConfig {
    /// Validates the keys of a `type = "immich"` destination.
    pub fn parse(table: toml::Table, section: &Section<'_>) -> Result<ImmichConfig, ConfigError> {
        let raw: Raw = section.fields(table)?;
        let text = raw.url.ok_or_else(|| section.error("url", "required for type = \"immich\""))?;
        let mut api = url::Url::parse(&text)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
            .filter(|u| u.username().is_empty() && u.password().is_none() && u.query().is_none())
            .ok_or_else(|| {
                section.error("url", &format!("`{text}` is not an http(s) URL like \"https://photos.example.org\""))
            })?;
        if api.scheme() == "http" && !is_loopback(&api) && raw.insecure_http != Some(true) {
            return Err(section.error(
                "url",
                "http:// sends the API key and photos unencrypted; use https://, or set insecure_http = true",
            ));
        }
        // The API lives under `/api`: a bare server URL answers with the web app.
        let path = api.path().trim_end_matches('/').to_owned();
        let path = if path.ends_with("/api") { path } else { format!("{path}/api") };
        api.set_path(&format!("{path}/"));
        let api_key = match (raw.api_key_env, raw.api_key_file, raw.api_key_keyring) {
            (Some(var), None, None) => PasswordSource::Env(var),
            (None, Some(file), None) => PasswordSource::File(section.path("api_key_file", &file)?),
            (None, None, Some(account)) if !account.trim().is_empty() => PasswordSource::Keyring(account),
            (None, None, None) => {
                return Err(section
                    .error("api_key_env", "an API key is required: api_key_env, api_key_file or api_key_keyring"));
            }
            _ => {
                return Err(section.error("api_key_env", "choose one of api_key_env, api_key_file and api_key_keyring"));
            }
        };
        let album = match raw.album.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(text) => Some(
                crate::layout::Layout::label(text).map_err(|e| section.error("album", &format!("`{text}`: {e}")))?,
            ),
        };
        Ok(ImmichConfig {
            api,
            api_key,
            album,
            timeout: section.duration("timeout", raw.timeout.as_deref(), Duration::from_mins(2))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{Config, DestinationKind};

    fn destination(keys: &str) -> Result<ImmichConfig, ConfigError> {
        let text = format!("[[source]]\npath = \"/p\"\n[[destination]]\nname = \"immich\"\ntype = \"immich\"\n{keys}");
        let config = Config::parse(&text, Path::new("/etc/photosync/config.toml"))?;
        match config.destinations[0].kind.clone() {
            DestinationKind::Immich(immich) => Ok(*immich),
            other => panic!("not immich: {other:?}"),
        }
    }

    #[test]
    fn the_api_is_found_under_the_server_url_and_a_key_is_required() {
        for url in ["https://photos.example.org", "https://photos.example.org/", "https://photos.example.org/api"] {
            let config = destination(&format!("url = \"{url}\"\napi_key_env = \"IMMICH_KEY\"")).expect("valid");
            assert_eq!(config.api.as_str(), "https://photos.example.org/api/", "{url}");
            assert_eq!(config.api_key, PasswordSource::Env("IMMICH_KEY".into()));
        }
        let sub = destination("url = \"https://example.org/immich/\"\napi_key_file = \"key\"").expect("valid");
        assert_eq!(sub.api.as_str(), "https://example.org/immich/api/");
        assert_eq!(sub.api_key, PasswordSource::File("/etc/photosync/key".into()));
        let error = destination("url = \"https://photos.example.org\"").expect_err("no key");
        assert!(error.to_string().contains("API key is required"), "{error}");
        let error = destination("url = \"http://photos.example.org\"\napi_key_env = \"K\"").expect_err("http");
        assert!(error.to_string().contains("unencrypted"), "{error}");
        assert!(destination("url = \"http://127.0.0.1:2283\"\napi_key_env = \"K\"").is_ok(), "http to this machine");
        let albums = destination("url = \"https://p.example\"\napi_key_env = \"K\"\nalbum = \"{source} {year}\"")
            .expect("valid");
        assert_eq!(albums.album.map(|a| a.to_string()).as_deref(), Some("{source} {year}"));
        let error =
            destination("url = \"https://p.example\"\napi_key_env = \"K\"\nalbum = \"{decade}\"").expect_err("bad");
        assert!(error.to_string().contains("unknown variable"), "{error}");
    }
}

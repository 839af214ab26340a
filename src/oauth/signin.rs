//! What `photosync auth NAME` does, apart from talking to the user: the
//! address the user allows the app at, the exchange of the code they
//! bring back, keeping the grant, and a look at the grant kept.

use std::time::Duration;

use serde::Serialize;

use super::pkce::Pkce;
use super::store::Place;
use super::token::{self, TokenError};
use super::{Grant, Provider, TokenStore};
use crate::destination::http;

/// How long the token endpoint may take.
const TIMEOUT: Duration = Duration::from_mins(1);

/// How a destination signs in.
#[derive(Debug, Clone)]
pub struct SignIn {
    /// The app and its token endpoint.
    pub provider: Provider,
    /// Where the grant is kept.
    pub store: TokenStore,
    /// The authorization endpoint with the app's own parameters; the
    /// PKCE challenge (and a loopback flow's redirect and state) are
    /// added per sign-in.
    pub authorize: url::Url,
    /// The scopes to ask for, where the service takes them in the request.
    pub scope: Option<String>,
    /// The device authorization endpoint (RFC 8628), where there is one.
    pub device_url: Option<url::Url>,
    /// The flow used unless the user picks another.
    pub default_flow: Flow,
}

/// How the user signs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Allow the app in a browser anywhere; paste the code the service shows.
    Paste,
    /// Enter a short code on the service's page, on any device (RFC 8628).
    Device,
    /// Allow the app in a browser on this machine, which sends it back to a
    /// listener on 127.0.0.1 (RFC 8252 §7.3).
    Browser,
}

impl Flow {
    /// What it is called on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Paste => "paste",
            Self::Device => "device",
            Self::Browser => "browser",
        }
    }
}

/// What `photosync auth NAME --status` reports (no secret in it).
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The destination.
    pub destination: String,
    /// The service.
    pub service: &'static str,
    /// Whether a grant is kept.
    pub signed_in: bool,
    /// `keyring` or `file`, where it is.
    pub store: Option<&'static str>,
    /// The keyring account or the file.
    pub location: Option<String>,
    /// The account, as the service names it.
    pub account: Option<String>,
    /// The scopes granted.
    pub scope: Option<String>,
    /// When the user signed in.
    pub signed_in_at: Option<String>,
    /// When the refresh token was last replaced.
    pub rotated_at: Option<String>,
    /// `works`, `revoked`, `unreachable`, or `none`: what asking the
    /// service for an access token gave.
    pub grant: &'static str,
    /// What went wrong, in words.
    pub problem: Option<String>,
}

/// An HTTP client for the sign-in endpoints.
pub(super) fn client() -> Result<reqwest::Client, String> {
    http::Client::without_redirects(TIMEOUT).get().map_err(|e| e.message)
}

impl SignIn {
    /// The address the user opens to allow the app, for `pkce`.
    pub fn authorize_url(&self, pkce: &Pkce) -> url::Url {
        let mut url = self.authorize.clone();
        url.query_pairs_mut()
            .append_pair("code_challenge", &pkce.challenge)
            .append_pair("code_challenge_method", "S256");
        url
    }

    /// Whether the service offers `flow`.
    pub fn offers(&self, flow: Flow) -> bool {
        match flow {
            Flow::Paste => self.default_flow == Flow::Paste,
            Flow::Device => self.device_url.is_some(),
            Flow::Browser => self.default_flow != Flow::Paste,
        }
    }

    /// Exchanges the code the user pasted and keeps the grant.
    pub async fn finish_paste(&self, code: &str, pkce: &Pkce) -> Result<(Grant, Place), String> {
        self.exchange(code, pkce, None).await
    }

    /// Exchanges an authorization code (sent to `redirect_uri`, if any) and
    /// keeps the grant.
    pub(super) async fn exchange(
        &self,
        code: &str,
        pkce: &Pkce,
        redirect_uri: Option<&str>,
    ) -> Result<(Grant, Place), String> {
        let tokens = token::exchange_code(&client()?, &self.provider, code.trim(), &pkce.verifier, redirect_uri)
            .await
            .map_err(|e| match e {
                TokenError::Revoked(said) => {
                    format!("{said}: the code was mistyped, used already, or too old; run the command again")
                }
                other => other.to_string(),
            })?;
        self.keep(tokens).await
    }

    /// Keeps the grant of a sign-in's first tokens.
    pub(super) async fn keep(&self, tokens: token::Tokens) -> Result<(Grant, Place), String> {
        let refresh = tokens.refresh.ok_or_else(|| {
            format!("{} gave no refresh token: it would stop working within hours", self.provider.service)
        })?;
        let grant = Grant {
            refresh_token: refresh.0,
            scope: tokens.scope,
            account: tokens.account,
            signed_in_at: super::now_rfc3339(),
            rotated_at: None,
        };
        let store = self.store.clone();
        let saved = grant.clone();
        let place = tokio::task::spawn_blocking(move || store.save(&saved)).await.map_err(|e| e.to_string())??;
        Ok((grant, place))
    }

    /// The grant kept, and whether the service still takes it (asking it
    /// for an access token; a service that rotates refresh tokens gets
    /// the new one kept).
    pub async fn status(&self) -> Status {
        let mut status = Status {
            destination: self.provider.destination.clone(),
            service: self.provider.service,
            signed_in: false,
            store: None,
            location: None,
            account: None,
            scope: None,
            signed_in_at: None,
            rotated_at: None,
            grant: "none",
            problem: None,
        };
        let store = self.store.clone();
        let loaded = tokio::task::spawn_blocking(move || store.load()).await.map_err(|e| e.to_string()).and_then(|r| r);
        let (grant, place) = match loaded {
            Ok(Some(found)) => found,
            Ok(None) => return status,
            Err(problem) => {
                status.problem = Some(problem);
                return status;
            }
        };
        status.signed_in = true;
        (status.store, status.location) = match &place {
            Place::Keyring(account) => (Some("keyring"), Some(account.clone())),
            Place::File(path) => (Some("file"), Some(path.display().to_string())),
        };
        status.account.clone_from(&grant.account);
        status.scope.clone_from(&grant.scope);
        status.signed_in_at = Some(grant.signed_in_at.clone());
        status.rotated_at.clone_from(&grant.rotated_at);
        let access = super::Access::new(self.provider.clone(), self.store.clone(), TIMEOUT);
        match access.token().await {
            Ok(_) => status.grant = "works",
            Err(e) if e.retry == crate::destination::Retry::Held => {
                status.grant = "revoked";
                status.problem = Some(e.message);
            }
            Err(e) => {
                status.grant = "unreachable";
                status.problem = Some(e.message);
            }
        }
        status
    }
}

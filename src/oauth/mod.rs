//! Signing in to a cloud service once (`photosync auth NAME`) and staying
//! signed in: OAuth 2.0 for public clients, without a client secret.
//!
//! - [`pkce`]: the proof key (RFC 7636) a public client signs in with.
//! - [`token`]: the token endpoint (RFC 6749 §4.1.3, §6): exchanging the
//!   code the user brought back, refreshing an access token, and telling a
//!   revoked grant (`invalid_grant`) from trouble that may pass.
//! - [`store`]: where the grant (the refresh token) is kept: the OS keyring
//!   where one answers, else a private file under the config folder.
//! - [`signin`]: what `photosync auth` does: the address to allow the app
//!   at, the code exchanged, the grant kept and looked at.
//! - [`device`] and [`loopback`]: the device-code flow (RFC 8628) and the
//!   browser flow with a listener on 127.0.0.1 (RFC 8252).
//! - [`access`]: the access tokens a destination sends, refreshed one at a
//!   time per destination, with a rotated refresh token saved before the
//!   new access token is used.
//!
//! Tokens never reach a log, an error message or `--json`: [`Grant`] and
//! the access token types print as `[redacted]`.

pub mod access;
pub mod device;
pub mod loopback;
pub mod pkce;
pub mod signin;
pub mod store;
pub mod token;

pub use access::Access;
pub use signin::SignIn;
pub use store::{TokenStore, TokenStoreKind};

use serde::{Deserialize, Serialize};

/// What a sign-in leaves behind: the long-lived refresh token and what it
/// was granted for.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The refresh token (a secret).
    pub refresh_token: String,
    /// The scopes the service granted, as it said them.
    #[serde(default)]
    pub scope: Option<String>,
    /// The account signed in to, as the service names it.
    #[serde(default)]
    pub account: Option<String>,
    /// When the user signed in (RFC 3339).
    pub signed_in_at: String,
    /// When the refresh token was last replaced (a service that rotates it).
    #[serde(default)]
    pub rotated_at: Option<String>,
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grant")
            .field("refresh_token", &"[redacted]")
            .field("scope", &self.scope)
            .field("account", &self.account)
            .field("signed_in_at", &self.signed_in_at)
            .field("rotated_at", &self.rotated_at)
            .finish()
    }
}

/// A cloud service's sign-in: who the app is and where its token
/// endpoint is, and how to tell the user to sign in again.
#[derive(Clone, PartialEq, Eq)]
pub struct Provider {
    /// The service, for people ("Dropbox").
    pub service: &'static str,
    /// The destination's name (what `photosync auth` takes).
    pub destination: String,
    /// The app's client id (registered by the user).
    pub client_id: String,
    /// The app's client secret, for a service that wants one even from an
    /// app that cannot keep it (Google's desktop apps); never printed.
    pub client_secret: Option<String>,
    /// The token endpoint.
    pub token_url: url::Url,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("service", &self.service)
            .field("destination", &self.destination)
            .field("token_url", &self.token_url.as_str())
            .finish_non_exhaustive()
    }
}

impl Provider {
    /// What the user runs to sign in (again).
    pub fn sign_in_command(&self) -> String {
        let name = &self.destination;
        if name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            format!("photosync auth {name}")
        } else {
            format!("photosync auth '{}'", name.replace('\'', r"'\''"))
        }
    }
}

/// Now, as RFC 3339 in UTC.
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

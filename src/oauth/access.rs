//! The access tokens one destination sends: kept in memory until shortly
//! before they expire, then refreshed from the grant in the
//! [`TokenStore`]. One refresh at a time per destination (uploads
//! running side by side wait for it rather than each refreshing, which
//! would race a refresh token that rotates). A refresh token the service
//! replaces is saved before the new access token is used, so a crash
//! right after the refresh never strands the only valid token in memory.
//! A grant the service revoked holds the destination until the user signs
//! in again; the revoked token is remembered, so waiting costs no request.

use std::time::{Duration, Instant};

use super::token::{self, AccessToken, TokenError};
use super::{Grant, Provider, TokenStore};
use crate::destination::{DestinationError, http};

/// Refreshed this long before the service says it expires.
const MARGIN: Duration = Duration::from_mins(2);

/// Assumed lifetime when the service does not say.
const DEFAULT_LIFETIME: Duration = Duration::from_mins(30);

/// Access tokens for one destination.
pub struct Access {
    provider: Provider,
    store: TokenStore,
    client: http::Client,
    state: tokio::sync::Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The token in use and when it is due for a refresh.
    current: Option<(AccessToken, Instant)>,
    /// A refresh token the service revoked, and what it said.
    revoked: Option<(String, String)>,
    /// A rotated grant not saved yet (the store failed), with the access
    /// token that came with it: not used until it is saved.
    unsaved: Option<(Grant, AccessToken, Instant)>,
}

impl Access {
    /// Access for `provider`, its grant in `store`.
    pub fn new(provider: Provider, store: TokenStore, timeout: Duration) -> Access {
        Access {
            provider,
            store,
            client: http::Client::without_redirects(timeout),
            state: tokio::sync::Mutex::default(),
        }
    }

    /// The service and destination.
    pub fn provider(&self) -> &Provider {
        &self.provider
    }

    /// A valid access token, refreshed if need be.
    pub async fn token(&self) -> Result<AccessToken, DestinationError> {
        let mut state = self.state.lock().await;
        if let Some((token, due)) = &state.current
            && Instant::now() < *due
        {
            return Ok(token.clone());
        }
        state.current = None;
        // A replaced refresh token is saved before its access token is used.
        if let Some((grant, token, due)) = state.unsaved.take() {
            if let Err(e) = self.save(grant.clone()).await {
                state.unsaved = Some((grant, token, due));
                return Err(e);
            }
            if Instant::now() < due {
                state.current = Some((token.clone(), due));
                return Ok(token);
            }
        }
        let store = self.store.clone();
        let loaded = tokio::task::spawn_blocking(move || store.load())
            .await
            .map_err(|e| DestinationError::transient(format!("cannot read the sign-in: {e}")))?;
        // A keyring that is locked or gone, a damaged file: the user's to fix.
        let (mut grant, _) = loaded
            .map_err(|e| DestinationError::held(format!("cannot read the {} sign-in: {e}", self.provider.service)))?
            .ok_or_else(|| {
                DestinationError::held(format!(
                    "not signed in to {}: run `{}`",
                    self.provider.service,
                    self.provider.sign_in_command()
                ))
            })?;
        if let Some((revoked, said)) = &state.revoked
            && *revoked == grant.refresh_token
        {
            return Err(self.sign_in_again(said));
        }
        let client = self.client.get()?;
        match token::refresh(&client, &self.provider, &grant.refresh_token).await {
            Ok(tokens) => {
                let lifetime = tokens.expires_in.unwrap_or(DEFAULT_LIFETIME);
                let due = Instant::now() + lifetime.saturating_sub(MARGIN).max(lifetime / 2);
                state.revoked = None;
                if let Some(rotated) = tokens.refresh.filter(|r| r.0 != grant.refresh_token) {
                    grant.refresh_token = rotated.0;
                    grant.rotated_at = Some(super::now_rfc3339());
                    if let Err(e) = self.save(grant.clone()).await {
                        state.unsaved = Some((grant, tokens.access, due));
                        return Err(e);
                    }
                }
                state.current = Some((tokens.access.clone(), due));
                Ok(tokens.access)
            }
            Err(TokenError::Revoked(said)) => {
                tracing::warn!(destination = %self.provider.destination, "{said}");
                let error = self.sign_in_again(&said);
                state.revoked = Some((grant.refresh_token, said));
                Err(error)
            }
            // The app itself was refused (a wrong client id): the config
            // needs fixing; asked again at the next look, as the fix may
            // have been made.
            Err(TokenError::Refused(said)) => Err(self.sign_in_again(&said)),
            Err(e @ (TokenError::Unavailable(_) | TokenError::Pending | TokenError::SlowDown)) => {
                Err(DestinationError::transient(format!("cannot refresh the {} sign-in: {e}", self.provider.service)))
            }
        }
    }

    /// Saves a replaced grant.
    async fn save(&self, grant: Grant) -> Result<(), DestinationError> {
        let store = self.store.clone();
        let failed = |e: String| DestinationError::transient(format!("cannot save the renewed sign-in: {e}"));
        tokio::task::spawn_blocking(move || store.save(&grant))
            .await
            .map_err(|e| failed(e.to_string()))?
            .map(|_| ())
            .map_err(failed)
    }

    /// Sends a request made by `make` with the access token; a 401 gets a
    /// fresh token and one more try; any other answer is returned as it is.
    pub async fn send(
        &self,
        cancel: &tokio_util::sync::CancellationToken,
        make: impl Fn() -> Result<reqwest::RequestBuilder, DestinationError>,
    ) -> Result<reqwest::Response, DestinationError> {
        let mut refreshed = false;
        loop {
            let token = self.token().await?;
            let response = http::send_for(cancel, make()?.bearer_auth(&token.0)).await?;
            if response.status() != reqwest::StatusCode::UNAUTHORIZED {
                return Ok(response);
            }
            self.rejected(&token).await;
            if refreshed {
                return Err(self.refused_fresh());
            }
            refreshed = true;
        }
    }

    /// The service refused `token` (401): it is not used again.
    pub async fn rejected(&self, token: &AccessToken) {
        let mut state = self.state.lock().await;
        if state.current.as_ref().is_some_and(|(current, _)| current == token) {
            state.current = None;
        }
    }

    /// The service refused a fresh token too: the grant is no good.
    pub fn refused_fresh(&self) -> DestinationError {
        self.sign_in_again(&format!("{} refused a freshly refreshed access token", self.provider.service))
    }

    fn sign_in_again(&self, said: &str) -> DestinationError {
        DestinationError::held(format!("sign in again: {} ({said})", self.provider.sign_in_command()))
    }
}

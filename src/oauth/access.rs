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
use super::{Provider, TokenStore};
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
    /// A refresh token the service refused, and what it said.
    refused: Option<(String, String)>,
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
        let store = self.store.clone();
        let loaded = tokio::task::spawn_blocking(move || store.load())
            .await
            .map_err(|e| DestinationError::transient(format!("cannot read the sign-in: {e}")))?;
        let (mut grant, _) = loaded
            .map_err(|e| DestinationError::transient(format!("cannot read the sign-in: {e}")))?
            .ok_or_else(|| {
                DestinationError::held(format!(
                    "not signed in to {}: run `{}`",
                    self.provider.service,
                    self.provider.sign_in_command()
                ))
            })?;
        if let Some((refused, said)) = &state.refused
            && *refused == grant.refresh_token
        {
            return Err(self.sign_in_again(said));
        }
        let client = self.client.get()?;
        match token::refresh(&client, &self.provider, &grant.refresh_token).await {
            Ok(tokens) => {
                if let Some(rotated) = tokens.refresh.filter(|r| r.0 != grant.refresh_token) {
                    grant.refresh_token = rotated.0;
                    grant.rotated_at = Some(super::now_rfc3339());
                    let store = self.store.clone();
                    tokio::task::spawn_blocking(move || store.save(&grant))
                        .await
                        .map_err(|e| DestinationError::transient(format!("cannot save the renewed sign-in: {e}")))?
                        .map_err(|e| DestinationError::transient(format!("cannot save the renewed sign-in: {e}")))?;
                }
                let lifetime = tokens.expires_in.unwrap_or(DEFAULT_LIFETIME);
                let due = Instant::now() + lifetime.saturating_sub(MARGIN).max(lifetime / 2);
                state.current = Some((tokens.access.clone(), due));
                state.refused = None;
                Ok(tokens.access)
            }
            Err(TokenError::Revoked(said) | TokenError::Refused(said)) => {
                tracing::warn!(destination = %self.provider.destination, "{said}");
                let error = self.sign_in_again(&said);
                state.refused = Some((grant.refresh_token, said));
                Err(error)
            }
            Err(e @ (TokenError::Unavailable(_) | TokenError::Pending | TokenError::SlowDown)) => {
                Err(DestinationError::transient(format!("cannot refresh the {} sign-in: {e}", self.provider.service)))
            }
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

//! The device authorization grant (RFC 8628): photosync asks for a short
//! code, the user enters it on the service's page on any device, and
//! photosync polls the token endpoint at the interval the service asked
//! for (§3.4), waiting longer when told to slow down (§3.5), until the
//! user allows or declines or the code expires.

use std::time::Duration;

use serde::Deserialize;

use super::SignIn;
use super::store::Place;
use super::token::{self, TokenError};
use super::{Grant, signin::client};

/// A device code the user is to enter.
pub struct DeviceCode {
    /// What the user types.
    pub user_code: String,
    /// Where they type it.
    pub verification_uri: String,
    /// What the token endpoint is polled with (RFC 8628 §3.4).
    secret: String,
    interval: Duration,
    expires_in: Duration,
}

#[derive(Deserialize)]
struct Answer {
    device_code: String,
    user_code: String,
    #[serde(alias = "verification_url")]
    verification_uri: String,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    interval: Option<u64>,
}

/// The grant type of a device code (RFC 8628 §3.4).
const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:device_code";

impl SignIn {
    /// Asks the service for a device code.
    pub async fn device_start(&self) -> Result<DeviceCode, String> {
        let service = self.provider.service;
        let url = self.device_url.clone().ok_or_else(|| format!("{service} offers no device sign-in"))?;
        let mut form = vec![("client_id", self.provider.client_id.as_str())];
        if let Some(scope) = &self.scope {
            form.push(("scope", scope.as_str()));
        }
        let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
        let response = client()?
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|e| crate::destination::http::transport(e).message)?;
        let status = response.status();
        let text = response.text().await.map_err(|e| crate::destination::http::transport(e).message)?;
        if !status.is_success() {
            let said: String = text.chars().filter(|c| !c.is_control()).take(300).collect();
            return Err(format!("{service} refused to start a device sign-in ({status}): {said}"));
        }
        let answer: Answer =
            serde_json::from_str(&text).map_err(|e| format!("{service} answered the device sign-in oddly: {e}"))?;
        Ok(DeviceCode {
            user_code: answer.user_code,
            verification_uri: answer.verification_uri,
            secret: answer.device_code,
            interval: Duration::from_secs(answer.interval.unwrap_or(5).max(1)),
            expires_in: Duration::from_secs(answer.expires_in.unwrap_or(900)),
        })
    }

    /// Waits for the user to enter `code`, then keeps the grant.
    pub async fn device_finish(&self, code: DeviceCode) -> Result<(Grant, Place), String> {
        let service = self.provider.service;
        let client = client()?;
        let deadline = tokio::time::Instant::now() + code.expires_in;
        let mut interval = code.interval;
        loop {
            tokio::time::sleep(interval).await;
            if tokio::time::Instant::now() > deadline {
                return Err("the code expired before it was entered; run the command again".to_owned());
            }
            let form = [
                ("grant_type", GRANT_TYPE),
                ("device_code", code.secret.as_str()),
                ("client_id", self.provider.client_id.as_str()),
            ];
            match token::post(&client, &self.provider, &form).await {
                Ok(tokens) => return self.keep(tokens).await,
                Err(TokenError::Pending) => {}
                // §3.5: add 5 seconds to the interval for this and every later poll.
                Err(TokenError::SlowDown) => interval += Duration::from_secs(5),
                Err(TokenError::Unavailable(said)) => {
                    tracing::warn!("{said}; asking again");
                }
                Err(TokenError::Revoked(said) | TokenError::Refused(said)) => {
                    return Err(format!("{service} did not sign photosync in: {said}"));
                }
            }
        }
    }
}

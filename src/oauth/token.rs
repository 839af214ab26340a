//! The token endpoint (RFC 6749): the authorization code exchanged for a
//! grant (§4.1.3, with the PKCE verifier of RFC 7636 §4.5), and the
//! refresh token exchanged for a new access token (§6). Requests are
//! form-encoded POSTs; answers are JSON (§5.1), errors `{error,
//! error_description}` (§5.2).

use std::time::Duration;

use serde::Deserialize;

use super::Provider;
use crate::destination::http;

/// An access token (a secret: it prints as `[redacted]`).
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken(pub String);

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessToken([redacted])")
    }
}

/// A successful answer of the token endpoint.
#[derive(Debug)]
pub struct Tokens {
    /// The access token to send.
    pub access: AccessToken,
    /// How long it lasts, when the service said.
    pub expires_in: Option<Duration>,
    /// A refresh token: the first one at sign-in, a replacement from a
    /// service that rotates them (Microsoft), none from one that does not.
    pub refresh: Option<AccessToken>,
    /// The scopes granted.
    pub scope: Option<String>,
    /// The account signed in to, where the service names it.
    pub account: Option<String>,
}

/// Why the token endpoint gave no tokens.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The grant is gone (`invalid_grant`: revoked, expired, or a code
    /// already used): only signing in again helps.
    #[error("{0}")]
    Revoked(String),
    /// The service refused the app itself (an unknown client id, a scope
    /// it may not ask for): the config needs fixing.
    #[error("{0}")]
    Refused(String),
    /// The user has not finished signing in yet (device flow).
    #[error("authorization pending")]
    Pending,
    /// Polling too fast (device flow): wait longer between polls.
    #[error("slow down")]
    SlowDown,
    /// The network or the service failed; it may pass.
    #[error("{0}")]
    Unavailable(String),
}

#[derive(Deserialize)]
struct Answer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    /// Dropbox names the account.
    #[serde(default)]
    account_id: Option<String>,
}

#[derive(Deserialize)]
struct Failure {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

/// Exchanges the authorization code the user brought back, proving the
/// PKCE `verifier`; `redirect_uri` exactly as in the authorization request
/// (none when the service shows the code instead of redirecting).
pub async fn exchange_code(
    client: &reqwest::Client,
    provider: &Provider,
    code: &str,
    verifier: &str,
    redirect_uri: Option<&str>,
) -> Result<Tokens, TokenError> {
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("code_verifier", verifier),
        ("client_id", provider.client_id.as_str()),
    ];
    if let Some(uri) = redirect_uri {
        form.push(("redirect_uri", uri));
    }
    post(client, provider, &form).await
}

/// A new access token for `refresh_token`.
pub async fn refresh(client: &reqwest::Client, provider: &Provider, refresh_token: &str) -> Result<Tokens, TokenError> {
    post(
        client,
        provider,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", provider.client_id.as_str()),
        ],
    )
    .await
}

/// POSTs `form` to the provider's token endpoint.
pub async fn post(client: &reqwest::Client, provider: &Provider, form: &[(&str, &str)]) -> Result<Tokens, TokenError> {
    let body = {
        let mut body = url::form_urlencoded::Serializer::new(String::new());
        body.extend_pairs(form);
        if let Some(secret) = &provider.client_secret {
            body.append_pair("client_secret", secret);
        }
        body.finish()
    };
    let response = client
        .post(provider.token_url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(reqwest::header::ACCEPT, "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| TokenError::Unavailable(http::transport(e).message))?;
    let status = response.status();
    let text = response.text().await.map_err(|e| TokenError::Unavailable(http::transport(e).message))?;
    if status.is_success() {
        let answer: Answer = serde_json::from_str(&text).map_err(|e| {
            TokenError::Unavailable(format!(
                "{}'s token endpoint answered {status} with no tokens: {e}",
                provider.service
            ))
        })?;
        return Ok(Tokens {
            access: AccessToken(answer.access_token),
            expires_in: answer.expires_in.map(Duration::from_secs),
            refresh: answer.refresh_token.map(AccessToken),
            scope: answer.scope,
            account: answer.account_id,
        });
    }
    Err(classify(provider, status, &text))
}

/// What a refusal of the token endpoint means.
fn classify(provider: &Provider, status: reqwest::StatusCode, body: &str) -> TokenError {
    let service = provider.service;
    // A server in trouble may say anything; it may pass whatever it says.
    if http::retry_for(status) == crate::destination::Retry::Transient {
        return TokenError::Unavailable(format!("{service}'s token endpoint answered {status}"));
    }
    let Ok(failure) = serde_json::from_str::<Failure>(body) else {
        return TokenError::Refused(format!(
            "{service}'s token endpoint refused the request ({status}, not in OAuth's words: a proxy or a \
             sign-in page in the way?)"
        ));
    };
    // The service's own words, shortened and on one line: they never hold a token.
    let description: String = failure
        .error_description
        .as_deref()
        .map(|d| format!(": {}", d.chars().filter(|c| !c.is_control()).take(200).collect::<String>()))
        .unwrap_or_default();
    let said = format!("{}{description}", failure.error);
    match failure.error.as_str() {
        "invalid_grant" => TokenError::Revoked(format!("{service} no longer accepts the sign-in ({said})")),
        "expired_token" => TokenError::Revoked(format!("the code expired before it was entered ({said})")),
        "access_denied" | "authorization_declined" => TokenError::Revoked(format!("the sign-in was declined ({said})")),
        "authorization_pending" => TokenError::Pending,
        "slow_down" => TokenError::SlowDown,
        "temporarily_unavailable" | "server_error" => {
            TokenError::Unavailable(format!("{service}'s token endpoint is unavailable ({said})"))
        }
        _ => TokenError::Refused(format!(
            "{service} refused the app's sign-in ({said}): check client_id and the app's registration (the \
             README's section on {service} says which settings it needs)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider() -> Provider {
        Provider {
            service: "Dropbox",
            destination: "dropbox".into(),
            client_id: "app".into(),
            client_secret: None,
            token_url: url::Url::parse("https://api.dropboxapi.com/oauth2/token").expect("url"),
        }
    }

    #[test]
    fn refusals_are_told_apart() {
        let bad = reqwest::StatusCode::BAD_REQUEST;
        let revoked = classify(
            &provider(),
            bad,
            r#"{"error":"invalid_grant","error_description":"refresh token is invalid or revoked"}"#,
        );
        assert_eq!(
            revoked,
            TokenError::Revoked(
                "Dropbox no longer accepts the sign-in (invalid_grant: refresh token is invalid or revoked)".into()
            )
        );
        assert!(matches!(classify(&provider(), bad, r#"{"error":"invalid_client"}"#), TokenError::Refused(_)));
        assert_eq!(classify(&provider(), bad, r#"{"error":"authorization_pending"}"#), TokenError::Pending);
        assert_eq!(classify(&provider(), bad, r#"{"error":"slow_down"}"#), TokenError::SlowDown);
        let busy = classify(&provider(), reqwest::StatusCode::SERVICE_UNAVAILABLE, "<html>");
        assert!(matches!(busy, TokenError::Unavailable(_)), "{busy:?}");
        // Regression: a server error in JSON held the destination until the user signed in again.
        let said = classify(&provider(), reqwest::StatusCode::INTERNAL_SERVER_ERROR, r#"{"error":"server_busy"}"#);
        assert!(matches!(said, TokenError::Unavailable(_)), "{said:?}");
        assert!(matches!(classify(&provider(), bad, "nonsense"), TokenError::Refused(_)));
        assert_eq!(format!("{:?}", AccessToken("secret".into())), "AccessToken([redacted])");
    }
}

//! Dropbox's HTTP API as this destination uses it
//! (<https://www.dropbox.com/developers/documentation/http/documentation>):
//! RPC routes on the API host take and give JSON; content routes on the
//! content host take their argument as JSON in the `Dropbox-API-Arg`
//! header (HTTP-header safe: every character past ASCII escaped,
//! <https://www.dropbox.com/developers/reference/json-encoding>) and the
//! bytes as the body. A route's own refusals come back as 409 with
//! `{error_summary, error}`; other statuses follow the error-handling
//! guide (<https://www.dropbox.com/developers/reference/error-handling>):
//! 400 a malformed request, 401 a bad token, 403 no access, 429 too many
//! requests (with `Retry-After`), 5xx the server.

use std::fmt::Write as _;

use reqwest::{RequestBuilder, Response, StatusCode};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::destination::{DestinationError, http};
use crate::oauth::Access;
use crate::oauth::token::AccessToken;

/// A route's own refusal (HTTP 409).
#[derive(Debug, Clone)]
pub struct Refusal {
    /// `error_summary`, e.g. `path/conflict/file/..`.
    pub summary: String,
    /// `error`, the route's error union.
    pub error: Value,
}

impl Refusal {
    /// The error union's tag (`incorrect_offset`, `path`, …).
    pub fn tag(&self) -> &str {
        self.error.get(".tag").and_then(Value::as_str).unwrap_or_default()
    }

    /// Whether the summary starts with `prefix` (`path/not_found`,
    /// `path/conflict`): the tags down the union, `/`-separated.
    pub fn is(&self, prefix: &str) -> bool {
        self.summary.starts_with(prefix)
    }

    /// The server's offset in an `incorrect_offset` refusal.
    pub fn correct_offset(&self) -> Option<u64> {
        if self.tag() == "incorrect_offset" {
            return self.error.get("correct_offset").and_then(Value::as_u64);
        }
        // Inside `lookup_failed` (finish).
        self.error
            .get("lookup_failed")
            .filter(|e| e.get(".tag").and_then(Value::as_str) == Some("incorrect_offset"))
            .and_then(|e| e.get("correct_offset"))
            .and_then(Value::as_u64)
    }

    /// The refusal as an error (of `retry` kind).
    pub fn into_error(self, what: &str, permanent: bool) -> DestinationError {
        let message =
            format!("Dropbox refused to {what}: {}", self.summary.trim_end_matches('.').trim_end_matches('/'));
        if permanent { DestinationError::permanent(message) } else { DestinationError::transient(message) }
    }
}

/// What a route answered: its result, or its own refusal.
pub type Answer<T> = Result<T, Refusal>;

/// `value` as an HTTP-header-safe JSON text: every character from U+007F
/// on written as a `\uXXXX` escape (two, a surrogate pair, past U+FFFF).
pub fn header_json(value: &Value) -> String {
    let text = value.to_string();
    let mut safe = String::with_capacity(text.len());
    for c in text.chars() {
        if (c as u32) < 0x7F {
            safe.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                let _ = write!(safe, "\\u{unit:04x}");
            }
        }
    }
    safe
}

/// Sends requests with the destination's access token: a token the
/// service calls expired or invalid is refreshed and the request made
/// once more.
pub async fn send(
    access: &Access,
    cancel: &CancellationToken,
    what: &str,
    make: impl Fn(&AccessToken) -> Result<RequestBuilder, DestinationError>,
) -> Result<Answer<Response>, DestinationError> {
    let mut refreshed = false;
    loop {
        let token = access.token().await?;
        let response = http::send_for(cancel, make(&token)?.bearer_auth(&token.0)).await?;
        let status = response.status();
        if status.is_success() {
            return Ok(Ok(response));
        }
        let retry_after = http::retry_after(response.headers());
        // Dropbox's complaint about a malformed header quotes the header:
        // the token never goes further than here.
        let body = http::text(cancel, response).await.unwrap_or_default().replace(&token.0, "[redacted]");
        let parsed: Option<Value> = serde_json::from_str(&body).ok();
        let summary = parsed
            .as_ref()
            .and_then(|v| v.get("error_summary"))
            .and_then(Value::as_str)
            .map(|s| s.chars().filter(|c| !c.is_control()).take(200).collect::<String>())
            .unwrap_or_default();
        match status {
            StatusCode::CONFLICT => {
                let error = parsed.and_then(|mut v| v.get_mut("error").map(Value::take)).unwrap_or(Value::Null);
                return Ok(Err(Refusal { summary, error }));
            }
            StatusCode::UNAUTHORIZED => {
                if summary.starts_with("missing_scope") {
                    return Err(DestinationError::held(format!(
                        "the Dropbox app may not {what} ({summary}): give it the files.content.write, \
                         files.content.read and files.metadata.read permissions in the App Console, then sign \
                         in again: {}",
                        access.provider().sign_in_command()
                    )));
                }
                access.rejected(&token).await;
                if refreshed {
                    return Err(access.refused_fresh());
                }
                refreshed = true;
            }
            StatusCode::TOO_MANY_REQUESTS => {
                let asked = parsed.as_ref().and_then(|v| v.pointer("/error/retry_after")).and_then(Value::as_u64);
                let reason = if summary.is_empty() { "too many requests".to_owned() } else { summary };
                let mut error = DestinationError::transient(format!("Dropbox asked to slow down ({reason})"));
                error.retry_after = retry_after.or(asked.map(std::time::Duration::from_secs));
                return Err(error);
            }
            StatusCode::BAD_REQUEST => {
                // A plain-text explanation of what was malformed.
                let said: String = body.chars().filter(|c| !c.is_control()).take(300).collect();
                return Err(DestinationError::permanent(format!("Dropbox could not {what}: bad request ({said})")));
            }
            StatusCode::FORBIDDEN => {
                return Err(DestinationError::permanent(format!(
                    "Dropbox does not allow this app to {what} ({summary})"
                )));
            }
            other => {
                let said = if summary.is_empty() { String::new() } else { format!(": {summary}") };
                let message = format!("Dropbox could not {what} ({other}{said})");
                let mut error = match http::retry_for(other) {
                    crate::destination::Retry::Transient => DestinationError::transient(message),
                    _ => DestinationError::permanent(message),
                };
                error.retry_after = retry_after;
                return Err(error);
            }
        }
    }
}

/// The JSON body of a successful answer.
pub async fn json(cancel: &CancellationToken, response: Response, what: &str) -> Result<Value, DestinationError> {
    let text = http::text(cancel, response).await?;
    serde_json::from_str(&text)
        .map_err(|e| DestinationError::transient(format!("Dropbox answered {what} with something unreadable: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_argument_is_ascii_with_every_other_character_escaped() {
        let value = serde_json::json!({"path": "/Ærøskøbing/漢字 😀\u{7f}.jpg", "mode": "add"});
        let safe = header_json(&value);
        assert!(safe.bytes().all(|b| (0x20..0x7F).contains(&b)), "{safe}");
        assert!(safe.contains(r"\u00c6r\u00f8sk\u00f8bing/\u6f22\u5b57 \ud83d\ude00\u007f.jpg"), "{safe}");
        assert_eq!(serde_json::from_str::<Value>(&safe).expect("still JSON"), value);
    }

    #[test]
    fn refusals_name_their_offsets() {
        let refusal = |error: Value| Refusal { summary: "x".into(), error };
        let wrong = refusal(serde_json::json!({".tag": "incorrect_offset", "correct_offset": 8}));
        assert_eq!(wrong.correct_offset(), Some(8));
        let nested = refusal(
            serde_json::json!({".tag": "lookup_failed", "lookup_failed": {".tag": "incorrect_offset", "correct_offset": 9}}),
        );
        assert_eq!(nested.correct_offset(), Some(9));
        assert_eq!(refusal(serde_json::json!({".tag": "not_found"})).correct_offset(), None);
    }
}

//! Microsoft Graph as this destination uses it: requests with the
//! destination's access token (refreshed and sent once more when Graph
//! calls it invalid), and Graph's error answers
//! (<https://learn.microsoft.com/graph/errors>: `{"error": {"code",
//! "message"}}`) turned into what a retry can do
//! (<https://learn.microsoft.com/graph/throttling>: 429 and 503 carry
//! `Retry-After`).

use reqwest::{RequestBuilder, Response, StatusCode};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::destination::{DestinationError, Retry, http};
use crate::oauth::Access;

/// Sends a Graph request with the access token; any answer but a 401 is
/// returned as it is.
pub async fn send(
    access: &Access,
    cancel: &CancellationToken,
    make: impl Fn() -> Result<RequestBuilder, DestinationError>,
) -> Result<Response, DestinationError> {
    access.send(cancel, make).await
}

/// Graph's error code and message in an answer body, when it has them.
pub fn graph_error(body: &str) -> (String, String) {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let field = |name: &str| {
        parsed
            .as_ref()
            .and_then(|v| v.pointer(&format!("/error/{name}")))
            .and_then(Value::as_str)
            .map(|s| s.chars().filter(|c| !c.is_control()).take(200).collect::<String>())
            .unwrap_or_default()
    };
    (field("code"), field("message"))
}

/// A refusal `status` with `body` as an error; `what` says what was asked.
pub fn refusal(status: StatusCode, headers: &reqwest::header::HeaderMap, body: &str, what: &str) -> DestinationError {
    let (code, said) = graph_error(body);
    let detail = match (code.is_empty(), said.is_empty()) {
        (true, _) => String::new(),
        (false, true) => format!(": {code}"),
        (false, false) => format!(": {code}: {said}"),
    };
    let message = format!("OneDrive could not {what} ({status}{detail})");
    let mut error = match status {
        // Every upload would fail alike until the user makes room.
        StatusCode::INSUFFICIENT_STORAGE => {
            DestinationError::held(format!("OneDrive is full ({status}{detail}): make room, or move to a larger plan"))
        }
        StatusCode::FORBIDDEN => DestinationError::held(format!(
            "OneDrive does not allow this app to {what} ({status}{detail}): check the app's permissions, then sign \
             in again"
        )),
        other if http::retry_for(other) == Retry::Transient => DestinationError::transient(message),
        _ => DestinationError::permanent(message),
    };
    error.retry_after = http::retry_after(headers);
    error
}

/// The answer's body as JSON, or `refusal` for anything but `ok`.
pub async fn json(
    cancel: &CancellationToken,
    response: Response,
    what: &str,
) -> Result<(StatusCode, Value), DestinationError> {
    let status = response.status();
    let headers = response.headers().clone();
    let text = http::text(cancel, response).await?;
    if !status.is_success() {
        return Err(refusal(status, &headers, &text, what));
    }
    let value = serde_json::from_str(&text).map_err(|e| {
        DestinationError::transient(format!("OneDrive answered a request to {what} with something unreadable: {e}"))
    })?;
    Ok((status, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graph_errors_say_what_a_retry_can_do() {
        let headers = reqwest::header::HeaderMap::new();
        let body = r#"{"error":{"code":"activityLimitReached","message":"The request has been throttled"}}"#;
        let throttled = refusal(StatusCode::TOO_MANY_REQUESTS, &headers, body, "take a fragment");
        assert_eq!(throttled.retry, Retry::Transient);
        assert!(throttled.message.contains("activityLimitReached: The request has been throttled"), "{throttled}");
        let full = refusal(StatusCode::INSUFFICIENT_STORAGE, &headers, "", "store a file");
        assert_eq!(full.retry, Retry::Held);
        assert_eq!(refusal(StatusCode::BAD_REQUEST, &headers, "nonsense", "x").retry, Retry::Permanent);
        assert_eq!(refusal(StatusCode::FORBIDDEN, &headers, "", "x").retry, Retry::Held);
    }
}

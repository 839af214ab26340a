//! What an S3 server's refusals mean: the error code in the XML body on top
//! of the HTTP status (`SlowDown`, `BadDigest`, `NoSuchUpload`…), classified
//! at this boundary. Sending, bodies and status classification are the
//! shared pieces in [`crate::destination::http`].

use reqwest::header::HeaderMap;
use reqwest::{Response, StatusCode};

use crate::destination::http::{retry_after, retry_for};
use crate::destination::{DestinationError, Retry};

/// A request the server refused: the classified error and the S3 error code.
pub struct Refusal {
    /// For the job.
    pub error: DestinationError,
    /// `NoSuchUpload`, `PreconditionFailed`…
    pub code: String,
    /// The HTTP status.
    pub status: StatusCode,
}

/// Reads a refusal's details.
pub async fn refusal(response: Response, operation: &str) -> Refusal {
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.text().await.unwrap_or_default();
    refusal_of(status, &headers, &body, operation)
}

/// Passes a success through; turns anything else into a classified error.
pub async fn ok_or_classify(response: Response, operation: &str) -> Result<Response, DestinationError> {
    if response.status().is_success() {
        return Ok(response);
    }
    Err(refusal(response, operation).await.error)
}

/// Retry classification at the destination boundary: 5xx, 408, 429,
/// `SlowDown`, digest mismatches, an expired session token and clock skew
/// may pass; other 4xx will not.
pub fn refusal_of(status: StatusCode, headers: &HeaderMap, body: &str, operation: &str) -> Refusal {
    let code = xml_field(body, "Code").unwrap_or_else(|| status.canonical_reason().unwrap_or("error").replace(' ', ""));
    let detail = xml_field(body, "Message").map(|m| format!(": {m}")).unwrap_or_default();
    let mut message = format!("{operation} failed with {} {code}{detail}", status.as_u16());
    let transient_code = matches!(
        code.as_str(),
        "SlowDown"
            | "RequestTimeout"
            | "InternalError"
            | "ServiceUnavailable"
            | "BadDigest"
            | "InvalidDigest"
            | "XAmzContentSHA256Mismatch"
            | "RequestTimeTooSkewed"
            | "ExpiredToken"
            | "ConditionalRequestConflict"
    );
    let retry = if retry_for(status) == Retry::Transient || status == StatusCode::CONFLICT || transient_code {
        Retry::Transient
    } else {
        if status == StatusCode::FORBIDDEN {
            message.push_str(" (check the access key, secret and bucket permissions)");
        }
        Retry::Permanent
    };
    let retry_after = retry_after(headers);
    Refusal { error: DestinationError { retry, message, retry_after }, code, status }
}

/// The text of the first `<field>` element of an S3 XML body.
pub fn xml_field(body: &str, field: &str) -> Option<String> {
    let open = format!("<{field}>");
    let start = body.find(&open)? + open.len();
    let end = body[start..].find(&format!("</{field}>"))? + start;
    Some(body[start..end].trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_classified_at_the_boundary() {
        let body = |code: &str| format!("<Error><Code>{code}</Code><Message>m</Message></Error>");
        let table = [
            (500, "InternalError", Retry::Transient),
            (503, "SlowDown", Retry::Transient),
            (429, "TooManyRequests", Retry::Transient),
            (408, "RequestTimeout", Retry::Transient),
            (400, "BadDigest", Retry::Transient),
            (403, "RequestTimeTooSkewed", Retry::Transient),
            (400, "ExpiredToken", Retry::Transient),
            (403, "AccessDenied", Retry::Permanent),
            (404, "NoSuchBucket", Retry::Permanent),
            (400, "InvalidArgument", Retry::Permanent),
        ];
        for (status, code, retry) in table {
            let status = StatusCode::from_u16(status).expect("status");
            let refusal = refusal_of(status, &HeaderMap::new(), &body(code), "PutObject");
            assert_eq!(refusal.error.retry, retry, "{status} {code}");
            assert_eq!(refusal.code, code);
            assert!(refusal.error.message.contains(code), "{}", refusal.error.message);
        }
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", "7".parse().expect("header"));
        let refusal = refusal_of(StatusCode::SERVICE_UNAVAILABLE, &headers, "", "PutObject");
        assert_eq!(refusal.error.retry_after, Some(std::time::Duration::from_secs(7)));
    }
}

//! Talking HTTP to an S3 server: sending (never waiting past a cancel),
//! request bodies streamed from disk with progress and the bandwidth limit,
//! and retry classification of what the server answers, at this boundary.
//! Presigned URLs (they carry the access key id and a signature) never
//! reach a message or a log.

use std::fmt::Write as _;
use std::future::Future;
use std::os::unix::fs::FileExt as _;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use md5::{Digest as _, Md5};
use reqwest::header::HeaderMap;
use reqwest::{RequestBuilder, Response, StatusCode};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;

use crate::destination::{DestinationError, Moved, ProgressFn, Retry, UploadRequest};

/// Body chunk size under a bandwidth limit: small enough for a smooth rate.
pub const STREAM_CHUNK: usize = 256 * 1024;

/// Read size for hashing, and for sending without a rate limit: fewer,
/// larger reads cost less.
pub const READ_CHUNK: usize = 1024 * 1024;

/// Sends a request; transport failures (refused, reset, timed out) are transient.
pub async fn send(request: RequestBuilder) -> Result<Response, DestinationError> {
    request.send().await.map_err(transport)
}

/// Runs `work` unless `cancel` fires first (then: interrupted).
pub async fn until_cancelled<T>(
    cancel: &CancellationToken,
    work: impl Future<Output = Result<T, DestinationError>>,
) -> Result<T, DestinationError> {
    tokio::select! {
        biased;
        () = cancel.cancelled() => Err(DestinationError::interrupted()),
        result = work => result,
    }
}

/// Sends a request, giving up at once if `cancel` fires (a stalled server
/// never holds up a pause or shutdown).
pub async fn send_for(cancel: &CancellationToken, request: RequestBuilder) -> Result<Response, DestinationError> {
    until_cancelled(cancel, async { request.send().await.map_err(transport) }).await
}

/// The whole body of a response, as text.
pub async fn text(cancel: &CancellationToken, response: Response) -> Result<String, DestinationError> {
    until_cancelled(cancel, async { response.text().await.map_err(transport) }).await
}

#[allow(clippy::needless_pass_by_value)] // shaped for `map_err`
pub fn transport(e: reqwest::Error) -> DestinationError {
    let kind = if e.is_timeout() { "timed out" } else { "failed" };
    // The URL is presigned: keep it (access key id, signature) out of messages and logs.
    let e = e.without_url();
    let cause = std::error::Error::source(&e).map(|c| format!(" ({c})")).unwrap_or_default();
    DestinationError::transient(format!("S3 request {kind}: {e}{cause}"))
}

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
    let retry = if status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::CONFLICT
        || transient_code
    {
        Retry::Transient
    } else {
        if status == StatusCode::FORBIDDEN {
            message.push_str(" (check the access key, secret and bucket permissions)");
        }
        Retry::Permanent
    };
    let retry_after = header(headers, "retry-after").and_then(|v| parse_retry_after(&v));
    Refusal { error: DestinationError { retry, message, retry_after }, code, status }
}

/// `Retry-After` in seconds, or as an HTTP date.
fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate(value)?;
    Some(at.duration_since(std::time::SystemTime::now()).unwrap_or(Duration::ZERO))
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn httpdate(value: &str) -> Option<std::time::SystemTime> {
    let parsed = jiff::fmt::rfc2822::parse(value).ok()?;
    Some(std::time::SystemTime::from(parsed.timestamp()))
}

pub fn xml_field(body: &str, field: &str) -> Option<String> {
    let open = format!("<{field}>");
    let start = body.find(&open)? + open.len();
    let end = body[start..].find(&format!("</{field}>"))? + start;
    Some(body[start..end].trim().to_owned())
}

pub fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A request body from `chunks` that reports progress, honours the shared
/// bandwidth limit, and stops when the upload is cancelled.
pub fn metered(
    chunks: impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static,
    request: &UploadRequest,
    progress: &ProgressFn,
) -> reqwest::Body {
    let (cancel, throttle, progress) = (request.cancel.clone(), Arc::clone(&request.throttle), Arc::clone(progress));
    let stream = chunks.then(move |chunk| {
        let (cancel, throttle, progress) = (cancel.clone(), Arc::clone(&throttle), Arc::clone(&progress));
        async move {
            if cancel.is_cancelled() {
                return Err(std::io::Error::other("upload cancelled"));
            }
            let bytes = chunk?;
            throttle.consume(bytes.len() as u64).await;
            progress(Moved::Sent(bytes.len() as u64));
            Ok(bytes)
        }
    });
    reqwest::Body::wrap_stream(stream)
}

/// The size of the next read of at most `chunk` bytes, `done` of `len` read.
fn next_piece(len: u64, done: u64, chunk: usize) -> std::io::Result<usize> {
    usize::try_from((len - done).min(chunk as u64)).map_err(std::io::Error::other)
}

/// The MD5 of `len` bytes of `file` at `offset`, feeding the same bytes to
/// `whole` (the running SHA-256 of the whole file), in one read.
pub async fn digest_range(
    file: &Arc<std::fs::File>,
    offset: u64,
    len: u64,
    mut whole: Sha256,
) -> std::io::Result<([u8; 16], Sha256)> {
    let file = Arc::clone(file);
    tokio::task::spawn_blocking(move || {
        let mut md5 = Md5::new();
        let mut buffer = vec![0u8; READ_CHUNK];
        let mut done = 0;
        while done < len {
            let n = next_piece(len, done, READ_CHUNK)?;
            file.read_exact_at(&mut buffer[..n], offset + done)?;
            md5.update(&buffer[..n]);
            whole.update(&buffer[..n]);
            done += n as u64;
        }
        Ok((md5.finalize().into(), whole))
    })
    .await
    .map_err(std::io::Error::other)?
}

/// `len` bytes of `file` at `offset` as a stream of `chunk`-byte pieces,
/// each read when the body asks for it (positioned reads: nothing shares a
/// file offset).
pub fn file_chunks(
    file: &Arc<std::fs::File>,
    offset: u64,
    len: u64,
    chunk: usize,
) -> impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static {
    let file = Arc::clone(file);
    futures_util::stream::try_unfold(0u64, move |done| {
        let file = Arc::clone(&file);
        async move {
            if done >= len {
                return Ok(None);
            }
            let n = next_piece(len, done, chunk)?;
            let piece = tokio::task::spawn_blocking(move || {
                let mut buffer = vec![0u8; n];
                file.read_exact_at(&mut buffer, offset + done).map(|()| bytes::Bytes::from(buffer))
            })
            .await
            .map_err(std::io::Error::other)??;
            Ok(Some((piece, done + n as u64)))
        }
    })
}

/// Reading the source failed. A file gone since the scan is
/// [`Retry::SourceChanged`]; an unreadable one will not get better.
pub fn read_error(request: &UploadRequest, e: &std::io::Error) -> DestinationError {
    let message = format!("cannot read {}: {e}", request.source.display());
    match e.kind() {
        std::io::ErrorKind::NotFound => DestinationError::source_changed(format!(
            "{} vanished while it was being uploaded",
            request.source.display()
        )),
        std::io::ErrorKind::PermissionDenied => DestinationError::permanent(message),
        _ => DestinationError::transient(message),
    }
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
        assert_eq!(refusal.error.retry_after, Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"), Some(Duration::ZERO), "a date in the past");
    }
}

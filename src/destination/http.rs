//! What every HTTP destination needs, written once: sending a request that
//! gives up the moment the upload is asked to stop, request bodies streamed
//! from disk in positioned reads (with progress and the shared bandwidth
//! limit) or from a chunk held in memory, hashing a range of a file in the
//! same read pattern, a service's base URL from the config, retry
//! classification of an HTTP status with `Retry-After`, and transport
//! errors that never carry a URL (presigned URLs and query tokens are
//! secrets). Each destination adds what its own service means (S3's error
//! codes, the statuses of `WebDAV`) on top.

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

use super::{DestinationError, Moved, ProgressFn, Retry, UploadRequest};
use crate::model::ContentHash;

/// Body chunk size under a bandwidth limit: small enough for a smooth rate.
pub const STREAM_CHUNK: usize = 256 * 1024;

/// Read size for hashing, and for sending without a rate limit: fewer,
/// larger reads cost less.
pub const READ_CHUNK: usize = 1024 * 1024;

/// An HTTP client with timeouts that can be swapped for a fresh one, with
/// an empty connection pool: connections open across a system sleep are
/// usually dead, and an upload on one would wait for a timeout.
pub struct Client {
    timeout: Duration,
    /// Whether redirects are followed (never where a secret rides in a
    /// header reqwest does not strip for another host).
    follow: bool,
    current: std::sync::RwLock<Result<reqwest::Client, String>>,
}

impl Client {
    /// A client whose reads time out after `timeout` (connecting after at
    /// most 15 s). Without its timeouts a stalled server would hang uploads
    /// for good: a client that cannot be built is an error, never a fallback.
    pub fn new(timeout: Duration) -> Self {
        Self { timeout, follow: true, current: std::sync::RwLock::new(Self::build(timeout, true)) }
    }

    /// [`Client::new`] that follows no redirect: a 3xx is an answer, so a
    /// key in a custom header (Immich's `x-api-key`, which reqwest forwards
    /// to another host) never leaves for a place the config did not name.
    pub fn without_redirects(timeout: Duration) -> Self {
        Self { timeout, follow: false, current: std::sync::RwLock::new(Self::build(timeout, false)) }
    }

    fn build(timeout: Duration, follow: bool) -> Result<reqwest::Client, String> {
        let redirects = if follow { reqwest::redirect::Policy::default() } else { reqwest::redirect::Policy::none() };
        reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(15)))
            .read_timeout(timeout)
            .pool_idle_timeout(Duration::from_mins(1))
            .redirect(redirects)
            .build()
            .map_err(|e| format!("cannot set up the HTTP client: {e}"))
    }

    /// The client to send with (a handle on the shared pool).
    pub fn get(&self) -> Result<reqwest::Client, DestinationError> {
        let current = self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        current.clone().map_err(DestinationError::permanent)
    }

    /// Drops the pooled connections: requests from now on open new ones
    /// (requests under way finish on theirs).
    pub fn renew(&self) {
        let fresh = Self::build(self.timeout, self.follow);
        *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
    }
}

/// Whether the URL's host is this machine (where `http://` exposes nothing).
pub fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(name)) => name == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

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

/// The SHA-256 of a response body, read to its end (a read-back).
pub async fn body_sha256(cancel: &CancellationToken, response: Response) -> Result<ContentHash, DestinationError> {
    let mut body = response.bytes_stream();
    let mut sha = Sha256::new();
    while let Some(chunk) = until_cancelled(cancel, async { Ok(body.next().await) }).await? {
        sha.update(&chunk.map_err(transport)?);
    }
    Ok(ContentHash::from_digest(&sha.finalize()))
}

/// A request that got no answer (refused, reset, timed out): transient,
/// and said without the URL.
#[allow(clippy::needless_pass_by_value)] // shaped for `map_err`
pub fn transport(e: reqwest::Error) -> DestinationError {
    let kind = if e.is_timeout() { "timed out" } else { "failed" };
    // The URL is presigned: keep it (access key id, signature) out of messages and logs.
    let e = e.without_url();
    // The whole chain: "error decoding response body" alone does not say
    // whether the server hung up, stalled or sent garbage.
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        causes.push(cause.to_string());
        source = cause.source();
    }
    causes.dedup();
    let cause = if causes.is_empty() { String::new() } else { format!(" ({})", causes.join(": ")) };
    DestinationError::transient(format!("request {kind}: {e}{cause}"))
}

/// Whether an HTTP status may pass with a retry: 5xx, 408 and 429 may;
/// every other refusal will not.
pub fn retry_for(status: StatusCode) -> Retry {
    if status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT || status == StatusCode::TOO_MANY_REQUESTS {
        Retry::Transient
    } else {
        Retry::Permanent
    }
}

/// The server's `Retry-After`, when it sent one.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    header(headers, "retry-after").and_then(|v| parse_retry_after(&v))
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

/// A header's value as text, when it is there and printable.
pub fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

pub use crate::model::hex;

/// A request body from `chunks` that reports progress, honours the shared
/// bandwidth limit, and stops when the upload is cancelled.
pub fn metered(
    chunks: impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static,
    request: &UploadRequest,
    progress: &ProgressFn,
) -> reqwest::Body {
    reqwest::Body::wrap_stream(metered_chunks(chunks, request, progress))
}

/// [`metered`]'s stream, for a body that wraps it in more (a multipart form).
pub fn metered_chunks(
    chunks: impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static,
    request: &UploadRequest,
    progress: &ProgressFn,
) -> impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static {
    let (cancel, throttle, progress) = (request.cancel.clone(), Arc::clone(&request.throttle), Arc::clone(progress));
    chunks.then(move |chunk| {
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
    })
}

/// `bytes` as a request body in metered pieces.
pub fn bytes_body(bytes: &bytes::Bytes, request: &UploadRequest, progress: &ProgressFn) -> reqwest::Body {
    let pieces: Vec<std::io::Result<bytes::Bytes>> = (0..bytes.len())
        .step_by(STREAM_CHUNK)
        .map(|at| Ok(bytes.slice(at..(at + STREAM_CHUNK).min(bytes.len()))))
        .collect();
    metered(futures_util::stream::iter(pieces), request, progress)
}

/// A service's base URL from `key` (`default` when unset): `https://`, or
/// `http://` to this machine only (a test's fake); always ending in `/`.
pub fn service_url(
    section: &crate::config::Section<'_>,
    key: &str,
    value: Option<String>,
    default: &str,
) -> Result<url::Url, crate::config::ConfigError> {
    let text = value.unwrap_or_else(|| default.to_owned());
    let mut url = url::Url::parse(&text)
        .ok()
        .filter(|u| u.host_str().is_some() && u.username().is_empty() && u.password().is_none())
        .filter(|u| u.query().is_none() && u.fragment().is_none())
        .filter(|u| u.scheme() == "https" || (u.scheme() == "http" && is_loopback(u)))
        .ok_or_else(|| {
            section.error(key, &format!("`{text}` is not an https:// URL (http:// only to this machine)"))
        })?;
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
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

    /// A keep-alive HTTP server on 127.0.0.1 that answers every request
    /// with an empty 200 and counts the connections it accepted.
    async fn counting_server() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/", listener.local_addr().expect("address"));
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut lines = tokio::io::BufReader::new(read).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        if line.is_empty() {
                            let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                            if write.write_all(answer).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (url, accepted)
    }

    #[tokio::test]
    async fn a_renewed_client_opens_new_connections() {
        let (url, accepted) = counting_server().await;
        let client = Client::new(Duration::from_secs(10));
        for _ in 0..2 {
            let response = send(client.get().expect("client").get(&url)).await.expect("answer");
            assert_eq!(response.status(), StatusCode::OK);
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1, "the pooled connection is reused");
        client.renew();
        send(client.get().expect("client").get(&url)).await.expect("answer");
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2, "a fresh connection after renew");
    }

    #[test]
    fn statuses_and_retry_after() {
        for (status, retry) in [
            (500, Retry::Transient),
            (503, Retry::Transient),
            (429, Retry::Transient),
            (408, Retry::Transient),
            (403, Retry::Permanent),
            (404, Retry::Permanent),
        ] {
            assert_eq!(retry_for(StatusCode::from_u16(status).expect("status")), retry, "{status}");
        }
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", "7".parse().expect("header"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"), Some(Duration::ZERO), "a date in the past");
    }

    #[tokio::test]
    async fn a_body_cut_short_says_why() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            let mut head = [0u8; 1024];
            let _ = stream.read(&mut head).await;
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nten bytes!").await;
        });
        let response = reqwest::get(format!("http://{address}/")).await.expect("head arrives");
        let error = response.bytes().await.expect_err("the body is cut short");
        let message = transport(error).message;
        assert!(message.starts_with("request failed: "), "{message}");
        // Not only the first cause ("error reading a body from connection"):
        // what lay beneath it too ("end of file before message length reached").
        let (_, causes) = message.split_once(" (").expect("causes");
        assert!(causes.contains(": "), "{message}");
    }
}

//! The WebDAV destination (RFC 4918): Nextcloud and ownCloud, NAS boxes
//! (Synology, QNAP), Apache `mod_dav`, `rclone serve webdav`…
//!
//! A file goes up to a hidden temporary name beside its target (`PUT`),
//! then takes its name with `MOVE` and `Overwrite: F`, which the server
//! refuses (412) rather than replace anything: a different file already
//! there is never overwritten, whatever the server does with
//! `If-None-Match`, and no half-sent file ever sits under a photo's name.
//! The bytes sent are hashed as they go; they must be the scanned SHA-256,
//! and the stored file must then report the scanned size (and SHA-256,
//! where the server keeps checksums, as Nextcloud does for the
//! `OC-Checksum` photosync sends). Missing folders are created with `MKCOL`
//! once and remembered. Large files to Nextcloud go up in chunks that
//! resume after a crash (`nextcloud.rs`). `config` holds the keys; the
//! password is read when the destination is used and never shown.

mod config;
mod nextcloud;
mod propfind;

pub use config::{PasswordSource, Vendor, WebDavConfig};

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::UNIX_EPOCH;

use async_trait::async_trait;
use futures_util::StreamExt as _;
use reqwest::header::{CONTENT_LENGTH, HeaderMap};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use sha2::{Digest as _, Sha256};
use tokio_util::sync::CancellationToken;

use self::propfind::Entry;
use super::http::{
    Client, READ_CHUNK, STREAM_CHUNK, file_chunks, metered, read_error, retry_after, retry_for, send_for,
};
use super::{
    Destination, DestinationError, ProgressFn, Retry, SessionStore, UploadRequest, Uploaded, Verdict, key_candidates,
    temp_name,
};
use crate::model::{ContentHash, JobId, Receipt, RemoteKey};

/// A WebDAV collection as a destination.
pub struct WebDavDestination {
    config: WebDavConfig,
    client: Client,
    sessions: Arc<dyn SessionStore>,
    /// Collections known to exist (made or found), by URL.
    collections: Mutex<HashSet<String>>,
}

/// What one operation works with: the client and the credentials read for it.
struct Access<'d> {
    client: reqwest::Client,
    username: Option<&'d str>,
    password: Option<String>,
}

impl Access<'_> {
    fn request(&self, method: Method, url: &str) -> RequestBuilder {
        let builder = self.client.request(method, url);
        match self.username {
            Some(user) => builder.basic_auth(user, self.password.as_deref()),
            None => builder,
        }
    }
}

/// What a look at a URL found.
enum Looked {
    Missing,
    Found(Entry),
}

/// How putting a file under a name ended.
enum Placed {
    /// The file is there.
    Stored,
    /// Another file took the name first; nothing of ours is there.
    Taken,
}

/// A WebDAV method by name (all of them are valid tokens).
fn dav(name: &'static str) -> Method {
    Method::from_bytes(name.as_bytes()).unwrap_or(Method::OPTIONS)
}

impl WebDavDestination {
    /// A destination for `config`, keeping chunked uploads in `sessions`.
    pub fn new(config: &WebDavConfig, sessions: Arc<dyn SessionStore>) -> Self {
        Self {
            config: config.clone(),
            client: Client::new(config.timeout),
            sessions,
            collections: Mutex::new(HashSet::new()),
        }
    }

    /// The client and freshly read credentials, or why there are none.
    fn access(&self) -> Result<Access<'_>, DestinationError> {
        let client = self.client.get()?;
        let password = self.config.password.read("password")?;
        Ok(Access { client, username: self.config.username.as_deref(), password })
    }

    /// The URL of `key` below the collection: every segment percent-encoded,
    /// `.` and `..` escaped, so no name reaches outside it.
    fn url_of(&self, key: &RemoteKey) -> String {
        let mut url = self.config.url.as_str().to_owned();
        for (i, segment) in key.0.split(|&b| b == b'/').filter(|s| !s.is_empty()).enumerate() {
            if i > 0 {
                url.push('/');
            }
            url.push_str(&encode_segment(segment));
        }
        url
    }

    async fn stat(
        &self,
        access: &Access<'_>,
        cancel: &CancellationToken,
        url: &str,
    ) -> Result<Looked, DestinationError> {
        let request = access
            .request(dav("PROPFIND"), url)
            .header("Depth", "0")
            .header("Content-Type", "application/xml; charset=utf-8")
            .body(propfind::REQUEST);
        let response = send_for(cancel, request).await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(Looked::Missing);
        }
        let response = ok_or_classify(response, "PROPFIND").await?;
        let body = super::http::text(cancel, response).await?;
        let entries = propfind::parse(&body).map_err(DestinationError::transient)?;
        entries
            .into_iter()
            .next()
            .map(Looked::Found)
            .ok_or_else(|| DestinationError::transient("PROPFIND answered no resource"))
    }

    /// Creates the collections between the destination's and `url`'s, top
    /// down, once each (a collection found already there is remembered too).
    async fn ensure_parents(
        &self,
        access: &Access<'_>,
        cancel: &CancellationToken,
        url: &str,
    ) -> Result<(), DestinationError> {
        let base = self.config.url.as_str();
        let Some(relative) = url.strip_prefix(base) else { return Ok(()) };
        let mut collection = base.to_owned();
        let segments: Vec<&str> = relative.split('/').collect();
        for segment in &segments[..segments.len().saturating_sub(1)] {
            collection.push_str(segment);
            collection.push('/');
            if self.collections.lock().unwrap_or_else(PoisonError::into_inner).contains(&collection) {
                continue;
            }
            let response = send_for(cancel, access.request(dav("MKCOL"), &collection)).await?;
            // 405: it exists already.
            if response.status() != StatusCode::METHOD_NOT_ALLOWED {
                ok_or_classify(response, "MKCOL").await?;
            }
            self.collections.lock().unwrap_or_else(PoisonError::into_inner).insert(collection.clone());
        }
        Ok(())
    }

    /// Puts the file under `url`: to a temporary name first, hashing the
    /// bytes as they go, then `MOVE` without overwriting.
    async fn place(
        &self,
        access: &Access<'_>,
        request: &UploadRequest,
        url: &str,
        progress: &ProgressFn,
    ) -> Result<Placed, DestinationError> {
        let temp = temp_url(url, request.job);
        let sent = self.put_hashed(access, request, &temp, progress).await;
        if let Err(error) = sent {
            // A temporary file cut short is of no use: the next attempt sends it whole.
            if error.retry != Retry::Interrupted {
                let _ = send_for(&request.cancel, access.request(Method::DELETE, &temp)).await;
            }
            return Err(error);
        }
        let moved = access.request(dav("MOVE"), &temp).header("Destination", url).header("Overwrite", "F");
        let response = send_for(&request.cancel, moved).await?;
        if response.status() == StatusCode::PRECONDITION_FAILED {
            let _ = send_for(&request.cancel, access.request(Method::DELETE, &temp)).await;
            return Ok(Placed::Taken);
        }
        ok_or_classify(response, "MOVE").await?;
        Ok(Placed::Stored)
    }

    /// `PUT` of the whole file, hashed as it is sent: anything but the
    /// scanned content is removed again and reported as a changed file.
    async fn put_hashed(
        &self,
        access: &Access<'_>,
        request: &UploadRequest,
        url: &str,
        progress: &ProgressFn,
    ) -> Result<(), DestinationError> {
        let file = Arc::new(std::fs::File::open(&request.source).map_err(|e| read_error(request, &e))?);
        let chunk = if request.throttle.is_limited() { STREAM_CHUNK } else { READ_CHUNK };
        let tally = Arc::new(Mutex::new(Sha256::new()));
        let hashed = hashing(file_chunks(&file, 0, request.size, chunk), &[Arc::clone(&tally)]);
        let body = metered(hashed, request, progress);
        let put = access
            .request(Method::PUT, url)
            .header(CONTENT_LENGTH, request.size)
            .header("OC-Checksum", format!("SHA256:{}", request.hash))
            .header("X-OC-Mtime", mtime(request))
            .body(body);
        let response = send_for(&request.cancel, put).await?;
        ok_or_classify(response, "PUT").await?;
        let sent = finish(&tally);
        if sent != request.hash {
            let _ = send_for(&request.cancel, access.request(Method::DELETE, url)).await;
            return Err(DestinationError::source_changed(format!(
                "{} changed while it was being uploaded",
                request.source.display()
            )));
        }
        Ok(())
    }

    /// Whether what is at `url` is provably this file: the server's SHA-256
    /// where it keeps one, else its bytes read back. Sizes must match first.
    async fn holds(
        &self,
        access: &Access<'_>,
        cancel: &CancellationToken,
        url: &str,
        entry: &Entry,
        size: u64,
        hash: &ContentHash,
    ) -> Result<bool, DestinationError> {
        if entry.collection || entry.size != Some(size) {
            return Ok(false);
        }
        if let Some(sum) = entry.checksum("SHA256") {
            return Ok(sum == hash.as_hex());
        }
        tracing::info!(url = %redact(url), "reading the file back to see whether it is this one");
        Ok(self.read_back(access, cancel, url).await? == Some(hash.clone()))
    }

    /// Downloads `url` and hashes it; `None` when it is not there.
    async fn read_back(
        &self,
        access: &Access<'_>,
        cancel: &CancellationToken,
        url: &str,
    ) -> Result<Option<ContentHash>, DestinationError> {
        let response = send_for(cancel, access.request(Method::GET, url)).await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let response = ok_or_classify(response, "GET").await?;
        Ok(Some(super::http::body_sha256(cancel, response).await?))
    }

    /// After the file took its name: the server must report the scanned
    /// size (and SHA-256, where it keeps one). A file that does not is
    /// removed (it is ours: the `MOVE` created it) and sent again.
    async fn confirm(
        &self,
        access: &Access<'_>,
        request: &UploadRequest,
        url: &str,
    ) -> Result<Option<String>, DestinationError> {
        let confirmed = match self.stat(access, &request.cancel, url).await? {
            Looked::Found(entry) if entry.size == Some(request.size) => match entry.checksum("SHA256") {
                Some(sum) if sum != request.hash.as_hex() => None,
                _ => Some(entry.etag),
            },
            _ => None,
        };
        if let Some(etag) = confirmed {
            return Ok(etag);
        }
        let _ = send_for(&request.cancel, access.request(Method::DELETE, url)).await;
        Err(DestinationError::transient(format!(
            "{}: the stored file is not what was sent; it was removed and is sent again",
            redact(url)
        )))
    }
}

#[async_trait]
impl Destination for WebDavDestination {
    async fn check(&self) -> Result<(), DestinationError> {
        let access = self.access()?;
        let url = self.config.url.as_str();
        match self.stat(&access, &CancellationToken::new(), url).await? {
            Looked::Found(entry) if entry.collection => Ok(()),
            Looked::Found(_) => Err(DestinationError::permanent(format!("{} is a file, not a folder", redact(url)))),
            Looked::Missing => Err(DestinationError::permanent(format!(
                "the folder {} does not exist on the server; create it, or fix `url`",
                redact(url)
            ))),
        }
    }

    async fn upload(&self, request: UploadRequest, progress: ProgressFn) -> Result<Uploaded, DestinationError> {
        let access = self.access()?;
        let mut candidates = key_candidates(&request.key, &request.hash).into_iter();
        let mut candidate = candidates.next();
        let mut second_look = false;
        while let Some(key) = candidate.take() {
            let url = self.url_of(&key);
            let receipt = |etag: Option<String>| Receipt {
                key: key.clone(),
                size: request.size,
                sha256: request.hash.clone(),
                version: etag,
            };
            if let Looked::Found(entry) = self.stat(&access, &request.cancel, &url).await? {
                if self.holds(&access, &request.cancel, &url, &entry, request.size, &request.hash).await? {
                    nextcloud::abandon(self, &access, &request).await;
                    return Ok(Uploaded::AlreadyPresent(receipt(entry.etag)));
                }
                tracing::info!(key = %key, "name taken by other content; trying the next name");
                (candidate, second_look) = (candidates.next(), false);
                continue;
            }
            self.ensure_parents(&access, &request.cancel, &url).await?;
            let placed = match &self.config.vendor {
                Vendor::Nextcloud { uploads } if request.size >= self.config.chunked_threshold => {
                    nextcloud::upload(self, &access, uploads, &request, &url, &progress).await?
                }
                _ => self.place(&access, &request, &url, &progress).await?,
            };
            match placed {
                Placed::Stored => {
                    let etag = self.confirm(&access, &request, &url).await?;
                    return Ok(Uploaded::Stored(receipt(etag)));
                }
                // Someone took the name meanwhile: look once more (it may be
                // this very file), then move on.
                Placed::Taken if second_look => (candidate, second_look) = (candidates.next(), false),
                Placed::Taken => (candidate, second_look) = (Some(key), true),
            }
        }
        Err(DestinationError::permanent(format!("every candidate name for {} is taken by other content", request.key)))
    }

    async fn verify(&self, receipt: &Receipt, deep: bool) -> Result<Verdict, DestinationError> {
        let access = self.access()?;
        let url = self.url_of(&receipt.key);
        let never = CancellationToken::new();
        let entry = match self.stat(&access, &never, &url).await? {
            Looked::Missing => return Ok(Verdict::Missing),
            Looked::Found(entry) => entry,
        };
        if entry.collection {
            return Ok(Verdict::Differs("it is a folder".into()));
        }
        if entry.size != Some(receipt.size) {
            let size = entry.size.map_or_else(|| "an unknown number of".into(), |s| s.to_string());
            return Ok(Verdict::Differs(format!("{size} bytes instead of {}", receipt.size)));
        }
        // A server's SHA-256 is proof; an ETag is not (most WebDAV servers
        // derive it from the time and size), so without one the file is read back.
        if !deep && let Some(sum) = entry.checksum("SHA256") {
            return Ok(if sum == receipt.sha256.as_hex() {
                Verdict::Holds
            } else {
                Verdict::Differs("the server's SHA-256 of it is another".into())
            });
        }
        Ok(match self.read_back(&access, &never, &url).await? {
            Some(hash) if hash == receipt.sha256 => Verdict::Holds,
            Some(hash) => Verdict::Differs(format!(
                "its content changed (sha256 {} instead of {})",
                hash.short(12),
                receipt.sha256.short(12)
            )),
            None => Verdict::Missing,
        })
    }

    fn reconnect(&self) {
        self.client.renew();
    }

    async fn discard(&self, job: JobId, key: &RemoteKey, hash: &ContentHash) -> Result<(), DestinationError> {
        let access = self.access()?;
        let never = CancellationToken::new();
        nextcloud::abandon_job(self, &access, job).await;
        for candidate in key_candidates(key, hash) {
            let temp = temp_url(&self.url_of(&candidate), job);
            let response = send_for(&never, access.request(Method::DELETE, &temp)).await?;
            if !matches!(response.status(), StatusCode::NOT_FOUND) {
                ok_or_classify(response, "DELETE").await?;
            }
        }
        Ok(())
    }
}

/// The hidden temporary name beside `url` that `job` writes to.
fn temp_url(url: &str, job: JobId) -> String {
    let (parent, name) = url.rsplit_once('/').unwrap_or(("", url));
    let decoded: Vec<u8> = percent_encoding::percent_decode_str(name).collect();
    format!("{parent}/{}", encode_segment(&temp_name(&decoded, job)))
}

/// Bytes of a path segment made safe for a URL (only unreserved
/// characters stay as they are; `.` and `..` are escaped).
fn encode_segment(segment: &[u8]) -> String {
    const KEEP: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');
    if segment == b"." || segment == b".." {
        return "%2E".repeat(segment.len());
    }
    percent_encoding::percent_encode(segment, KEEP).to_string()
}

/// A URL as it may appear in messages and logs: without credentials or query.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.set_query(None);
            parsed.to_string()
        }
        Err(_) => "(the server)".into(),
    }
}

/// The file's modification time for `X-OC-Mtime`, in seconds.
fn mtime(request: &UploadRequest) -> String {
    request.modified.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()).to_string()
}

/// A stream that feeds every piece it passes to each of `tallies`.
fn hashing(
    chunks: impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static,
    tallies: &[Arc<Mutex<Sha256>>],
) -> impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static {
    let tallies: Vec<Arc<Mutex<Sha256>>> = tallies.to_vec();
    chunks.map(move |piece| {
        if let Ok(bytes) = &piece {
            for tally in &tallies {
                tally.lock().unwrap_or_else(PoisonError::into_inner).update(bytes);
            }
        }
        piece
    })
}

/// The SHA-256 a tally holds now.
fn finish(tally: &Mutex<Sha256>) -> ContentHash {
    let sha = std::mem::take(&mut *tally.lock().unwrap_or_else(PoisonError::into_inner));
    ContentHash::from_digest(&sha.finalize())
}

/// Passes a success through; classifies anything else.
async fn ok_or_classify(response: Response, operation: &str) -> Result<Response, DestinationError> {
    if response.status().is_success() || response.status() == StatusCode::MULTI_STATUS {
        return Ok(response);
    }
    Err(classify(response.status(), response.headers(), operation))
}

/// Retry classification at this boundary: 5xx, 408, 429, 423 (locked) and
/// 507 (the server is full) may pass; 401/403 and other 4xx will not.
fn classify(status: StatusCode, headers: &HeaderMap, operation: &str) -> DestinationError {
    let mut message = format!("{operation} failed with {status}");
    let retry = match status.as_u16() {
        423 => Retry::Transient,
        507 => {
            message.push_str(" (the server is out of space)");
            Retry::Transient
        }
        401 | 403 => {
            message.push_str(" (check username and password, and the user's rights on the folder)");
            Retry::Permanent
        }
        _ => retry_for(status),
    };
    DestinationError { retry, message, retry_after: retry_after(headers) }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn names_become_safe_urls() {
        let config = WebDavConfig {
            url: url::Url::parse("https://nas/dav/Photos/").expect("url"),
            username: None,
            password: PasswordSource::None,
            vendor: Vendor::Generic,
            chunked_threshold: 1,
            chunk_size: 5 << 20,
            timeout: Duration::from_secs(1),
        };
        let destination = WebDavDestination::new(&config, Arc::new(NoSessions));
        let table: [(&[u8], &str); 4] = [
            (b"DCIM/IMG 1.JPG", "https://nas/dav/Photos/DCIM/IMG%201.JPG"),
            (b"../x/%#?.jpg", "https://nas/dav/Photos/%2E%2E/x/%25%23%3F.jpg"),
            (b"caf\xe9.jpg", "https://nas/dav/Photos/caf%E9.jpg"),
            (b"a/./b.jpg", "https://nas/dav/Photos/a/%2E/b.jpg"),
        ];
        for (key, url) in table {
            assert_eq!(destination.url_of(&RemoteKey(key.to_vec())), url);
        }
        assert_eq!(
            temp_url("https://nas/dav/Photos/DCIM/IMG%201.JPG", JobId(7)),
            "https://nas/dav/Photos/DCIM/.IMG%201.JPG.photosync-7.tmp"
        );
        for name in ["PROPFIND", "MKCOL", "MOVE"] {
            assert_eq!(dav(name).as_str(), name);
        }
        assert_eq!(redact("https://u:p@nas/dav/?token=x"), "https://nas/dav/");
    }

    #[test]
    fn statuses_are_classified() {
        let table = [
            (507, Retry::Transient),
            (423, Retry::Transient),
            (503, Retry::Transient),
            (401, Retry::Permanent),
            (403, Retry::Permanent),
            (400, Retry::Permanent),
        ];
        for (status, retry) in table {
            let error = classify(StatusCode::from_u16(status).expect("status"), &HeaderMap::new(), "PUT");
            assert_eq!(error.retry, retry, "{status}");
        }
    }

    struct NoSessions;
    impl SessionStore for NoSessions {
        fn load(&self, _: JobId) -> Result<Option<super::super::Session>, super::super::StoreError> {
            Ok(None)
        }
        fn begin(&self, _: JobId, _: &str, _: u32, _: &serde_json::Value) -> Result<(), super::super::StoreError> {
            Ok(())
        }
        fn record(&self, _: JobId, _: u32, _: &serde_json::Value) -> Result<(), super::super::StoreError> {
            Ok(())
        }
        fn forget(&self, _: JobId) -> Result<(), super::super::StoreError> {
            Ok(())
        }
        fn note(&self, _: &str, _: &str) -> Result<Option<serde_json::Value>, super::super::StoreError> {
            Ok(None)
        }
        fn update_note(
            &self,
            _: &str,
            _: &str,
            change: &mut dyn FnMut(Option<serde_json::Value>) -> Option<serde_json::Value>,
        ) -> Result<Option<serde_json::Value>, super::super::StoreError> {
            Ok(change(None))
        }
    }
}

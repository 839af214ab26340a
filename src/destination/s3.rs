//! The S3-compatible destination (AWS, Backblaze B2, Cloudflare R2, `MinIO`,
//! Garage, Ceph RGW, `RustFS`, …).
//!
//! Requests are signed by `rusty-s3` (`SigV4`, presigned URLs with the
//! integrity headers among the signed ones) and sent with `reqwest` over
//! rustls; files are streamed from disk, never loaded whole. Small files go
//! up in one `PUT` carrying `x-amz-checksum-sha256` (the server refuses
//! content that does not match the hash taken at scan time) and
//! `If-None-Match: *` (a name taken meanwhile is never overwritten). Large
//! files use a multipart upload whose id and finished parts are written to
//! the [`PartStore`] as they finish, so an upload interrupted by a crash,
//! reboot or pause continues from the first missing part. Each part carries
//! `Content-MD5`; the final `ETag` is checked against the MD5s of the parts.
//! HTTP errors are classified at this boundary: 5xx, 408, 429, `SlowDown`,
//! timeouts and resets are transient; other 4xx are permanent.

use std::fmt::Write as _;
use std::os::unix::fs::FileExt as _;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures_util::StreamExt as _;
use md5::{Digest as _, Md5};
use reqwest::header::{CONTENT_LENGTH, HeaderMap};
use reqwest::{RequestBuilder, Response, StatusCode};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

use super::{
    Destination, DestinationError, MultipartProgress, PartRecord, PartStore, ProgressFn, Retry, UploadRequest,
    Uploaded, key_candidates,
};
use crate::config::S3Config;
use crate::model::{ContentHash, JobId, Receipt, RemoteKey};

/// How long a presigned request stays valid (a part must start within it).
const SIGN_FOR: Duration = Duration::from_hours(1);

/// User metadata carrying the content hash, so a later run can recognise the
/// object whatever checksum support the server has.
const HASH_META: &str = "x-amz-meta-photosync-sha256";

/// An S3 bucket (and prefix) as a destination.
pub struct S3Destination {
    bucket: Result<Bucket, String>,
    credentials: Credentials,
    client: reqwest::Client,
    prefix: String,
    multipart_threshold: u64,
    part_size: u64,
    parts: Arc<dyn PartStore>,
}

impl S3Destination {
    /// A destination for `config`, keeping multipart progress in `parts`.
    pub fn new(config: &S3Config, parts: Arc<dyn PartStore>) -> Self {
        let style = if config.path_style { UrlStyle::Path } else { UrlStyle::VirtualHost };
        let bucket = Bucket::new(config.endpoint.clone(), style, config.bucket.clone(), config.region.clone())
            .map_err(|e| format!("bucket {} at {}: {e}", config.bucket, config.endpoint));
        let c = &config.credentials;
        let credentials = match &c.session_token {
            Some(token) => Credentials::new_with_token(&c.access_key_id, &c.secret_access_key, token),
            None => Credentials::new(&c.access_key_id, &c.secret_access_key),
        };
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(15))
            .read_timeout(Duration::from_mins(2))
            .pool_idle_timeout(Duration::from_mins(1))
            .build()
            .unwrap_or_default();
        Self {
            bucket,
            credentials,
            client,
            prefix: config.prefix.clone(),
            multipart_threshold: config.multipart_threshold,
            part_size: config.part_size,
            parts,
        }
    }

    fn bucket(&self) -> Result<&Bucket, DestinationError> {
        self.bucket.as_ref().map_err(|e| DestinationError::permanent(e.clone()))
    }
}

#[async_trait]
impl Destination for S3Destination {
    async fn check(&self) -> Result<(), DestinationError> {
        let bucket = self.bucket()?;
        let url = bucket.head_bucket(Some(&self.credentials)).sign(SIGN_FOR);
        let response = send(self.client.head(url)).await?;
        ok_or_classify(response, "HeadBucket").await.map(drop)
    }

    async fn upload(&self, request: UploadRequest, progress: ProgressFn) -> Result<Uploaded, DestinationError> {
        let resumable = self.parts.load(request.job).map_err(store_error)?;
        if let Some(state) = resumable {
            return self.resume(&request, state, &progress).await;
        }
        let mut candidates = key_candidates(&request.key, &request.hash).into_iter();
        let mut candidate = candidates.next();
        while let Some(relative) = candidate {
            let key = object_key(&self.prefix, &relative);
            match self.head(&key).await? {
                Some(head) if head.holds(&request) => {
                    return Ok(Uploaded::AlreadyPresent(receipt(&key, &request, head.etag)));
                }
                Some(_) => {
                    tracing::info!(key = %key, "key taken by other content; trying the next name");
                    candidate = candidates.next();
                    continue;
                }
                None => {}
            }
            let stored = if request.size >= self.multipart_threshold {
                self.multipart(&request, &key, &progress).await?
            } else {
                self.put(&request, &key, &progress).await?
            };
            match stored {
                Some(etag) => return Ok(Uploaded::Stored(receipt(&key, &request, Some(etag)))),
                // Someone created the key while we uploaded: look again.
                None => candidate = Some(relative),
            }
        }
        Err(DestinationError::permanent(format!("every candidate key for {} is taken by other content", request.key)))
    }

    async fn discard(&self, job: JobId, _key: &RemoteKey) -> Result<(), DestinationError> {
        let Some(state) = self.parts.load(job).map_err(store_error)? else { return Ok(()) };
        let key = String::from_utf8_lossy(&state.key.0).into_owned();
        let url = self.bucket()?.abort_multipart_upload(Some(&self.credentials), &key, &state.upload_id).sign(SIGN_FOR);
        let response = send(self.client.delete(url)).await?;
        // Already gone (completed, expired or aborted) is fine too.
        if response.status() != StatusCode::NOT_FOUND {
            ok_or_classify(response, "AbortMultipartUpload").await?;
        }
        tracing::info!(key, "aborted the multipart upload of a cancelled job");
        self.parts.forget(job).map_err(store_error)
    }
}

/// What a `HEAD` says about an existing object.
struct Head {
    size: u64,
    sha256_meta: Option<String>,
    checksum_sha256: Option<String>,
    etag: Option<String>,
}

impl Head {
    /// Whether the object is this request's content (by our metadata, or the
    /// server's SHA-256 checksum). Objects without either never count: an
    /// unknown object is never assumed equal, so it is never overwritten.
    fn holds(&self, request: &UploadRequest) -> bool {
        self.size == request.size
            && (self.sha256_meta.as_deref() == Some(request.hash.as_hex())
                || self.checksum_sha256.as_deref() == Some(&sha256_base64(&request.hash)))
    }
}

impl S3Destination {
    async fn head(&self, key: &str) -> Result<Option<Head>, DestinationError> {
        let mut action = self.bucket()?.head_object(Some(&self.credentials), key);
        action.headers_mut().insert("x-amz-checksum-mode", "ENABLED");
        let url = action.sign(SIGN_FOR);
        let response = send(self.client.head(url).header("x-amz-checksum-mode", "ENABLED")).await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let response = ok_or_classify(response, "HeadObject").await?;
        let headers = response.headers();
        Ok(Some(Head {
            size: header(headers, "content-length").and_then(|v| v.parse().ok()).unwrap_or(0),
            sha256_meta: header(headers, HASH_META),
            checksum_sha256: header(headers, "x-amz-checksum-sha256"),
            etag: header(headers, "etag"),
        }))
    }

    /// A single `PUT`. `Ok(None)` when the key was taken meanwhile.
    async fn put(
        &self,
        request: &UploadRequest,
        key: &str,
        progress: &ProgressFn,
    ) -> Result<Option<String>, DestinationError> {
        let checksum = sha256_base64(&request.hash);
        let signed =
            [("x-amz-checksum-sha256", checksum.as_str()), (HASH_META, request.hash.as_hex()), ("if-none-match", "*")];
        let mut action = self.bucket()?.put_object(Some(&self.credentials), key);
        for (name, value) in signed {
            action.headers_mut().insert(name, value);
        }
        let url = action.sign(SIGN_FOR);
        let file = tokio::fs::File::open(&request.source).await.map_err(|e| read_error(request, &e))?;
        let chunks = tokio_util::io::ReaderStream::with_capacity(file, STREAM_CHUNK);
        let body = metered(chunks, request, progress);
        let mut builder = self.client.put(url).header(CONTENT_LENGTH, request.size);
        for (name, value) in signed {
            builder = builder.header(name, value);
        }
        let response = send(builder.body(body)).await.map_err(|e| interrupted_or(request, e))?;
        if response.status() == StatusCode::PRECONDITION_FAILED {
            return Ok(None);
        }
        let response = ok_or_classify(response, "PutObject").await?;
        Ok(Some(header(response.headers(), "etag").unwrap_or_default()))
    }

    /// Starts a multipart upload at `key` and sends every part.
    async fn multipart(
        &self,
        request: &UploadRequest,
        key: &str,
        progress: &ProgressFn,
    ) -> Result<Option<String>, DestinationError> {
        let mut action = self.bucket()?.create_multipart_upload(Some(&self.credentials), key);
        action.headers_mut().insert(HASH_META, request.hash.as_hex());
        let url = action.sign(SIGN_FOR);
        let response = send(self.client.post(url).header(HASH_META, request.hash.as_hex())).await?;
        let body = ok_or_classify(response, "CreateMultipartUpload").await?.text().await.map_err(transport)?;
        let created = rusty_s3::actions::CreateMultipartUpload::parse_response(&body)
            .map_err(|e| DestinationError::transient(format!("unreadable CreateMultipartUpload answer: {e}")))?;
        let state = MultipartProgress {
            key: RemoteKey(key.as_bytes().to_vec()),
            upload_id: created.upload_id().to_owned(),
            part_size: part_size_for(request.size, self.part_size)?,
            parts: Vec::new(),
        };
        self.parts.begin(request.job, &state.key, &state.upload_id, state.part_size).map_err(store_error)?;
        tracing::debug!(key, upload_id = %state.upload_id, "multipart upload started");
        self.send_parts(request, state, progress).await.map(Some)
    }

    /// Continues an interrupted multipart upload from its first missing part.
    async fn resume(
        &self,
        request: &UploadRequest,
        mut state: MultipartProgress,
        progress: &ProgressFn,
    ) -> Result<Uploaded, DestinationError> {
        let key = String::from_utf8_lossy(&state.key.0).into_owned();
        // Completed just before a crash: the object is there already.
        if let Some(head) = self.head(&key).await?
            && head.holds(request)
        {
            self.parts.forget(request.job).map_err(store_error)?;
            return Ok(Uploaded::Stored(receipt(&key, request, head.etag)));
        }
        match self.listed_parts(&key, &state.upload_id).await? {
            Listed::Gone => {
                tracing::info!(key, "the server expired the multipart upload; starting it again");
                self.parts.forget(request.job).map_err(store_error)?;
                let etag = self.multipart(request, &key, progress).await?;
                return Ok(Uploaded::Stored(receipt(&key, request, etag)));
            }
            // The persisted list is the source of truth (some servers omit
            // ETags here); a part the server does not have is sent again.
            Listed::Parts(listed) => {
                state.parts.retain(|p| listed.iter().any(|(n, size)| *n == p.number && *size == p.size));
            }
            Listed::Unsupported => {}
        }
        tracing::info!(key, done = state.parts.len(), "resuming multipart upload");
        let etag = self.send_parts(request, state, progress).await?;
        Ok(Uploaded::Stored(receipt(&key, request, Some(etag))))
    }

    async fn listed_parts(&self, key: &str, upload_id: &str) -> Result<Listed, DestinationError> {
        let url = self.bucket()?.list_parts(Some(&self.credentials), key, upload_id).sign(SIGN_FOR);
        let response = send(self.client.get(url)).await?;
        match response.status() {
            StatusCode::NOT_FOUND => return Ok(Listed::Gone),
            StatusCode::NOT_IMPLEMENTED => return Ok(Listed::Unsupported),
            _ => {}
        }
        let body = ok_or_classify(response, "ListParts").await?.text().await.map_err(transport)?;
        Ok(match rusty_s3::actions::ListParts::parse_response(&body) {
            Ok(list) => Listed::Parts(list.parts.iter().map(|p| (u32::from(p.number), p.size)).collect()),
            Err(_) => Listed::Unsupported,
        })
    }

    /// Sends the parts not yet in `state`, recording each, then completes.
    async fn send_parts(
        &self,
        request: &UploadRequest,
        mut state: MultipartProgress,
        progress: &ProgressFn,
    ) -> Result<String, DestinationError> {
        let key = String::from_utf8_lossy(&state.key.0).into_owned();
        let count = request.size.div_ceil(state.part_size).max(1);
        let count =
            u32::try_from(count).map_err(|_| DestinationError::permanent("file too large for multipart upload"))?;
        let file = Arc::new(std::fs::File::open(&request.source).map_err(|e| read_error(request, &e))?);
        for number in 1..=count {
            if let Some(done) = state.parts.iter().find(|p| p.number == number) {
                progress(done.size);
                continue;
            }
            if request.cancelled() {
                return Err(DestinationError::interrupted());
            }
            let offset = u64::from(number - 1) * state.part_size;
            let len = state.part_size.min(request.size - offset);
            // One pass hashes the part, a second streams it (from the page
            // cache, usually), so no part is ever held in memory. Should the
            // file change between the two, the server's Content-MD5 check
            // rejects the part (BadDigest, retried).
            let md5 = part_md5(&file, offset, len).await.map_err(|e| read_error(request, &e))?;
            let content_md5 = BASE64.encode(md5);
            let part_number =
                u16::try_from(number).map_err(|_| DestinationError::permanent("more than 65535 parts"))?;
            let mut action = self.bucket()?.upload_part(Some(&self.credentials), &key, part_number, &state.upload_id);
            action.headers_mut().insert("content-md5", content_md5.clone());
            let url = action.sign(SIGN_FOR);
            let chunk = if request.throttle.is_limited() { STREAM_CHUNK } else { READ_CHUNK };
            let chunks = part_chunks(&file, offset, len, chunk);
            let body = metered(chunks, request, progress);
            let builder = self.client.put(url).header("content-md5", &content_md5).header(CONTENT_LENGTH, len);
            let response = send(builder.body(body)).await.map_err(|e| interrupted_or(request, e))?;
            let response = ok_or_classify(response, "UploadPart").await?;
            let part = PartRecord {
                number,
                etag: header(response.headers(), "etag").unwrap_or_default(),
                md5: hex(&md5),
                size: len,
            };
            self.parts.record(request.job, &part).map_err(store_error)?;
            state.parts.push(part);
        }
        state.parts.sort_by_key(|p| p.number);
        let etag = self.complete(&key, &state).await?;
        // The multipart ETag is the MD5 of the parts' MD5s: check it when the
        // server follows that convention, and the size in any case.
        let expected = multipart_etag(&state.parts);
        if !etag.trim_matches('"').contains('-') || etag.trim_matches('"') == expected {
            let head = self.head(&key).await?;
            if head.as_ref().is_some_and(|h| h.size == request.size) {
                self.parts.forget(request.job).map_err(store_error)?;
                return Ok(etag);
            }
        }
        self.parts.forget(request.job).map_err(store_error)?;
        Err(DestinationError::transient(format!(
            "{key}: the completed object does not match what was sent (ETag {etag})"
        )))
    }

    async fn complete(&self, key: &str, state: &MultipartProgress) -> Result<String, DestinationError> {
        let etags = state.parts.iter().map(|p| p.etag.as_str());
        let action = self.bucket()?.complete_multipart_upload(Some(&self.credentials), key, &state.upload_id, etags);
        let url = action.sign(SIGN_FOR);
        let body = action.body();
        let response = send(self.client.post(url).body(body)).await?;
        let text = ok_or_classify(response, "CompleteMultipartUpload").await?.text().await.map_err(transport)?;
        // S3 may answer 200 and still report an error in the body.
        if text.contains("<Error>") {
            return Err(classify(
                StatusCode::INTERNAL_SERVER_ERROR,
                &HeaderMap::new(),
                &text,
                "CompleteMultipartUpload",
            ));
        }
        let parsed = rusty_s3::actions::CompleteMultipartUploadResponse::parse(&text)
            .map_err(|e| DestinationError::transient(format!("unreadable CompleteMultipartUpload answer: {e}")))?;
        Ok(parsed.etag().to_owned())
    }
}

/// S3 takes at most this many parts per upload.
const MAX_PARTS: u64 = 10_000;

/// The part size for a file of `size` bytes: the configured one, raised in
/// whole MiB when the file would otherwise need more than 10,000 parts (at
/// the default 16 MiB, files over 156 GiB).
fn part_size_for(size: u64, configured: u64) -> Result<u64, DestinationError> {
    let part_size = configured.max(size.div_ceil(MAX_PARTS).next_multiple_of(1 << 20));
    if part_size > crate::config::MAX_PART_SIZE {
        return Err(DestinationError::permanent(format!(
            "a {size}-byte file is larger than S3 allows (10,000 parts of at most 5 GiB)"
        )));
    }
    Ok(part_size)
}

/// Body chunk size: small enough for smooth rate limiting and prompt cancels.
const STREAM_CHUNK: usize = 256 * 1024;

/// Read size for hashing parts, and for sending them without a rate limit:
/// fewer, larger reads cost less.
const READ_CHUNK: usize = 1024 * 1024;

/// A request body from `chunks` that reports progress, honours the shared
/// bandwidth limit, and stops when the upload is cancelled.
fn metered(
    chunks: impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static,
    request: &UploadRequest,
    progress: &ProgressFn,
) -> reqwest::Body {
    let (cancel, throttle, progress) =
        (Arc::clone(&request.cancel), Arc::clone(&request.throttle), Arc::clone(progress));
    let stream = chunks.then(move |chunk| {
        let (cancel, throttle, progress) = (Arc::clone(&cancel), Arc::clone(&throttle), Arc::clone(&progress));
        async move {
            if cancel.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(std::io::Error::other("upload cancelled"));
            }
            let bytes = chunk?;
            throttle.consume(bytes.len() as u64).await;
            progress(bytes.len() as u64);
            Ok(bytes)
        }
    });
    reqwest::Body::wrap_stream(stream)
}

enum Listed {
    Gone,
    Parts(Vec<(u32, u64)>),
    Unsupported,
}

/// The size of the next read of at most `chunk` bytes, `done` of `len` read.
fn next_piece(len: u64, done: u64, chunk: usize) -> std::io::Result<usize> {
    usize::try_from((len - done).min(chunk as u64)).map_err(std::io::Error::other)
}

/// The MD5 of `len` bytes of `file` at `offset`.
async fn part_md5(file: &Arc<std::fs::File>, offset: u64, len: u64) -> std::io::Result<[u8; 16]> {
    let file = Arc::clone(file);
    tokio::task::spawn_blocking(move || {
        let mut md5 = Md5::new();
        let mut buffer = vec![0u8; READ_CHUNK];
        let mut done = 0;
        while done < len {
            let n = next_piece(len, done, READ_CHUNK)?;
            file.read_exact_at(&mut buffer[..n], offset + done)?;
            md5.update(&buffer[..n]);
            done += n as u64;
        }
        Ok(md5.finalize().into())
    })
    .await
    .map_err(std::io::Error::other)?
}

/// `len` bytes of `file` at `offset` as a stream of `chunk`-byte pieces,
/// each read when the body asks for it (positioned reads: nothing shares a
/// file offset).
fn part_chunks(
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

/// `prefix` + the layout key, made safe: `/`-separated segments, `%`, control
/// characters and bytes that are not UTF-8 escaped as `%XX`, `.` and `..`
/// segments escaped, so no file name can reach outside the prefix.
pub fn object_key(prefix: &str, relative: &RemoteKey) -> String {
    let mut key = prefix.to_owned();
    for (i, segment) in relative.0.split(|&b| b == b'/').filter(|s| !s.is_empty()).enumerate() {
        if i > 0 {
            key.push('/');
        }
        if segment == b"." || segment == b".." {
            for _ in segment {
                key.push_str("%2E");
            }
            continue;
        }
        for chunk in segment.utf8_chunks() {
            for c in chunk.valid().chars() {
                if c == '%' || c.is_control() {
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        let _ = write!(key, "%{b:02X}");
                    }
                } else {
                    key.push(c);
                }
            }
            for b in chunk.invalid() {
                let _ = write!(key, "%{b:02X}");
            }
        }
    }
    key
}

fn receipt(key: &str, request: &UploadRequest, etag: Option<String>) -> Receipt {
    Receipt {
        key: RemoteKey(key.as_bytes().to_vec()),
        size: request.size,
        sha256: request.hash.clone(),
        version: etag.map(|e| e.trim_matches('"').to_owned()),
    }
}

fn sha256_base64(hash: &ContentHash) -> String {
    let hex = hash.as_hex();
    let bytes: Vec<u8> =
        (0..hex.len()).step_by(2).filter_map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok()).collect();
    BASE64.encode(bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The conventional `ETag` of a multipart object: MD5 of the parts' MD5s, `-N`.
fn multipart_etag(parts: &[PartRecord]) -> String {
    let mut all = Md5::new();
    for part in parts {
        let raw: Vec<u8> =
            (0..part.md5.len()).step_by(2).filter_map(|i| u8::from_str_radix(&part.md5[i..i + 2], 16).ok()).collect();
        all.update(raw);
    }
    format!("{}-{}", hex(&all.finalize()), parts.len())
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

#[allow(clippy::needless_pass_by_value)] // shaped for `map_err`
fn store_error(e: super::StoreError) -> DestinationError {
    DestinationError::transient(format!("cannot record upload progress in the catalog: {e}"))
}

fn read_error(request: &UploadRequest, e: &std::io::Error) -> DestinationError {
    let message = format!("cannot read {}: {e}", request.source.display());
    match e.kind() {
        std::io::ErrorKind::NotFound => {
            DestinationError::permanent(format!("{} was deleted before it was uploaded", request.source.display()))
        }
        std::io::ErrorKind::PermissionDenied => DestinationError::permanent(message),
        _ => DestinationError::transient(message),
    }
}

fn interrupted_or(request: &UploadRequest, error: DestinationError) -> DestinationError {
    if request.cancelled() { DestinationError::interrupted() } else { error }
}

#[allow(clippy::needless_pass_by_value)] // shaped for `map_err`
fn transport(e: reqwest::Error) -> DestinationError {
    let kind = if e.is_timeout() { "timed out" } else { "failed" };
    // The URL is presigned: keep it (access key id, signature) out of messages and logs.
    let e = e.without_url();
    let cause = std::error::Error::source(&e).map(|c| format!(" ({c})")).unwrap_or_default();
    DestinationError::transient(format!("S3 request {kind}: {e}{cause}"))
}

async fn send(request: RequestBuilder) -> Result<Response, DestinationError> {
    request.send().await.map_err(transport)
}

/// Passes a success through; turns anything else into a classified error.
async fn ok_or_classify(response: Response, operation: &str) -> Result<Response, DestinationError> {
    if response.status().is_success() {
        return Ok(response);
    }
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.text().await.unwrap_or_default();
    Err(classify(status, &headers, &body, operation))
}

/// Retry classification at the destination boundary.
fn classify(status: StatusCode, headers: &HeaderMap, body: &str, operation: &str) -> DestinationError {
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
    );
    let retry = if status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || transient_code
    {
        Retry::Transient
    } else {
        if status == StatusCode::FORBIDDEN {
            message.push_str(" (check the access key, secret and bucket permissions)");
        }
        Retry::Permanent
    };
    let retry_after =
        header(headers, "retry-after").and_then(|v| v.trim().parse::<u64>().ok()).map(Duration::from_secs);
    DestinationError { retry, message, retry_after }
}

fn xml_field(body: &str, field: &str) -> Option<String> {
    let open = format!("<{field}>");
    let start = body.find(&open)? + open.len();
    let end = body[start..].find(&format!("</{field}>"))? + start;
    Some(body[start..end].trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_keys_stay_below_the_prefix() {
        let table: [(&[u8], &str); 6] = [
            (b"DCIM/IMG_1.JPG", "p/DCIM/IMG_1.JPG"),
            (b"../../etc/passwd", "p/%2E%2E/%2E%2E/etc/passwd"),
            (b"/abs//x.jpg", "p/abs/x.jpg"),
            (b"a\nb.jpg", "p/a%0Ab.jpg"),
            (b"50%.jpg", "p/50%25.jpg"),
            (b"caf\xe9.jpg", "p/caf%E9.jpg"),
        ];
        for (relative, expected) in table {
            assert_eq!(object_key("p/", &RemoteKey(relative.to_vec())), expected);
        }
    }

    #[test]
    fn part_size_keeps_every_file_within_10000_parts() {
        const MIB: u64 = 1 << 20;
        const GIB: u64 = 1 << 30;
        let table = [
            (200 * MIB, 16 * MIB),             // the configured size
            (10_000 * 16 * MIB, 16 * MIB),     // exactly 10,000 parts still fits
            (10_000 * 16 * MIB + 1, 17 * MIB), // one byte more: raised by a whole MiB
            (300 * GIB, (300 * GIB).div_ceil(10_000).next_multiple_of(MIB)),
            (10_000 * 5 * GIB, 5 * GIB), // the largest S3 object photosync can send
        ];
        for (size, expected) in table {
            let part = part_size_for(size, 16 * MIB).expect("fits");
            assert_eq!(part, expected, "{size}");
            assert!(size.div_ceil(part) <= 10_000, "{size} in {part}-byte parts");
        }
        assert_eq!(part_size_for(200 * MIB, 64 * MIB).expect("fits"), 64 * MIB, "a larger configured size is kept");
        let too_big = part_size_for(10_000 * 5 * GIB + 1, 16 * MIB).expect_err("too big");
        assert_eq!(too_big.retry, Retry::Permanent);
    }

    #[test]
    fn errors_are_classified_at_the_boundary() {
        let body = |code: &str| format!("<Error><Code>{code}</Code><Message>m</Message></Error>");
        let table = [
            (500, "InternalError", Retry::Transient),
            (503, "SlowDown", Retry::Transient),
            (429, "TooManyRequests", Retry::Transient),
            (408, "RequestTimeout", Retry::Transient),
            (400, "BadDigest", Retry::Transient),
            (403, "AccessDenied", Retry::Permanent),
            (404, "NoSuchBucket", Retry::Permanent),
            (400, "InvalidArgument", Retry::Permanent),
        ];
        for (status, code, retry) in table {
            let error =
                classify(StatusCode::from_u16(status).expect("status"), &HeaderMap::new(), &body(code), "PutObject");
            assert_eq!(error.retry, retry, "{status} {code}");
            assert!(error.message.contains(code), "{}", error.message);
        }
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", "7".parse().expect("header"));
        let error = classify(StatusCode::SERVICE_UNAVAILABLE, &headers, "", "PutObject");
        assert_eq!(error.retry_after, Some(Duration::from_secs(7)));
    }

    #[test]
    fn multipart_etag_follows_the_s3_convention() {
        let part = |data: &[u8]| PartRecord { number: 1, etag: String::new(), md5: hex(&Md5::digest(data)), size: 0 };
        let mut both = Md5::new();
        both.update(Md5::digest(b"a"));
        both.update(Md5::digest(b"b"));
        assert_eq!(multipart_etag(&[part(b"a"), part(b"b")]), format!("{}-2", hex(&both.finalize())));
    }
}

//! The S3-compatible destination (AWS, Backblaze B2, Cloudflare R2, `MinIO`,
//! Garage, Ceph RGW, `RustFS`, …).
//!
//! Requests are signed by `rusty-s3` (`SigV4`, presigned URLs with the
//! integrity headers among the signed ones) and sent with `reqwest` over
//! rustls; files are streamed from disk, never loaded whole. The keys are
//! read from where the config says for every upload (`credentials`).
//!
//! Nothing is ever overwritten: single `PUT`s and multipart completions
//! carry `If-None-Match: *`, and a key that holds other content moves the
//! upload to the next name. Nothing is acknowledged without proof that the
//! object holds the scanned bytes: a single `PUT` carries the scanned
//! SHA-256 as `x-amz-checksum-sha256`, which a server that checks it echoes
//! back (where it does not, the file's MD5 is compared with the `ETag`
//! afterwards); `multipart` chains the parts' verified MD5s to the
//! whole-file SHA-256. An object found at a key counts as ours only if the
//! server's full-object SHA-256 or a single-part `ETag` (an MD5) says so, or
//! its bytes read back do.

mod config;
mod credentials;
mod http;
mod multipart;

pub use config::{MAX_PART_SIZE, MIN_PART_SIZE, S3Config, S3CredentialSource};

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use reqwest::StatusCode;
use reqwest::header::CONTENT_LENGTH;
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use sha2::{Digest as _, Sha256};

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use self::http::{ok_or_classify, refusal};
use self::multipart::Finished;
use super::http::{
    Client, READ_CHUNK, STREAM_CHUNK, digest_range, file_chunks, header, hex, metered, read_error, send, send_for,
};
use super::{
    Destination, DestinationError, ProgressFn, SessionStore, UploadRequest, Uploaded, Verdict, key_candidates,
    object_key,
};
use crate::model::{ContentHash, JobId, Receipt, RemoteKey};

pub use multipart::part_size_for;

/// How long a presigned request stays valid (a part must start within it).
const SIGN_FOR: Duration = Duration::from_hours(1);

/// User metadata carrying the content hash (a hint for people and tools;
/// photosync never takes it as proof).
const HASH_META: &str = "x-amz-meta-photosync-sha256";

/// An S3 bucket (and prefix) as a destination.
pub struct S3Destination {
    bucket: Result<Bucket, String>,
    credentials: S3CredentialSource,
    client: Client,
    prefix: String,
    multipart_threshold: u64,
    part_size: u64,
    sessions: Arc<dyn SessionStore>,
}

/// What one operation works with: the bucket, the keys read for it, and
/// the HTTP client.
struct Access<'d> {
    bucket: &'d Bucket,
    keys: Credentials,
    client: reqwest::Client,
}

/// What a look at a key found.
enum Looked {
    /// No object.
    Missing,
    /// An object.
    Found(Head),
    /// The key may not be read (a write-only key): unknown.
    Unknown,
}

/// What a `HEAD` says about an existing object.
struct Head {
    size: u64,
    checksum_sha256: Option<String>,
    etag: Option<String>,
}

impl S3Destination {
    /// A destination for `config`, keeping multipart uploads in `sessions`.
    pub fn new(config: &S3Config, sessions: Arc<dyn SessionStore>) -> Self {
        let style = if config.path_style { UrlStyle::Path } else { UrlStyle::VirtualHost };
        let bucket = Bucket::new(config.endpoint.clone(), style, config.bucket.clone(), config.region.clone())
            .map_err(|e| format!("bucket {} at {}: {e}", config.bucket, config.endpoint));
        Self {
            bucket,
            credentials: config.credentials.clone(),
            client: Client::new(config.timeout),
            prefix: config.prefix.clone(),
            multipart_threshold: config.multipart_threshold,
            part_size: config.part_size,
            sessions,
        }
    }

    /// The bucket, freshly read keys and the client, or why there are none.
    fn access(&self) -> Result<Access<'_>, DestinationError> {
        let bucket = self.bucket.as_ref().map_err(|e| DestinationError::permanent(e.clone()))?;
        Ok(Access { bucket, keys: credentials::resolve(&self.credentials)?, client: self.client.get()? })
    }
}

#[async_trait]
impl Destination for S3Destination {
    async fn check(&self) -> Result<(), DestinationError> {
        let access = self.access()?;
        let url = access.bucket.head_bucket(Some(&access.keys)).sign(SIGN_FOR);
        let response = send(access.client.head(url)).await?;
        // A key that may write but not list (or a clock off by a few
        // minutes) is refused here; the uploads themselves tell.
        if response.status() == StatusCode::FORBIDDEN {
            tracing::warn!(
                "HeadBucket was refused (403); carrying on, the uploads will tell whether the key may write"
            );
            return Ok(());
        }
        ok_or_classify(response, "HeadBucket").await.map(drop)
    }

    async fn upload(&self, request: UploadRequest, progress: ProgressFn) -> Result<Uploaded, DestinationError> {
        let access = self.access()?;
        if let Some(state) = self.load_progress(request.job)? {
            let key = state.key.clone();
            if let Some(Finished::Stored(etag)) = self.resume(&access, &request, state, &progress).await? {
                return Ok(Uploaded::Stored(receipt(&key, &request, Some(etag))));
            }
        }
        let mut candidates = key_candidates(&request.key, &request.hash).into_iter();
        let mut candidate = candidates.next();
        // Whether the current candidate was already looked at again after a clash.
        let mut second_look = false;
        while let Some(relative) = candidate.take() {
            let key = object_key(&self.prefix, &relative);
            let looked = self.head(&access, &request.cancel, &key).await?;
            match &looked {
                Looked::Found(head) if self.holds(&access, &request, &key, head).await? => {
                    return Ok(Uploaded::AlreadyPresent(receipt(&key, &request, head.etag.clone())));
                }
                Looked::Found(_) => {
                    tracing::info!(key = %key, "key taken by other content; trying the next name");
                    (candidate, second_look) = (candidates.next(), false);
                    continue;
                }
                Looked::Missing | Looked::Unknown => {}
            }
            let stored = if request.size >= self.multipart_threshold {
                self.multipart(&access, &request, &key, &progress).await?
            } else {
                self.put(&access, &request, &key, &progress).await?
            };
            match stored {
                Finished::Stored(etag) => return Ok(Uploaded::Stored(receipt(&key, &request, Some(etag)))),
                // Someone created the key while we uploaded: look at it once
                // more (it may be this very content), else move on.
                Finished::Taken | Finished::Gone if second_look || matches!(looked, Looked::Unknown) => {
                    (candidate, second_look) = (candidates.next(), false);
                }
                Finished::Taken | Finished::Gone => (candidate, second_look) = (Some(relative), true),
            }
        }
        Err(DestinationError::permanent(format!("every candidate key for {} is taken by other content", request.key)))
    }

    async fn verify(&self, receipt: &Receipt, deep: bool) -> Result<Verdict, DestinationError> {
        let access = self.access()?;
        let key = String::from_utf8_lossy(&receipt.key.0).into_owned();
        let never = CancellationToken::new();
        let head = match self.head(&access, &never, &key).await? {
            Looked::Missing => return Ok(Verdict::Missing),
            Looked::Unknown => {
                return Err(DestinationError::permanent(format!("{key} may not be read with this key (403)")));
            }
            Looked::Found(head) => head,
        };
        if head.size != receipt.size {
            return Ok(Verdict::Differs(format!("{} bytes instead of {}", head.size, receipt.size)));
        }
        let etag = head.etag.as_deref().map(|e| e.trim_matches('"'));
        let checksum = head.checksum_sha256.as_deref().filter(|s| !s.contains('-'));
        if !deep {
            if let Some(sum) = checksum {
                return Ok(if sum == sha256_base64(&receipt.sha256) {
                    Verdict::Holds
                } else {
                    Verdict::Differs("the server's SHA-256 of it is another".into())
                });
            }
            // The ETag recorded with the receipt is the server's digest of what it stored then.
            if etag.is_some() && etag == receipt.version.as_deref() {
                return Ok(Verdict::Holds);
            }
        }
        Ok(match self.read_back(&access, &never, &key).await? {
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

    async fn discard(&self, job: JobId, _key: &RemoteKey, _hash: &ContentHash) -> Result<(), DestinationError> {
        let Some(state) = self.load_progress(job)? else { return Ok(()) };
        let access = self.access()?;
        let key = state.key.clone();
        let url = access.bucket.abort_multipart_upload(Some(&access.keys), &key, &state.upload_id).sign(SIGN_FOR);
        let response = send(access.client.delete(url)).await?;
        // Already gone (completed, expired or aborted) is fine too.
        if response.status() != StatusCode::NOT_FOUND {
            ok_or_classify(response, "AbortMultipartUpload").await?;
        }
        tracing::info!(key, "aborted the multipart upload of a cancelled job");
        self.forget_progress(job)
    }
}

impl S3Destination {
    async fn head(
        &self,
        access: &Access<'_>,
        cancel: &CancellationToken,
        key: &str,
    ) -> Result<Looked, DestinationError> {
        let mut action = access.bucket.head_object(Some(&access.keys), key);
        action.headers_mut().insert("x-amz-checksum-mode", "ENABLED");
        let url = action.sign(SIGN_FOR);
        let response = send_for(cancel, access.client.head(url).header("x-amz-checksum-mode", "ENABLED")).await?;
        match response.status() {
            StatusCode::NOT_FOUND => return Ok(Looked::Missing),
            StatusCode::FORBIDDEN => return Ok(Looked::Unknown),
            _ => {}
        }
        let response = ok_or_classify(response, "HeadObject").await?;
        let headers = response.headers();
        Ok(Looked::Found(Head {
            size: header(headers, "content-length").and_then(|v| v.parse().ok()).unwrap_or(0),
            checksum_sha256: header(headers, "x-amz-checksum-sha256"),
            etag: header(headers, "etag"),
        }))
    }

    /// Whether the object at `key` provably holds the scanned content: the
    /// server's full-object SHA-256, a single-part `ETag` equal to the
    /// file's MD5, or else its bytes read back and hashed. Sizes must match
    /// first; metadata is never taken as proof.
    async fn holds(
        &self,
        access: &Access<'_>,
        request: &UploadRequest,
        key: &str,
        head: &Head,
    ) -> Result<bool, DestinationError> {
        if head.size != request.size {
            return Ok(false);
        }
        if let Some(sum) = head.checksum_sha256.as_deref().filter(|s| !s.contains('-')) {
            return Ok(sum == sha256_base64(&request.hash));
        }
        let etag = head.etag.as_deref().map(|e| e.trim_matches('"').to_ascii_lowercase());
        if let Some(etag) = etag.filter(|e| e.len() == 32 && e.bytes().all(|b| b.is_ascii_hexdigit())) {
            let (md5, _) = self.digest_file(request).await?;
            if hex(&md5) == etag {
                return Ok(true);
            }
            // Encrypted objects have ETags that are not MD5s: read it back.
        }
        tracing::info!(key, "reading the object back to see whether it is this file");
        Ok(self.read_back(access, &request.cancel, key).await? == Some(request.hash.clone()))
    }

    /// The file's MD5, after checking that its SHA-256 is still the scanned one.
    async fn digest_file(&self, request: &UploadRequest) -> Result<([u8; 16], ContentHash), DestinationError> {
        let file = Arc::new(std::fs::File::open(&request.source).map_err(|e| read_error(request, &e))?);
        let (md5, sha256) =
            digest_range(&file, 0, request.size, Sha256::new()).await.map_err(|e| read_error(request, &e))?;
        let sha256 = ContentHash::from_digest(&sha256.finalize());
        if sha256 != request.hash {
            return Err(DestinationError::source_changed(format!(
                "{} changed since it was scanned",
                request.source.display()
            )));
        }
        Ok((md5, sha256))
    }

    /// Downloads the object and hashes it; `None` when it is not there or
    /// may not be read.
    async fn read_back(
        &self,
        access: &Access<'_>,
        cancel: &CancellationToken,
        key: &str,
    ) -> Result<Option<ContentHash>, DestinationError> {
        let url = access.bucket.get_object(Some(&access.keys), key).sign(SIGN_FOR);
        let response = send_for(cancel, access.client.get(url)).await?;
        if matches!(response.status(), StatusCode::FORBIDDEN | StatusCode::NOT_FOUND) {
            return Ok(None);
        }
        let response = ok_or_classify(response, "GetObject").await?;
        Ok(Some(super::http::body_sha256(cancel, response).await?))
    }

    /// A single `PUT` carrying the scanned SHA-256 as
    /// `x-amz-checksum-sha256`. A server that checks it (AWS, R2, `MinIO`,
    /// `s3s`) refuses other bytes and echoes the checksum back: that echo is
    /// the proof, at no cost. Where the server does not echo it, the proof
    /// comes after: the file's SHA-256 must still be the scanned one and its
    /// MD5 the object's `ETag`, or else the object read back must hash to
    /// it; an object that fails is deleted (it is the one just created).
    async fn put(
        &self,
        access: &Access<'_>,
        request: &UploadRequest,
        key: &str,
        progress: &ProgressFn,
    ) -> Result<Finished, DestinationError> {
        let checksum = sha256_base64(&request.hash);
        let signed =
            [("x-amz-checksum-sha256", checksum.as_str()), (HASH_META, request.hash.as_hex()), ("if-none-match", "*")];
        let mut action = access.bucket.put_object(Some(&access.keys), key);
        for (name, value) in signed {
            action.headers_mut().insert(name, value);
        }
        let url = action.sign(SIGN_FOR);
        let file = Arc::new(std::fs::File::open(&request.source).map_err(|e| read_error(request, &e))?);
        let chunk = if request.throttle.is_limited() { STREAM_CHUNK } else { READ_CHUNK };
        let body = metered(file_chunks(&file, 0, request.size, chunk), request, progress);
        let mut builder = access.client.put(url).header(CONTENT_LENGTH, request.size);
        for (name, value) in signed {
            builder = builder.header(name, value);
        }
        let response = send_for(&request.cancel, builder.body(body)).await?;
        // Taken, or a write raced ours (409): look at the key again.
        if matches!(response.status(), StatusCode::PRECONDITION_FAILED | StatusCode::CONFLICT) {
            return Ok(Finished::Taken);
        }
        if !response.status().is_success() {
            let refusal = refusal(response, "PutObject").await;
            // The server found other bytes than the scanned ones: did the file change?
            if matches!(refusal.code.as_str(), "BadDigest" | "InvalidDigest" | "XAmzContentSHA256Mismatch") {
                self.digest_file(request).await?;
            }
            return Err(refusal.error);
        }
        let etag = header(response.headers(), "etag").unwrap_or_default();
        if header(response.headers(), "x-amz-checksum-sha256").as_deref() == Some(checksum.as_str()) {
            return Ok(Finished::Stored(etag));
        }
        self.prove_put(access, request, key, &etag).await?;
        Ok(Finished::Stored(etag))
    }

    /// Proves, after the fact, that a `PUT` the server did not vouch for
    /// stored the scanned bytes; deletes the object if it did not.
    async fn prove_put(
        &self,
        access: &Access<'_>,
        request: &UploadRequest,
        key: &str,
        etag: &str,
    ) -> Result<(), DestinationError> {
        let unquoted = etag.trim_matches('"').to_ascii_lowercase();
        let proven = match self.digest_file(request).await {
            Ok((md5, _)) if hex(&md5) == unquoted => true,
            // Encrypted objects have ETags that are not MD5s: read it back.
            Ok(_) => self.read_back(access, &request.cancel, key).await? == Some(request.hash.clone()),
            Err(changed) => {
                self.delete_object(access, request, key, &unquoted).await?;
                return Err(changed);
            }
        };
        if proven {
            return Ok(());
        }
        self.delete_object(access, request, key, &unquoted).await?;
        Err(DestinationError::transient(format!(
            "{key}: the stored object is not what was sent; it was removed and is sent again"
        )))
    }

    /// Deletes an object this upload created that turned out wrong
    /// (`If-Match`, so nothing written since is touched where the server
    /// supports it).
    async fn delete_object(
        &self,
        access: &Access<'_>,
        request: &UploadRequest,
        key: &str,
        etag: &str,
    ) -> Result<(), DestinationError> {
        let quoted = format!("\"{etag}\"");
        let mut action = access.bucket.delete_object(Some(&access.keys), key);
        action.headers_mut().insert("if-match", quoted.clone());
        let url = action.sign(SIGN_FOR);
        let response = send_for(&request.cancel, access.client.delete(url).header("if-match", quoted)).await?;
        if matches!(response.status(), StatusCode::NOT_FOUND | StatusCode::PRECONDITION_FAILED) {
            return Ok(());
        }
        ok_or_classify(response, "DeleteObject").await.map(drop)
    }
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
}

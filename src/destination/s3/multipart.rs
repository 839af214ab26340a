//! Multipart uploads that resume after a crash and prove what they stored.
//!
//! The upload id is recorded (as a [`Session`] of kind `s3-multipart`)
//! before any part is sent, and each part as soon as the server confirms
//! it. The proof chain: every part
//! goes up with `Content-MD5`, which the server checks against what it
//! received; the same read that computed that MD5 feeds a SHA-256 of the
//! whole file, and the upload is completed only if that SHA-256 is the one
//! the scan recorded. Parts an earlier attempt sent are read again locally
//! and must still have their recorded MD5. So the object is the scanned
//! content, or it is never completed (the file changed: the upload is
//! aborted and the file read again). Completion carries `If-None-Match: *`
//! (and is preceded by a look at the key, for servers that ignore it), so
//! it never replaces an object.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use md5::{Digest as _, Md5};
use reqwest::StatusCode;
use reqwest::header::CONTENT_LENGTH;
use rusty_s3::S3Action as _;
use sha2::Sha256;

use super::http::{ok_or_classify, refusal};
use super::{Access, HASH_META, Looked, S3Destination};
use crate::destination::http::{
    READ_CHUNK, STREAM_CHUNK, digest_range, file_chunks, header, hex, metered, read_error, send_for, text,
};
use serde::{Deserialize, Serialize};

use crate::destination::session::{Session, store_error, to_json};
use crate::destination::{DestinationError, Moved, ProgressFn, UploadRequest};
use crate::model::{ContentHash, JobId};

/// S3 takes at most this many parts per upload.
const MAX_PARTS: u64 = 10_000;

/// The session kind, and the version of what it records.
const SESSION: (&str, u32) = ("s3-multipart", 1);

/// One finished part of a multipart upload, as the server confirmed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartRecord {
    /// Part number, from 1 (the session piece's number).
    #[serde(skip)]
    pub number: u32,
    /// The `ETag` the server returned for it.
    pub etag: String,
    /// MD5 of the part, hex (the server verified it).
    pub md5: String,
    /// Bytes in the part.
    pub size: u64,
}

/// A multipart upload in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultipartProgress {
    /// The object key it writes.
    pub key: String,
    /// The server's upload id.
    pub upload_id: String,
    /// Part size it was started with.
    pub part_size: u64,
    /// Parts finished so far.
    pub parts: Vec<PartRecord>,
}

/// What the session records besides the parts.
#[derive(Serialize, Deserialize)]
struct UploadState {
    key: String,
    upload_id: String,
    part_size: u64,
}

impl MultipartProgress {
    /// The upload a session records, if it is one of ours in this version.
    fn from_session(record: &Session) -> Option<MultipartProgress> {
        let (state, parts): (UploadState, Vec<PartRecord>) = record.decode(SESSION.0, SESSION.1)?;
        let numbers = record.pieces.iter().map(|(n, _)| *n);
        let parts = parts.into_iter().zip(numbers).map(|(part, number)| PartRecord { number, ..part }).collect();
        Some(MultipartProgress { key: state.key, upload_id: state.upload_id, part_size: state.part_size, parts })
    }
}

/// How a multipart upload ended.
pub enum Finished {
    /// The object is complete and holds the scanned content; its `ETag`.
    Stored(String),
    /// Something else took the key first: nothing of ours is there (our
    /// upload is aborted); try the next name.
    Taken,
    /// The server no longer knows the upload (expired, aborted): start over.
    Gone,
}

impl S3Destination {
    /// The multipart upload recorded for `job`, if any (another kind of
    /// record, or an older version, is dropped: the upload starts afresh).
    pub(super) fn load_progress(&self, job: JobId) -> Result<Option<MultipartProgress>, DestinationError> {
        let Some(record) = self.sessions.load(job).map_err(store_error)? else { return Ok(None) };
        let progress = MultipartProgress::from_session(&record);
        if progress.is_none() {
            self.sessions.forget(job).map_err(store_error)?;
        }
        Ok(progress)
    }

    /// Forgets `job`'s recorded upload.
    pub(super) fn forget_progress(&self, job: JobId) -> Result<(), DestinationError> {
        self.sessions.forget(job).map_err(store_error)
    }

    /// Uploads the file to `key` in parts, starting over once if the server
    /// forgets the upload midway.
    pub(super) async fn multipart(
        &self,
        access: &Access<'_>,
        request: &UploadRequest,
        key: &str,
        progress: &ProgressFn,
    ) -> Result<Finished, DestinationError> {
        for _ in 0..2 {
            let state = self.create(access, request, key).await?;
            match self.send_parts(access, request, state, progress).await? {
                Finished::Gone => {
                    tracing::info!(key, "the server forgot the multipart upload; starting it again");
                    self.forget_progress(request.job)?;
                }
                finished => return Ok(finished),
            }
        }
        Err(DestinationError::transient(format!("{key}: the server keeps forgetting the multipart upload")))
    }

    async fn create(
        &self,
        access: &Access<'_>,
        request: &UploadRequest,
        key: &str,
    ) -> Result<MultipartProgress, DestinationError> {
        let mut action = access.bucket.create_multipart_upload(Some(&access.keys), key);
        action.headers_mut().insert(HASH_META, request.hash.as_hex());
        let url = action.sign(super::SIGN_FOR);
        let response =
            send_for(&request.cancel, access.client.post(url).header(HASH_META, request.hash.as_hex())).await?;
        let body = text(&request.cancel, ok_or_classify(response, "CreateMultipartUpload").await?).await?;
        let created = rusty_s3::actions::CreateMultipartUpload::parse_response(&body)
            .map_err(|e| DestinationError::transient(format!("unreadable CreateMultipartUpload answer: {e}")))?;
        let state = MultipartProgress {
            key: key.to_owned(),
            upload_id: created.upload_id().to_owned(),
            part_size: part_size_for(request.size, self.part_size)?,
            parts: Vec::new(),
        };
        let record =
            UploadState { key: state.key.clone(), upload_id: state.upload_id.clone(), part_size: state.part_size };
        self.sessions.begin(request.job, SESSION.0, SESSION.1, &to_json(&record)?).map_err(store_error)?;
        tracing::debug!(key, upload_id = %state.upload_id, "multipart upload started");
        Ok(state)
    }

    /// Continues an interrupted multipart upload. `Ok(None)`: there is
    /// nothing to continue (the server forgot it, or another object now has
    /// the key), and the upload starts afresh.
    pub(super) async fn resume(
        &self,
        access: &Access<'_>,
        request: &UploadRequest,
        mut state: MultipartProgress,
        progress: &ProgressFn,
    ) -> Result<Option<Finished>, DestinationError> {
        let key = state.key.clone();
        match self.head(access, &request.cancel, &key).await? {
            // Completed just before a crash: completion only ever follows a
            // SHA-256 check of the recorded parts, so an object whose ETag
            // is theirs holds the scanned content.
            Looked::Found(head)
                if head.size == request.size
                    && covers(&state, request.size)
                    && head.etag.as_deref().map(|e| e.trim_matches('"')) == Some(&multipart_etag(&state.parts)) =>
            {
                self.forget_progress(request.job)?;
                return Ok(Some(Finished::Stored(head.etag.unwrap_or_default())));
            }
            Looked::Found(_) => {
                tracing::info!(key, "the key of an interrupted upload now holds an object; starting afresh");
                self.abort(access, request, &state).await?;
                return Ok(None);
            }
            Looked::Missing | Looked::Unknown => {}
        }
        match self.listed_parts(access, request, &key, &state.upload_id).await? {
            Listed::Gone => {
                tracing::info!(key, "the server expired the multipart upload; starting it again");
                self.forget_progress(request.job)?;
                return Ok(None);
            }
            // The persisted list is the source of truth (some servers omit
            // ETags here); a part the server does not have is sent again.
            Listed::Parts(listed) => {
                state.parts.retain(|p| listed.iter().any(|(n, size)| *n == p.number && *size == p.size));
            }
            Listed::Unsupported => {}
        }
        tracing::info!(key, done = state.parts.len(), "resuming multipart upload");
        match self.send_parts(access, request, state, progress).await? {
            Finished::Gone => {
                self.forget_progress(request.job)?;
                Ok(None)
            }
            finished => Ok(Some(finished)),
        }
    }

    async fn listed_parts(
        &self,
        access: &Access<'_>,
        request: &UploadRequest,
        key: &str,
        upload_id: &str,
    ) -> Result<Listed, DestinationError> {
        let url = access.bucket.list_parts(Some(&access.keys), key, upload_id).sign(super::SIGN_FOR);
        let response = send_for(&request.cancel, access.client.get(url)).await?;
        match response.status() {
            StatusCode::NOT_FOUND => return Ok(Listed::Gone),
            // Not supported, or not allowed for this key: trust what was recorded.
            StatusCode::NOT_IMPLEMENTED | StatusCode::FORBIDDEN => return Ok(Listed::Unsupported),
            _ => {}
        }
        let body = text(&request.cancel, ok_or_classify(response, "ListParts").await?).await?;
        Ok(match rusty_s3::actions::ListParts::parse_response(&body) {
            Ok(list) => Listed::Parts(list.parts.iter().map(|p| (u32::from(p.number), p.size)).collect()),
            Err(_) => Listed::Unsupported,
        })
    }

    /// Sends the parts not yet in `state` (re-reading the others to chain
    /// them into the whole-file SHA-256), then completes the upload if the
    /// chain gives the scanned hash.
    async fn send_parts(
        &self,
        access: &Access<'_>,
        request: &UploadRequest,
        mut state: MultipartProgress,
        progress: &ProgressFn,
    ) -> Result<Finished, DestinationError> {
        let key = state.key.clone();
        let count = request.size.div_ceil(state.part_size).max(1);
        let count =
            u32::try_from(count).map_err(|_| DestinationError::permanent("file too large for multipart upload"))?;
        let file = Arc::new(std::fs::File::open(&request.source).map_err(|e| read_error(request, &e))?);
        let mut whole = Sha256::new();
        for number in 1..=count {
            if request.cancelled() {
                return Err(DestinationError::interrupted());
            }
            let offset = u64::from(number - 1) * state.part_size;
            let len = state.part_size.min(request.size - offset);
            // One pass hashes the part (and feeds the whole-file SHA-256), a
            // second streams it, so no part is ever held in memory. Should
            // the file change between the two, the server's Content-MD5
            // check rejects the part (BadDigest, retried).
            let (md5, next) = digest_range(&file, offset, len, whole).await.map_err(|e| read_error(request, &e))?;
            whole = next;
            if let Some(done) = state.parts.iter().find(|p| p.number == number) {
                if done.md5 != hex(&md5) || done.size != len {
                    self.abort(access, request, &state).await?;
                    return Err(DestinationError::source_changed(format!(
                        "{} changed since part {number} of it was sent",
                        request.source.display()
                    )));
                }
                progress(Moved::Resumed(len));
                continue;
            }
            let Some(part) =
                self.send_part(access, request, &state, &file, (number, offset, len), md5, progress).await?
            else {
                return Ok(Finished::Gone);
            };
            self.sessions.record(request.job, part.number, &to_json(&part)?).map_err(store_error)?;
            state.parts.push(part);
        }
        if ContentHash::from_digest(&whole.finalize()) != request.hash {
            self.abort(access, request, &state).await?;
            return Err(DestinationError::source_changed(format!(
                "{} changed while it was being uploaded",
                request.source.display()
            )));
        }
        state.parts.sort_by_key(|p| p.number);
        // For servers that ignore If-None-Match on completion.
        if let Looked::Found(_) = self.head(access, &request.cancel, &key).await? {
            self.abort(access, request, &state).await?;
            return Ok(Finished::Taken);
        }
        let finished = self.complete(access, request, &key, &state).await?;
        if let Finished::Stored(etag) = &finished {
            self.check_completed(access, request, &key, &state, etag).await?;
        }
        if !matches!(finished, Finished::Gone) {
            self.forget_progress(request.job)?;
        }
        Ok(finished)
    }

    /// Sends one part; `None` when the server no longer knows the upload.
    #[allow(clippy::too_many_arguments)] // one part's coordinates, each distinct
    async fn send_part(
        &self,
        access: &Access<'_>,
        request: &UploadRequest,
        state: &MultipartProgress,
        file: &Arc<std::fs::File>,
        (number, offset, len): (u32, u64, u64),
        md5: [u8; 16],
        progress: &ProgressFn,
    ) -> Result<Option<PartRecord>, DestinationError> {
        let key = &state.key;
        let content_md5 = BASE64.encode(md5);
        let part_number = u16::try_from(number).map_err(|_| DestinationError::permanent("more than 65535 parts"))?;
        let mut action = access.bucket.upload_part(Some(&access.keys), key, part_number, &state.upload_id);
        action.headers_mut().insert("content-md5", content_md5.clone());
        let url = action.sign(super::SIGN_FOR);
        let chunk = if request.throttle.is_limited() { STREAM_CHUNK } else { READ_CHUNK };
        let body = metered(file_chunks(file, offset, len, chunk), request, progress);
        let builder = access.client.put(url).header("content-md5", &content_md5).header(CONTENT_LENGTH, len);
        let response = send_for(&request.cancel, builder.body(body)).await?;
        if !response.status().is_success() {
            let refusal = refusal(response, "UploadPart").await;
            if refusal.code == "NoSuchUpload" {
                return Ok(None);
            }
            return Err(refusal.error);
        }
        let etag = header(response.headers(), "etag").unwrap_or_default();
        Ok(Some(PartRecord { number, etag, md5: hex(&md5), size: len }))
    }

    async fn complete(
        &self,
        access: &Access<'_>,
        request: &UploadRequest,
        key: &str,
        state: &MultipartProgress,
    ) -> Result<Finished, DestinationError> {
        let etags = state.parts.iter().map(|p| p.etag.as_str());
        let mut action = access.bucket.complete_multipart_upload(Some(&access.keys), key, &state.upload_id, etags);
        action.headers_mut().insert("if-none-match", "*");
        let url = action.sign(super::SIGN_FOR);
        let body = action.body();
        let response =
            send_for(&request.cancel, access.client.post(url).header("if-none-match", "*").body(body)).await?;
        if !response.status().is_success() {
            let refusal = refusal(response, "CompleteMultipartUpload").await;
            return match (refusal.status, refusal.code.as_str()) {
                (_, "NoSuchUpload") => Ok(Finished::Gone),
                // Taken, or a write raced ours (409: AWS asks to start over).
                (StatusCode::PRECONDITION_FAILED | StatusCode::CONFLICT, _)
                | (_, "PreconditionFailed" | "ConditionalRequestConflict") => {
                    self.abort(access, request, state).await?;
                    Ok(Finished::Taken)
                }
                _ => Err(refusal.error),
            };
        }
        let text = text(&request.cancel, response).await?;
        // S3 may answer 200 and still report an error in the body.
        if text.contains("<Error>") {
            let refusal = super::http::refusal_of(
                StatusCode::INTERNAL_SERVER_ERROR,
                &reqwest::header::HeaderMap::new(),
                &text,
                "CompleteMultipartUpload",
            );
            return Err(refusal.error);
        }
        let parsed = rusty_s3::actions::CompleteMultipartUploadResponse::parse(&text)
            .map_err(|e| DestinationError::transient(format!("unreadable CompleteMultipartUpload answer: {e}")))?;
        Ok(Finished::Stored(parsed.etag().to_owned()))
    }

    /// The completed object must have the size sent and, where the server
    /// follows the convention, the `ETag` of the parts sent. If it does not,
    /// it is not left to pass for the scanned content: it is deleted (it is
    /// ours: the completion created it) and the upload fails, to be retried.
    async fn check_completed(
        &self,
        access: &Access<'_>,
        request: &UploadRequest,
        key: &str,
        state: &MultipartProgress,
        etag: &str,
    ) -> Result<(), DestinationError> {
        let etag = etag.trim_matches('"');
        let conventional = !etag.contains('-') || etag == multipart_etag(&state.parts);
        let size_ok = match self.head(access, &request.cancel, key).await? {
            Looked::Found(head) => head.size == request.size,
            Looked::Missing => false,
            Looked::Unknown => true,
        };
        if conventional && size_ok {
            return Ok(());
        }
        self.forget_progress(request.job)?;
        self.delete_object(access, request, key, etag).await?;
        Err(DestinationError::transient(format!(
            "{key}: the completed object does not match what was sent (ETag {etag}); it was removed and is sent again"
        )))
    }

    /// Aborts `state`'s upload and forgets it. An abort the server refuses
    /// (it no longer knows the upload, or the key may not abort) is logged,
    /// not fatal: what is left costs storage, never a photo.
    pub(super) async fn abort(
        &self,
        access: &Access<'_>,
        request: &UploadRequest,
        state: &MultipartProgress,
    ) -> Result<(), DestinationError> {
        let key = state.key.clone();
        let url =
            access.bucket.abort_multipart_upload(Some(&access.keys), &key, &state.upload_id).sign(super::SIGN_FOR);
        let response = send_for(&request.cancel, access.client.delete(url)).await?;
        // Already gone (completed, expired or aborted) is fine too.
        if response.status() != StatusCode::NOT_FOUND
            && let Err(e) = ok_or_classify(response, "AbortMultipartUpload").await
        {
            tracing::warn!(key, "could not abort a multipart upload (it may be left on the server): {e}");
        }
        self.forget_progress(request.job)
    }
}

enum Listed {
    Gone,
    Parts(Vec<(u32, u64)>),
    Unsupported,
}

/// Whether the recorded parts cover a file of `size` bytes.
fn covers(state: &MultipartProgress, size: u64) -> bool {
    state.parts.iter().map(|p| p.size).sum::<u64>() == size
}

/// The part size for a file of `size` bytes: the configured one, raised in
/// whole MiB when the file would otherwise need more than 10,000 parts (at
/// the default 16 MiB, files over 156 GiB).
pub fn part_size_for(size: u64, configured: u64) -> Result<u64, DestinationError> {
    let part_size = configured.max(size.div_ceil(MAX_PARTS).next_multiple_of(1 << 20));
    if part_size > super::MAX_PART_SIZE {
        return Err(DestinationError::permanent(format!(
            "a {size}-byte file is larger than S3 allows (10,000 parts of at most 5 GiB)"
        )));
    }
    Ok(part_size)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::destination::Retry;

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
    fn multipart_etag_follows_the_s3_convention() {
        let part = |data: &[u8]| PartRecord { number: 1, etag: String::new(), md5: hex(&Md5::digest(data)), size: 0 };
        let mut both = Md5::new();
        both.update(Md5::digest(b"a"));
        both.update(Md5::digest(b"b"));
        assert_eq!(multipart_etag(&[part(b"a"), part(b"b")]), format!("{}-2", hex(&both.finalize())));
    }
}

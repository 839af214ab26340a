//! Nextcloud's chunked upload, version 2 (Nextcloud developer manual,
//! "Client APIs › WebDAV › Chunked file upload", section "Chunked upload
//! v2"): `MKCOL` an upload folder below `remote.php/dav/uploads/USER/`,
//! `PUT` the chunks into it named by number (1 to 10000, assembled in that
//! order, 5 MiB to 5 GiB each but the last), every request carrying a
//! `Destination` header naming the target; then `MOVE` its `.file` to the
//! target to assemble them. The server drops an upload folder after 24
//! hours without activity.
//!
//! The upload folder and every chunk the server took are recorded as a
//! session (kind `nextcloud-chunks`), so a kill -9 or a reboot carries on
//! at the next chunk; the chunks already sent are read again locally and
//! must hash as they did, and the whole file's SHA-256, fed by the same
//! reads, must be the scanned one before the chunks are assembled. A
//! session older than a day, or an upload folder the server no longer
//! lists, starts over.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::header::CONTENT_LENGTH;
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::propfind;
use super::{Access, Looked, Placed, WebDavDestination, dav, finish, hashing, mtime, ok_or_classify};
use crate::destination::http::{READ_CHUNK, STREAM_CHUNK, file_chunks, metered, read_error, send_for};
use crate::destination::session::{store_error, to_json};
use crate::destination::{DestinationError, Moved, ProgressFn, UploadRequest};
use crate::model::{ContentHash, JobId, Timestamp};

/// The session kind, and the version of what it records.
const SESSION: (&str, u32) = ("nextcloud-chunks", 1);

/// The server drops an upload folder after a day without activity; a
/// session this old starts over rather than trust it.
const EXPIRES: Duration = Duration::from_hours(23);

/// What the session records besides the chunks.
#[derive(Debug, Serialize, Deserialize)]
struct UploadState {
    /// The upload folder (its URL, ending with `/`).
    folder: String,
    /// The target's URL.
    destination: String,
    /// Bytes per chunk but the last.
    chunk_size: u64,
}

/// A chunk the server took: its size and the SHA-256 of what was sent.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Chunk {
    size: u64,
    sha256: String,
}

/// Uploads the file to `target` in chunks through `uploads` (the user's
/// upload area), carrying on with a recorded session where one is usable.
pub(super) async fn upload(
    dav_destination: &WebDavDestination,
    access: &Access<'_>,
    uploads: &url::Url,
    request: &UploadRequest,
    target: &str,
    progress: &ProgressFn,
) -> Result<Placed, DestinationError> {
    let (state, mut chunks) = match resumable(dav_destination, access, request, target).await? {
        Some(resumed) => resumed,
        None => begin(dav_destination, access, uploads, request, target).await?,
    };
    let count = request.size.div_ceil(state.chunk_size).max(1);
    let file = Arc::new(std::fs::File::open(&request.source).map_err(|e| read_error(request, &e))?);
    let whole = Arc::new(Mutex::new(Sha256::new()));
    for number in 1..=count {
        if request.cancelled() {
            return Err(DestinationError::interrupted());
        }
        let offset = (number - 1) * state.chunk_size;
        let len = state.chunk_size.min(request.size - offset);
        let number = u32::try_from(number).map_err(|_| DestinationError::permanent("more than 10000 chunks"))?;
        if let Some(done) = chunks.iter().find(|(n, c)| *n == number && c.size == len) {
            let again = hash_range(&file, offset, len, &whole).await.map_err(|e| read_error(request, &e))?;
            if again.as_hex() != done.1.sha256 {
                abandon_folder(access, &state.folder).await;
                dav_destination.sessions.forget(request.job).map_err(store_error)?;
                return Err(DestinationError::source_changed(format!(
                    "{} changed since chunk {number} of it was sent",
                    request.source.display()
                )));
            }
            progress(Moved::Resumed(len));
            continue;
        }
        let part = Arc::new(Mutex::new(Sha256::new()));
        let pieces =
            file_chunks(&file, offset, len, if request.throttle.is_limited() { STREAM_CHUNK } else { READ_CHUNK });
        let body = metered(hashing(pieces, &[Arc::clone(&part), Arc::clone(&whole)]), request, progress);
        let url = format!("{}{number:05}", state.folder);
        let put = access
            .request(Method::PUT, &url)
            .header("Destination", target)
            .header("OC-Total-Length", request.size)
            .header(CONTENT_LENGTH, len)
            .body(body);
        let response = send_for(&request.cancel, put).await?;
        ok_or_classify(response, "PUT (chunk)").await?;
        let chunk = Chunk { size: len, sha256: finish(&part).as_hex().to_owned() };
        dav_destination.sessions.record(request.job, number, &to_json(&chunk)?).map_err(store_error)?;
        chunks.push((number, chunk));
    }
    if finish(&whole) != request.hash {
        abandon_folder(access, &state.folder).await;
        dav_destination.sessions.forget(request.job).map_err(store_error)?;
        return Err(DestinationError::source_changed(format!(
            "{} changed while it was being uploaded",
            request.source.display()
        )));
    }
    // The target may have been taken meanwhile; assembling must not replace it.
    if let Looked::Found(_) = dav_destination.stat(access, &request.cancel, target).await? {
        abandon_folder(access, &state.folder).await;
        dav_destination.sessions.forget(request.job).map_err(store_error)?;
        return Ok(Placed::Taken);
    }
    let assemble = access
        .request(dav("MOVE"), &format!("{}.file", state.folder))
        .header("Destination", target)
        .header("OC-Total-Length", request.size)
        .header("OC-Checksum", format!("SHA256:{}", request.hash))
        .header("X-OC-Mtime", mtime(request))
        .header("Overwrite", "F");
    let response = send_for(&request.cancel, assemble).await?;
    if response.status() == StatusCode::PRECONDITION_FAILED {
        abandon_folder(access, &state.folder).await;
        dav_destination.sessions.forget(request.job).map_err(store_error)?;
        return Ok(Placed::Taken);
    }
    ok_or_classify(response, "MOVE (assemble)").await?;
    dav_destination.sessions.forget(request.job).map_err(store_error)?;
    Ok(Placed::Stored)
}

/// The recorded session of this upload, with the chunks the server still
/// has, if there is one worth carrying on with.
async fn resumable(
    dav_destination: &WebDavDestination,
    access: &Access<'_>,
    request: &UploadRequest,
    target: &str,
) -> Result<Option<(UploadState, Vec<(u32, Chunk)>)>, DestinationError> {
    let Some(record) = dav_destination.sessions.load(request.job).map_err(store_error)? else { return Ok(None) };
    let decoded = record.decode::<UploadState, Chunk>(SESSION.0, SESSION.1);
    let fresh = Timestamp::now().0.saturating_sub(record.created_at.0) < EXPIRES.as_millis() as i64;
    let Some((state, recorded)) = decoded.filter(|(s, _)| fresh && s.destination == target) else {
        abandon(dav_destination, access, request).await;
        return Ok(None);
    };
    let listing = access
        .request(dav("PROPFIND"), &state.folder)
        .header("Depth", "1")
        .header("Destination", target)
        .body(propfind::REQUEST);
    let response = send_for(&request.cancel, listing).await?;
    if response.status() == StatusCode::NOT_FOUND {
        tracing::info!("the server dropped the upload folder; starting the upload again");
        dav_destination.sessions.forget(request.job).map_err(store_error)?;
        return Ok(None);
    }
    let response = ok_or_classify(response, "PROPFIND (upload folder)").await?;
    let body = crate::destination::http::text(&request.cancel, response).await?;
    let listed = propfind::parse(&body).map_err(DestinationError::transient)?;
    let numbers = record.pieces.iter().map(|(n, _)| *n);
    // A chunk counts only if the server lists it with the size recorded.
    let chunks: Vec<(u32, Chunk)> = numbers
        .zip(recorded)
        .filter(|(number, chunk)| {
            listed.iter().any(|entry| {
                entry.href.trim_end_matches('/').rsplit('/').next().and_then(|name| name.parse::<u32>().ok())
                    == Some(*number)
                    && entry.size == Some(chunk.size)
            })
        })
        .collect();
    tracing::info!(chunks = chunks.len(), "carrying on with a chunked upload");
    Ok(Some((state, chunks)))
}

/// Starts a new upload folder and records it before any chunk is sent.
async fn begin(
    dav_destination: &WebDavDestination,
    access: &Access<'_>,
    uploads: &url::Url,
    request: &UploadRequest,
    target: &str,
) -> Result<(UploadState, Vec<(u32, Chunk)>), DestinationError> {
    let folder = format!("{uploads}photosync-{}-{:016x}/", request.job, fastrand::u64(..));
    let state = UploadState { folder, destination: target.to_owned(), chunk_size: dav_destination.config.chunk_size };
    dav_destination.sessions.begin(request.job, SESSION.0, SESSION.1, &to_json(&state)?).map_err(store_error)?;
    let create = access.request(dav("MKCOL"), &state.folder).header("Destination", target);
    let response = send_for(&request.cancel, create).await?;
    ok_or_classify(response, "MKCOL (upload folder)").await?;
    Ok((state, Vec::new()))
}

/// Drops the recorded chunked upload of `request`'s job, if any (the file
/// turned out to be there already, or the session is stale).
pub(super) async fn abandon(dav_destination: &WebDavDestination, access: &Access<'_>, request: &UploadRequest) {
    abandon_job(dav_destination, access, request.job).await;
}

/// Deletes `job`'s upload folder on the server, if one is recorded, and
/// forgets it. Best effort: the server drops it within a day anyway.
pub(super) async fn abandon_job(dav_destination: &WebDavDestination, access: &Access<'_>, job: JobId) {
    let Ok(Some(record)) = dav_destination.sessions.load(job) else { return };
    if let Some((state, _)) = record.decode::<UploadState, Chunk>(SESSION.0, SESSION.1) {
        abandon_folder(access, &state.folder).await;
    }
    if let Err(e) = dav_destination.sessions.forget(job) {
        tracing::warn!(job = %job, "could not forget a chunked upload: {e}");
    }
}

async fn abandon_folder(access: &Access<'_>, folder: &str) {
    let never = tokio_util::sync::CancellationToken::new();
    if let Err(e) = send_for(&never, access.request(Method::DELETE, folder)).await {
        tracing::debug!("could not delete an upload folder (the server drops it within a day): {e}");
    }
}

/// The SHA-256 of `len` bytes at `offset`, feeding the same bytes to `whole`.
async fn hash_range(
    file: &Arc<std::fs::File>,
    offset: u64,
    len: u64,
    whole: &Arc<Mutex<Sha256>>,
) -> std::io::Result<ContentHash> {
    let (file, whole) = (Arc::clone(file), Arc::clone(whole));
    tokio::task::spawn_blocking(move || {
        use std::os::unix::fs::FileExt as _;
        let mut sha = Sha256::new();
        let mut buffer = vec![0u8; READ_CHUNK];
        let mut done = 0u64;
        while done < len {
            let n = usize::try_from((len - done).min(READ_CHUNK as u64)).map_err(std::io::Error::other)?;
            file.read_exact_at(&mut buffer[..n], offset + done)?;
            sha.update(&buffer[..n]);
            whole.lock().unwrap_or_else(std::sync::PoisonError::into_inner).update(&buffer[..n]);
            done += n as u64;
        }
        Ok(ContentHash::from_digest(&sha.finalize()))
    })
    .await
    .map_err(std::io::Error::other)?
}

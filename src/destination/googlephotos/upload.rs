//! Google's resumable upload protocol
//! (<https://developers.google.com/photos/library/guides/resumable-uploads>):
//! `start` names the file's size and type and answers with the session's
//! address and its granularity, both recorded before any byte moves;
//! chunks (multiples of the granularity) follow at `X-Goog-Upload-Offset`,
//! each recorded once Google took it; the last one finalizes the upload
//! and is answered with the upload token, recorded the moment it arrives.
//! After a crash, `query` says how many bytes Google holds
//! (`X-Goog-Upload-Size-Received`): the file is read up to there (to
//! rebuild its SHA-256; nothing is sent) and the rest follows. A session
//! Google no longer calls `active` starts again. A file no bigger than a
//! chunk goes up in one plain (`raw`) request instead.

use std::sync::Arc;

use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tokio_util::sync::CancellationToken;

use super::GooglePhotosDestination;
use crate::destination::session::{store_error, to_json};
use crate::destination::{DestinationError, JobId, Moved, ProgressFn, UploadRequest, http, source};
use crate::model::ContentHash;

const KIND: &str = "google-upload";
const VERSION: u32 = 1;

/// What resumes an upload.
#[derive(Serialize, Deserialize)]
struct State {
    /// The session's address (it authorizes the upload: kept out of messages).
    url: String,
    /// Chunks are multiples of this.
    granularity: u64,
    /// The upload token, once Google gave it.
    token: Option<String>,
    /// Whether a media item was asked for with the token (its answer may
    /// have been lost: Google may hold the item).
    #[serde(default)]
    create_sent: bool,
    /// The media item Google made, once it said so (a crash before the
    /// catalog's receipt costs no second request).
    #[serde(default)]
    item: Option<String>,
}

/// A chunk Google took: it holds every byte before `end`.
#[derive(Serialize, Deserialize)]
struct Piece {
    end: u64,
}

/// An upload token, and whether it was kept from an earlier attempt.
pub(super) struct Token {
    pub value: String,
    pub kept: bool,
    /// A media item was asked for with it before.
    pub create_sent: bool,
}

/// Records that a media item is about to be asked for with `token`.
pub(super) fn creating(destination: &GooglePhotosDestination, job: JobId, token: &str) -> Result<(), DestinationError> {
    change(destination, job, |state| {
        state.token = Some(token.to_owned());
        state.create_sent = true;
    })
}

/// Records that Google made nothing with `job`'s token after all.
pub(super) fn not_sent(destination: &GooglePhotosDestination, job: JobId) -> Result<(), DestinationError> {
    change(destination, job, |state| state.create_sent = false)
}

/// Records the media item Google made for `job`.
pub(super) fn made(destination: &GooglePhotosDestination, job: JobId, id: &str) -> Result<(), DestinationError> {
    change(destination, job, |state| state.item = Some(id.to_owned()))
}

/// The media item Google made for `job` before, if it said so.
pub(super) fn item(destination: &GooglePhotosDestination, job: JobId) -> Result<Option<String>, DestinationError> {
    let Some(session) = destination.sessions.load(job).map_err(store_error)? else { return Ok(None) };
    Ok(session.decode::<State, Piece>(KIND, VERSION).and_then(|(state, _)| state.item))
}

fn change(
    destination: &GooglePhotosDestination,
    job: JobId,
    edit: impl FnOnce(&mut State),
) -> Result<(), DestinationError> {
    let Some(session) = destination.sessions.load(job).map_err(store_error)? else { return Ok(()) };
    let Some((mut state, _)) = session.decode::<State, Piece>(KIND, VERSION) else { return Ok(()) };
    edit(&mut state);
    destination.sessions.begin(job, KIND, VERSION, &to_json(&state)?).map_err(store_error)
}

/// The file's first bytes, which say what it is.
pub(super) async fn head(request: &UploadRequest) -> Result<bytes::Bytes, DestinationError> {
    let file = source::open(request)?;
    source::read_at(request, &file, 0, request.size.min(64)).await
}

/// Uploads `request`'s bytes (or finds them uploaded before) and returns
/// the upload token.
pub(super) async fn send(
    destination: &GooglePhotosDestination,
    request: &UploadRequest,
    mime: &str,
    name: &str,
    progress: &ProgressFn,
) -> Result<Token, DestinationError> {
    let sessions = &destination.sessions;
    if let Some(session) = sessions.load(request.job).map_err(store_error)? {
        match session.decode::<State, Piece>(KIND, VERSION) {
            Some((State { token: Some(value), create_sent, .. }, _)) => {
                return Ok(Token { value, kept: true, create_sent });
            }
            Some((state, _)) => {
                // Every byte there but not finalized: the finalize goes alone.
                if let Some(received) = received(destination, &state, &request.cancel).await?
                    && received <= request.size
                {
                    let file = source::open(request)?;
                    let sha = source::read_into(request, &file, 0, received, Sha256::new(), |s, b| s.update(b)).await?;
                    progress(Moved::Resumed(received));
                    let value = carry_on(destination, request, &file, &state, received, sha, progress).await?;
                    return Ok(Token { value, kept: false, create_sent: false });
                }
                tracing::info!(path = %request.source.display(), "Google no longer takes the upload session; starting again");
                sessions.forget(request.job).map_err(store_error)?;
            }
            None => sessions.forget(request.job).map_err(store_error)?,
        }
    }
    let file = source::open(request)?;
    if request.size <= destination.config.chunk_size {
        return raw(destination, request, &file, mime, name, progress).await;
    }
    let url = destination.config.uploads();
    let response = destination
        .send(&request.cancel, || {
            let mut start = destination
                .client
                .get()?
                .post(url.clone())
                .header(reqwest::header::CONTENT_LENGTH, 0)
                .header("X-Goog-Upload-Command", "start")
                .header("X-Goog-Upload-Protocol", "resumable")
                .header("X-Goog-Upload-Content-Type", mime)
                .header("X-Goog-Upload-Raw-Size", request.size);
            // A header carries ASCII; the media item gets the name either way.
            if name.is_ascii() {
                start = start.header("X-Goog-Upload-File-Name", name);
            }
            Ok(start)
        })
        .await?;
    if !response.status().is_success() {
        return Err(destination.refusal(response, "begin an upload").await);
    }
    let headers = response.headers();
    let address = http::header(headers, "x-goog-upload-url")
        .ok_or_else(|| DestinationError::transient("Google began an upload without naming its address"))?;
    let granularity = http::header(headers, "x-goog-upload-chunk-granularity")
        .and_then(|g| g.trim().parse::<u64>().ok())
        .filter(|&g| g > 0)
        .unwrap_or(256 * 1024);
    let state = State { url: address, granularity, token: None, create_sent: false, item: None };
    sessions.begin(request.job, KIND, VERSION, &to_json(&state)?).map_err(store_error)?;
    let value = carry_on(destination, request, &file, &state, 0, Sha256::new(), progress).await?;
    Ok(Token { value, kept: false, create_sent: false })
}

/// Sends a file no bigger than a chunk in one request (`raw`, the
/// guide's plain upload): one request instead of a session's two, and a
/// cut one has nothing to resume anyway. The token is recorded the moment
/// it arrives.
async fn raw(
    destination: &GooglePhotosDestination,
    request: &UploadRequest,
    file: &Arc<std::fs::File>,
    mime: &str,
    name: &str,
    progress: &ProgressFn,
) -> Result<Token, DestinationError> {
    let bytes = source::read_at(request, file, 0, request.size).await?;
    if ContentHash::from_digest(&Sha256::digest(&bytes)) != request.hash {
        return Err(source::changed(request));
    }
    let url = destination.config.uploads();
    let response = destination
        .send(&request.cancel, || {
            let mut post = destination
                .client
                .get()?
                .post(url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .header(reqwest::header::CONTENT_LENGTH, request.size)
                .header("X-Goog-Upload-Content-Type", mime)
                .header("X-Goog-Upload-Protocol", "raw");
            if name.is_ascii() {
                post = post.header("X-Goog-Upload-File-Name", name);
            }
            Ok(post.body(http::bytes_body(&bytes, request, progress)))
        })
        .await
        .map_err(|e| if request.cancelled() { DestinationError::interrupted() } else { e })?;
    if response.status() != StatusCode::OK {
        return Err(destination.refusal(response, "take a file").await);
    }
    let token = http::text(&request.cancel, response).await?.trim().to_owned();
    if token.is_empty() {
        return Err(DestinationError::transient("Google took a file without giving its token"));
    }
    let done = State { url: String::new(), granularity: 0, token: Some(token.clone()), create_sent: false, item: None };
    destination.sessions.begin(request.job, KIND, VERSION, &to_json(&done)?).map_err(store_error)?;
    Ok(Token { value: token, kept: false, create_sent: false })
}

/// How many bytes Google holds, or `None` when the session is not active.
async fn received(
    destination: &GooglePhotosDestination,
    state: &State,
    cancel: &CancellationToken,
) -> Result<Option<u64>, DestinationError> {
    let response = destination
        .send(cancel, || {
            Ok(destination
                .client
                .get()?
                .post(&state.url)
                .header(reqwest::header::CONTENT_LENGTH, 0)
                .header("X-Goog-Upload-Command", "query"))
        })
        .await?;
    let status = response.status();
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::REQUEST_TIMEOUT {
        // Google is busy or rationing: the session may be fine; ask later.
        return Err(destination.refusal(response, "say how much of an upload it holds").await);
    }
    if !status.is_success() {
        return Ok(None);
    }
    let headers = response.headers();
    if http::header(headers, "x-goog-upload-status").as_deref() != Some("active") {
        return Ok(None);
    }
    Ok(http::header(headers, "x-goog-upload-size-received").and_then(|n| n.trim().parse().ok()))
}

/// Sends the bytes from `offset` on; the last chunk finalizes the upload.
async fn carry_on(
    destination: &GooglePhotosDestination,
    request: &UploadRequest,
    file: &Arc<std::fs::File>,
    state: &State,
    mut offset: u64,
    mut sha: Sha256,
    progress: &ProgressFn,
) -> Result<String, DestinationError> {
    let chunk = (destination.config.chunk_size / state.granularity).max(1) * state.granularity;
    let mut number = u32::try_from(offset / chunk).unwrap_or(u32::MAX).saturating_add(1);
    loop {
        if request.cancelled() {
            return Err(DestinationError::interrupted());
        }
        let len = chunk.min(request.size - offset);
        let last = offset + len == request.size;
        let bytes = source::read_at(request, file, offset, len).await?;
        sha.update(&bytes);
        if last && ContentHash::from_digest(&sha.clone().finalize()) != request.hash {
            // Finalizing would hand Google a file that is not the scanned one.
            cancel_session(destination, state).await;
            destination.sessions.forget(request.job).map_err(store_error)?;
            return Err(source::changed(request));
        }
        let command = if last { "upload, finalize" } else { "upload" };
        let response = destination
            .send(&request.cancel, || {
                Ok(destination
                    .client
                    .get()?
                    .post(&state.url)
                    .header(reqwest::header::CONTENT_LENGTH, len)
                    .header("X-Goog-Upload-Command", command)
                    .header("X-Goog-Upload-Offset", offset)
                    .body(http::bytes_body(&bytes, request, progress)))
            })
            .await
            .map_err(|e| if request.cancelled() { DestinationError::interrupted() } else { e })?;
        if response.status() != StatusCode::OK {
            return Err(destination.refusal(response, "take a chunk").await);
        }
        if last {
            let token = http::text(&request.cancel, response).await?.trim().to_owned();
            if token.is_empty() {
                return Err(DestinationError::transient("Google finished an upload without its token"));
            }
            // The token is all that is left of the upload: recorded at once.
            let done = State {
                url: state.url.clone(),
                granularity: state.granularity,
                token: Some(token.clone()),
                create_sent: false,
                item: None,
            };
            destination.sessions.begin(request.job, KIND, VERSION, &to_json(&done)?).map_err(store_error)?;
            return Ok(token);
        }
        offset += len;
        destination.sessions.record(request.job, number, &to_json(&Piece { end: offset })?).map_err(store_error)?;
        number = number.saturating_add(1);
    }
}

/// Ends a session at Google (best effort).
async fn cancel_session(destination: &GooglePhotosDestination, state: &State) {
    let cancel = CancellationToken::new();
    let sent = destination
        .send(&cancel, || {
            Ok(destination
                .client
                .get()?
                .post(&state.url)
                .header(reqwest::header::CONTENT_LENGTH, 0)
                .header("X-Goog-Upload-Command", "cancel"))
        })
        .await;
    if let Err(e) = sent {
        tracing::debug!("could not cancel an upload session: {e}");
    }
}

/// Cancels the session of `job`, if it has one, and forgets it.
pub(super) async fn cancel(destination: &GooglePhotosDestination, job: JobId) -> Result<(), DestinationError> {
    let Some(session) = destination.sessions.load(job).map_err(store_error)? else { return Ok(()) };
    if let Some((state, _)) = session.decode::<State, Piece>(KIND, VERSION)
        && state.token.is_none()
    {
        cancel_session(destination, &state).await;
    }
    destination.sessions.forget(job).map_err(store_error)
}

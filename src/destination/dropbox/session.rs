//! Files larger than one request, through a Dropbox upload session
//! (`files/upload_session/start`, `append_v2`, `finish`; `files.stone` in
//! Dropbox's API spec). The session id is recorded before any byte moves
//! and every chunk's end once Dropbox confirmed it, so an upload cut short
//! (kill -9, a reboot, a pause) carries on where Dropbox is:
//!
//! 1. the file is read again up to the recorded end, to rebuild its
//!    hashes (nothing is sent);
//! 2. an empty append at that offset asks Dropbox where it is: accepted
//!    means it is there; `incorrect_offset` names its offset (a chunk it
//!    stored whose answer was lost), and those bytes are only read;
//!    `not_found` means the session expired (a week) or was finished,
//!    and the upload starts again (after checking the file is not in
//!    place already);
//! 3. the rest is sent, and the session finished at the chosen name.
//!
//! Each chunk carries its content hash; before the finish the whole
//! file's SHA-256 is compared with the scanned one, so a file that changed
//! while it was sent is never committed.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::content_hash::BLOCK;
use super::{DropboxDestination, Hashers, classify_write};
use crate::destination::session::{recorded, store_error, to_json};
use crate::destination::source;
use crate::destination::{DestinationError, Moved, ProgressFn, UploadRequest, Uploaded, http};
use crate::model::Timestamp;

const KIND: &str = "dropbox-session";
const VERSION: u32 = 1;

/// Dropbox forgets a session after 7 days; one older than this starts again.
const LIFETIME: Duration = Duration::from_hours(6 * 24 + 20);

/// What resumes a session.
#[derive(Debug, Serialize, Deserialize)]
struct State {
    session_id: String,
    /// The path it is to be finished at.
    path: String,
}

/// A confirmed chunk: Dropbox holds every byte before `end`.
#[derive(Debug, Serialize, Deserialize)]
struct Piece {
    end: u64,
}

/// Uploads `request` through a new session, finished at the first free
/// name of `candidates` (the first is known to be free).
pub(super) async fn upload(
    destination: &DropboxDestination,
    request: &UploadRequest,
    candidates: &[String],
    progress: &ProgressFn,
) -> Result<Uploaded, DestinationError> {
    let file = source::open(request)?;
    let arg = json!({"close": false, "session_type": "sequential"});
    let started = match destination
        .content(request, "2/files/upload_session/start", &arg, "begin an upload", reqwest::Body::default)
        .await?
    {
        Ok(started) => started,
        Err(refusal) => return Err(refusal.into_error("begin an upload", false)),
    };
    let session_id = started
        .get("session_id")
        .and_then(Value::as_str)
        .ok_or_else(|| DestinationError::transient("Dropbox began an upload session without naming it"))?
        .to_owned();
    let state = State { session_id, path: candidates[0].clone() };
    destination.sessions.begin(request.job, KIND, VERSION, &to_json(&state)?).map_err(store_error)?;
    carry_on(destination, request, &file, &state, candidates, 0, Hashers::default(), progress).await
}

/// Carries on with the session recorded for `request`, if there is one.
/// `None`: there is none (any more); the upload starts afresh.
pub(super) async fn resume(
    destination: &DropboxDestination,
    request: &UploadRequest,
    progress: &ProgressFn,
) -> Result<Option<Uploaded>, DestinationError> {
    let sessions = &destination.sessions;
    let Some((state, pieces, created_at)) = recorded::<State, Piece>(&**sessions, request.job, KIND, VERSION)? else {
        return Ok(None);
    };
    let forget = || sessions.forget(request.job).map_err(store_error);
    if created_at.until(Timestamp::now()) > LIFETIME {
        tracing::info!(path = %request.source.display(), "the Dropbox upload session is too old to resume; starting again");
        forget()?;
        return Ok(None);
    }
    let file = match source::open(request) {
        Ok(file) => file,
        Err(e) => {
            forget()?;
            return Err(e);
        }
    };
    let confirmed = pieces.iter().map(|p| p.end).max().unwrap_or(0).min(request.size);
    let mut hashers = source::read_into(request, &file, 0, confirmed, Hashers::default(), Hashers::update).await?;
    progress(Moved::Resumed(confirmed));
    let mut candidates = destination.candidates(request);
    let Some(from) = candidates.iter().position(|c| *c == state.path) else {
        // The folder or the layout changed since: the session's name is not this photo's any more.
        forget()?;
        return Ok(None);
    };
    candidates.drain(..from);
    // Where is Dropbox? An empty append at the recorded offset says.
    let arg = json!({"cursor": {"session_id": state.session_id, "offset": confirmed}, "close": false});
    let probe = destination
        .content(request, "2/files/upload_session/append_v2", &arg, "resume an upload", reqwest::Body::default)
        .await?;
    let offset = match probe {
        Ok(_) => confirmed,
        // Closed by a finish that did not go through: every byte is there.
        Err(refusal) if refusal.tag() == "closed" && confirmed == request.size => confirmed,
        Err(refusal) => match refusal.correct_offset() {
            Some(there) if there == confirmed => confirmed,
            Some(there) if there > confirmed && there <= request.size => {
                hashers = source::read_into(request, &file, confirmed, there, hashers, Hashers::update).await?;
                progress(Moved::Resumed(there - confirmed));
                sessions
                    .record(request.job, pieces.len() as u32 + 1, &to_json(&Piece { end: there })?)
                    .map_err(store_error)?;
                there
            }
            Some(_) => {
                forget()?;
                return Ok(None);
            }
            None => {
                // Gone: expired, or finished with its answer lost.
                if confirmed == request.size && hashers.sha256() == request.hash {
                    let ours = hashers.content.hex();
                    if let Some(there) = destination.metadata(&request.cancel, &state.path).await?
                        && there.content_hash.as_deref() == Some(ours.as_str())
                        && there.size == Some(request.size)
                    {
                        forget()?;
                        let metadata = json!({"content_hash": ours, "size": request.size});
                        return DropboxDestination::receipt(&state.path, request, &metadata, &ours)
                            .map(|r| Some(Uploaded::Stored(r)));
                    }
                }
                tracing::info!(path = %request.source.display(), "Dropbox no longer knows the upload session ({}); starting again", refusal.summary);
                forget()?;
                return Ok(None);
            }
        },
    };
    carry_on(destination, request, &file, &state, &candidates, offset, hashers, progress).await.map(Some)
}

/// Sends the bytes from `offset` on, then finishes the session.
#[allow(clippy::too_many_arguments)] // the session's whole state, passed on once
async fn carry_on(
    destination: &DropboxDestination,
    request: &UploadRequest,
    file: &Arc<std::fs::File>,
    state: &State,
    candidates: &[String],
    mut offset: u64,
    mut hashers: Hashers,
    progress: &ProgressFn,
) -> Result<Uploaded, DestinationError> {
    let chunk = destination.config.chunk_size;
    let mut number = u32::try_from(offset / chunk).unwrap_or(u32::MAX).saturating_add(2);
    while offset < request.size {
        if request.cancelled() {
            return Err(DestinationError::interrupted());
        }
        let len = chunk.min(request.size - offset);
        let bytes = source::read_at(request, file, offset, len).await?;
        let first_block = offset.is_multiple_of(BLOCK).then(|| usize::try_from(offset / BLOCK).unwrap_or(usize::MAX));
        hashers.update(&bytes);
        let end = offset + len;
        let mut arg = json!({"cursor": {"session_id": state.session_id, "offset": offset}, "close": false});
        if let Some(first) = first_block.filter(|_| end.is_multiple_of(BLOCK) || end == request.size) {
            arg["content_hash"] = json!(hashers.content.tail_hex(first));
        }
        let body = || http::bytes_body(&bytes, request, progress);
        match destination.content(request, "2/files/upload_session/append_v2", &arg, "take a chunk", body).await? {
            Ok(_) => {}
            // It has these bytes already (an earlier answer was lost).
            Err(refusal) if refusal.correct_offset() == Some(end) => {}
            Err(refusal) if refusal.correct_offset().is_some() || refusal.tag() == "not_found" => {
                // The next attempt asks Dropbox where it is, or starts again.
                return Err(refusal.into_error("take a chunk at this offset", false));
            }
            Err(refusal) => return Err(classify_write(refusal, "take a chunk")),
        }
        offset = end;
        destination.sessions.record(request.job, number, &to_json(&Piece { end })?).map_err(store_error)?;
        number = number.saturating_add(1);
    }
    if hashers.sha256() != request.hash {
        destination.sessions.forget(request.job).map_err(store_error)?;
        return Err(DestinationError::source_changed(format!(
            "{} changed while it was uploaded; it is read again",
            request.source.display()
        )));
    }
    finish(destination, request, state, candidates, &hashers.content.hex()).await
}

/// Finishes the session at the first name of `candidates` that is free
/// (or already holds the same content).
async fn finish(
    destination: &DropboxDestination,
    request: &UploadRequest,
    state: &State,
    candidates: &[String],
    ours: &str,
) -> Result<Uploaded, DestinationError> {
    for (index, path) in candidates.iter().enumerate() {
        if index > 0 {
            match destination.metadata(&request.cancel, path).await? {
                None => {}
                Some(there) if there.content_hash.as_deref() == Some(ours) && there.size == Some(request.size) => {
                    destination.sessions.forget(request.job).map_err(store_error)?;
                    let metadata = json!({"content_hash": ours, "size": request.size});
                    return DropboxDestination::receipt(path, request, &metadata, ours).map(Uploaded::AlreadyPresent);
                }
                Some(_) => continue,
            }
        }
        let arg = json!({
            "cursor": {"session_id": state.session_id, "offset": request.size},
            "commit": DropboxDestination::commit_info(path, request),
        });
        let answer = {
            let _commit =
                http::until_cancelled(&request.cancel, async { Ok(destination.commits.lock().await) }).await?;
            destination
                .content(request, "2/files/upload_session/finish", &arg, "finish an upload", reqwest::Body::default)
                .await?
        };
        match answer {
            Ok(metadata) => {
                let receipt = DropboxDestination::receipt(path, request, &metadata, ours);
                destination.sessions.forget(request.job).map_err(store_error)?;
                return receipt.map(Uploaded::Stored);
            }
            Err(refusal) if refusal.is("path/conflict") => {}
            Err(refusal) if refusal.is("lookup_failed") => {
                // Finished already (its answer lost) or expired: the next
                // attempt looks the file up, or starts again.
                return Err(refusal.into_error("finish an upload", false));
            }
            Err(refusal) => return Err(classify_write(refusal, "finish an upload")),
        }
    }
    destination.sessions.forget(request.job).map_err(store_error)?;
    Err(DestinationError::permanent(format!(
        "every name tried for {} in Dropbox holds other content",
        request.source.display()
    )))
}

//! Upload sessions (<https://learn.microsoft.com/graph/api/driveitem-createuploadsession>):
//! the session's upload URL is recorded before any byte moves and every
//! fragment's end once Graph confirmed it. After a crash, a pause or a
//! lost answer, `GET` on the upload URL says which bytes Graph still
//! expects (`nextExpectedRanges`); the file is read up to there to rebuild
//! its hashes (nothing is sent) and the rest follows. A session Graph no
//! longer knows (404: expired, or completed with its answer lost) is
//! looked for at its path first, then started again. A job that ends
//! without its upload (cancelled) deletes its session, so the name is not
//! blocked by it.

use std::sync::Arc;

use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{Hashers, OneDriveDestination, Placed, api};
use crate::destination::session::{recorded, store_error, to_json};
use crate::destination::source;
use crate::destination::{DestinationError, JobId, Moved, ProgressFn, UploadRequest, Uploaded, http};

const KIND: &str = "onedrive-session";
/// 2: the drive root (the app folder or not) is recorded.
const VERSION: u32 = 2;

/// What resumes a session. The upload URL carries its own authorization:
/// it stays in the catalog and out of messages.
#[derive(Serialize, Deserialize)]
struct State {
    upload_url: String,
    path: String,
    /// Whether the path is below the app's folder.
    app_folder: bool,
}

/// A confirmed fragment: Graph holds every byte before `end`.
#[derive(Serialize, Deserialize)]
struct Piece {
    end: u64,
}

/// Reads the whole file, checking it is the scanned version.
pub(super) async fn read_all(request: &UploadRequest) -> Result<Hashers, DestinationError> {
    let file = source::open(request)?;
    let hashers = source::read_into(request, &file, 0, request.size, Hashers::default(), Hashers::update).await?;
    if hashers.sha256() != request.hash {
        return Err(source::changed(request));
    }
    Ok(hashers)
}

/// Uploads `request` to the free name `path` through a new session.
pub(super) async fn upload(
    destination: &OneDriveDestination,
    request: &UploadRequest,
    path: &str,
    progress: &ProgressFn,
) -> Result<Placed, DestinationError> {
    let file = source::open(request)?;
    let url = destination.item_url(path, ":/createUploadSession")?;
    let body = json!({
        "item": {
            "@microsoft.graph.conflictBehavior": "fail",
            "fileSystemInfo": {"lastModifiedDateTime": source::utc_seconds(request.modified)},
        }
    })
    .to_string();
    let response = api::send(&destination.access, &request.cancel, || {
        Ok(destination
            .client
            .get()?
            .post(url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone()))
    })
    .await?;
    if response.status() == StatusCode::CONFLICT {
        // A file (or an upload session someone left open) holds the name.
        return Ok(Placed::Taken);
    }
    let (_, created) = api::json(&request.cancel, response, "begin an upload").await?;
    let upload_url = created
        .get("uploadUrl")
        .and_then(Value::as_str)
        .ok_or_else(|| DestinationError::transient("OneDrive began an upload session without its address"))?
        .to_owned();
    let state = State { upload_url, path: path.to_owned(), app_folder: destination.config.app_folder };
    if let Err(e) = destination.sessions.begin(request.job, KIND, VERSION, &to_json(&state)?) {
        // Unrecorded, it could never be resumed: it would only block the name.
        delete(destination, &state).await;
        return Err(store_error(e));
    }
    carry_on(destination, request, &file, &state, 0, Hashers::default(), progress).await
}

/// Carries on with the session recorded for `request`, if there is one.
/// `None`: there is none (any more); the upload starts afresh.
pub(super) async fn resume(
    destination: &OneDriveDestination,
    request: &UploadRequest,
    progress: &ProgressFn,
) -> Result<Option<Uploaded>, DestinationError> {
    let sessions = &destination.sessions;
    let Some((state, _, _)) = recorded::<State, Piece>(&**sessions, request.job, KIND, VERSION)? else {
        return Ok(None);
    };
    let forget = || sessions.forget(request.job).map_err(store_error);
    let here =
        state.app_folder == destination.config.app_folder && destination.candidates(request).contains(&state.path);
    if !here {
        // The folder, the layout or the root changed since: not this photo's name any more.
        delete(destination, &state).await;
        forget()?;
        return Ok(None);
    }
    let file = match source::open(request) {
        Ok(file) => file,
        Err(e) => {
            delete(destination, &state).await;
            forget()?;
            return Err(e);
        }
    };
    match expected(destination, &state, &request.cancel).await? {
        Expected::At(next) if next < request.size => {
            let hashers = source::read_into(request, &file, 0, next, Hashers::default(), Hashers::update).await?;
            progress(Moved::Resumed(next));
            match carry_on(destination, request, &file, &state, next, hashers, progress).await? {
                Placed::Done(uploaded) => Ok(Some(uploaded)),
                Placed::Taken => Ok(None),
            }
        }
        Expected::At(_) | Expected::Nothing => {
            // Every byte is there but nothing was committed (a refusal of
            // the last fragment, a full drive): the file may be in place
            // from before; if not, the session goes and the upload starts again.
            let hashers = read_all(request).await?;
            if let Some(there) = destination.item(&request.cancel, &state.path).await?
                && destination.holds(&request.cancel, &state.path, &there, request, &hashers.quick_xor).await?
            {
                delete(destination, &state).await;
                forget()?;
                let receipt = OneDriveDestination::receipt(&state.path, request, &hashers.quick_xor);
                return Ok(Some(Uploaded::Stored(receipt)));
            }
            delete(destination, &state).await;
            forget()?;
            Ok(None)
        }
        Expected::Gone => {
            // Gone: expired, or completed with its answer lost.
            let hashers = read_all(request).await;
            if let Ok(hashers) = &hashers
                && let Some(there) = destination.item(&request.cancel, &state.path).await?
                && destination.holds(&request.cancel, &state.path, &there, request, &hashers.quick_xor).await?
            {
                forget()?;
                let receipt = OneDriveDestination::receipt(&state.path, request, &hashers.quick_xor);
                return Ok(Some(Uploaded::Stored(receipt)));
            }
            tracing::info!(path = %request.source.display(), "OneDrive no longer knows the upload session; starting again");
            forget()?;
            hashers.map(|_| None)
        }
    }
}

/// What Graph says of a session.
enum Expected {
    /// It expects the bytes from here on.
    At(u64),
    /// It has every byte (and has not committed them).
    Nothing,
    /// It does not know the session (any more): expired, completed, or
    /// its address no longer valid.
    Gone,
}

/// Where Graph is with a session.
async fn expected(
    destination: &OneDriveDestination,
    state: &State,
    cancel: &CancellationToken,
) -> Result<Expected, DestinationError> {
    // The upload URL authorizes itself: no token goes with it.
    let response = http::send_for(cancel, destination.client.get()?.get(&state.upload_url)).await?;
    if session_dead(response.status()) {
        return Ok(Expected::Gone);
    }
    let (_, status) = api::json(cancel, response, "say where an upload is").await?;
    Ok(next_expected(&status).map_or(Expected::Nothing, Expected::At))
}

/// An answer from a session's address that means the session is of no
/// more use: unknown (404, 410), or its address's own authorization
/// expired (401, 403: work and school drives end it after about a day).
fn session_dead(status: StatusCode) -> bool {
    matches!(status, StatusCode::NOT_FOUND | StatusCode::GONE | StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)
}

/// The start of the first range in `nextExpectedRanges` (`"12345-"`, or
/// `"12345-67890"`).
fn next_expected(value: &Value) -> Option<u64> {
    let first = value.get("nextExpectedRanges")?.as_array()?.first()?.as_str()?;
    first.split('-').next()?.trim().parse().ok()
}

/// Sends the bytes from `offset` on; the last fragment commits the file.
async fn carry_on(
    destination: &OneDriveDestination,
    request: &UploadRequest,
    file: &Arc<std::fs::File>,
    state: &State,
    mut offset: u64,
    mut hashers: Hashers,
    progress: &ProgressFn,
) -> Result<Placed, DestinationError> {
    let fragment = destination.config.fragment_size;
    let mut number = u32::try_from(offset / fragment).unwrap_or(u32::MAX).saturating_add(1);
    loop {
        if request.cancelled() {
            return Err(DestinationError::interrupted());
        }
        let len = fragment.min(request.size - offset);
        let end = offset + len;
        let bytes = source::read_at(request, file, offset, len).await?;
        hashers.update(&bytes);
        if end == request.size && hashers.sha256() != request.hash {
            // The last fragment would commit a file that is not the scanned one.
            delete(destination, state).await;
            destination.sessions.forget(request.job).map_err(store_error)?;
            return Err(source::changed(request));
        }
        let range = format!("bytes {offset}-{}/{}", end - 1, request.size);
        let put = destination
            .client
            .get()?
            .put(&state.upload_url)
            .header(reqwest::header::CONTENT_RANGE, range)
            .header(reqwest::header::CONTENT_LENGTH, len)
            .body(http::bytes_body(&bytes, request, progress));
        let response = http::send_for(&request.cancel, put)
            .await
            .map_err(|e| if request.cancelled() { DestinationError::interrupted() } else { e })?;
        let status = response.status();
        match status {
            StatusCode::ACCEPTED => {
                let (_, answer) = api::json(&request.cancel, response, "take a fragment").await?;
                if next_expected(&answer) != Some(end) {
                    // Graph expects something else: the next attempt asks where it is.
                    return Err(DestinationError::transient(
                        "OneDrive expects other bytes than the ones that follow; asking it where it is",
                    ));
                }
            }
            StatusCode::OK | StatusCode::CREATED => {
                let (_, value) = api::json(&request.cancel, response, "store a file").await?;
                destination.sessions.forget(request.job).map_err(store_error)?;
                let item = super::Item::from(&value);
                if !destination.holds(&request.cancel, &state.path, &item, request, &hashers.quick_xor).await? {
                    return Err(DestinationError::transient(format!(
                        "OneDrive stored {} with another size or hash than was sent ({:?} bytes): sending it again",
                        request.source.display(),
                        item.size
                    )));
                }
                let receipt = OneDriveDestination::receipt(&state.path, request, &hashers.quick_xor);
                return Ok(Placed::Done(Uploaded::Stored(receipt)));
            }
            StatusCode::CONFLICT if end == request.size => {
                // Something appeared at the name while the file was sent.
                delete(destination, state).await;
                destination.sessions.forget(request.job).map_err(store_error)?;
                return Ok(Placed::Taken);
            }
            status if session_dead(status) => {
                delete(destination, state).await;
                destination.sessions.forget(request.job).map_err(store_error)?;
                return Err(DestinationError::transient(format!(
                    "OneDrive no longer takes this upload session ({status}); starting again"
                )));
            }
            StatusCode::RANGE_NOT_SATISFIABLE => {
                return Err(DestinationError::transient(
                    "OneDrive had other bytes than expected; asking it where it is",
                ));
            }
            _ => {
                let headers = response.headers().clone();
                let body = http::text(&request.cancel, response).await.unwrap_or_default();
                return Err(api::refusal(status, &headers, &body, "take a fragment"));
            }
        }
        offset = end;
        destination.sessions.record(request.job, number, &to_json(&Piece { end })?).map_err(store_error)?;
        number = number.saturating_add(1);
    }
}

/// Deletes the session at Graph (best effort: it expires anyway), even
/// while the upload is being stopped: a session left open blocks its name.
async fn delete(destination: &OneDriveDestination, state: &State) {
    let Ok(client) = destination.client.get() else { return };
    if let Err(e) = http::send(client.delete(&state.upload_url)).await {
        tracing::debug!("could not delete an upload session: {e}");
    }
}

/// Deletes the session of `job`, if it has one, and forgets it.
pub(super) async fn cancel(destination: &OneDriveDestination, job: JobId) -> Result<(), DestinationError> {
    let Some(session) = destination.sessions.load(job).map_err(store_error)? else { return Ok(()) };
    if let Some((state, _)) = session.decode::<State, Piece>(KIND, VERSION) {
        delete(destination, &state).await;
    }
    destination.sessions.forget(job).map_err(store_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_expected_byte() {
        assert_eq!(next_expected(&json!({"nextExpectedRanges": ["12345-"]})), Some(12345));
        assert_eq!(next_expected(&json!({"nextExpectedRanges": ["26-77", "100-"]})), Some(26));
        assert_eq!(next_expected(&json!({"nextExpectedRanges": []})), None);
        assert_eq!(next_expected(&json!({})), None);
    }
}

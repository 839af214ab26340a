//! Live Photos: a still names its motion part (`livePhotoVideoId`), so
//! Immich shows them as one. The still's job sends the video first when the
//! server does not have it (its own job then finds it there), and links a
//! still the server already had without it (`updateAsset`).

use reqwest::header::CONTENT_TYPE;
use serde_json::json;

use super::{ImmichDestination, encode};
use crate::destination::hashes::{HashKind, hash_file};
use crate::destination::{DestinationError, Member, ProgressFn, Retry, UploadRequest};

impl ImmichDestination {
    /// Links the still `id` the server already had to its Live Photo
    /// video (sent first if it is not there), unless it is linked already
    /// (`updateAsset`, `PUT /assets/{id}` with `livePhotoVideoId`; the key
    /// needs `asset.update`). Trouble leaves the still unlinked, saying so:
    /// the still is backed up either way.
    pub(super) async fn link(
        &self,
        request: &UploadRequest,
        id: &str,
        video: &Member,
        major: u64,
        progress: &ProgressFn,
    ) -> Result<(), DestinationError> {
        let linked = self.describe(&request.cancel, id).await?.and_then(|d| d.live_video);
        if linked.is_some() {
            return Ok(());
        }
        let Some(video_id) = self.live_video_id(request, video, major, progress).await? else { return Ok(()) };
        let body = json!({"livePhotoVideoId": video_id});
        let update = self
            .client
            .get()?
            .put(self.url(&format!("assets/{}", encode(id))))
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_string());
        match self.call(&request.cancel, update).await {
            Ok(_) => {
                tracing::info!(path = %request.source.display(), "linked the Live Photo's still to its video in Immich");
                Ok(())
            }
            Err(e) if e.retry == Retry::Interrupted => Err(e),
            Err(e) => {
                tracing::warn!(path = %request.source.display(), "could not link the Live Photo's still to its video: {e}");
                Ok(())
            }
        }
    }

    /// The asset id of a Live Photo's video at the server, sent first if
    /// it is not there (its own job then finds it present), so the still
    /// can name it. `None` when the video is not the version scanned (its
    /// own job reads it again, and it goes unlinked).
    pub(super) async fn live_video_id(
        &self,
        request: &UploadRequest,
        video: &Member,
        major: u64,
        progress: &ProgressFn,
    ) -> Result<Option<String>, DestinationError> {
        let path = video.path.clone();
        let hashed = tokio::task::spawn_blocking(move || hash_file(&path, HashKind::Sha1))
            .await
            .map_err(|e| DestinationError::transient(format!("hashing stopped: {e}")))?;
        let Ok((sha256, sha1)) = hashed else { return Ok(None) };
        // A video that is not the scanned version, or (oddly) the still's own bytes.
        if sha256 != video.hash || video.hash == request.hash {
            return Ok(None);
        }
        let _turn = self.turn(&sha1).await;
        if let Some(id) = self.duplicate_of(&request.cancel, &sha1).await? {
            return Ok(Some(id));
        }
        let modified = std::fs::metadata(&video.path).and_then(|m| m.modified()).unwrap_or(request.modified);
        let upload = UploadRequest {
            source: video.path.clone(),
            size: video.size,
            hash: video.hash.clone(),
            modified,
            live_video: None,
            ..request.clone()
        };
        // The video's trouble is its own job's: the still goes up unlinked.
        // Its own sidecar goes with it (else that sidecar's job would find
        // the video there without it).
        let sidecar = Self::sidecar_for(&upload).unwrap_or(None);
        let sent = match self.send_with_sidecar(&upload, &sha1, major, progress, None, sidecar.as_ref()).await {
            Ok((id, _)) => self.holds(&upload, &id, &sha1).await.map(|()| id),
            Err(e) => Err(e),
        };
        match sent {
            Ok(id) => Ok(Some(id)),
            Err(e) if e.retry == Retry::Interrupted => Err(e),
            Err(e) => {
                tracing::warn!(video = %video.path.display(), "the Live Photo's video did not go up with its still: {e}");
                Ok(None)
            }
        }
    }
}

//! XMP sidecars. Immich takes one only with its photo's first upload
//! (`sidecarData` in `uploadAsset`), never on its own, and does not say
//! afterwards which sidecar an asset came with. So a photo goes up with
//! its sidecar (whichever of the two jobs comes first sends both: the
//! photo's own job then finds it there), and photosync remembers, in the
//! catalog, which sidecar went with which asset. A sidecar's receipt is
//! its photo's asset (`verify` checks that it is still there): Immich
//! acknowledged the sidecar with it, it cannot be read back. A photo Immich
//! already had, from another client or before its sidecar appeared, can
//! take no sidecar any more: that sidecar's job fails saying so.

use bytes::Bytes;
use sha2::{Digest as _, Sha256};

use super::ImmichDestination;
use crate::destination::hashes::{HashKind, hash_file};
use crate::destination::http::read_error;
use crate::destination::{DestinationError, ProgressFn, UploadRequest, Uploaded};
use crate::media::sidecar::{SidecarKind, kind_of};
use crate::model::{ContentHash, Receipt, RemoteKey};

/// The largest sidecar sent (an XMP packet is a few KB; a huge one is
/// no sidecar).
const MAX_XMP: u64 = 4 * 1024 * 1024;

impl ImmichDestination {
    /// The XMP sidecar of the photo `request` uploads, read now, if it is
    /// still the version scanned (a changed one goes with the photo once
    /// it is read again).
    pub(super) fn sidecar_bytes(request: &UploadRequest) -> Option<Bytes> {
        let xmp = request.sidecar.as_ref().filter(|x| x.size <= MAX_XMP)?;
        let bytes = std::fs::read(&xmp.path).ok()?;
        (ContentHash::from_digest(&Sha256::digest(&bytes)) == xmp.hash).then(|| Bytes::from(bytes))
    }

    /// Remembers that asset `id` went up with the sidecar whose content is `hash`.
    pub(super) fn remember_sidecar(&self, id: &str, hash: &ContentHash) {
        let value = serde_json::Value::from(hash.as_hex());
        if let Err(e) = self.notes.update_note(&self.scope(), &format!("sidecar:{id}"), &mut |_| Some(value.clone())) {
            // The sidecar's own job will say it cannot tell.
            tracing::warn!("cannot remember a sidecar in the catalog: {e}");
        }
    }

    /// The content hash of the sidecar asset `id` went up with, if photosync sent one.
    fn sidecar_of(&self, id: &str) -> Option<String> {
        let note = self.notes.note(&self.scope(), &format!("sidecar:{id}")).ok().flatten()?;
        note.as_str().map(str::to_owned)
    }

    /// Notes are kept per server.
    fn scope(&self) -> String {
        format!("immich {}", self.config.api)
    }

    /// A sidecar's own job: done when its photo went up with it; else the
    /// photo goes up now, with it.
    pub(super) async fn upload_sidecar(
        &self,
        request: &UploadRequest,
        major: u64,
        progress: &ProgressFn,
    ) -> Result<Uploaded, DestinationError> {
        if kind_of(&request.source) != Some(SidecarKind::Xmp) {
            return Err(DestinationError::permanent(
                "Immich takes only XMP sidecars (with their photo); this one is kept at the other destinations",
            ));
        }
        let Some(photo) = &request.group_key else {
            return Err(DestinationError::permanent(
                "an XMP sidecar without its photo: Immich takes a sidecar only with its photo",
            ));
        };
        let xmp = std::fs::read(&request.source).map_err(|e| read_error(request, &e))?;
        if ContentHash::from_digest(&Sha256::digest(&xmp)) != request.hash {
            return Err(DestinationError::source_changed(format!(
                "{} changed since it was scanned",
                request.source.display()
            )));
        }
        let path = photo.path.clone();
        let hashed = tokio::task::spawn_blocking(move || hash_file(&path, HashKind::Sha1))
            .await
            .map_err(|e| DestinationError::transient(format!("hashing stopped: {e}")))?;
        let (sha256, sha1) = hashed
            .map_err(|e| DestinationError::transient(format!("cannot read its photo {}: {e}", photo.path.display())))?;
        if sha256 != photo.hash {
            return Err(DestinationError::transient(format!(
                "its photo {} changed since it was scanned; the sidecar goes with it once it is read again",
                photo.path.display()
            )));
        }
        let modified = std::fs::metadata(&photo.path).and_then(|m| m.modified()).unwrap_or(request.modified);
        let upload = UploadRequest {
            source: photo.path.clone(),
            size: photo.size,
            hash: photo.hash.clone(),
            modified,
            live_video: None,
            sidecar: None,
            group_key: None,
            ..request.clone()
        };
        let receipt = |id: String| Receipt {
            key: RemoteKey(id.into_bytes()),
            size: request.size,
            sha256: request.hash.clone(),
            version: Some(format!("sha1:{sha1}")),
        };
        let without = || {
            DestinationError::permanent(
                "Immich already had its photo, without this sidecar (Immich takes a sidecar only with a photo's \
                 first upload); the sidecar is kept at the other destinations",
            )
        };
        let _turn = self.turn(&sha1).await;
        if let Some(id) = self.duplicate_of(&request.cancel, &sha1).await? {
            self.holds(&upload, &id, &sha1).await?;
            if self.sidecar_of(&id).as_deref() == Some(request.hash.as_hex()) {
                return Ok(Uploaded::AlreadyPresent(receipt(id)));
            }
            return Err(without());
        }
        // The photo is not there yet: it goes up now, with its sidecar (its
        // own job then finds it, and links its Live Photo video).
        let xmp = Bytes::from(xmp);
        let (id, duplicate) = self.send(&upload, &sha1, major, progress, None, Some(&xmp)).await?;
        self.holds(&upload, &id, &sha1).await?;
        if duplicate {
            return Err(without());
        }
        self.remember_sidecar(&id, &request.hash);
        Ok(Uploaded::Stored(receipt(id)))
    }
}

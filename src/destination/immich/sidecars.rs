//! XMP sidecars. Immich takes one only with its photo's first upload
//! (`sidecarData` in `uploadAsset`), never on its own, and does not say
//! afterwards which sidecar an asset came with. So a photo goes up with the
//! sidecar named after it (`IMG_1.JPG.xmp`, else `IMG_1.xmp`, found on disk
//! when the photo is sent), whichever of the two jobs comes first (the
//! other then finds the photo there), and photosync remembers in the
//! catalog which sidecar went with which asset: first what it is about to
//! send with which photo content, then, the moment Immich names the asset,
//! the asset's. A sidecar's receipt is its photo's asset (`verify` checks
//! that it is still there): Immich acknowledged the sidecar with it; it
//! cannot be read back. A photo Immich already had, from another client or
//! before its sidecar appeared, takes no sidecar any more: that sidecar's
//! job fails saying so.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use sha2::{Digest as _, Sha256};

use super::ImmichDestination;
use crate::destination::hashes::{HashKind, hash_file};
use crate::destination::http::read_error;
use crate::destination::session::store_error;
use crate::destination::{DestinationError, ProgressFn, Retry, UploadRequest, Uploaded};
use crate::media::sidecar::{SidecarKind, kind_of};
use crate::model::{ContentHash, Receipt, RemoteKey};

/// The largest sidecar sent (an XMP packet is a few KB; a huge one is
/// no sidecar).
const MAX_XMP: u64 = 4 * 1024 * 1024;

/// An XMP sidecar, read and hashed.
pub(super) struct Xmp {
    pub bytes: Bytes,
    pub hash: ContentHash,
}

/// The XMP sidecar named after the photo at `photo`, if there is one:
/// `IMG_1.JPG.xmp`, else `IMG_1.xmp` (either case of the extension).
fn partner(photo: &Path) -> Option<PathBuf> {
    let name = photo.file_name()?.to_str()?;
    let stem = photo.file_stem()?.to_str()?;
    [name, stem]
        .iter()
        .flat_map(|base| [format!("{base}.xmp"), format!("{base}.XMP")])
        .map(|candidate| photo.with_file_name(candidate))
        .find(|candidate| candidate.is_file())
}

/// Whether `a` and `b` are the same file (a case-blind file system may
/// spell one name either way; a case-keeping one may hold both).
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

/// Reads the sidecar at `path`; `None` when it is too big to be one.
fn read_xmp(path: &Path) -> std::io::Result<Option<Xmp>> {
    if std::fs::metadata(path)?.len() > MAX_XMP {
        return Ok(None);
    }
    let bytes = std::fs::read(path)?;
    let hash = ContentHash::from_digest(&Sha256::digest(&bytes));
    Ok(Some(Xmp { bytes: Bytes::from(bytes), hash }))
}

impl ImmichDestination {
    /// The sidecar to send with the photo `request` uploads, as it is now.
    pub(super) fn sidecar_for(request: &UploadRequest) -> Result<Option<Xmp>, DestinationError> {
        let Some(path) = partner(&request.source) else { return Ok(None) };
        // Too big to be a sidecar: the photo goes alone; its job says why.
        // One there but unreadable now: the photo does not go without it.
        read_xmp(&path)
            .map_err(|e| DestinationError::transient(format!("cannot read the sidecar {}: {e}", path.display())))
    }

    /// Notes are kept per server.
    fn scope(&self) -> String {
        format!("immich {}", self.config.api)
    }

    fn write_note(&self, key: &str, value: Option<&str>) -> Result<(), DestinationError> {
        let value = value.map(serde_json::Value::from);
        self.notes.update_note(&self.scope(), key, &mut |_| value.clone()).map(drop).map_err(store_error)
    }

    fn read_note(&self, key: &str) -> Result<Option<String>, DestinationError> {
        let note = self.notes.note(&self.scope(), key).map_err(store_error)?;
        Ok(note.and_then(|n| n.as_str().map(str::to_owned)))
    }

    /// Sends `upload` (SHA-1 `sha1`) with `sidecar`, recording which
    /// sidecar goes with it before the request, and which went with the
    /// asset the moment Immich names it (also that none did: an older
    /// intent for the same content is no longer true).
    pub(super) async fn send_with_sidecar(
        &self,
        upload: &UploadRequest,
        sha1: &str,
        major: u64,
        progress: &ProgressFn,
        live_video: Option<&str>,
        sidecar: Option<&Xmp>,
    ) -> Result<(String, bool), DestinationError> {
        let intent = format!("sidecar-sent:{sha1}");
        if let Some(xmp) = sidecar {
            self.write_note(&intent, Some(xmp.hash.as_hex()))?;
        }
        match self.send(upload, sha1, major, progress, live_video, sidecar.map(|x| &x.bytes)).await {
            Ok((id, duplicate)) => {
                if let Some(xmp) = sidecar.filter(|_| !duplicate) {
                    self.write_note(&format!("sidecar:{id}"), Some(xmp.hash.as_hex()))?;
                }
                self.write_note(&intent, None)?;
                Ok((id, duplicate))
            }
            Err(e) => {
                // Refused: nothing went (a timeout or a 5xx may have stored it).
                if sidecar.is_some()
                    && !matches!(e.retry, Retry::Transient | Retry::Interrupted)
                    && let Err(note) = self.write_note(&intent, None)
                {
                    tracing::warn!("cannot forget a sidecar that did not go: {note}");
                }
                Err(e)
            }
        }
    }

    /// The content hash of the sidecar asset `id` (SHA-1 `sha1`) went up
    /// with, if photosync sent one: as recorded, or as it was about to be
    /// sent when a crash or an interruption came before Immich's answer was
    /// recorded (adopted now).
    pub(super) fn sidecar_of(&self, sha1: &str, id: &str) -> Result<Option<String>, DestinationError> {
        if let Some(hash) = self.read_note(&format!("sidecar:{id}"))? {
            return Ok(Some(hash));
        }
        let Some(hash) = self.read_note(&format!("sidecar-sent:{sha1}"))? else { return Ok(None) };
        self.write_note(&format!("sidecar:{id}"), Some(&hash))?;
        self.write_note(&format!("sidecar-sent:{sha1}"), None)?;
        Ok(Some(hash))
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
        // Its photo: the one it is named after (`IMG_1.JPG` for
        // `IMG_1.JPG.xmp`, the group's photo for `IMG_1.xmp`).
        let named = request.source.with_extension("");
        let is_photo = |path: &Path| {
            path.extension().is_some_and(crate::media::is_media_extension) && kind_of(path).is_none() && path.is_file()
        };
        let (photo_path, scanned) = match &request.group_key {
            Some(key) if partner(&key.path).is_some_and(|p| same_file(&p, &request.source)) => {
                (key.path.clone(), Some(key.hash.clone()))
            }
            _ if is_photo(&named) && partner(&named).is_some_and(|p| same_file(&p, &request.source)) => (named, None),
            _ => {
                return Err(DestinationError::permanent(
                    "no photo here is named as this XMP sidecar is (IMG_1.JPG for IMG_1.JPG.xmp, IMG_1.* for \
                     IMG_1.xmp): Immich takes a sidecar only with its photo",
                ));
            }
        };
        let xmp = read_xmp(&request.source).map_err(|e| read_error(request, &e))?.ok_or_else(|| {
            DestinationError::permanent(format!(
                "{} is no XMP sidecar Immich takes (too big)",
                request.source.display()
            ))
        })?;
        if xmp.hash != request.hash {
            return Err(DestinationError::source_changed(format!(
                "{} changed since it was scanned",
                request.source.display()
            )));
        }
        let path = photo_path.clone();
        let hashed = tokio::task::spawn_blocking(move || hash_file(&path, HashKind::Sha1))
            .await
            .map_err(|e| DestinationError::transient(format!("hashing stopped: {e}")))?;
        let (sha256, sha1) = hashed
            .map_err(|e| DestinationError::transient(format!("cannot read its photo {}: {e}", photo_path.display())))?;
        if scanned.is_some_and(|scanned| scanned != sha256) {
            return Err(DestinationError::transient(format!(
                "its photo {} changed since it was scanned; the sidecar goes with it once it is read again",
                photo_path.display()
            )));
        }
        let metadata = std::fs::metadata(&photo_path)
            .map_err(|e| DestinationError::transient(format!("cannot read its photo {}: {e}", photo_path.display())))?;
        let upload = UploadRequest {
            source: photo_path.clone(),
            size: metadata.len(),
            hash: sha256,
            modified: metadata.modified().unwrap_or(request.modified),
            live_video: None,
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
        // What went wrong with the photo is not this file's change.
        let about_photo = |e: DestinationError| {
            if e.retry == Retry::SourceChanged { DestinationError::transient(e.message) } else { e }
        };
        let _turn = self.turn(&sha1).await;
        if let Some(id) = self.duplicate_of(&request.cancel, &sha1).await? {
            self.holds(&upload, &id, &sha1).await.map_err(about_photo)?;
            return match self.sidecar_of(&sha1, &id)? {
                Some(sent) if sent == request.hash.as_hex() => Ok(Uploaded::AlreadyPresent(receipt(id))),
                _ => Err(without()),
            };
        }
        // The photo is not there yet: it goes up now, with its sidecar (its
        // own job then finds it, and links its Live Photo video).
        let (id, duplicate) =
            self.send_with_sidecar(&upload, &sha1, major, progress, None, Some(&xmp)).await.map_err(about_photo)?;
        self.holds(&upload, &id, &sha1).await.map_err(about_photo)?;
        if duplicate {
            return Err(without());
        }
        Ok(Uploaded::Stored(receipt(id)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sidecar_is_the_one_named_after_its_photo() {
        let dir = tempfile::tempdir().expect("dir");
        let photo = dir.path().join("DSC_2.NEF");
        std::fs::write(&photo, b"raw").expect("photo");
        assert_eq!(partner(&photo), None);
        std::fs::write(dir.path().join("DSC_2.JPG.xmp"), b"<x/>").expect("another's");
        assert_eq!(partner(&photo), None, "the JPEG's sidecar is not the raw's");
        std::fs::write(dir.path().join("DSC_2.XMP"), b"<x/>").expect("by stem");
        assert_eq!(partner(&photo), Some(dir.path().join("DSC_2.XMP")));
        std::fs::write(dir.path().join("DSC_2.NEF.xmp"), b"<x/>").expect("by name");
        assert_eq!(partner(&photo), Some(dir.path().join("DSC_2.NEF.xmp")), "the full name first");
    }
}

//! `type = "immich"`: Immich, the self-hosted photo server, through its REST
//! API (`@immich/sdk` 2.7.5 for the 2.x servers, 3.2.2 for 3.x; operations
//! `getServerVersion`, `getMyApiKey`, `checkBulkUpload`, `uploadAsset`,
//! `getAssetInfo`, `updateAsset`). Immich keeps photos by content: an asset's identity is
//! the SHA-1 of its bytes, so a photo some other client (or another
//! machine's photosync) already uploaded is found before anything is sent.
//!
//! An upload takes the SHA-1 Immich keys assets by from the scan (which
//! computed it in its one read of the file; else it reads the file now,
//! with the SHA-256 that proves it is still the scanned version), asks
//! `POST /assets/bulk-upload-check` whether the server has that SHA-1
//! (together with the other uploads asking then: `checks`), and if not
//! checks the file is still the scanned version and sends it with
//! `POST /assets` (multipart, streamed from disk, `x-immich-checksum` so
//! the server can refuse a duplicate before storing it; its XMP sidecar
//! with it: `sidecars`). A job is acknowledged only once `GET /assets/{id}`
//! reports that SHA-1 (for a photo the server had already too). The
//! receipt's key is the asset id.
//!
//! With `album`, each photo is added to the album its template names
//! (`createAlbum`, `addAssetsToAlbum`), created when first needed; the
//! albums the key can see are looked up by name first (`getAllAlbums`), so a
//! crash between creating an album and using it never makes a second one.
//!
//! 2.x and 3.x differ in the upload form: 3.x dropped `deviceAssetId` and
//! `deviceId` (immich PR #27818) and wants `fileCreatedAt` with a UTC
//! offset; the server's major version is asked once.

mod albums;
mod checks;
mod config;
mod live;
mod sidecars;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use base64::Engine as _;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::{RequestBuilder, Response, StatusCode};
use serde::Deserialize;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

pub use self::config::ImmichConfig;
use super::hashes::{HashKind, hash_file};
use futures_util::StreamExt as _;

use super::http::{
    Client, READ_CHUNK, STREAM_CHUNK, file_chunks, metered_chunks, read_error, retry_after, send_for, text,
};
use super::{Destination, DestinationError, ProgressFn, Retry, UploadRequest, Uploaded, Verdict};
use crate::model::{Receipt, RemoteKey};

/// An Immich server as a destination.
pub struct ImmichDestination {
    config: ImmichConfig,
    client: Client,
    /// The server's major version (2 or 3), asked once.
    major: OnceCell<u64>,
    /// Album ids by name; the lock also makes finding or creating an
    /// album one step, so two uploads never create the same album twice.
    albums: tokio::sync::Mutex<HashMap<String, String>>,
    /// Content being sent, by SHA-1: one upload of a content at a time (a
    /// Live Photo's video is sent by its still's job when it is not there
    /// yet, and its own job, waiting, then finds it).
    sending: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Duplicate checks waiting to be asked together.
    checks: checks::Checks,
    /// What photosync remembers of the server: which sidecar went up with
    /// which asset (Immich does not say).
    notes: Arc<dyn super::SessionStore>,
}

/// The turn to send one content; the next in line goes when it is dropped.
struct Turn<'d> {
    sending: &'d std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    sha1: String,
    _held: tokio::sync::OwnedMutexGuard<()>,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut sending = self.sending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // The map's and this turn's: nobody is waiting, the entry can go.
        if sending.get(&self.sha1).is_some_and(|lock| Arc::strong_count(lock) <= 2) {
            sending.remove(&self.sha1);
        }
    }
}

/// `GET /server/version`.
#[derive(Deserialize)]
struct Version {
    major: u64,
}

/// `GET /api-keys/me`.
#[derive(Deserialize)]
struct ApiKey {
    #[serde(default)]
    permissions: Vec<String>,
}

/// `POST /assets`.
#[derive(Deserialize)]
struct Created {
    id: String,
    status: String,
}

/// `GET /assets/{id}`: the checksum is the SHA-1 of the stored file, base64.
#[derive(Deserialize)]
struct Asset {
    checksum: String,
    #[serde(rename = "isTrashed", default)]
    is_trashed: bool,
    /// The motion part a still is linked to, if any.
    #[serde(rename = "livePhotoVideoId", default)]
    live_photo_video_id: Option<String>,
}

/// What the server says of an asset: its SHA-1 (hex), whether it is in the
/// trash, and the Live Photo video it is linked to.
struct Described {
    sha1: String,
    trashed: bool,
    live_video: Option<String>,
}

/// What a photo in Immich's trash means: it goes when the trash is emptied.
const TRASHED: &str = "Immich has this photo in its trash (it goes when the trash is emptied): \
    restore it in Immich, or empty the trash, then retry";

/// The permissions an API key needs: uploads, and reading the asset back
/// to prove it holds the bytes (`all` covers both).
const NEEDED: [&str; 2] = ["asset.upload", "asset.read"];

impl ImmichDestination {
    /// A destination for `config`.
    pub fn new(config: &ImmichConfig, notes: Arc<dyn super::SessionStore>) -> Self {
        Self {
            config: config.clone(),
            client: Client::without_redirects(config.timeout),
            major: OnceCell::new(),
            albums: tokio::sync::Mutex::default(),
            sending: std::sync::Mutex::default(),
            checks: checks::Checks::default(),
            notes,
        }
    }

    /// Waits for the turn to send the content with this SHA-1.
    async fn turn(&self, sha1: &str) -> Turn<'_> {
        let lock = {
            let mut sending = self.sending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            Arc::clone(sending.entry(sha1.to_owned()).or_default())
        };
        Turn { sending: &self.sending, sha1: sha1.to_owned(), _held: lock.lock_owned().await }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.config.api)
    }

    /// The API key, read now, as a header value marked sensitive.
    fn key(&self) -> Result<reqwest::header::HeaderValue, DestinationError> {
        let key = self.config.api_key.read("API key")?.unwrap_or_default();
        let key = key.trim();
        if key.is_empty() {
            return Err(DestinationError::permanent("the Immich API key is empty"));
        }
        let mut value = reqwest::header::HeaderValue::from_str(key)
            .map_err(|_| DestinationError::permanent("the Immich API key holds characters a header cannot"))?;
        value.set_sensitive(true);
        Ok(value)
    }

    /// Sends `request` with the API key; a status other than a success is
    /// an error saying what it means for Immich.
    async fn call(&self, cancel: &CancellationToken, request: RequestBuilder) -> Result<Response, DestinationError> {
        let response = send_for(cancel, request.header("x-api-key", self.key()?)).await?;
        if response.status().is_success() {
            return Ok(response);
        }
        Err(refused(cancel, response).await)
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        cancel: &CancellationToken,
        request: RequestBuilder,
        what: &str,
    ) -> Result<T, DestinationError> {
        let response = self.call(cancel, request).await?;
        let body = text(cancel, response).await?;
        serde_json::from_str(&body)
            .map_err(|e| DestinationError::transient(format!("Immich answered {what} with something unexpected: {e}")))
    }

    /// The server's major version, asked once.
    async fn major(&self, cancel: &CancellationToken) -> Result<u64, DestinationError> {
        let client = self.client.get()?;
        let version = self
            .major
            .get_or_try_init(|| async {
                let version: Version =
                    self.json(cancel, client.get(self.url("server/version")), "the version request").await?;
                tracing::debug!(major = version.major, "Immich server version");
                Ok::<_, DestinationError>(version.major)
            })
            .await?;
        Ok(*version)
    }

    /// What the server holds as asset `id`; `None` when there is no such
    /// asset.
    async fn describe(&self, cancel: &CancellationToken, id: &str) -> Result<Option<Described>, DestinationError> {
        let request = self.client.get()?.get(self.url(&format!("assets/{}", encode(id))));
        let response = send_for(cancel, request.header("x-api-key", self.key()?)).await?;
        // Immich answers an unknown or deleted asset with 400 ("Not found or
        // no asset.read access") on some versions, 404 on others.
        if matches!(response.status(), StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST) {
            return Ok(None);
        }
        if !response.status().is_success() {
            return Err(refused(cancel, response).await);
        }
        let asset: Asset = serde_json::from_str(&text(cancel, response).await?)
            .map_err(|e| DestinationError::transient(format!("Immich described the asset unexpectedly: {e}")))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(asset.checksum.trim())
            .map_err(|e| DestinationError::transient(format!("Immich's checksum is not base64: {e}")))?;
        Ok(Some(Described {
            sha1: super::http::hex(&bytes),
            trashed: asset.is_trashed,
            live_video: asset.live_photo_video_id.filter(|v| !v.is_empty()),
        }))
    }

    /// Succeeds once the server reports asset `id` with SHA-1 `sha1` (of
    /// `request`'s file): a job is acknowledged only then. Immich stores
    /// whatever bytes arrive, so another SHA-1 means the file changed while
    /// it was sent (the scan reads it again) or the server lost it.
    async fn holds(&self, request: &UploadRequest, id: &str, sha1: &str) -> Result<(), DestinationError> {
        match self.describe(&request.cancel, id).await?.map(|d| (d.sha1, d.trashed)) {
            Some((_, true)) => Err(DestinationError::permanent(TRASHED)),
            Some((stored, _)) if stored == sha1 => Ok(()),
            Some((stored, _)) => {
                let source = request.source.clone();
                let now = tokio::task::spawn_blocking(move || crate::media::hash_file(&source)).await;
                if !matches!(now, Ok(Ok((ref hash, _))) if *hash == request.hash) {
                    return Err(DestinationError::source_changed(format!(
                        "{} changed while it was sent",
                        request.source.display()
                    )));
                }
                Err(DestinationError::transient(format!(
                    "Immich holds asset {id} with SHA-1 {stored}, not the {sha1} that was sent"
                )))
            }
            None => Err(DestinationError::transient(format!("Immich does not show asset {id} after the upload"))),
        }
    }

    /// Sends the file as a new asset (naming its Live Photo video, if
    /// any); `Ok((id, duplicate))`.
    async fn send(
        &self,
        request: &UploadRequest,
        sha1: &str,
        major: u64,
        progress: &ProgressFn,
        live_video: Option<&str>,
        sidecar: Option<&bytes::Bytes>,
    ) -> Result<(String, bool), DestinationError> {
        let file = Arc::new(std::fs::File::open(&request.source).map_err(|e| read_error(request, &e))?);
        let name = request.source.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let modified = rfc3339(request.modified);
        let mut fields: Vec<(&str, String)> = vec![
            ("fileCreatedAt", request.taken.clone().unwrap_or_else(|| modified.clone())),
            ("fileModifiedAt", modified),
            ("filename", name.clone()),
        ];
        if let Some(video) = live_video {
            fields.push(("livePhotoVideoId", video.to_owned()));
        }
        if major < 3 {
            // Required by 2.x; 3.x removed them (immich PR #27818).
            fields.push(("deviceAssetId", format!("{name}-{}", request.size).replace(char::is_whitespace, "")));
            fields.push(("deviceId", "photosync".to_owned()));
        }
        let boundary = format!("photosync-{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        let mut head = String::new();
        for (field, value) in &fields {
            let _ = write!(head, "--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"\r\n\r\n{value}\r\n");
        }
        let mut head = head.into_bytes();
        if let Some(xmp) = sidecar {
            let _ = write!(
                head,
                "--{boundary}\r\nContent-Disposition: form-data; name=\"sidecarData\"; filename=\"{}.xmp\"\r\n\
                 Content-Type: application/octet-stream\r\n\r\n",
                quoted(&name)
            );
            head.extend_from_slice(xmp);
            head.extend_from_slice(b"\r\n");
        }
        let _ = write!(
            head,
            "--{boundary}\r\nContent-Disposition: form-data; name=\"assetData\"; filename=\"{}\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n",
            quoted(&name)
        );
        let tail = format!("\r\n--{boundary}--\r\n");
        let length = head.len() as u64 + request.size + tail.len() as u64;
        let chunk = if request.throttle.is_limited() { STREAM_CHUNK } else { READ_CHUNK };
        let body = futures_util::stream::once(async move { Ok(bytes::Bytes::from(head)) })
            .chain(metered_chunks(file_chunks(&file, 0, request.size, chunk), request, progress))
            .chain(futures_util::stream::once(async move { Ok(bytes::Bytes::from(tail)) }));
        let upload = self
            .client
            .get()?
            .post(self.url("assets"))
            .header(CONTENT_TYPE, format!("multipart/form-data; boundary={boundary}"))
            .header(CONTENT_LENGTH, length)
            .header("x-immich-checksum", sha1)
            .body(reqwest::Body::wrap_stream(body));
        let response = self.call(&request.cancel, upload).await?;
        let status = response.status();
        let created: Created = serde_json::from_str(&text(&request.cancel, response).await?)
            .map_err(|e| DestinationError::transient(format!("Immich answered the upload unexpectedly: {e}")))?;
        Ok((created.id, status == StatusCode::OK || created.status == "duplicate"))
    }
}

#[async_trait]
impl Destination for ImmichDestination {
    async fn check(&self) -> Result<(), DestinationError> {
        let cancel = CancellationToken::new();
        let major = self.major(&cancel).await?;
        let key: ApiKey =
            self.json(&cancel, self.client.get()?.get(self.url("api-keys/me")), "the API key request").await?;
        let all = key.permissions.iter().any(|p| p == "all");
        let albums = if self.config.album.is_some() { &albums::NEED[..] } else { &[] };
        let needed: Vec<&str> = NEEDED.iter().chain(albums).copied().collect();
        let missing: Vec<&str> =
            needed.iter().copied().filter(|n| !all && !key.permissions.iter().any(|p| p == n)).collect();
        if !missing.is_empty() {
            // Only the user can give the key more: held, not retried.
            return Err(DestinationError::held(format!(
                "the Immich API key lacks the {} permission{}: create a key with {}",
                missing.join(" and "),
                if missing.len() > 1 { "s" } else { "" },
                needed.join(", ")
            )));
        }
        tracing::info!("Immich {major}.x at {} accepts the API key", self.config.api);
        Ok(())
    }

    async fn upload(&self, request: UploadRequest, progress: ProgressFn) -> Result<Uploaded, DestinationError> {
        let major = self.major(&request.cancel).await?;
        if crate::media::sidecar::kind_of(&request.source).is_some() {
            // Immich takes an `.xmp` only as its photo's `sidecarData`; as an
            // asset of its own it would be refused, or stored as junk.
            return self.upload_sidecar(&request, major, &progress).await;
        }
        // The SHA-1 Immich knows assets by: the scan's (its size, time and
        // inode are as scanned; `holds` then proves Immich has exactly those
        // bytes), else read now.
        let sha1 = match &request.sha1 {
            Some(sha1) => sha1.clone(),
            None => scanned_sha1(&request).await?,
        };
        let receipt = |id: String| Receipt {
            key: RemoteKey(id.into_bytes()),
            size: request.size,
            sha256: request.hash.clone(),
            version: Some(format!("sha1:{sha1}")),
        };
        let _turn = self.turn(&sha1).await;
        if let Some(id) = self.duplicate_of(&request.cancel, &sha1).await? {
            self.holds(&request, &id, &sha1).await?;
            if let Some(video) = &request.live_video {
                // Uploaded by another client without its motion part, or
                // before its video was found: linked now.
                self.link(&request, &id, video, major, &progress).await?;
            }
            self.file_in_album(&request, &id).await?;
            return Ok(Uploaded::AlreadyPresent(receipt(id)));
        }
        if request.cancelled() {
            return Err(DestinationError::interrupted());
        }
        if request.sha1.is_some() {
            // About to be sent: still the version scanned?
            scanned_sha1(&request).await?;
        }
        let live_video = match &request.live_video {
            Some(video) => self.live_video_id(&request, video, major, &progress).await?,
            None => None,
        };
        let sidecar = Self::sidecar_for(&request)?;
        let (id, duplicate) =
            self.send_with_sidecar(&request, &sha1, major, &progress, live_video.as_deref(), sidecar.as_ref()).await?;
        self.holds(&request, &id, &sha1).await?;
        self.file_in_album(&request, &id).await?;
        Ok(if duplicate { Uploaded::AlreadyPresent(receipt(id)) } else { Uploaded::Stored(receipt(id)) })
    }

    async fn verify(&self, receipt: &Receipt, _deep: bool) -> Result<Verdict, DestinationError> {
        let id = String::from_utf8_lossy(&receipt.key.0).into_owned();
        let expected = receipt.version.as_deref().and_then(|v| v.strip_prefix("sha1:")).unwrap_or_default();
        Ok(match self.describe(&CancellationToken::new(), &id).await?.map(|d| (d.sha1, d.trashed)) {
            None => Verdict::Missing,
            Some((_, true)) => Verdict::Differs(format!("asset {id} is in Immich's trash")),
            Some((stored, _)) if stored == expected => Verdict::Holds,
            Some((stored, _)) => {
                Verdict::Differs(format!("asset {id} has SHA-1 {stored}, the receipt says {expected}"))
            }
        })
    }

    fn reconnect(&self) {
        self.client.renew();
    }

    fn content_identifies(&self, path: &std::path::Path) -> bool {
        // A sidecar's receipt is its photo's asset: the same sidecar beside
        // another photo is not backed up by it.
        crate::media::sidecar::kind_of(path).is_none()
    }

    fn needs_info(&self) -> bool {
        true
    }
}

/// One read of `request`'s file: its SHA-1, once its SHA-256 shows it is
/// still the version that was scanned.
async fn scanned_sha1(request: &UploadRequest) -> Result<String, DestinationError> {
    let source = request.source.clone();
    let (sha256, sha1) = tokio::task::spawn_blocking(move || hash_file(&source, HashKind::Sha1))
        .await
        .map_err(|e| DestinationError::transient(format!("hashing stopped: {e}")))?
        .map_err(|e| read_error(request, &e))?;
    if sha256 != request.hash {
        return Err(DestinationError::source_changed(format!(
            "{} changed since it was scanned",
            request.source.display()
        )));
    }
    Ok(sha1)
}

/// What a status other than success means for Immich.
async fn refused(cancel: &CancellationToken, response: Response) -> DestinationError {
    let status = response.status();
    let wait = retry_after(response.headers());
    let location = super::http::header(response.headers(), "location")
        .map(|l| l.chars().filter(|c| !c.is_control()).take(200).collect::<String>());
    let body = text(cancel, response).await.unwrap_or_default();
    let said = message(&body);
    let mut error = match status {
        // Only the user can mend a key: the destination is held, no job charged.
        StatusCode::UNAUTHORIZED => DestinationError::held(format!(
            "Immich refused the API key ({status}{said}): check api_key_env, api_key_file or api_key_keyring"
        )),
        // A proxy's or firewall's 403 (no Immich error body) says nothing of the key.
        StatusCode::FORBIDDEN if said.is_empty() => DestinationError::transient(format!(
            "something in front of Immich refused the request ({status}, not Immich's own answer)"
        )),
        StatusCode::FORBIDDEN => DestinationError::held(format!(
            "the Immich API key may not do this ({status}{said}): it needs asset.upload and asset.read \
             (and album.read, album.create, albumAsset.create with `album`; asset.update to link a Live Photo's still \
             it already had)"
        )),
        StatusCode::PAYLOAD_TOO_LARGE => DestinationError::permanent(format!(
            "the file is larger than a proxy in front of Immich accepts ({status}; Cloudflare's limit is 100 MB, \
             nginx's is client_max_body_size): raise the proxy's limit, or reach Immich without it"
        )),
        StatusCode::TOO_MANY_REQUESTS => DestinationError::transient(format!("Immich is busy ({status}{said})")),
        s if s.is_redirection() => DestinationError::permanent(format!(
            "Immich's address answered with a redirect ({status}{}); set url to where it leads \
             (photosync does not follow redirects: the API key would go along)",
            location.map(|l| format!(" to {l}")).unwrap_or_default()
        )),
        s if s.is_server_error() => DestinationError::transient(format!("Immich failed ({status}{said})")),
        _ => DestinationError::permanent(format!("Immich refused the request ({status}{said})")),
    };
    if error.retry == Retry::Transient {
        error.retry_after = wait;
    }
    error
}

/// `: MESSAGE` from an Immich error body (`{"message": "…"}`, or a list of
/// validation messages on 2.x), else nothing.
fn message(body: &str) -> String {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(body) else { return String::new() };
    let text = match &value["message"] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(items) => items.iter().filter_map(|i| i.as_str()).collect::<Vec<_>>().join("; "),
        _ => return String::new(),
    };
    let text: String = text.chars().filter(|c| !c.is_control()).take(200).collect();
    if text.is_empty() { text } else { format!(": {text}") }
}

/// RFC 3339 in UTC (`Z` is an offset to Immich 3.x's validation).
fn rfc3339(time: SystemTime) -> String {
    jiff::Timestamp::try_from(time)
        .map_or_else(|_| "1970-01-01T00:00:00Z".to_owned(), |t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
}

/// A file name inside a quoted multipart parameter: quotes, backslashes
/// and line breaks would end it early.
fn quoted(name: &str) -> String {
    name.chars().map(|c| if matches!(c, '"' | '\\' | '\r' | '\n') { '_' } else { c }).collect()
}

/// An asset id (a UUID) as one URL path segment: anything but the
/// unreserved characters is escaped.
fn encode(id: &str) -> String {
    const SEGMENT: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');
    percent_encoding::utf8_percent_encode(id, SEGMENT).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_of_both_versions_are_read() {
        assert_eq!(
            message(r#"{"message":"Invalid API key","error":"Unauthorized","statusCode":401}"#),
            ": Invalid API key"
        );
        assert_eq!(
            message(r#"{"message":["fileCreatedAt must be a Date","deviceId should not be empty"]}"#),
            ": fileCreatedAt must be a Date; deviceId should not be empty"
        );
        assert_eq!(message("<html>413</html>"), "");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH + std::time::Duration::from_hours(24)), "1970-01-02T00:00:00Z");
        assert_eq!(quoted("a\"b\r\n.jpg"), "a_b__.jpg");
    }
}

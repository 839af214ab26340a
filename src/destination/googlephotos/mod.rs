//! `type = "googlephotos"`: photos and videos into the user's Google
//! Photos library through the Library API
//! (<https://developers.google.com/photos/library/guides/upload-media>),
//! signed in once with `photosync auth NAME` (a browser on this machine:
//! the only flow Google allows for these permissions).
//!
//! Bytes go up with Google's resumable upload protocol (the `upload` module), whose
//! session survives a crash; the upload token that ends it becomes a media
//! item with `mediaItems:batchCreate` (the `library` module), in the album the
//! `album` template names (created by this app, the only kind it may add
//! to). Google gives back no hash or size: the receipt is the media item's
//! id, and says that Google acknowledged the file (`google-acknowledged`),
//! not that photosync compared its bytes; the file's SHA-256 is checked
//! before the upload is finalized, so a file changed while it was sent is
//! never handed over. `photosync verify` checks that each media item still
//! exists.
//!
//! Limits are told before anything is sent: photos over 200 MB, videos
//! over 20 GB and types Google does not take fail with the reason
//! (<https://developers.google.com/photos/library/guides/upload-media#file-types-sizes>).
//! A 429 waits at least `rate_limit_wait`, doubled for each 429 in a row
//! (Google asks for exponential backoff from 30 s,
//! <https://developers.google.com/photos/overview/best-practices>); the
//! daily quota of the app's project holds the destination until it resets,
//! at midnight Pacific time
//! (<https://developers.google.com/photos/overview/api-limits-quotas>).

mod config;
mod library;
mod upload;

pub use config::{ClientSecret, GooglePhotosConfig};

use std::sync::Arc;

use async_trait::async_trait;
use reqwest::StatusCode;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::{Destination, DestinationError, ProgressFn, SessionStore, UploadRequest, Uploaded, Verdict, http};
use crate::model::{MediaKind, Receipt, RemoteKey};
use crate::oauth::Access;

/// What the receipt's version says: Google acknowledged the file.
pub const ACKNOWLEDGED: &str = "google-acknowledged";

/// The largest photo and video Google Photos takes.
const MAX_PHOTO: u64 = 200 * 1000 * 1000;
const MAX_VIDEO: u64 = 20 * 1000 * 1000 * 1000;

/// The types Google Photos takes, by extension, with their MIME types.
const TYPES: &[(&str, &str)] = &[
    ("jpg", "image/jpeg"),
    ("jpeg", "image/jpeg"),
    ("jpe", "image/jpeg"),
    ("jfif", "image/jpeg"),
    ("jps", "image/jpeg"),
    ("mpo", "image/jpeg"),
    ("insp", "image/jpeg"),
    ("hif", "image/heif"),
    ("qt", "video/quicktime"),
    ("png", "image/png"),
    ("gif", "image/gif"),
    ("webp", "image/webp"),
    ("heic", "image/heic"),
    ("heif", "image/heif"),
    ("avif", "image/avif"),
    ("bmp", "image/bmp"),
    ("ico", "image/x-icon"),
    ("tif", "image/tiff"),
    ("tiff", "image/tiff"),
    ("dng", "image/x-adobe-dng"),
    ("cr2", "image/x-canon-cr2"),
    ("cr3", "image/x-canon-cr3"),
    ("nef", "image/x-nikon-nef"),
    ("arw", "image/x-sony-arw"),
    ("orf", "image/x-olympus-orf"),
    ("rw2", "image/x-panasonic-rw2"),
    ("raf", "image/x-fuji-raf"),
    ("mp4", "video/mp4"),
    ("m4v", "video/x-m4v"),
    ("mov", "video/quicktime"),
    ("3gp", "video/3gpp"),
    ("3g2", "video/3gpp2"),
    ("avi", "video/x-msvideo"),
    ("mkv", "video/x-matroska"),
    ("mpg", "video/mpeg"),
    ("mpeg", "video/mpeg"),
    ("mts", "video/mp2t"),
    ("m2ts", "video/mp2t"),
    ("m2t", "video/mp2t"),
    ("wmv", "video/x-ms-wmv"),
    ("asf", "video/x-ms-asf"),
    ("divx", "video/divx"),
    ("mmv", "video/mmv"),
    ("mod", "video/mpeg"),
    ("tod", "video/mpeg"),
];

/// Google Photos.
pub struct GooglePhotosDestination {
    config: GooglePhotosConfig,
    client: http::Client,
    access: Access,
    sessions: Arc<dyn SessionStore>,
    library: library::Library,
    /// 429s in a row: each doubles the wait (Google asks for exponential
    /// backoff from 30 s).
    throttled: std::sync::atomic::AtomicU32,
}

impl GooglePhotosDestination {
    /// The destination of `config`; upload sessions are kept in `sessions`.
    pub fn new(config: &GooglePhotosConfig, sessions: Arc<dyn SessionStore>) -> Self {
        Self {
            access: Access::new(config.provider(), config.tokens.clone(), config.timeout),
            client: http::Client::without_redirects(config.timeout),
            config: config.clone(),
            sessions,
            library: library::Library::default(),
            throttled: std::sync::atomic::AtomicU32::new(0),
        }
    }

    /// A Library API address.
    fn api(&self, path: &str) -> Result<url::Url, DestinationError> {
        self.config.api_url.join(path).map_err(|e| DestinationError::permanent(format!("cannot make an address: {e}")))
    }

    /// POSTs `body` as JSON to the Library API's `path`.
    async fn post_json(
        &self,
        cancel: &CancellationToken,
        path: &str,
        body: &Value,
    ) -> Result<reqwest::Response, DestinationError> {
        let (url, body) = (self.api(path)?, body.to_string());
        self.access
            .send(cancel, || {
                Ok(self
                    .client
                    .get()?
                    .post(url.clone())
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.clone()))
            })
            .await
    }

    /// What a refusal means: Google's own words, a retry where one may help,
    /// a hold where only time (the daily quota) or the user can.
    async fn refusal(&self, response: reqwest::Response, what: &str) -> DestinationError {
        let status = response.status();
        let asked = http::retry_after(response.headers());
        let body = http::text(&CancellationToken::new(), response).await.unwrap_or_default();
        let parsed: Option<Value> = serde_json::from_str(&body).ok();
        let said: String = parsed
            .as_ref()
            .and_then(|v| v.pointer("/error/message"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .chars()
            .filter(|c| !c.is_control())
            .take(200)
            .collect();
        let detail = if said.is_empty() { String::new() } else { format!(": {said}") };
        if said.contains("remaining storage") {
            // Every upload would fail alike until the user makes room.
            return DestinationError::held(format!(
                "the Google account's storage is full{detail}: make room, or buy more"
            ));
        }
        if status == StatusCode::TOO_MANY_REQUESTS && said.contains("per day") {
            let mut error = DestinationError::held(format!(
                "Google's daily request quota for this app's project is used up{detail}; it resets at midnight \
                 Pacific time"
            ));
            error.retry_after = Some(until_pacific_midnight());
            return error;
        }
        let message = format!("Google Photos could not {what} ({status}{detail})");
        let mut error = match status {
            StatusCode::TOO_MANY_REQUESTS => {
                let row = self.throttled.fetch_add(1, std::sync::atomic::Ordering::Relaxed).min(6);
                let floor = self.config.rate_limit_wait * 2u32.pow(row);
                let mut error = DestinationError::transient(message);
                error.retry_after = Some(asked.unwrap_or_default().max(floor));
                return error;
            }
            StatusCode::FORBIDDEN => DestinationError::held(format!(
                "{message}: the sign-in lacks a permission; sign in again: {}",
                self.access.provider().sign_in_command()
            )),
            other if http::retry_for(other) == super::Retry::Transient => DestinationError::transient(message),
            _ => DestinationError::permanent(message),
        };
        error.retry_after = asked;
        error
    }
}

/// How long until the next midnight in Los Angeles, when Google's daily
/// quotas reset.
fn until_pacific_midnight() -> std::time::Duration {
    let fallback = std::time::Duration::from_hours(1);
    let Ok(now) = jiff::Zoned::now().in_tz("America/Los_Angeles") else { return fallback };
    let Ok(tomorrow) = now.date().tomorrow() else { return fallback };
    let Ok(midnight) = tomorrow.to_zoned(now.time_zone().clone()) else { return fallback };
    let seconds = midnight.timestamp().as_second() - now.timestamp().as_second();
    std::time::Duration::from_secs(u64::try_from(seconds).unwrap_or(3600).max(60))
}

/// An album's title as Google takes it: no control characters, at most
/// 500 characters.
fn album_title(rendered: &str) -> String {
    rendered.chars().filter(|c| !c.is_control()).take(500).collect::<String>().trim().to_owned()
}

/// The MIME type of `name`, if Google Photos takes its type.
fn mime_type(name: &str) -> Option<&'static str> {
    let extension = name.rsplit_once('.')?.1.to_ascii_lowercase();
    TYPES.iter().find(|(e, _)| *e == extension).map(|(_, mime)| *mime)
}

/// The file's name as Google shows it.
fn file_name(request: &UploadRequest) -> String {
    let name = request.source.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    name.chars().filter(|c| !c.is_control()).collect()
}

#[async_trait]
impl Destination for GooglePhotosDestination {
    async fn check(&self) -> Result<(), DestinationError> {
        let cancel = CancellationToken::new();
        let url = self.api("v1/albums?pageSize=1&excludeNonAppCreatedData=true")?;
        let response = self.access.send(&cancel, || Ok(self.client.get()?.get(url.clone()))).await?;
        if response.status().is_success() {
            return Ok(());
        }
        Err(self.refusal(response, "list the app's albums").await)
    }

    async fn upload(&self, request: UploadRequest, progress: ProgressFn) -> Result<Uploaded, DestinationError> {
        let name = file_name(&request);
        let mime = mime_type(&name).ok_or_else(|| {
            DestinationError::permanent(format!("Google Photos does not take files of this type: {name}"))
        })?;
        let video = request.subject.info.as_ref().map_or(mime.starts_with("video/"), |i| i.kind == MediaKind::Video);
        let (limit, what) = if video { (MAX_VIDEO, "videos over 20 GB") } else { (MAX_PHOTO, "photos over 200 MB") };
        if request.size > limit {
            return Err(DestinationError::permanent(format!("Google Photos does not take {what}")));
        }
        // The album first: a title Google refuses costs no upload.
        let album = match &self.config.album {
            Some(template) => {
                let title = album_title(&request.subject.render(template));
                if title.is_empty() { None } else { Some(self.library.album(self, &title, &request.cancel).await?) }
            }
            None => None,
        };
        let token = upload::send(self, &request, mime, &name, &progress).await?;
        upload::creating(self, request.job, &token)?;
        let forget = || self.sessions.forget(request.job).map_err(super::session::store_error);
        match self.library.create(self, &token.value, &name, album.as_deref(), &request.cancel).await {
            Ok(id) => {
                self.throttled.store(0, std::sync::atomic::Ordering::Relaxed);
                forget()?;
                Ok(Uploaded::Stored(Receipt {
                    key: RemoteKey(id.into_bytes()),
                    size: request.size,
                    sha256: request.hash.clone(),
                    version: Some(ACKNOWLEDGED.to_owned()),
                }))
            }
            // Google's trouble (INTERNAL, UNAVAILABLE, DEADLINE_EXCEEDED):
            // the token stays good for a day; asked again later.
            Err(library::Refused::Item(13 | 14 | 4, said)) => {
                Err(DestinationError::transient(format!("Google could not make the media item yet: {said}")))
            }
            Err(library::Refused::Item(8, said)) => {
                Err(DestinationError::held(format!("Google is rationing this account or project: {said}")))
            }
            // A token kept from an earlier attempt, never used, may have
            // expired: the bytes go up again.
            Err(library::Refused::Item(code, said)) if token.kept && !token.create_sent => {
                forget()?;
                Err(DestinationError::transient(format!(
                    "Google refused the upload token ({code}: {said}); uploading again"
                )))
            }
            // Asked for before, its answer lost: Google may hold the item
            // already. Sending the file again could make a second one.
            Err(library::Refused::Item(code, said)) if token.create_sent => {
                forget()?;
                Err(DestinationError::permanent(format!(
                    "Google refused to make the media item again ({code}: {said}); the first request's answer \
                     was lost, so Google may hold it already: look in the album, and `photosync retry --failed` uploads it \
                     again"
                )))
            }
            // Refused right after the upload: Google will not take this file.
            Err(library::Refused::Item(code, said)) => {
                forget()?;
                Err(DestinationError::permanent(format!("Google Photos did not take the file ({code}: {said})")))
            }
            Err(library::Refused::Other(error)) => Err(error),
        }
    }

    async fn verify(&self, receipt: &Receipt, _deep: bool) -> Result<Verdict, DestinationError> {
        let cancel = CancellationToken::new();
        let id = String::from_utf8_lossy(&receipt.key.0).into_owned();
        let segment: String = percent_encoding::utf8_percent_encode(&id, percent_encoding::NON_ALPHANUMERIC).collect();
        let url = self.api(&format!("v1/mediaItems/{segment}"))?;
        let response = self.access.send(&cancel, || Ok(self.client.get()?.get(url.clone()))).await?;
        match response.status() {
            status if status.is_success() => Ok(Verdict::Holds),
            // An id Google does not know (or no longer lets this app see).
            StatusCode::NOT_FOUND => Ok(Verdict::Missing),
            _ => Err(self.refusal(response, "show a media item").await),
        }
    }

    async fn discard(
        &self,
        job: crate::model::JobId,
        _key: &RemoteKey,
        _hash: &crate::model::ContentHash,
    ) -> Result<(), DestinationError> {
        upload::cancel(self, job).await
    }

    fn reconnect(&self) {
        self.client.renew();
    }

    fn needs_info(&self) -> bool {
        // Photos and videos have different limits; albums may name a date.
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_google_takes() {
        assert_eq!(mime_type("IMG_0001.JPG"), Some("image/jpeg"));
        assert_eq!(mime_type("clip.MOV"), Some("video/quicktime"));
        assert_eq!(mime_type("IMG_0001.xmp"), None);
        assert_eq!(mime_type("noext"), None);
        assert_eq!(mime_type("pano.INSP"), Some("image/jpeg"));
        assert_eq!(album_title("  Trip\n2024 "), "Trip2024");
        assert_eq!(album_title(&"x".repeat(600)).len(), 500);
        let wait = until_pacific_midnight();
        assert!(wait >= std::time::Duration::from_mins(1) && wait <= std::time::Duration::from_hours(25), "{wait:?}");
    }
}

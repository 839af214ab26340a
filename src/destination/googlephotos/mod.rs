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
mod quota;
mod upload;

pub use config::{ClientSecret, GooglePhotosConfig};

use std::sync::Arc;

use async_trait::async_trait;
use reqwest::StatusCode;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::{Destination, DestinationError, ProgressFn, Quota, SessionStore, UploadRequest, Uploaded, Verdict, http};
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
    requests: quota::Requests,
    /// 429s in a row: each doubles the wait (Google asks for exponential
    /// backoff from 30 s).
    throttled: std::sync::atomic::AtomicU32,
    /// When the last 429 counted as one more in a row: those of one storm
    /// (uploads refused together) count once.
    last_throttle: std::sync::Mutex<Option<std::time::Instant>>,
}

impl GooglePhotosDestination {
    /// The destination of `config`; upload sessions are kept in `sessions`.
    pub fn new(config: &GooglePhotosConfig, sessions: Arc<dyn SessionStore>) -> Self {
        Self {
            access: Access::new(config.provider(), config.tokens.clone(), config.timeout),
            client: http::Client::without_redirects(config.timeout),
            config: config.clone(),
            requests: quota::Requests::new(Arc::clone(&sessions), &config.name, config.daily_quota),
            sessions,
            library: library::Library::new(config.batch_wait),
            throttled: std::sync::atomic::AtomicU32::new(0),
            last_throttle: std::sync::Mutex::new(None),
        }
    }

    /// A Library API address.
    fn api(&self, path: &str) -> Result<url::Url, DestinationError> {
        self.config.api_url.join(path).map_err(|e| DestinationError::permanent(format!("cannot make an address: {e}")))
    }

    /// Sends the request `build` makes (again with a fresh access token if
    /// the first is refused), counting each against the daily quota.
    async fn send(
        &self,
        cancel: &CancellationToken,
        build: impl Fn() -> Result<reqwest::RequestBuilder, DestinationError>,
    ) -> Result<reqwest::Response, DestinationError> {
        self.access
            .send(cancel, || {
                self.requests.sent();
                build()
            })
            .await
    }

    /// POSTs `body` as JSON to the Library API's `path`.
    async fn post_json(
        &self,
        cancel: &CancellationToken,
        path: &str,
        body: &Value,
    ) -> Result<reqwest::Response, DestinationError> {
        let (url, body) = (self.api(path)?, body.to_string());
        self.send(cancel, || {
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
            error.retry_after = Some(quota::until_pacific_midnight());
            return error;
        }
        let message = format!("Google Photos could not {what} ({status}{detail})");
        let mut error = match status {
            StatusCode::TOO_MANY_REQUESTS => {
                let row = {
                    let mut last = self.last_throttle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    let same_storm = last.is_some_and(|t| t.elapsed() < self.config.rate_limit_wait);
                    if same_storm {
                        self.throttled.load(std::sync::atomic::Ordering::Relaxed).saturating_sub(1)
                    } else {
                        *last = Some(std::time::Instant::now());
                        self.throttled.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                    }
                }
                .min(6);
                let floor = self.config.rate_limit_wait * 2u32.pow(row);
                return DestinationError::throttled(message, asked.unwrap_or_default().max(floor));
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

/// The MIME type the content's first bytes say, for the containers
/// whose type they settle (a HEIC named `.jpg` is sent as HEIC); `None`
/// leaves the extension's.
fn sniffed_mime(head: &[u8]) -> Option<&'static str> {
    let at = |offset: usize, magic: &[u8]| head.get(offset..offset + magic.len()) == Some(magic);
    let mime = match head {
        [0xFF, 0xD8, 0xFF, ..] => "image/jpeg",
        [0x89, b'P', b'N', b'G', ..] => "image/png",
        [b'G', b'I', b'F', b'8', ..] => "image/gif",
        [b'R', b'I', b'F', b'F', ..] if at(8, b"WEBP") => "image/webp",
        [b'R', b'I', b'F', b'F', ..] if at(8, b"AVI ") => "video/x-msvideo",
        [0x1A, 0x45, 0xDF, 0xA3, ..] => "video/x-matroska",
        _ if at(4, b"ftyp") => match head.get(8..12)? {
            b"heic" | b"heix" | b"heim" | b"heis" | b"hevc" | b"hevx" => "image/heic",
            b"mif1" | b"msf1" => "image/heif",
            b"avif" | b"avis" => "image/avif",
            b"qt  " => "video/quicktime",
            b"3gp4" | b"3gp5" | b"3gp6" | b"3ge6" | b"3gg6" => "video/3gpp",
            b"3g2a" | b"3g2b" | b"3g2c" => "video/3gpp2",
            b"crx " => return None,
            _ => "video/mp4",
        },
        _ => return None,
    };
    Some(mime)
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
        let response = self.send(&cancel, || Ok(self.client.get()?.get(url.clone()))).await?;
        if response.status().is_success() {
            return Ok(());
        }
        Err(self.refusal(response, "list the app's albums").await)
    }

    async fn upload(&self, request: UploadRequest, progress: ProgressFn) -> Result<Uploaded, DestinationError> {
        // A small file's upload is counted while it lasts: a batch of media
        // items waits a moment for its token. A big one's is not: it joins
        // the batch when its token is ready.
        let _uploading = (request.size <= self.config.chunk_size).then(|| self.library.uploading());
        let receipt = |id: String| Receipt {
            key: RemoteKey(id.into_bytes()),
            size: request.size,
            sha256: request.hash.clone(),
            version: Some(ACKNOWLEDGED.to_owned()),
        };
        let forget = || self.sessions.forget(request.job).map_err(super::session::store_error);
        if let Some(id) = upload::item(self, request.job)? {
            // Made before a crash or an interruption: nothing to ask.
            forget()?;
            return Ok(Uploaded::Stored(receipt(id)));
        }
        let name = file_name(&request);
        let named = mime_type(&name).ok_or_else(|| {
            DestinationError::permanent(format!("Google Photos does not take files of this type: {name}"))
        })?;
        let head = upload::head(&request).await?;
        let mime = sniffed_mime(&head).unwrap_or(named);
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
        match self.library.create(self, request.job, &token.value, &name, album.as_deref(), &request.cancel).await {
            Ok(id) => {
                self.throttled.store(0, std::sync::atomic::Ordering::Relaxed);
                forget()?;
                Ok(Uploaded::Stored(receipt(id)))
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

    async fn verify(&self, receipt: &Receipt, deep: bool) -> Result<Verdict, DestinationError> {
        let mut verdicts = self.verify_many(std::slice::from_ref(receipt), deep).await;
        verdicts.pop().unwrap_or_else(|| Err(DestinationError::transient("no verdict")))
    }

    fn verify_batch(&self) -> usize {
        library::BATCH
    }

    /// `mediaItems:batchGet`: up to 50 media items per request
    /// (<https://developers.google.com/photos/library/reference/rest/v1/mediaItems/batchGet>),
    /// each result in the order asked, a status of its own for one Google
    /// does not know (or no longer lets this app see).
    async fn verify_many(&self, receipts: &[Receipt], _deep: bool) -> Vec<Result<Verdict, DestinationError>> {
        let cancel = CancellationToken::new();
        let everyone = |error: &DestinationError| receipts.iter().map(|_| Err(error.clone())).collect();
        let mut url = match self.api("v1/mediaItems:batchGet") {
            Ok(url) => url,
            Err(error) => return everyone(&error),
        };
        for receipt in receipts {
            url.query_pairs_mut().append_pair("mediaItemIds", &String::from_utf8_lossy(&receipt.key.0));
        }
        let response = match self.send(&cancel, || Ok(self.client.get()?.get(url.clone()))).await {
            Ok(response) if response.status().is_success() => response,
            Ok(response) => {
                let error = self.refusal(response, "show media items").await;
                if error.retry == super::Retry::Permanent && receipts.len() > 1 {
                    // One id may spoil the request: each is asked about alone.
                    let mut verdicts = Vec::with_capacity(receipts.len());
                    for receipt in receipts {
                        verdicts.extend(self.verify_many(std::slice::from_ref(receipt), false).await);
                    }
                    return verdicts;
                }
                return everyone(&error);
            }
            Err(error) => return everyone(&error),
        };
        let answer = match library::json_of(&cancel, response, "show media items").await {
            Ok(answer) => answer,
            Err(error) => return everyone(&error),
        };
        let results = answer.get("mediaItemResults").and_then(Value::as_array).cloned().unwrap_or_default();
        receipts
            .iter()
            .enumerate()
            .map(|(index, receipt)| {
                let id = String::from_utf8_lossy(&receipt.key.0);
                let result = results
                    .get(index)
                    .ok_or_else(|| DestinationError::transient("Google answered without every media item asked for"))?;
                match (result.pointer("/mediaItem/id").and_then(Value::as_str), result.pointer("/status/code")) {
                    (Some(found), _) if found == id => Ok(Verdict::Holds),
                    (Some(_), _) => Err(DestinationError::transient("Google answered with another media item")),
                    // NOT_FOUND, or INVALID_ARGUMENT for an id it cannot read.
                    (None, Some(code)) if matches!(code.as_i64(), Some(5 | 3)) => Ok(Verdict::Missing),
                    (None, _) => Err(DestinationError::transient(format!(
                        "Google could not show the media item: {}",
                        result.pointer("/status/message").and_then(Value::as_str).unwrap_or("no reason given")
                    ))),
                }
            })
            .collect()
    }

    fn quota(&self) -> Option<Quota> {
        Some(self.requests.quota())
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
        assert_eq!(sniffed_mime(b"\0\0\0\x18ftypheic\0\0\0\0mif1heic"), Some("image/heic"), "a HEIC named .jpg");
        assert_eq!(sniffed_mime(b"\0\0\0\x14ftypqt  \0\0\0\0qt  "), Some("video/quicktime"));
        assert_eq!(sniffed_mime(b"\0\0\0\x18ftypisom\0\0\x02\0isomiso2"), Some("video/mp4"));
        assert_eq!(sniffed_mime(b"\xFF\xD8\xFF\xE1"), Some("image/jpeg"));
        assert_eq!(sniffed_mime(b"II*\0\x08\0\0\0"), None, "a TIFF-based raw keeps its extension's type");
        assert_eq!(album_title("  Trip\n2024 "), "Trip2024");
        assert_eq!(album_title(&"x".repeat(600)).len(), 500);
        let wait = quota::until_pacific_midnight();
        assert!(wait >= std::time::Duration::from_mins(1) && wait <= std::time::Duration::from_hours(25), "{wait:?}");
    }
}

//! `type = "onedrive"`: photos into OneDrive (personal, or work and school
//! through Microsoft Graph), signed in once with `photosync auth NAME`
//! (the device code flow, or a browser on this machine), every file sent
//! in an upload session that resumes after a crash.
//!
//! Every file is looked up first (`GET /me/drive/root:/PATH`): a free name
//! is written, the same content (QuickXorHash, computed from the scanned
//! bytes) is already present, anything else moves on to the next name from
//! [`key_candidates`]. The session is created with `conflictBehavior:
//! fail` and the file's modification time, so a file that appears between
//! the look-up and the last fragment is never replaced; fragments go to
//! the session's own URL without the access token, as Graph asks
//! (<https://learn.microsoft.com/graph/api/driveitem-createuploadsession>).
//! The last fragment commits the file, so the file's SHA-256 is compared
//! with the scanned one before it is sent; what Graph reports (size and
//! QuickXorHash) is compared with what was read before a receipt is given.

mod api;
mod config;
pub mod quickxor;
mod session;

pub use config::OneDriveConfig;

use std::fmt::Write as _;
use std::sync::Arc;

use async_trait::async_trait;
use reqwest::StatusCode;
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use tokio_util::sync::CancellationToken;

use self::quickxor::QuickXor;
use super::{
    Destination, DestinationError, JobId, ProgressFn, SessionStore, UploadRequest, Uploaded, Verdict, http,
    key_candidates, object_key,
};
use crate::model::{ContentHash, Receipt, RemoteKey};
use crate::oauth::Access;

/// OneDrive.
pub struct OneDriveDestination {
    config: OneDriveConfig,
    client: http::Client,
    access: Access,
    sessions: Arc<dyn SessionStore>,
}

/// What Graph says is at a path.
struct Item {
    size: Option<u64>,
    /// QuickXorHash, for a file.
    quick_xor: Option<[u8; 20]>,
    is_file: bool,
}

impl Item {
    fn from(value: &Value) -> Item {
        Item {
            size: value.get("size").and_then(Value::as_u64),
            quick_xor: value.pointer("/file/hashes/quickXorHash").and_then(Value::as_str).and_then(quickxor::decode),
            is_file: value.get("file").is_some(),
        }
    }
}

/// Both hashes of the bytes read so far: the SHA-256 (photosync's
/// identity of the file) and OneDrive's QuickXorHash.
#[derive(Clone, Default)]
struct Hashers {
    sha: Sha256,
    quick_xor: QuickXor,
}

impl Hashers {
    fn update(&mut self, bytes: &[u8]) {
        self.sha.update(bytes);
        self.quick_xor.update(bytes);
    }

    fn sha256(&self) -> ContentHash {
        ContentHash::from_digest(&self.sha.clone().finalize())
    }
}

/// Where a write at one name ended.
enum Placed {
    Done(Uploaded),
    /// Other content holds the name.
    Taken,
}

/// Names OneDrive refuses (<https://support.microsoft.com/office/64883a5d-228e-48f5-b3d2-eb39e07630fa>).
fn refused_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    let stem = lower.split('.').next().unwrap_or_default();
    let device = matches!(stem, "con" | "prn" | "aux" | "nul")
        || ((stem.starts_with("com") || stem.starts_with("lpt"))
            && stem.len() == 4
            && stem.as_bytes()[3].is_ascii_digit());
    device || lower == ".lock" || lower == "desktop.ini" || lower.starts_with("~$") || lower.contains("_vti_")
}

/// A path's segment as OneDrive takes it: the characters it refuses
/// (`" * : < > ? \ |`), a leading or trailing space, a trailing dot and a
/// leading `~`, escaped as `%XX` (a `%` itself is escaped already).
fn safe_segment(segment: &str) -> String {
    let count = segment.chars().count();
    let mut out = String::with_capacity(segment.len());
    for (i, c) in segment.chars().enumerate() {
        let edge_space = c == ' ' && (i == 0 || i + 1 == count);
        let trailing_dot = c == '.' && i + 1 == count;
        // Work and school drives also refuse a name that begins with `~`.
        let leading_tilde = c == '~' && i == 0;
        if "\"*:<>?\\|".contains(c) || edge_space || trailing_dot || leading_tilde {
            let _ = write!(out, "%{:02X}", c as u32);
        } else {
            out.push(c);
        }
    }
    out
}

impl OneDriveDestination {
    /// The destination of `config`; upload sessions are kept in `sessions`.
    pub fn new(config: &OneDriveConfig, sessions: Arc<dyn SessionStore>) -> Self {
        Self {
            access: Access::new(config.provider(), config.tokens.clone(), config.timeout),
            client: http::Client::without_redirects(config.timeout),
            config: config.clone(),
            sessions,
        }
    }

    /// The OneDrive path of a layout key (below the drive's root or the
    /// app's folder).
    fn path_of(&self, key: &RemoteKey) -> String {
        let path = object_key(&self.config.folder, key);
        path.split('/').map(safe_segment).collect::<Vec<_>>().join("/")
    }

    /// The OneDrive paths to try for `request`, in order.
    fn candidates(&self, request: &UploadRequest) -> Vec<String> {
        key_candidates(&request.key, &request.hash).iter().map(|k| self.path_of(k)).collect()
    }

    /// The Graph URL of the item at `path`, with `suffix` (`:/content`…).
    fn item_url(&self, path: &str, suffix: &str) -> Result<url::Url, DestinationError> {
        const SEGMENT: &percent_encoding::AsciiSet =
            &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');
        let root = if self.config.app_folder { "me/drive/special/approot:" } else { "me/drive/root:" };
        let mut text = format!("{}{root}", self.config.graph_url);
        for segment in path.split('/').filter(|s| !s.is_empty()) {
            text.push('/');
            text.extend(percent_encoding::utf8_percent_encode(segment, SEGMENT));
        }
        text.push_str(suffix);
        url::Url::parse(&text).map_err(|e| DestinationError::permanent(format!("cannot make a Graph URL: {e}")))
    }

    /// What is at `path`, if anything.
    async fn item(&self, cancel: &CancellationToken, path: &str) -> Result<Option<Item>, DestinationError> {
        let url = self.item_url(path, "")?;
        let response = api::send(&self.access, cancel, || Ok(self.client.get()?.get(url.clone()))).await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let (_, value) = api::json(cancel, response, "look a file up").await?;
        Ok(Some(Item::from(&value)))
    }

    /// Whether `there` (what Graph describes at `path`) holds the bytes
    /// read, whose QuickXorHash is `ours`: by size and QuickXorHash, or,
    /// where Graph gives no hash (it sometimes leaves it out on work and
    /// school drives), by reading the file back.
    async fn holds(
        &self,
        cancel: &CancellationToken,
        path: &str,
        there: &Item,
        request: &UploadRequest,
        ours: &QuickXor,
    ) -> Result<bool, DestinationError> {
        if !there.is_file || there.size != Some(request.size) {
            return Ok(false);
        }
        match there.quick_xor {
            Some(theirs) => Ok(theirs == ours.digest()),
            None => Ok(self.read_back(cancel, path).await? == Some(request.hash.clone())),
        }
    }

    /// The SHA-256 of the file at `path`, downloaded; `None` when none is there.
    async fn read_back(&self, cancel: &CancellationToken, path: &str) -> Result<Option<ContentHash>, DestinationError> {
        let url = self.item_url(path, ":/content")?;
        let response = api::send(&self.access, cancel, || Ok(self.client.get()?.get(url.clone()))).await?;
        // Graph answers with a redirect to a download address that needs
        // no token (and must not get it).
        let response = if response.status().is_redirection() {
            // A location may be relative to the address asked (RFC 9110 §10.2.2).
            let location = http::header(response.headers(), "location")
                .and_then(|l| url.join(&l).ok())
                .ok_or_else(|| DestinationError::transient("OneDrive sent a redirect without a usable location"))?;
            http::send_for(cancel, self.client.get()?.get(location)).await?
        } else {
            response
        };
        match response.status() {
            StatusCode::NOT_FOUND => Ok(None),
            status if !status.is_success() => {
                let headers = response.headers().clone();
                let body = http::text(cancel, response).await.unwrap_or_default();
                Err(api::refusal(status, &headers, &body, "send a file back"))
            }
            _ => http::body_sha256(cancel, response).await.map(Some),
        }
    }

    /// The receipt for the bytes read (QuickXorHash `ours`) at `path`.
    fn receipt(path: &str, request: &UploadRequest, ours: &QuickXor) -> Receipt {
        Receipt {
            key: RemoteKey(path.as_bytes().to_vec()),
            size: request.size,
            sha256: request.hash.clone(),
            version: Some(format!("quickxor:{}", ours.base64())),
        }
    }
}

#[async_trait]
impl Destination for OneDriveDestination {
    async fn check(&self) -> Result<(), DestinationError> {
        let cancel = CancellationToken::new();
        let root = if self.config.app_folder { "me/drive/special/approot" } else { "me/drive/root" };
        let url = self.config.graph_url.join(root).map_err(|e| DestinationError::permanent(e.to_string()))?;
        let response = api::send(&self.access, &cancel, || Ok(self.client.get()?.get(url.clone()))).await?;
        api::json(&cancel, response, "show the drive").await.map(|_| ())
    }

    async fn upload(&self, request: UploadRequest, progress: ProgressFn) -> Result<Uploaded, DestinationError> {
        let name =
            String::from_utf8_lossy(request.key.0.rsplit(|&b| b == b'/').next().unwrap_or_default()).into_owned();
        if refused_name(&name) {
            return Err(DestinationError::permanent(format!("OneDrive does not store files named {name}")));
        }
        if request.size == 0 {
            return Err(DestinationError::permanent("an empty file is not sent to OneDrive"));
        }
        if let Some(uploaded) = session::resume(self, &request, &progress).await? {
            return Ok(uploaded);
        }
        for path in self.candidates(&request) {
            match self.item(&request.cancel, &path).await? {
                None => match session::upload(self, &request, &path, &progress).await? {
                    Placed::Done(uploaded) => return Ok(uploaded),
                    // Someone wrote there meanwhile: if it is this photo
                    // (an upload whose answer was lost), it is in place.
                    Placed::Taken => {
                        if let Some(there) = self.item(&request.cancel, &path).await?
                            && there.is_file
                            && there.size == Some(request.size)
                        {
                            let hashers = session::read_all(&request).await?;
                            if self.holds(&request.cancel, &path, &there, &request, &hashers.quick_xor).await? {
                                return Ok(Uploaded::AlreadyPresent(Self::receipt(
                                    &path,
                                    &request,
                                    &hashers.quick_xor,
                                )));
                            }
                        }
                    }
                },
                Some(there) if there.is_file && there.size == Some(request.size) => {
                    let hashers = session::read_all(&request).await?;
                    if self.holds(&request.cancel, &path, &there, &request, &hashers.quick_xor).await? {
                        return Ok(Uploaded::AlreadyPresent(Self::receipt(&path, &request, &hashers.quick_xor)));
                    }
                }
                Some(_) => {}
            }
        }
        Err(DestinationError::permanent(format!(
            "every name tried for {} in OneDrive holds other content",
            request.source.display()
        )))
    }

    async fn verify(&self, receipt: &Receipt, deep: bool) -> Result<Verdict, DestinationError> {
        let cancel = CancellationToken::new();
        let path = String::from_utf8_lossy(&receipt.key.0).into_owned();
        let Some(there) = self.item(&cancel, &path).await? else { return Ok(Verdict::Missing) };
        if !there.is_file {
            return Ok(Verdict::Differs("a folder is there".into()));
        }
        if there.size != Some(receipt.size) {
            return Ok(Verdict::Differs(format!("{:?} bytes instead of {}", there.size, receipt.size)));
        }
        let recorded = receipt.version.as_deref().and_then(|v| v.strip_prefix("quickxor:")).and_then(quickxor::decode);
        if let (Some(recorded), Some(theirs)) = (recorded, there.quick_xor)
            && recorded != theirs
        {
            return Ok(Verdict::Differs("its QuickXorHash differs".into()));
        }
        if deep || there.quick_xor.is_none() {
            match self.read_back(&cancel, &path).await? {
                None => return Ok(Verdict::Missing),
                Some(sha) if sha != receipt.sha256 => {
                    return Ok(Verdict::Differs("its bytes differ from the ones backed up".into()));
                }
                Some(_) => {}
            }
        }
        Ok(Verdict::Holds)
    }

    async fn discard(&self, job: JobId, _key: &RemoteKey, _hash: &ContentHash) -> Result<(), DestinationError> {
        session::cancel(self, job).await
    }

    fn reconnect(&self) {
        self.client.renew();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_onedrive_refuses_are_told_and_characters_escaped() {
        for name in ["CON", "con.jpg", "LPT1.png", ".lock", "desktop.ini", "~$draft.jpg", "a_vti_b.jpg"] {
            assert!(refused_name(name), "{name}");
        }
        for name in ["IMG_0001.JPG", "console.jpg", "COM.jpg", "lpt.png"] {
            assert!(!refused_name(name), "{name}");
        }
        assert_eq!(safe_segment("a:b*c?.jpg"), "a%3Ab%2Ac%3F.jpg");
        assert_eq!(safe_segment(" edge ."), "%20edge %2E");
        assert_eq!(safe_segment("~tilde~.jpg"), "%7Etilde~.jpg");
    }
}

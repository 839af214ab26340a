//! `type = "dropbox"`: photos into a Dropbox folder, signed in once with
//! `photosync auth NAME` (an authorization code with PKCE, pasted: no
//! client secret), big videos through upload sessions that resume after a
//! crash.
//!
//! Every file is looked up first (`files/get_metadata`): a free name is
//! written, the same content (Dropbox's content hash, computed from the
//! scanned bytes) is already present, anything else moves on to the next
//! name from [`key_candidates`]. Writes use `mode: add` without
//! autorename, so even a file that appears between the look-up and the
//! write is never overwritten. Files up to `chunk_size` go in one request
//! (`files/upload`); larger ones in an upload session (the `session` module). Every
//! request that carries bytes carries their content hash, so Dropbox
//! refuses bytes damaged on the way, and the file's own hash is compared
//! with what Dropbox reports before a receipt is given. Sessions are
//! finished one at a time, as Dropbox asks (`too_many_write_operations`
//! otherwise); a small upload that meets that answer waits as told.

mod api;
mod config;
pub mod content_hash;
mod session;

pub use config::DropboxConfig;

use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tokio_util::sync::CancellationToken;

use self::api::{Answer, header_json};
use self::content_hash::ContentHasher;
use super::{
    Destination, DestinationError, JobId, ProgressFn, SessionStore, UploadRequest, Uploaded, Verdict, http,
    key_candidates, object_key,
};
use crate::destination::source;
use crate::model::{ContentHash, Receipt, RemoteKey};
use crate::oauth::Access;

/// Names Dropbox does not store (its help centre: "ignored files").
const REFUSED_NAMES: &[&str] = &["desktop.ini", "thumbs.db", ".ds_store", "icon\r", ".dropbox", ".dropbox.attr"];

/// A Dropbox folder.
pub struct DropboxDestination {
    config: DropboxConfig,
    client: http::Client,
    access: Access,
    sessions: Arc<dyn SessionStore>,
    /// One session finish at a time.
    commits: tokio::sync::Mutex<()>,
}

/// What `files/get_metadata` and the commits answer (`FileMetadata`).
#[derive(Debug, Deserialize)]
struct Metadata {
    #[serde(rename = ".tag", default)]
    tag: Option<String>,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    content_hash: Option<String>,
}

impl Metadata {
    fn is_file(&self) -> bool {
        self.tag.as_deref().is_none_or(|t| t == "file")
    }
}

/// Both hashes of the bytes read so far: the file's SHA-256 (photosync's
/// identity of it) and Dropbox's content hash.
#[derive(Clone, Default)]
struct Hashers {
    sha: Sha256,
    content: ContentHasher,
}

impl Hashers {
    fn update(&mut self, bytes: &[u8]) {
        self.sha.update(bytes);
        self.content.update(bytes);
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

impl DropboxDestination {
    /// The destination of `config`; upload sessions are kept in `sessions`.
    pub fn new(config: &DropboxConfig, sessions: Arc<dyn SessionStore>) -> Self {
        Self {
            access: Access::new(config.provider(), config.tokens.clone(), config.timeout),
            client: http::Client::without_redirects(config.timeout),
            config: config.clone(),
            sessions,
            commits: tokio::sync::Mutex::new(()),
        }
    }

    /// The Dropbox path of a layout key: a backslash, and a space that
    /// ends a name, escaped as `%XX` (Dropbox refuses both).
    fn path_of(&self, key: &RemoteKey) -> String {
        let path = object_key(&self.config.folder, key);
        path.split('/').map(safe_segment).collect::<Vec<_>>().join("/")
    }

    /// The Dropbox paths to try for `request`, in order.
    fn candidates(&self, request: &UploadRequest) -> Vec<String> {
        key_candidates(&request.key, &request.hash).iter().map(|k| self.path_of(k)).collect()
    }

    /// Calls an RPC route with a JSON argument.
    async fn rpc(
        &self,
        cancel: &CancellationToken,
        route: &str,
        arg: &Value,
        what: &str,
    ) -> Result<Answer<Value>, DestinationError> {
        let url = self.config.api_url.join(route).map_err(|e| DestinationError::permanent(e.to_string()))?;
        let body = arg.to_string();
        let answer = api::send(&self.access, cancel, what, |_| {
            Ok(self
                .client
                .get()?
                .post(url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone()))
        })
        .await?;
        match answer {
            Ok(response) => api::json(cancel, response, what).await.map(Ok),
            Err(refusal) => Ok(Err(refusal)),
        }
    }

    /// Calls a content route: `arg` in the header, `body` made afresh for
    /// each try.
    async fn content(
        &self,
        request: &UploadRequest,
        route: &str,
        arg: &Value,
        what: &str,
        body: impl Fn() -> reqwest::Body,
    ) -> Result<Answer<Value>, DestinationError> {
        let url = self.config.content_url.join(route).map_err(|e| DestinationError::permanent(e.to_string()))?;
        let arg = header_json(arg);
        let answer = api::send(&self.access, &request.cancel, what, |_| {
            Ok(self
                .client
                .get()?
                .post(url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .header("Dropbox-API-Arg", arg.clone())
                .body(body()))
        })
        .await
        .map_err(|e| if request.cancelled() { DestinationError::interrupted() } else { e })?;
        match answer {
            Ok(response) => api::json(&request.cancel, response, what).await.map(Ok),
            Err(refusal) => Ok(Err(refusal)),
        }
    }

    /// What is at `path`, if anything.
    async fn metadata(&self, cancel: &CancellationToken, path: &str) -> Result<Option<Metadata>, DestinationError> {
        match self.rpc(cancel, "2/files/get_metadata", &json!({"path": path}), "look a file up").await? {
            Ok(value) => serde_json::from_value(value).map(Some).map_err(|e| {
                DestinationError::transient(format!("Dropbox described a file in a way photosync cannot read: {e}"))
            }),
            Err(refusal) if refusal.is("path/not_found") => Ok(None),
            Err(refusal) => Err(refusal.into_error("look a file up", true)),
        }
    }

    /// What a commit at `path` says about the file.
    fn commit_info(path: &str, request: &UploadRequest) -> Value {
        json!({
            "path": path,
            "mode": "add",
            "autorename": false,
            "client_modified": source::utc_seconds(request.modified),
            "mute": true,
            "strict_conflict": false,
        })
    }

    /// The receipt for `path` once Dropbox reported `metadata` for the
    /// content whose hashes are `hashers`: only if they agree.
    fn receipt(path: &str, request: &UploadRequest, metadata: &Value, ours: &str) -> Result<Receipt, DestinationError> {
        let reported = metadata.get("content_hash").and_then(Value::as_str).unwrap_or_default();
        let size = metadata.get("size").and_then(Value::as_u64);
        if reported != ours || size != Some(request.size) {
            return Err(DestinationError::transient(format!(
                "Dropbox stored {} with another content hash or size than was sent ({size:?} bytes): sending it again",
                request.source.display()
            )));
        }
        Ok(Receipt {
            key: RemoteKey(path.as_bytes().to_vec()),
            size: request.size,
            sha256: request.hash.clone(),
            version: Some(ours.to_owned()),
        })
    }

    /// Reads the whole file (a small one) and checks it is the scanned version.
    async fn read_whole(request: &UploadRequest) -> Result<(bytes::Bytes, Hashers), DestinationError> {
        let file = source::open(request)?;
        let bytes = source::read_at(request, &file, 0, request.size).await?;
        let mut hashers = Hashers::default();
        hashers.update(&bytes);
        if hashers.sha256() != request.hash {
            return Err(source::changed(request));
        }
        Ok((bytes, hashers))
    }

    /// Dropbox's content hash of the file, checking it is the scanned version.
    async fn local_content_hash(request: &UploadRequest) -> Result<String, DestinationError> {
        let file = source::open(request)?;
        let hashers = source::read_into(request, &file, 0, request.size, Hashers::default(), Hashers::update).await?;
        if hashers.sha256() != request.hash {
            return Err(source::changed(request));
        }
        Ok(hashers.content.hex())
    }

    /// Writes a small file at `path` in one request.
    async fn upload_small(
        &self,
        request: &UploadRequest,
        path: &str,
        progress: &ProgressFn,
    ) -> Result<Placed, DestinationError> {
        let (bytes, hashers) = Self::read_whole(request).await?;
        let ours = hashers.content.hex();
        let mut arg = Self::commit_info(path, request);
        arg["content_hash"] = json!(ours);
        let body = || http::bytes_body(&bytes, request, progress);
        match self.content(request, "2/files/upload", &arg, "store a file", body).await? {
            Ok(metadata) => Self::receipt(path, request, &metadata, &ours).map(|r| Placed::Done(Uploaded::Stored(r))),
            Err(refusal) if refusal.is("path/conflict") => Ok(Placed::Taken),
            Err(refusal) => Err(classify_write(refusal, "store a file")),
        }
    }
}

/// A refusal of a write: a full account may pass, damaged bytes are sent
/// again, anything else (a refused name, a malformed path) will not pass.
fn classify_write(refusal: api::Refusal, what: &str) -> DestinationError {
    if refusal.summary.contains("insufficient_space") {
        // Every upload would fail alike until the user makes room.
        return DestinationError::held("the Dropbox account is full: make room, or move to a larger plan");
    }
    let transient = refusal.is("content_hash_mismatch") || refusal.summary.contains("too_many_write_operations");
    refusal.into_error(what, !transient)
}
/// A path segment Dropbox takes (see [`DropboxDestination::path_of`]).
fn safe_segment(segment: &str) -> String {
    let trimmed = segment.trim_end_matches(' ');
    let mut out = trimmed.replace('\\', "%5C");
    for _ in 0..segment.len() - trimmed.len() {
        out.push_str("%20");
    }
    out
}

#[async_trait]
impl Destination for DropboxDestination {
    async fn check(&self) -> Result<(), DestinationError> {
        let cancel = CancellationToken::new();
        // `users/get_current_account` takes no argument: its body is `null`.
        match self.rpc(&cancel, "2/users/get_current_account", &Value::Null, "describe the account").await? {
            Ok(_) => Ok(()),
            Err(refusal) => Err(refusal.into_error("describe the account", false)),
        }
    }

    async fn upload(&self, request: UploadRequest, progress: ProgressFn) -> Result<Uploaded, DestinationError> {
        let name = request.key.0.rsplit(|&b| b == b'/').next().unwrap_or_default().to_ascii_lowercase();
        if REFUSED_NAMES.iter().any(|refused| refused.as_bytes() == name) {
            return Err(DestinationError::permanent(format!(
                "Dropbox does not store files named {}",
                String::from_utf8_lossy(&name)
            )));
        }
        if let Some(uploaded) = session::resume(self, &request, &progress).await? {
            return Ok(uploaded);
        }
        let candidates = self.candidates(&request);
        for (index, path) in candidates.iter().enumerate() {
            match self.metadata(&request.cancel, path).await? {
                None if request.size > self.config.chunk_size => {
                    return session::upload(self, &request, &candidates[index..], &progress).await;
                }
                None => match self.upload_small(&request, path, &progress).await? {
                    Placed::Done(uploaded) => return Ok(uploaded),
                    Placed::Taken => {}
                },
                Some(there) if there.is_file() && there.size == Some(request.size) => {
                    let ours = Self::local_content_hash(&request).await?;
                    if there.content_hash.as_deref() == Some(ours.as_str()) {
                        let receipt = Receipt {
                            key: RemoteKey(path.as_bytes().to_vec()),
                            size: request.size,
                            sha256: request.hash.clone(),
                            version: Some(ours),
                        };
                        return Ok(Uploaded::AlreadyPresent(receipt));
                    }
                }
                Some(_) => {}
            }
        }
        Err(DestinationError::permanent(format!(
            "every name tried for {} in Dropbox holds other content",
            request.source.display()
        )))
    }

    async fn verify(&self, receipt: &Receipt, deep: bool) -> Result<Verdict, DestinationError> {
        let cancel = CancellationToken::new();
        let path = String::from_utf8_lossy(&receipt.key.0).into_owned();
        let Some(there) = self.metadata(&cancel, &path).await? else { return Ok(Verdict::Missing) };
        if !there.is_file() {
            return Ok(Verdict::Differs("a folder is there".into()));
        }
        if there.size != Some(receipt.size) {
            return Ok(Verdict::Differs(format!("{:?} bytes instead of {}", there.size, receipt.size)));
        }
        if receipt.version.is_some() && there.content_hash != receipt.version {
            return Ok(Verdict::Differs("its Dropbox content hash differs".into()));
        }
        if deep {
            let url = self
                .config
                .content_url
                .join("2/files/download")
                .map_err(|e| DestinationError::permanent(e.to_string()))?;
            let arg = header_json(&json!({"path": path}));
            let answer = api::send(&self.access, &cancel, "send a file back", |_| {
                Ok(self.client.get()?.post(url.clone()).header("Dropbox-API-Arg", arg.clone()))
            })
            .await?;
            let response = match answer {
                Ok(response) => response,
                Err(refusal) if refusal.is("path/not_found") => return Ok(Verdict::Missing),
                Err(refusal) => return Err(refusal.into_error("send a file back", false)),
            };
            if http::body_sha256(&cancel, response).await? != receipt.sha256 {
                return Ok(Verdict::Differs("its bytes differ from the ones backed up".into()));
            }
        }
        Ok(Verdict::Holds)
    }

    async fn discard(&self, job: JobId, _key: &RemoteKey, _hash: &ContentHash) -> Result<(), DestinationError> {
        // Dropbox drops an unfinished session by itself after a week.
        self.sessions.forget(job).map_err(super::session::store_error)
    }

    fn reconnect(&self) {
        self.client.renew();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_dropbox_refuses_are_escaped() {
        assert_eq!(safe_segment(r"a\b  "), "a%5Cb%20%20");
        assert_eq!(safe_segment("IMG 1.jpg"), "IMG 1.jpg");
    }
}

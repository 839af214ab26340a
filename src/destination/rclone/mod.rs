//! The rclone destination: any remote of the user's rclone config (Google
//! Photos, Dropbox, OneDrive, and the seventy more rclone knows), reached
//! through an `rclone rcd` child photosync starts and owns (its `rcd` module).
//!
//! An upload looks at the target first (`operations/stat`): the same size
//! and hash is this file already; other content moves the photo to the next
//! name. Otherwise rclone copies it (`operations/copyfile`, asynchronously,
//! in a stats group of its own, with `IgnoreExisting`, so a file that
//! appeared meanwhile is never replaced), photosync following its progress
//! and passing on its bandwidth limit, and stopping it (`job/stop`) on pause
//! or shutdown. Then the target is looked at again: the size, and the
//! strongest hash the remote offers that photosync computes itself
//! (SHA-256, Dropbox's content hash, SHA-1, MD5, OneDrive's QuickXorHash:
//! its `hashes` module), must be those of the scanned file. Remotes with no
//! hash (plain WebDAV) are checked by size, and the receipt says
//! `size-only`; Google Photos tells no size either (rclone docs, "Google
//! Photos": "Size"), and its receipts say `exists-only`. A file already
//! there is taken for the photo only when its bytes, read back, are the
//! photo's. rclone cannot resume a file cut short by a restart: the next
//! attempt sends it again.

mod config;

mod rcd;

pub use config::RcloneConfig;
pub use rcd::{MINIMUM, Version};

use std::path::Path;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use self::rcd::{Rcd, classify};
use super::hashes::{HashKind, hash_file};
use super::throttle::Throttle;
use super::{
    Destination, DestinationError, Moved, ProgressFn, UploadRequest, Uploaded, Verdict, key_candidates, object_key,
};
use crate::model::{Receipt, RemoteKey};

/// The oldest rclone that can still upload to Google Photos (Google's
/// 2025 change of scopes).
pub const GOOGLE_PHOTOS_MINIMUM: Version = Version(1, 70, 0);

/// The first rclone with `operations/hashsumfile` (reading a file back).
const HASHSUMFILE: Version = Version(1, 73, 0);

/// How soon a running copy is first looked at, and how seldom at most:
/// rclone tells nothing when a job ends, so it is asked, at first soon (a
/// photo is copied in milliseconds), then every `POLL` (a video takes
/// minutes).
const FIRST_POLL: Duration = Duration::from_millis(5);
const POLL: Duration = Duration::from_millis(200);

/// What `operations/stat` found at a key.
struct Item {
    /// `None` when the remote does not say.
    size: Option<u64>,
    hash: Option<String>,
}

/// An rclone remote.
pub struct RcloneDestination {
    config: RcloneConfig,
    rcd: Rcd,
    /// The remote, once checked (`fs()`).
    fs: tokio::sync::OnceCell<String>,
    /// The hash checked at this remote (`None`: it offers none photosync computes).
    hash: tokio::sync::OnceCell<Option<HashKind>>,
    /// The bandwidth limit last given to rclone (`None`: none given yet).
    bwlimit: Mutex<Option<String>>,
}

impl RcloneDestination {
    /// The destination; rclone starts on first use, its socket in
    /// photosync's `runtime_dir`.
    pub fn new(config: &RcloneConfig, runtime_dir: &Path) -> RcloneDestination {
        RcloneDestination {
            config: config.clone(),
            rcd: Rcd::new(config, runtime_dir),
            fs: tokio::sync::OnceCell::new(),
            hash: tokio::sync::OnceCell::new(),
            bwlimit: Mutex::new(None),
        }
    }

    /// The remote, once it is known that this rclone can reach it: a Google
    /// Photos remote needs rclone 1.70.
    async fn fs(&self) -> Result<&str, DestinationError> {
        self.fs
            .get_or_try_init(|| async {
                let never = CancellationToken::new();
                let section = self.rcd.call(&never, "config/get", json!({"name": self.config.remote_name()})).await?;
                if section["type"].as_str() != Some("google photos") {
                    return Ok(self.config.remote.clone());
                }
                let version = self.rcd.version().await?;
                if version < GOOGLE_PHOTOS_MINIMUM {
                    return Err(DestinationError::permanent(format!(
                        "rclone {version} (`{}`) can no longer upload to Google Photos: it needs rclone \
                         {GOOGLE_PHOTOS_MINIMUM} or later (Google changed its access rules in 2025)",
                        self.config.program.display()
                    )));
                }
                Ok(self.config.remote.clone())
            })
            .await
            .map(String::as_str)
    }

    /// The hash to check, from what the remote offers (`operations/fsinfo`).
    async fn hash_kind(&self) -> Result<Option<HashKind>, DestinationError> {
        self.hash
            .get_or_try_init(|| async {
                let fs = self.fs().await?;
                let info = self.rcd.call(&CancellationToken::new(), "operations/fsinfo", json!({"fs": fs})).await?;
                let offered: Vec<&str> =
                    info["Hashes"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                Ok(HashKind::PREFERRED.into_iter().find(|k| offered.contains(&k.name())))
            })
            .await
            .copied()
    }

    /// What is at `remote`, with its `kind` hash; `None` when nothing is.
    async fn stat(
        &self,
        cancel: &CancellationToken,
        remote: &str,
        kind: Option<HashKind>,
    ) -> Result<Option<Item>, DestinationError> {
        let mut input = json!({"fs": self.fs().await?, "remote": remote});
        if let Some(kind) = kind {
            input["opt"] = json!({"showHash": true, "hashTypes": [kind.name()]});
        }
        let answer = self.rcd.call(cancel, "operations/stat", input).await?;
        let item = &answer["item"];
        if item.is_null() {
            return Ok(None);
        }
        if item["IsDir"].as_bool() == Some(true) {
            // A folder: no photo's size.
            return Ok(Some(Item { size: Some(u64::MAX), hash: None }));
        }
        // rclone says -1 for a size it does not know.
        let size = item["Size"].as_i64().and_then(|s| u64::try_from(s).ok());
        let hash =
            kind.and_then(|k| item["Hashes"][k.name()].as_str()).filter(|h| !h.is_empty()).map(str::to_lowercase);
        Ok(Some(Item { size, hash }))
    }

    /// How `item`, found at `remote`, is known to be the scanned file (the
    /// receipt's version), or `None` when it is other content. Its size
    /// must match, and its hash where the remote keeps one for it (the local
    /// file is hashed once, and must still be the scanned version). Without
    /// a hash, a file rclone has `just_copied` is taken on its size; one
    /// found there before is the photo only if its bytes, read back, are.
    async fn proof(
        &self,
        request: &UploadRequest,
        remote: &str,
        item: &Item,
        kind: Option<HashKind>,
        local: &mut Option<String>,
        just_copied: bool,
    ) -> Result<Option<String>, DestinationError> {
        if item.size.is_some_and(|size| size != request.size) {
            return Ok(None);
        }
        // A remote with hashes may still keep none for a file (S3 objects
        // another tool uploaded in parts): that file is checked as on a
        // remote without hashes.
        if let (Some(kind), Some(there)) = (kind, item.hash.as_deref()) {
            if local.is_none() {
                // A SHA-256 is compared with the scanned one: the local
                // file need not be read again.
                *local = Some(if kind == HashKind::Sha256 {
                    request.hash.as_hex().to_owned()
                } else {
                    local_hash(request, kind).await?
                });
            }
            return Ok(match local.as_deref() {
                Some(here) if there == here => Some(format!("{}:{here}", kind.name())),
                _ => None,
            });
        }
        if just_copied {
            // rclone read the file while it was the scanned version (it
            // still is) and stored as many bytes.
            local_hash(request, HashKind::Sha256).await?;
            // A remote that tells no size either (Google Photos) shows only
            // that the file is there.
            return Ok(Some(if item.size.is_some() { "size-only" } else { "exists-only" }.to_owned()));
        }
        if self.rcd.version().await? < HASHSUMFILE {
            return Ok(None);
        }
        let read_back = self.read_back_sha256(&request.cancel, remote).await?;
        let sha256 = request.hash.as_hex();
        Ok((read_back == sha256).then(|| format!("sha256:{sha256}")))
    }

    /// The SHA-256 of what is at `remote`, which rclone downloads to hash.
    async fn read_back_sha256(&self, cancel: &CancellationToken, remote: &str) -> Result<String, DestinationError> {
        let input = json!({"fs": self.fs().await?, "remote": remote, "hashType": "sha256", "download": true});
        let answer = self.rcd.call(cancel, "operations/hashsumfile", input).await?;
        Ok(answer["hash"].as_str().unwrap_or_default().to_lowercase())
    }

    /// Has rclone copy the file to `remote`, following it until it ends.
    async fn copy(&self, request: &UploadRequest, remote: &str, progress: &ProgressFn) -> Result<(), DestinationError> {
        let (folder, name) = source_parts(&request.source)?;
        self.pass_on_bwlimit(&request.throttle).await?;
        let group = format!("photosync/job-{}", request.job);
        let input = json!({
            "srcFs": folder, "srcRemote": name,
            "dstFs": self.fs().await?, "dstRemote": remote,
            "_config": {"IgnoreExisting": true},
            "_async": true, "_group": group,
        });
        let started = self.rcd.call(&request.cancel, "operations/copyfile", input).await?;
        let job = started["jobid"]
            .as_u64()
            .ok_or_else(|| DestinationError::transient("rclone started no job for the copy"))?;
        let never = CancellationToken::new();
        // Every byte rclone sends counts (a data budget is charged for
        // resends too): rises of its counter are passed on, and after a
        // drop (a retry within rclone) counting goes on from the new value.
        let (mut reported, mut counter) = (0u64, 0u64);
        let mut wait = FIRST_POLL;
        loop {
            tokio::select! {
                () = request.cancel.cancelled() => {
                    self.stop(job).await;
                    return Err(DestinationError::interrupted());
                }
                () = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(POLL);
            let state = self.rcd.call(&never, "job/status", json!({"jobid": job})).await?;
            if state["finished"].as_bool() == Some(true) {
                let _ = self.rcd.call(&never, "core/stats-delete", json!({"group": group})).await;
                if state["success"].as_bool() == Some(true) {
                    progress(Moved::Sent(request.size.saturating_sub(reported)));
                    return Ok(());
                }
                let error = state["error"].as_str().unwrap_or("the copy failed");
                return Err(classify(&format!("rclone: {error}")));
            }
            let counters = self.rcd.call(&never, "core/stats", json!({"group": group})).await?;
            let bytes = counters["bytes"].as_u64().unwrap_or(0);
            if bytes > counter {
                progress(Moved::Sent(bytes - counter));
                reported += bytes - counter;
            }
            counter = bytes;
            self.pass_on_bwlimit(&request.throttle).await?;
        }
    }

    /// Stops rclone's job `job` and waits (briefly) for it to end.
    async fn stop(&self, job: u64) {
        let never = CancellationToken::new();
        let _ = self.rcd.call(&never, "job/stop", json!({"jobid": job})).await;
        for _ in 0..50 {
            match self.rcd.call(&never, "job/status", json!({"jobid": job})).await {
                Ok(status) if status["finished"].as_bool() != Some(true) => tokio::time::sleep(POLL / 2).await,
                _ => return,
            }
        }
    }

    /// Gives rclone photosync's bandwidth limit when it changed.
    async fn pass_on_bwlimit(&self, throttle: &Throttle) -> Result<(), DestinationError> {
        let rate = throttle.rate().map_or_else(|| "off".to_owned(), |r| format!("{r}B"));
        if self.bwlimit.lock().unwrap_or_else(PoisonError::into_inner).as_ref() == Some(&rate) {
            return Ok(());
        }
        self.rcd.call(&CancellationToken::new(), "core/bwlimit", json!({"rate": rate})).await?;
        *self.bwlimit.lock().unwrap_or_else(PoisonError::into_inner) = Some(rate);
        Ok(())
    }
}

#[async_trait]
impl Destination for RcloneDestination {
    async fn check(&self) -> Result<(), DestinationError> {
        self.fs().await?;
        self.hash_kind().await.map(drop)
    }

    async fn upload(&self, request: UploadRequest, progress: ProgressFn) -> Result<Uploaded, DestinationError> {
        let kind = self.hash_kind().await?;
        let mut local = None;
        for key in key_candidates(&request.key, &request.hash) {
            let remote = object_key("", &key);
            let receipt = |version: String| Receipt {
                key: RemoteKey(remote.as_bytes().to_vec()),
                size: request.size,
                sha256: request.hash.clone(),
                version: Some(version),
            };
            if let Some(item) = self.stat(&request.cancel, &remote, kind).await? {
                if let Some(version) = self.proof(&request, &remote, &item, kind, &mut local, false).await? {
                    return Ok(Uploaded::AlreadyPresent(receipt(version)));
                }
                tracing::info!(key = %remote, "name taken by other content; trying the next name");
                continue;
            }
            self.copy(&request, &remote, &progress).await?;
            let Some(item) = self.stat(&request.cancel, &remote, kind).await? else {
                return Err(DestinationError::transient(format!("rclone finished, but nothing is at {remote}")));
            };
            if let Some(version) = self.proof(&request, &remote, &item, kind, &mut local, true).await? {
                return Ok(Uploaded::Stored(receipt(version)));
            }
            // Not the scanned file: it changed while rclone read it (the
            // check below says so), or another file took the name first
            // and `IgnoreExisting` kept it. Either way nothing is replaced.
            local_hash(&request, HashKind::Sha256).await?;
            tracing::info!(key = %remote, "another file took the name first; trying the next name");
        }
        Err(DestinationError::permanent(format!("every candidate name for {} is taken by other content", request.key)))
    }

    async fn verify(&self, receipt: &Receipt, deep: bool) -> Result<Verdict, DestinationError> {
        let remote = String::from_utf8_lossy(&receipt.key.0).into_owned();
        let recorded = receipt.version.as_deref().and_then(|v| v.split_once(':'));
        let kind = recorded.and_then(|(name, _)| HashKind::named(name));
        let never = CancellationToken::new();
        let Some(item) = self.stat(&never, &remote, kind).await? else { return Ok(Verdict::Missing) };
        if let Some(size) = item.size.filter(|&size| size != receipt.size) {
            return Ok(Verdict::Differs(format!("{size} bytes instead of {}", receipt.size)));
        }
        if deep && self.rcd.version().await? >= HASHSUMFILE {
            return Ok(if self.read_back_sha256(&never, &remote).await? == receipt.sha256.as_hex() {
                Verdict::Holds
            } else {
                Verdict::Differs("its content, read back, is another".into())
            });
        }
        Ok(match (recorded, &item.hash) {
            (Some((name, hash)), Some(now)) if kind.is_some() && now != hash => {
                Verdict::Differs(format!("its {name} is another"))
            }
            _ => Verdict::Holds,
        })
    }
}

/// The folder and file name of `source`, as rclone takes them (UTF-8).
fn source_parts(source: &Path) -> Result<(&str, &str), DestinationError> {
    let folder = source.parent().and_then(Path::to_str);
    let name = source.file_name().and_then(|n| n.to_str());
    folder
        .zip(name)
        .ok_or_else(|| DestinationError::permanent(format!("{}: rclone takes only UTF-8 file names", source.display())))
}

/// The `kind` hash of the source file, which must still be the scanned
/// version (its SHA-256, from the same read, says so).
async fn local_hash(request: &UploadRequest, kind: HashKind) -> Result<String, DestinationError> {
    let source = request.source.clone();
    let hashed = tokio::task::spawn_blocking(move || hash_file(&source, kind))
        .await
        .map_err(|e| DestinationError::transient(format!("hashing stopped: {e}")))?;
    let (sha256, other) = hashed.map_err(|e| super::http::read_error(request, &e))?;
    if sha256 != request.hash {
        return Err(DestinationError::source_changed(format!(
            "{} changed since it was scanned",
            request.source.display()
        )));
    }
    Ok(other)
}

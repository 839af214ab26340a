//! Where uploads go. A small [`Destination`] trait, one implementation per
//! `type` in the config, each in a folder of its own that owns its keys, its
//! client and its error classification ([`folder`], [`s3`], [`webdav`],
//! [`rclone`], [`immich`], [`dropbox`], [`onedrive`], [`googlephotos`]); the [`registry`] maps
//! a `type` to it. [`http`] holds what every HTTP destination shares,
//! [`session`] the resumable-upload records, [`source`] reading the file
//! in pieces, [`secret`] where a password comes from; signing in to a
//! cloud service is [`crate::oauth`]'s.
//!
//! The contract every implementation keeps:
//! - an upload is idempotent: if the destination already holds the same
//!   content under the candidate key it answers [`Uploaded::AlreadyPresent`]
//!   instead of storing it again (this is what makes a crash between upload
//!   and bookkeeping harmless);
//! - it never overwrites different content: a clash moves on to the next
//!   name from [`key_candidates`];
//! - it answers [`Uploaded::AlreadyPresent`] only with proof that the bytes
//!   there are the scanned ones (a hash the destination computed, or the
//!   bytes read back), never on a name, a size or a claim in metadata;
//! - it proves what it stored is exactly the scanned content (size and
//!   SHA-256) before returning a receipt; a file that changed under the
//!   upload is reported as [`Retry::SourceChanged`] and never acknowledged
//!   as the scanned version;
//! - every error says whether a retry can help ([`DestinationError::retryable`]).

pub mod dropbox;
pub mod folder;
pub mod googlephotos;
pub mod hashes;
pub mod http;
pub mod immich;
pub mod onedrive;
pub mod rclone;
pub mod registry;
pub mod s3;
pub mod secret;
pub mod session;
pub mod source;
mod throttle;
pub mod webdav;

pub use session::{Session, SessionStore, StoreError};
pub use throttle::Throttle;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::model::{ContentHash, JobId, Receipt, RemoteKey};

/// Bytes an upload accounts for as it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moved {
    /// Sent to the destination by this attempt.
    Sent(u64),
    /// Already at the destination from an earlier attempt, and kept.
    Resumed(u64),
}

/// Reports bytes transferred as they move.
pub type ProgressFn = Arc<dyn Fn(Moved) + Send + Sync>;

/// One upload: which file, under what key, with what content.
#[derive(Debug, Clone)]
pub struct UploadRequest {
    /// The job (used to name temporary objects so a retry reuses them).
    pub job: JobId,
    /// Absolute path of the source file.
    pub source: PathBuf,
    /// The preferred key (layout applied); clashes get a hash suffix.
    pub key: RemoteKey,
    /// Expected size.
    pub size: u64,
    /// Expected content hash.
    pub hash: ContentHash,
    /// Modification time to preserve where the destination can.
    pub modified: SystemTime,
    /// When it was taken, RFC 3339 with the offset, when known (Immich
    /// files a photo under it).
    pub taken: Option<String>,
    /// Its path below its source, its source's name and what it is, for
    /// templates a destination renders itself (Immich's album names).
    pub subject: Arc<Subject>,
    /// For the still of a Live Photo, its video, as scanned (for a
    /// destination that links the two; see [`Destination::needs_info`]).
    pub live_video: Option<Member>,
    /// For a member of a group (a sidecar, a Live Photo's video), the
    /// group's key file (its photo), as scanned.
    pub group_key: Option<Member>,
    /// The content's SHA-1 (hex), when the scan computed it (for a
    /// destination that knows content by it).
    pub sha1: Option<String>,
    /// Cancelled by the scheduler to ask the upload to stop (pause, hold,
    /// shutdown). An implementation checks it between chunks and races
    /// every network wait against it, returning
    /// [`DestinationError::interrupted`] and keeping whatever
    /// progress it can resume from.
    pub cancel: CancellationToken,
    /// The upload rate limit shared by all uploads.
    pub throttle: Arc<Throttle>,
}

/// Another file of a photo's group (a Live Photo's video, a sidecar, or
/// the photo itself), as scanned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Absolute path.
    pub path: PathBuf,
    /// Size when scanned.
    pub size: u64,
    /// Content hash when scanned.
    pub hash: ContentHash,
}

/// What a destination's own templates render from (see [`crate::layout::Subject`]).
#[derive(Debug, Clone, Default)]
pub struct Subject {
    /// The file's path below its source, as bytes.
    pub rel_path: Vec<u8>,
    /// The source's name.
    pub source: String,
    /// What the file is and when it was taken, when known.
    pub info: Option<crate::model::AssetInfo>,
}

impl Subject {
    /// `template` rendered for this file, as text.
    pub fn render(&self, template: &crate::layout::Layout) -> String {
        let subject =
            crate::layout::Subject { rel_path: &self.rel_path, source: &self.source, info: self.info.as_ref() };
        String::from_utf8_lossy(&template.render(&subject).0).into_owned()
    }
}

impl UploadRequest {
    /// Whether the scheduler asked this upload to stop.
    pub fn cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }
}

/// A successful upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uploaded {
    /// The content was written and verified.
    Stored(Receipt),
    /// The destination already held this content; nothing was written.
    AlreadyPresent(Receipt),
}

impl Uploaded {
    /// The receipt either way.
    pub fn receipt(&self) -> &Receipt {
        match self {
            Self::Stored(r) | Self::AlreadyPresent(r) => r,
        }
    }
}

/// What a look at a receipt's object found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The object is there with the receipt's size and content.
    Holds,
    /// Nothing is at the receipt's key.
    Missing,
    /// Something else is there; why, in words.
    Differs(String),
}

/// Whether retrying can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Network, server or storage trouble that may pass.
    Transient,
    /// The request itself cannot succeed (file gone, name invalid, bad credentials).
    Permanent,
    /// Stopped because the scheduler asked (pause, shutdown): not a failure,
    /// no attempt is charged.
    Interrupted,
    /// The source file changed or vanished since it was scanned: whatever
    /// was stored is not the scanned version. No attempt is charged; the
    /// file is read again first.
    SourceChanged,
    /// The destination cannot take uploads until the user acts (signs in
    /// again): the job waits, uncharged, and the destination is held
    /// with the message, which says what to do.
    Held,
    /// The service asks for fewer requests (a 429): the job waits out
    /// `retry_after`, uncharged, and the destination rests as long.
    Throttled,
}

/// How big a batch of uploads a destination takes at once: at most `files`
/// files of at most `bytes` in all (a bigger file goes alone), and how
/// many batches may be under way at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    /// Files in one batch.
    pub files: usize,
    /// Bytes in one batch.
    pub bytes: u64,
    /// Batches under way at once for each upload slot (`max_concurrent`,
    /// when it is more than 1): more than one where a batch spends most of
    /// its time waiting to be made durable, which takes neither bandwidth
    /// nor much memory.
    pub per_slot: usize,
}

/// An upload or check that did not succeed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct DestinationError {
    /// Whether a retry may help.
    pub retry: Retry,
    /// What happened, for people.
    pub message: String,
    /// A server's `Retry-After`, when it sent one.
    pub retry_after: Option<Duration>,
}

impl DestinationError {
    /// A failure that may pass.
    pub fn transient(message: impl Into<String>) -> Self {
        Self { retry: Retry::Transient, message: message.into(), retry_after: None }
    }

    /// A failure a retry cannot fix.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self { retry: Retry::Permanent, message: message.into(), retry_after: None }
    }

    /// The source file is not the scanned version any more.
    pub fn source_changed(message: impl Into<String>) -> Self {
        Self { retry: Retry::SourceChanged, message: message.into(), retry_after: None }
    }

    /// The destination is unusable until the user acts; `message` says how.
    pub fn held(message: impl Into<String>) -> Self {
        Self { retry: Retry::Held, message: message.into(), retry_after: None }
    }

    /// The service asks for fewer requests; `retry_after` says how long to wait.
    pub fn throttled(message: impl Into<String>, retry_after: Duration) -> Self {
        Self { retry: Retry::Throttled, message: message.into(), retry_after: Some(retry_after) }
    }

    /// The upload stopped because it was asked to.
    pub fn interrupted() -> Self {
        Self { retry: Retry::Interrupted, message: "interrupted".into(), retry_after: None }
    }

    /// Whether a retry can help.
    pub fn retryable(&self) -> bool {
        self.retry == Retry::Transient
    }
}

/// A daily request quota, as this machine has used it today.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Requests sent today.
    pub used: u64,
    /// Requests allowed per day.
    pub limit: u64,
    /// Files acknowledged today (what the requests bought).
    pub items: u64,
    /// Until the count starts again.
    pub resets_in: Duration,
}

/// An upload target.
#[async_trait]
pub trait Destination: Send + Sync {
    /// Checks that the destination is reachable and usable right now.
    async fn check(&self) -> Result<(), DestinationError>;

    /// Stores the file, or finds it already stored, and returns a verified receipt.
    async fn upload(&self, request: UploadRequest, progress: ProgressFn) -> Result<Uploaded, DestinationError>;

    /// Proves that `receipt` still holds: the object is at its key with its
    /// size and SHA-256. What "proves" costs depends on the destination
    /// (a folder re-reads the file; S3 trusts the server's checksum or
    /// `ETag` unless `deep`, when it reads the object back).
    async fn verify(&self, receipt: &Receipt, deep: bool) -> Result<Verdict, DestinationError>;

    /// Whether a receipt for the same content stands for the file at
    /// `path` too (not for an Immich sidecar, whose receipt is its photo's
    /// asset).
    fn content_identifies(&self, _path: &std::path::Path) -> bool {
        true
    }

    /// Whether small uploads here go in batches ([`Destination::upload_many`]),
    /// and how big a batch may be. `None`: one upload at a time.
    fn batching(&self) -> Option<Batching> {
        None
    }

    /// Stores several files together (made durable with one flush where
    /// the destination can); one result per upload, in order. The scheduler
    /// sends batches only where [`Destination::batching`] says so.
    async fn upload_many(&self, uploads: Vec<(UploadRequest, ProgressFn)>) -> Vec<Result<Uploaded, DestinationError>> {
        let mut results = Vec::with_capacity(uploads.len());
        for (request, progress) in uploads {
            results.push(self.upload(request, progress).await);
        }
        results
    }

    /// How many receipts [`Destination::verify_many`] takes at once.
    fn verify_batch(&self) -> usize {
        1
    }

    /// Checks several receipts (at most [`Destination::verify_batch`]) at
    /// once where the service can: one verdict each, in order.
    async fn verify_many(&self, receipts: &[Receipt], deep: bool) -> Vec<Result<Verdict, DestinationError>> {
        let mut verdicts = Vec::with_capacity(receipts.len());
        for receipt in receipts {
            verdicts.push(self.verify(receipt, deep).await);
        }
        verdicts
    }

    /// How the service's daily request quota stands, for one that has one.
    fn quota(&self) -> Option<Quota> {
        None
    }

    /// Releases whatever an unfinished upload of `job` (content `hash`,
    /// layout key `key`) left behind: an open multipart upload, a temporary
    /// copy from an attempt cut short. Called when the job ends without its
    /// own upload finishing (cancelled, or settled by another job's receipt).
    async fn discard(&self, _job: JobId, _key: &RemoteKey, _hash: &ContentHash) -> Result<(), DestinationError> {
        Ok(())
    }

    /// Forgets pooled connections (the system slept: they are likely
    /// dead), so the next requests open new ones.
    fn reconnect(&self) {}

    /// Whether uploads need to know what each file is and when it was
    /// taken (in [`UploadRequest::subject`]) even where the layout does
    /// not, and a Live Photo still's video ([`UploadRequest::live_video`]).
    fn needs_info(&self) -> bool {
        false
    }
}

/// The longest file name most file systems take (`NAME_MAX`), in bytes.
pub const NAME_MAX: usize = 255;

/// The keys to try for content `hash` whose layout key is `key`, in order:
/// the key itself, then the key with ever longer hash suffixes before the
/// extension (`IMG_1.jpg`, `IMG_1-0a1b2c3d.jpg`, …). Deterministic, so a
/// retried upload finds its own earlier copy. A suffixed name that would
/// pass [`NAME_MAX`] bytes is shortened before the suffix (on a character
/// boundary), so a long name can always move aside.
pub fn key_candidates(key: &RemoteKey, hash: &ContentHash) -> Vec<RemoteKey> {
    let bytes = &key.0;
    let name_start = bytes.iter().rposition(|&b| b == b'/').map_or(0, |i| i + 1);
    let dot =
        bytes[name_start..].iter().rposition(|&b| b == b'.').filter(|&i| i > 0).map_or(bytes.len(), |i| name_start + i);
    let (stem, extension) = bytes.split_at(dot);
    let (directory, name_stem) = stem.split_at(name_start);
    let mut candidates = vec![key.clone()];
    for len in [8, 16, 64] {
        let suffix = hash.short(len);
        let room = NAME_MAX.saturating_sub(1 + suffix.len() + extension.len());
        let mut k = directory.to_vec();
        k.extend_from_slice(truncate_utf8(name_stem, room));
        k.push(b'-');
        k.extend_from_slice(suffix.as_bytes());
        k.extend_from_slice(extension);
        candidates.push(RemoteKey(k));
    }
    candidates
}

/// `prefix` + the layout key, made safe: `/`-separated segments, `%`, control
/// characters and bytes that are not UTF-8 escaped as `%XX`, `.` and `..`
/// segments escaped, so no file name can reach outside the prefix.
pub fn object_key(prefix: &str, relative: &RemoteKey) -> String {
    let mut key = prefix.to_owned();
    for (i, segment) in relative.0.split(|&b| b == b'/').filter(|s| !s.is_empty()).enumerate() {
        if i > 0 {
            key.push('/');
        }
        if segment == b"." || segment == b".." {
            for _ in segment {
                key.push_str("%2E");
            }
            continue;
        }
        for chunk in segment.utf8_chunks() {
            for c in chunk.valid().chars() {
                if c == '%' || c.is_control() {
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        let _ = write!(key, "%{b:02X}");
                    }
                } else {
                    key.push(c);
                }
            }
            for b in chunk.invalid() {
                let _ = write!(key, "%{b:02X}");
            }
        }
    }
    key
}

/// The hidden name a copy of `name` has while `job` writes it:
/// `.NAME.photosync-N.tmp`, NAME shortened so the whole stays within
/// [`NAME_MAX`]. Deterministic, so a retry finds (and carries on from, or
/// removes) its own.
pub fn temp_name(name: &[u8], job: JobId) -> Vec<u8> {
    let suffix = format!(".photosync-{job}.tmp");
    let mut temp = b".".to_vec();
    temp.extend_from_slice(truncate_utf8(name, NAME_MAX - 1 - suffix.len()));
    temp.extend_from_slice(suffix.as_bytes());
    temp
}

/// At most `max` bytes of `bytes`, not splitting a UTF-8 character.
pub fn truncate_utf8(bytes: &[u8], max: usize) -> &[u8] {
    if bytes.len() <= max {
        return bytes;
    }
    let mut end = max;
    // Continuation bytes are 0b10xx_xxxx: step back to a character start.
    while end > 0 && (bytes[end] & 0xC0) == 0x80 {
        end -= 1;
    }
    &bytes[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_add_hash_suffixes_before_the_extension() {
        let hash = ContentHash::from_digest(&[0xab; 32]);
        let table: [(&[u8], &[u8]); 4] = [
            (b"DCIM/IMG_1.JPG", b"DCIM/IMG_1-abababab.JPG"),
            (b"noext", b"noext-abababab"),
            (b"dir.d/.hidden", b"dir.d/.hidden-abababab"),
            (b"a.tar.gz", b"a.tar-abababab.gz"),
        ];
        for (key, second) in table {
            let candidates = key_candidates(&RemoteKey(key.to_vec()), &hash);
            assert_eq!(candidates[0].0, key);
            assert_eq!(candidates[1].0, second);
            assert_eq!(candidates.len(), 4);
            assert!(candidates[3].to_string().contains(hash.as_hex()));
        }
    }

    /// Regression: a 250-byte name could not move aside (its suffixed name
    /// passed `NAME_MAX`).
    #[test]
    fn suffixed_long_names_stay_within_name_max() {
        let hash = ContentHash::from_digest(&[0xcd; 32]);
        let long = format!("DCIM/{}é.jpg", "x".repeat(245));
        let candidates = key_candidates(&RemoteKey(long.into_bytes()), &hash);
        for candidate in &candidates[1..] {
            let name = candidate.0.rsplit(|&b| b == b'/').next().expect("name");
            assert!(name.len() <= NAME_MAX, "{} bytes", name.len());
            assert!(std::str::from_utf8(&candidate.0).is_ok(), "no character is cut in two");
            assert!(candidate.0.starts_with(b"DCIM/xxx") && candidate.0.ends_with(b".jpg"));
        }
        assert_ne!(candidates[1], candidates[2]);
    }
}

//! The vocabulary of photosync: identifiers, timestamps, receipts and the job
//! state machine.
//!
//! A [`Job`] is the upload of one asset to one destination. Its [`JobState`]
//! is an enum whose variants carry only the data valid in that state, and
//! every lifecycle edge of ARCHITECTURE.md is one method on [`Job`] that
//! returns the next job or a [`TransitionError`]. The catalog persists what
//! these methods return; the scheduler decides which to call.
//!
//! This module does no I/O and reads no clock: callers pass `now`.

mod asset;
mod job;

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub use asset::{AssetInfo, Capture, CaptureSource, GroupName, MediaKind};
pub use job::{Job, JobState, StateName, TransitionError, WaitingOn};

/// Lowercase hex digits of `bytes` (a digest as hashes are written here).
/// By table: through the formatter (`{:02x}` per byte), writing the
/// digests of a first backup of 100,000 photos cost 2 % of its CPU.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// A path's bytes split after its last `/`: its folder with that `/`
/// (empty when it has none) and its name. Relative paths in the catalog
/// and the paths a walk builds are taken apart this way, without parsing
/// their components.
pub fn split_folder(path: &[u8]) -> (&[u8], &[u8]) {
    let at = path.iter().rposition(|&b| b == b'/').map_or(0, |i| i + 1);
    path.split_at(at)
}

/// Row id of a job in the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub i64);

/// Row id of an asset (one version of one file) in the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct AssetId(pub i64);

/// Row id of a destination in the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct DestinationId(pub i64);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A point in time as milliseconds since the Unix epoch (UTC). Serialized
/// as RFC 3339 (`2026-11-21T14:05:00.123Z`) for people and scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let millis = u64::try_from(self.0).unwrap_or(0);
        s.collect_str(&humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(millis)))
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let time = humantime::parse_rfc3339(&text).map_err(serde::de::Error::custom)?;
        Ok(Timestamp::from_system(time))
    }
}

impl Timestamp {
    /// The current wall-clock time. The only clock read in this module; pure
    /// code takes a `Timestamp` argument instead of calling this.
    pub fn now() -> Self {
        Self::from_system(SystemTime::now())
    }

    /// Converts a `SystemTime`, clamping times before the epoch to zero.
    pub fn from_system(time: SystemTime) -> Self {
        let millis = time.duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        Self(millis)
    }

    /// This time plus `delay`, saturating.
    #[must_use]
    pub fn after(self, delay: Duration) -> Self {
        let millis = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
        Self(self.0.saturating_add(millis))
    }

    /// How long from `self` until `later` (zero if `later` is not later).
    pub fn until(self, later: Timestamp) -> Duration {
        Duration::from_millis(u64::try_from(later.0.saturating_sub(self.0)).unwrap_or(0))
    }

    /// RFC 3339 in UTC with second precision, e.g. `2026-11-21T14:05:00Z`.
    pub fn to_rfc3339(self) -> String {
        let secs = u64::try_from(self.0 / 1000).unwrap_or(0);
        humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
    }
}

/// SHA-256 of an asset's content, as 64 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct ContentHash(String);

impl ContentHash {
    /// Wraps a hex digest, checking its shape.
    pub fn from_hex(hex: &str) -> Option<Self> {
        let ok = hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        ok.then(|| Self(hex.to_owned()))
    }

    /// Formats raw digest bytes.
    pub fn from_digest(bytes: &[u8]) -> Self {
        Self(hex(bytes))
    }

    /// The hex digest.
    pub fn as_hex(&self) -> &str {
        &self.0
    }

    /// The first `n` hex digits, used to make clash-free names.
    pub fn short(&self, n: usize) -> &str {
        &self.0[..n.min(self.0.len())]
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where an object lives inside a destination: a relative path for a folder,
/// an object key for object storage. Raw bytes, because file names on Unix
/// need not be UTF-8.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RemoteKey(pub Vec<u8>);

impl fmt::Display for RemoteKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

impl Serialize for RemoteKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// What a destination confirmed it stores: the proof that lets a job be
/// acknowledged and that stops the same content being uploaded twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Receipt {
    /// Where the object lives in the destination.
    pub key: RemoteKey,
    /// Size in bytes the destination reported after writing.
    pub size: u64,
    /// Content hash the destination's copy was verified against.
    pub sha256: ContentHash,
    /// Destination-specific version tag (`ETag`, version id); `None` for folders.
    pub version: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_writes_two_lowercase_digits_per_byte() {
        let every: Vec<u8> = (0..=255).collect();
        let expected = every.iter().fold(String::new(), |mut s, b| {
            use fmt::Write as _;
            write!(s, "{b:02x}").expect("write to a string");
            s
        });
        assert_eq!(hex(&every), expected);
        assert_eq!(hex(&[]), "");
    }

    #[test]
    fn timestamps_round_trip_through_json() {
        let t = Timestamp(1_795_000_000_123);
        let json = serde_json::to_string(&t).expect("serialize");
        assert_eq!(json, "\"2026-11-18T11:06:40.123Z\"");
        assert_eq!(serde_json::from_str::<Timestamp>(&json).expect("parse"), t);
    }

    #[test]
    fn content_hash_checks_its_shape() {
        let h = ContentHash::from_digest(&[0x0f; 32]);
        assert_eq!(h.short(8), "0f0f0f0f");
        assert_eq!(ContentHash::from_hex(h.as_hex()), Some(h));
        assert_eq!(ContentHash::from_hex("xyz"), None);
    }
}

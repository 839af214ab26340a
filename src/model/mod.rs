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

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub use asset::{AssetInfo, Capture, CaptureSource, GroupName, MediaKind};

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
        use fmt::Write as _;
        let mut hex = String::with_capacity(bytes.len() * 2);
        for b in bytes {
            let _ = write!(hex, "{b:02x}");
        }
        Self(hex)
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

/// What a queued job waits for before it may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitingOn {
    /// Runnable as soon as a slot is free.
    Nothing,
    /// Held back by power policy (on battery).
    Power,
    /// Held back by network policy (metered or offline).
    Network,
    /// Outside the allowed time window.
    Window,
    /// The user paused uploads.
    Paused,
    /// All upload slots are busy.
    Slot,
    /// The source folder is not available (an unmounted disk, say).
    Source,
    /// The file is missing from its source; it is uploaded when it returns.
    File,
    /// The system is going to sleep, or has just woken and conditions are
    /// being read again.
    Sleep,
}

impl WaitingOn {
    /// The catalog spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Nothing => "nothing",
            Self::Power => "power",
            Self::Network => "network",
            Self::Window => "window",
            Self::Paused => "paused",
            Self::Slot => "slot",
            Self::Source => "source",
            Self::File => "file",
            Self::Sleep => "sleep",
        }
    }

    /// Parses the catalog spelling.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Nothing,
            Self::Power,
            Self::Network,
            Self::Window,
            Self::Paused,
            Self::Slot,
            Self::Source,
            Self::File,
            Self::Sleep,
        ]
        .into_iter()
        .find(|w| w.as_str() == s)
    }

    /// Why a queued job waits, in words (`None` when it waits for nothing).
    pub fn describe(self) -> Option<&'static str> {
        Some(match self {
            Self::Nothing => return None,
            Self::Power => "waiting for mains power",
            Self::Network => "waiting for an unmetered network",
            Self::Window => "waiting for an allowed time window",
            Self::Paused => "paused by the user",
            Self::Slot => "waiting for a free upload slot",
            Self::Source => "waiting for its source folder (not mounted?)",
            Self::File => "waiting for the file, which is missing from its source",
            Self::Sleep => "waiting: the system sleeps, or has just woken",
        })
    }
}

/// The state of a job, carrying only the data valid in that state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    /// Eligible to run once `waiting_on` clears.
    Queued {
        /// What it waits for.
        waiting_on: WaitingOn,
    },
    /// Bytes are moving.
    Running {
        /// When this attempt started.
        started_at: Timestamp,
    },
    /// A transient failure; runs again at `next_attempt_at`.
    RetryWait {
        /// When the job becomes due again.
        next_attempt_at: Timestamp,
        /// What went wrong.
        error: String,
    },
    /// The destination confirmed the upload.
    Succeeded {
        /// What the destination confirmed.
        receipt: Receipt,
    },
    /// A permanent failure, visible until the user acts.
    Failed {
        /// What went wrong.
        error: String,
    },
    /// Terminal: the upload is done and its receipt is kept, or the user
    /// dismissed a failure (no receipt).
    Acknowledged {
        /// The receipt, kept so the content is never uploaded twice.
        receipt: Option<Receipt>,
    },
    /// The job no longer makes sense (the file was deleted, or replaced by
    /// a newer version). Revived if that content is found at its path again.
    Cancelled {
        /// Why.
        reason: String,
    },
}

/// The name of a [`JobState`] variant, for filtering and display.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StateName {
    /// See [`JobState::Queued`].
    Queued,
    /// See [`JobState::Running`].
    Running,
    /// See [`JobState::RetryWait`].
    RetryWait,
    /// See [`JobState::Succeeded`].
    Succeeded,
    /// See [`JobState::Failed`].
    Failed,
    /// See [`JobState::Acknowledged`].
    Acknowledged,
    /// See [`JobState::Cancelled`].
    Cancelled,
}

impl StateName {
    /// Every state, in lifecycle order.
    pub const ALL: [StateName; 7] = [
        Self::Queued,
        Self::Running,
        Self::RetryWait,
        Self::Succeeded,
        Self::Failed,
        Self::Acknowledged,
        Self::Cancelled,
    ];

    /// The catalog and CLI spelling, e.g. `retry_wait`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::RetryWait => "retry_wait",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Acknowledged => "acknowledged",
            Self::Cancelled => "cancelled",
        }
    }

    /// Parses the catalog and CLI spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|n| n.as_str() == s)
    }
}

impl fmt::Display for StateName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl JobState {
    /// The variant's name.
    pub fn name(&self) -> StateName {
        match self {
            Self::Queued { .. } => StateName::Queued,
            Self::Running { .. } => StateName::Running,
            Self::RetryWait { .. } => StateName::RetryWait,
            Self::Succeeded { .. } => StateName::Succeeded,
            Self::Failed { .. } => StateName::Failed,
            Self::Acknowledged { .. } => StateName::Acknowledged,
            Self::Cancelled { .. } => StateName::Cancelled,
        }
    }
}

/// A lifecycle edge that ARCHITECTURE.md does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("job {job}: cannot {action} a job that is {from}")]
pub struct TransitionError {
    /// The job.
    pub job: JobId,
    /// The state it was in.
    pub from: StateName,
    /// The attempted edge, e.g. `start`.
    pub action: &'static str,
}

/// The upload of one asset to one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Catalog id.
    pub id: JobId,
    /// The asset version being uploaded.
    pub asset_id: AssetId,
    /// Where it goes.
    pub destination_id: DestinationId,
    /// Attempts charged so far (failed attempts; an interrupted one is not charged).
    pub attempts: u32,
    /// Where it is in its lifecycle.
    pub state: JobState,
}

impl Job {
    fn to(&self, state: JobState, attempts: u32) -> Job {
        Job { attempts, state, ..self.clone() }
    }

    fn refuse(&self, action: &'static str) -> TransitionError {
        TransitionError { job: self.id, from: self.state.name(), action }
    }

    /// `queued → running`.
    pub fn start(&self, now: Timestamp) -> Result<Job, TransitionError> {
        match self.state {
            JobState::Queued { .. } => Ok(self.to(JobState::Running { started_at: now }, self.attempts)),
            _ => Err(self.refuse("start")),
        }
    }

    /// `running → queued`: a condition was lost or the process is shutting
    /// down. No attempt is charged.
    pub fn interrupt(&self, waiting_on: WaitingOn) -> Result<Job, TransitionError> {
        match self.state {
            JobState::Running { .. } => Ok(self.to(JobState::Queued { waiting_on }, self.attempts)),
            _ => Err(self.refuse("interrupt")),
        }
    }

    /// `running → succeeded`.
    pub fn succeed(&self, receipt: Receipt) -> Result<Job, TransitionError> {
        match self.state {
            JobState::Running { .. } => Ok(self.to(JobState::Succeeded { receipt }, self.attempts)),
            _ => Err(self.refuse("succeed")),
        }
    }

    /// `running → retry_wait`: a transient failure; charges one attempt.
    pub fn defer(&self, error: String, next_attempt_at: Timestamp) -> Result<Job, TransitionError> {
        match self.state {
            JobState::Running { .. } => {
                Ok(self.to(JobState::RetryWait { next_attempt_at, error }, self.attempts.saturating_add(1)))
            }
            _ => Err(self.refuse("defer")),
        }
    }

    /// `running → retry_wait` without charging an attempt: the service
    /// asked for fewer requests, which says nothing about this file.
    pub fn hold_off(&self, error: String, next_attempt_at: Timestamp) -> Result<Job, TransitionError> {
        match self.state {
            JobState::Running { .. } => Ok(self.to(JobState::RetryWait { next_attempt_at, error }, self.attempts)),
            _ => Err(self.refuse("hold off")),
        }
    }

    /// `running → failed`: a permanent failure or a spent retry budget;
    /// charges one attempt.
    pub fn fail(&self, error: String) -> Result<Job, TransitionError> {
        match self.state {
            JobState::Running { .. } => Ok(self.to(JobState::Failed { error }, self.attempts.saturating_add(1))),
            _ => Err(self.refuse("fail")),
        }
    }

    /// `retry_wait → queued` when due, or `failed → queued` when the user
    /// asks for a retry.
    pub fn requeue(&self) -> Result<Job, TransitionError> {
        match self.state {
            JobState::RetryWait { .. } | JobState::Failed { .. } => {
                Ok(self.to(JobState::Queued { waiting_on: WaitingOn::Nothing }, self.attempts))
            }
            _ => Err(self.refuse("requeue")),
        }
    }

    /// `succeeded → acknowledged` (receipt kept), or `failed → acknowledged`
    /// when the user dismisses the failure.
    pub fn acknowledge(&self) -> Result<Job, TransitionError> {
        match &self.state {
            JobState::Succeeded { receipt } => {
                Ok(self.to(JobState::Acknowledged { receipt: Some(receipt.clone()) }, self.attempts))
            }
            JobState::Failed { .. } => Ok(self.to(JobState::Acknowledged { receipt: None }, self.attempts)),
            _ => Err(self.refuse("acknowledge")),
        }
    }

    /// `queued → queued`: records what the job now waits for.
    pub fn wait(&self, waiting_on: WaitingOn) -> Result<Job, TransitionError> {
        match self.state {
            JobState::Queued { .. } => Ok(self.to(JobState::Queued { waiting_on }, self.attempts)),
            _ => Err(self.refuse("wait")),
        }
    }

    /// `cancelled → queued`: the file came back (or its old content is at
    /// its path again), and what is in the source must reach the
    /// destination whatever happened to an earlier job.
    pub fn revive(&self) -> Result<Job, TransitionError> {
        match self.state {
            JobState::Cancelled { .. } => {
                Ok(self.to(JobState::Queued { waiting_on: WaitingOn::Nothing }, self.attempts))
            }
            _ => Err(self.refuse("revive")),
        }
    }

    /// `acknowledged → queued`: `photosync verify` found the receipt's
    /// object missing or changed at the destination, so the content is
    /// uploaded again (the receipt is dropped).
    pub fn repair(&self) -> Result<Job, TransitionError> {
        match &self.state {
            JobState::Acknowledged { receipt: Some(_) } => {
                Ok(self.to(JobState::Queued { waiting_on: WaitingOn::Nothing }, self.attempts))
            }
            _ => Err(self.refuse("repair")),
        }
    }

    /// `queued → cancelled`, e.g. the source was deleted before upload.
    pub fn cancel(&self, reason: String) -> Result<Job, TransitionError> {
        match self.state {
            JobState::Queued { .. } => Ok(self.to(JobState::Cancelled { reason }, self.attempts)),
            _ => Err(self.refuse("cancel")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(state: JobState) -> Job {
        Job { id: JobId(7), asset_id: AssetId(1), destination_id: DestinationId(1), attempts: 2, state }
    }

    fn receipt() -> Receipt {
        Receipt {
            key: RemoteKey(b"a/b.jpg".to_vec()),
            size: 3,
            sha256: ContentHash::from_digest(&[0xab; 32]),
            version: None,
        }
    }

    fn all_states() -> Vec<JobState> {
        vec![
            JobState::Queued { waiting_on: WaitingOn::Nothing },
            JobState::Running { started_at: Timestamp(5) },
            JobState::RetryWait { next_attempt_at: Timestamp(9), error: "e".into() },
            JobState::Succeeded { receipt: receipt() },
            JobState::Failed { error: "e".into() },
            JobState::Acknowledged { receipt: Some(receipt()) },
            JobState::Cancelled { reason: "r".into() },
        ]
    }

    /// Each edge, tried from every state, is allowed from exactly the states
    /// ARCHITECTURE.md lists.
    #[test]
    fn edges_match_the_lifecycle_table() {
        use StateName as S;
        type Edge = (&'static str, fn(&Job) -> Result<Job, TransitionError>, &'static [StateName]);
        let edges: [Edge; 11] = [
            ("start", |j| j.start(Timestamp(1)), &[S::Queued]),
            ("interrupt", |j| j.interrupt(WaitingOn::Power), &[S::Running]),
            ("succeed", |j| j.succeed(receipt()), &[S::Running]),
            ("defer", |j| j.defer("x".into(), Timestamp(2)), &[S::Running]),
            ("fail", |j| j.fail("x".into()), &[S::Running]),
            ("requeue", Job::requeue, &[S::RetryWait, S::Failed]),
            ("acknowledge", Job::acknowledge, &[S::Succeeded, S::Failed]),
            ("cancel", |j| j.cancel("x".into()), &[S::Queued]),
            ("wait", |j| j.wait(WaitingOn::File), &[S::Queued]),
            ("revive", Job::revive, &[S::Cancelled]),
            ("repair", Job::repair, &[S::Acknowledged]),
        ];
        for (name, edge, allowed) in edges {
            for state in all_states() {
                let from = state.name();
                let result = edge(&job(state));
                assert_eq!(result.is_ok(), allowed.contains(&from), "{name} from {from}");
                if let Err(e) = result {
                    assert_eq!(e.action, name);
                    assert_eq!(e.from, from);
                }
            }
        }
    }

    #[test]
    fn only_failures_charge_an_attempt() {
        let running = job(JobState::Running { started_at: Timestamp(1) });
        assert_eq!(running.interrupt(WaitingOn::Network).map(|j| j.attempts), Ok(2));
        assert_eq!(running.succeed(receipt()).map(|j| j.attempts), Ok(2));
        assert_eq!(running.defer("x".into(), Timestamp(3)).map(|j| j.attempts), Ok(3));
        assert_eq!(running.fail("x".into()).map(|j| j.attempts), Ok(3));
    }

    #[test]
    fn acknowledging_keeps_the_receipt() {
        let done = job(JobState::Succeeded { receipt: receipt() });
        let acked = done.acknowledge().map(|j| j.state);
        assert_eq!(acked, Ok(JobState::Acknowledged { receipt: Some(receipt()) }));
    }

    #[test]
    fn names_round_trip() {
        for name in StateName::ALL {
            assert_eq!(StateName::parse(name.as_str()), Some(name));
        }
        assert_eq!(WaitingOn::parse("power"), Some(WaitingOn::Power));
        assert_eq!(StateName::parse("bogus"), None);
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

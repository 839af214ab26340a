//! The payloads of the control socket's answers, as they travel and as
//! `--json` prints them. They belong to the protocol, not to the scheduler or
//! the catalog: those can change their own structs freely, and only a change
//! here (with [`super::protocol::VERSION`] bumped where it breaks older
//! clients) changes what scripts read. The daemon fills them in
//! ([`crate::daemon::wire`]); a test pins the shape of `status --json`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{JobId, StateName, Timestamp, WaitingOn};

/// What the scheduler is doing, for `photosync status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scheduler {
    /// Set while paused by the user.
    pub paused: Option<Pause>,
    /// Why the conditions policy holds uploads back, if it does.
    pub held_by: Option<String>,
    /// Uploads in progress.
    pub uploads: Vec<Upload>,
    /// Work held back and why, per destination and reason.
    pub holds: Vec<Hold>,
    /// Jobs per state (current destinations), by state name.
    pub counts: BTreeMap<String, u64>,
    /// When the next job in `retry_wait` is due.
    pub next_retry: Option<Timestamp>,
    /// The last errors, newest first.
    pub recent_errors: Vec<RecentError>,
    /// Totals since the scheduler started.
    pub totals: Totals,
    /// How far back the backup is complete, by capture time.
    #[serde(default)]
    pub backlog: Backlog,
    /// The data budget of the metered network uploads run on, if one is set.
    #[serde(default)]
    pub budget: Option<Budget>,
    /// Daily request quotas of the destinations that have one (Google Photos).
    #[serde(default)]
    pub quotas: Vec<Quota>,
}

/// How a destination's daily request quota stands, and what the files
/// waiting for it need of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quota {
    /// The destination.
    pub destination: String,
    /// Requests sent today (as this machine counted them).
    pub used: u64,
    /// Requests allowed per day.
    pub limit: u64,
    /// Requests left today.
    pub remaining: u64,
    /// Seconds until the count starts again.
    pub resets_in_seconds: u64,
    /// Requests per file acknowledged today, when there was one.
    pub per_file: Option<f64>,
    /// Files waiting for the destination.
    pub files_waiting: u64,
    /// Days they take at this rate, today counting as the first (0: none waiting).
    pub days: u64,
}

/// How a metered network's data budget stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budget {
    /// The network (a connection profile's name, an interface, a router).
    pub network: String,
    /// Bytes sent over it this period.
    pub used: u64,
    /// Bytes allowed per period.
    pub limit: u64,
    /// Bytes left this period.
    pub remaining: u64,
    /// `day`, `week` or `month`.
    pub period: String,
    /// The day the count starts again (`YYYY-MM-DD`).
    pub resets: String,
    /// Whether it binds uploads now (not while `--allow-metered` runs).
    pub enforced: bool,
}

/// How far back the backup is complete, by when the photos were taken.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backlog {
    /// Photos and videos not yet at every destination (failed ones too).
    pub to_go: u64,
    /// Everything taken after this (`YYYY-MM-DDTHH:MM:SS`, wall clock) is
    /// backed up: the capture time of the newest photo still to go.
    pub complete_after: Option<String>,
    /// Everything taken before this is backed up: the capture time of the
    /// oldest photo still to go.
    pub complete_before: Option<String>,
    /// Which go first: `newest` or `oldest`.
    pub order: String,
}

/// A user pause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pause {
    /// When it ends by itself; `None` until `resume`.
    pub until: Option<Timestamp>,
}

/// One upload in progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Upload {
    /// The job.
    pub job: JobId,
    /// Source path (lossy UTF-8).
    pub path: String,
    /// Destination label.
    pub destination: String,
    /// Bytes at the destination so far.
    pub bytes_done: u64,
    /// Size of the file.
    pub bytes_total: u64,
    /// Bytes per second since the upload started.
    pub rate: f64,
    /// Seconds to go at that rate, when known.
    pub eta_seconds: Option<f64>,
    /// For a member of a group, the path of the group's key file.
    #[serde(default)]
    pub group: Option<String>,
}

/// Work held back at one destination, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    /// Destination label.
    pub destination: String,
    /// Why, in words.
    pub reason: String,
    /// Jobs held.
    pub jobs: u64,
}

/// An error seen recently.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentError {
    /// When.
    pub at: Timestamp,
    /// The job.
    pub job: JobId,
    /// Source path.
    pub path: String,
    /// What went wrong.
    pub error: String,
}

/// What uploading did (since the daemon started, or in one backup).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Files written to a destination.
    pub uploaded: u64,
    /// Files a destination already had.
    pub already_present: u64,
    /// Bytes sent.
    pub bytes_uploaded: u64,
    /// Jobs cancelled (file deleted or replaced).
    pub cancelled: u64,
    /// Failed attempts retried.
    pub retries: u64,
    /// Jobs that failed for good.
    pub failed: u64,
    /// Work held back and why.
    pub holds: Vec<Hold>,
    /// The run was interrupted (signal).
    pub interrupted: bool,
}

/// One row of `photosync jobs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// Job id.
    pub id: JobId,
    /// Lifecycle state.
    pub state: StateName,
    /// Attempts charged.
    pub attempts: u32,
    /// Destination label.
    pub destination: String,
    /// Absolute source path (lossy UTF-8).
    pub path: String,
    /// File size in bytes.
    pub size: u64,
    /// For queued jobs: what they wait on.
    pub waiting_on: Option<WaitingOn>,
    /// For jobs in `retry_wait`: when they are due.
    pub next_attempt_at: Option<Timestamp>,
    /// The current error (`retry_wait`, failed) or cancel reason.
    pub error: Option<String>,
    /// The most recent error, kept after recovery.
    pub last_error: Option<String>,
    /// Where the destination stores it, once uploaded.
    pub receipt_key: Option<String>,
    /// The receipt is the service's word that it has the file (Google
    /// Photos gives back no hash), not bytes photosync compared.
    #[serde(default)]
    pub acknowledged_only: bool,
    /// Last transition time.
    pub updated_at: Timestamp,
    /// For a member of a group (a Live Photo's video, a raw's JPEG, a
    /// sidecar), the path of the group's key file.
    #[serde(default)]
    pub group: Option<String>,
}

/// What one scan of one source found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Scan {
    /// Photos and videos present.
    pub media_files: u64,
    /// Of those, files read because they were new or changed.
    pub read: u64,
    /// Content versions not seen at their path before.
    pub new_versions: u64,
    /// Bytes read to hash.
    pub bytes_read: u64,
    /// Jobs queued.
    pub jobs_queued: u64,
    /// Files and folders that could not be read.
    pub errors: Vec<ScanError>,
    /// Files still changing, left for later.
    pub settling: u64,
    /// Files recorded before that the scan no longer found.
    pub gone: u64,
    /// Why the source could not be scanned now (not mounted, say).
    pub unavailable: Option<String>,
    /// Files not backed up, by reason.
    pub skipped: Skipped,
    /// Files read and found not to be photos or videos.
    pub not_media_read: u64,
}

/// Files of a scan (or several) that are not backed up, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Skipped {
    /// Not a photo or video.
    pub not_media: u64,
    /// Hidden files and folders.
    pub hidden: u64,
    /// Partial downloads and temporary files.
    pub partial_download: u64,
    /// Operating-system litter (`Thumbs.db`).
    pub os_metadata: u64,
    /// Left out by `include`/`exclude`.
    pub excluded: u64,
    /// Could not be read.
    pub unreadable: u64,
    /// Still changing; backed up once they settle.
    pub unsettled: u64,
}

impl Skipped {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &Skipped) {
        self.not_media += other.not_media;
        self.hidden += other.hidden;
        self.partial_download += other.partial_download;
        self.os_metadata += other.os_metadata;
        self.excluded += other.excluded;
        self.unreadable += other.unreadable;
        self.unsettled += other.unsettled;
    }

    /// The non-zero counts with what they count, in words.
    pub fn in_words(&self) -> Vec<String> {
        [
            (self.not_media, "not a photo or video"),
            (self.hidden, "hidden"),
            (self.partial_download, "partial download or temporary file"),
            (self.os_metadata, "system file"),
            (self.excluded, "excluded by your rules"),
            (self.unreadable, "unreadable"),
            (self.unsettled, "still changing"),
        ]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect()
    }
}

/// A file or folder that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanError {
    /// The path.
    pub path: String,
    /// What went wrong.
    pub reason: String,
}

/// What a backup did and left.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backup {
    /// Jobs an interrupted earlier run left running, requeued.
    pub recovered: u64,
    /// One report per source.
    pub scans: Vec<Scan>,
    /// What uploading did.
    pub drain: Totals,
    /// Jobs per state at the end (current destinations), by state name.
    pub counts: BTreeMap<String, u64>,
    /// Every failed job.
    pub failed: Vec<Job>,
    /// Every job waiting to retry.
    pub retry_wait: Vec<Job>,
}

impl Backup {
    /// Jobs in `state` at the end.
    pub fn count(&self, state: StateName) -> u64 {
        self.counts.get(state.as_str()).copied().unwrap_or(0)
    }
}

/// What `photosync why` says of one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhyAnswer {
    /// The path asked about, absolute.
    pub path: String,
    /// `backed_up`, `waiting` or `not_backed_up`.
    pub verdict: String,
    /// Why, in one word (`acknowledged`, `not_scanned`, `not_media`…).
    pub reason: String,
    /// Why, and what would change it.
    pub explanation: String,
    /// Its upload to each destination, once a scan has recorded it.
    pub destinations: Vec<WhyUpload>,
    /// When it was taken and with what, once a scan has read that.
    #[serde(default)]
    pub taken: Option<Taken>,
    /// The other files of its group (Live Photo video, raw's JPEG,
    /// sidecars): it counts as backed up only once they all are.
    #[serde(default)]
    pub group: Vec<String>,
}

/// When a photo or video was taken, as its scan read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Taken {
    /// The wall-clock time where it was taken, `YYYY-MM-DDTHH:MM:SS`.
    pub local: String,
    /// Its offset from UTC (`+02:00`), when known.
    pub offset: Option<String>,
    /// Where the time was read: `exif`, `quicktime`, `filename` or `mtime`.
    pub source: String,
    /// `photo` or `video`.
    pub kind: String,
    /// The camera's make and model, when the file names them.
    pub camera: Option<String>,
}

/// The upload of a file to one destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhyUpload {
    /// The destination's name.
    pub destination: String,
    /// The job's state.
    pub state: StateName,
    /// Where the destination keeps it, once uploaded.
    pub receipt_key: Option<String>,
    /// When the state last changed.
    pub updated_at: Timestamp,
    /// The job's current error.
    pub error: Option<String>,
}

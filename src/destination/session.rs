//! Resumable upload sessions, kept durable per job by the catalog.
//!
//! A destination that can resume an upload (an S3 multipart upload and its
//! parts, a Nextcloud chunk folder and its chunks, a Dropbox session and its
//! offset) records a [`Session`] before any bytes move, and one numbered
//! piece as soon as the server confirms it. The catalog keeps both as opaque
//! JSON tagged with the destination's `kind` and a `version`, so it never
//! needs to know one destination from another, and a destination can change
//! what it records (a new version) without a catalog migration. `created_at`
//! lets a destination whose server forgets unfinished uploads (Nextcloud
//! after a day, Dropbox after a week) start over cleanly instead of failing.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::destination::DestinationError;
use crate::model::{JobId, Timestamp};

/// A failure of the [`SessionStore`].
pub type StoreError = Box<dyn std::error::Error + Send + Sync>;

/// A resumable upload in progress, as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    /// Which destination's format (`s3-multipart`, …).
    pub kind: String,
    /// The format's version.
    pub version: u32,
    /// What the destination needs to resume (its upload id, key…).
    pub state: serde_json::Value,
    /// Pieces the server confirmed, by number, in order.
    pub pieces: Vec<(u32, serde_json::Value)>,
    /// When the session was begun.
    pub created_at: Timestamp,
}

impl Session {
    /// The state and pieces as the destination's own types, when the record
    /// is of `kind` and `version`; `None` for anything else (an older
    /// format, another destination's): the upload then starts afresh.
    pub fn decode<S: DeserializeOwned, P: DeserializeOwned>(&self, kind: &str, version: u32) -> Option<(S, Vec<P>)> {
        if self.kind != kind || self.version != version {
            return None;
        }
        let state = serde_json::from_value(self.state.clone()).ok()?;
        let pieces =
            self.pieces.iter().map(|(_, p)| serde_json::from_value(p.clone())).collect::<Result<Vec<P>, _>>().ok()?;
        Some((state, pieces))
    }
}

/// Durable sessions, per job (the catalog implements it).
pub trait SessionStore: Send + Sync {
    /// The session in progress for `job`, if any.
    fn load(&self, job: JobId) -> Result<Option<Session>, StoreError>;
    /// Records a new session for `job`, replacing any older one and its pieces.
    fn begin(&self, job: JobId, kind: &str, version: u32, state: &serde_json::Value) -> Result<(), StoreError>;
    /// Records piece `number` as confirmed (replacing one of that number).
    fn record(&self, job: JobId, number: u32, piece: &serde_json::Value) -> Result<(), StoreError>;
    /// Drops the session once the upload is complete or abandoned.
    fn forget(&self, job: JobId) -> Result<(), StoreError>;
    /// What the destination called `scope` keeps under `key` beyond any
    /// one upload (an album's id, today's request count).
    fn note(&self, scope: &str, key: &str) -> Result<Option<serde_json::Value>, StoreError>;
    /// Replaces the note under `key` with what `change` makes of it (`None`
    /// removes it), atomically; the new note.
    fn update_note(
        &self,
        scope: &str,
        key: &str,
        change: &mut dyn FnMut(Option<serde_json::Value>) -> Option<serde_json::Value>,
    ) -> Result<Option<serde_json::Value>, StoreError>;
}

/// The session recorded for `job` as `kind` at `version`: its state, its
/// pieces and when it began. A record of another format (an older
/// version, another destination's) is forgotten: the upload starts afresh.
pub fn recorded<S: DeserializeOwned, P: DeserializeOwned>(
    store: &dyn SessionStore,
    job: JobId,
    kind: &str,
    version: u32,
) -> Result<Option<(S, Vec<P>, Timestamp)>, DestinationError> {
    let Some(session) = store.load(job).map_err(store_error)? else { return Ok(None) };
    if let Some((state, pieces)) = session.decode(kind, version) {
        return Ok(Some((state, pieces, session.created_at)));
    }
    store.forget(job).map_err(store_error)?;
    Ok(None)
}

/// A store failure, for an upload: it may pass (a busy or full disk).
#[allow(clippy::needless_pass_by_value)] // shaped for `map_err`
pub fn store_error(e: StoreError) -> DestinationError {
    DestinationError::transient(format!("cannot record upload progress in the catalog: {e}"))
}

/// `value` as JSON for the store.
pub fn to_json(value: &impl Serialize) -> Result<serde_json::Value, DestinationError> {
    serde_json::to_value(value).map_err(|e| DestinationError::permanent(format!("cannot record a session: {e}")))
}

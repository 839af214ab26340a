//! The job state machine: a [`Job`] is the upload of one asset to one
//! destination; every lifecycle edge is one method returning the next job
//! or a [`TransitionError`].

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{AssetId, DestinationId, JobId, Receipt, Timestamp};

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
    use crate::model::{ContentHash, RemoteKey};

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
}

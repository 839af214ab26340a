//! The daemon's (and the one-shot backup's) results, put into the
//! protocol's wire types ([`crate::ipc::wire`]): the one place that knows
//! both sides, so either can change without the other.

use crate::backup::BackupOutcome;
use crate::catalog::{JobView, StateCounts};
use crate::config::Order;
use crate::discover::{ScanReport, Skipped};
use crate::ipc::wire;
use crate::model::StateName;
use crate::scheduler::{DrainReport, Hold, SchedulerStatus};

/// The scheduler's view.
pub fn scheduler(status: &SchedulerStatus) -> wire::Scheduler {
    wire::Scheduler {
        paused: status.paused.map(|p| wire::Pause { until: p.until }),
        held_by: status.held_by.clone(),
        uploads: status
            .uploads
            .iter()
            .map(|u| wire::Upload {
                job: u.job,
                path: u.path.clone(),
                destination: u.destination.clone(),
                bytes_done: u.bytes_done,
                bytes_total: u.bytes_total,
                rate: u.rate,
                eta_seconds: u.eta_seconds,
                group: u.group.clone(),
            })
            .collect(),
        holds: holds(&status.holds),
        counts: status.counts.clone(),
        next_retry: status.next_retry,
        recent_errors: status
            .recent_errors
            .iter()
            .map(|e| wire::RecentError { at: e.at, job: e.job, path: e.path.clone(), error: e.error.clone() })
            .collect(),
        totals: totals(&status.totals),
        backlog: wire::Backlog {
            to_go: status.backlog.to_go,
            complete_after: status.backlog.newest.map(|t| t.to_string()),
            complete_before: status.backlog.oldest.map(|t| t.to_string()),
            order: match status.order {
                Order::Newest => "newest",
                Order::Oldest => "oldest",
            }
            .to_owned(),
        },
        budget: status.budget.as_ref().map(|b| wire::Budget {
            network: b.network.clone(),
            used: b.used,
            limit: b.limit,
            remaining: b.remaining(),
            period: b.period.to_owned(),
            resets: b.resets.to_string(),
            enforced: b.enforced,
        }),
        quotas: status
            .quotas
            .iter()
            .map(|q| wire::Quota {
                destination: q.destination.clone(),
                used: q.used,
                limit: q.limit,
                remaining: q.limit.saturating_sub(q.used),
                resets_in_seconds: q.resets_in_seconds,
                per_file: q.per_file,
                files_waiting: q.files_waiting,
                days: q.days,
            })
            .collect(),
    }
}

fn holds(holds: &[Hold]) -> Vec<wire::Hold> {
    holds
        .iter()
        .map(|h| wire::Hold { destination: h.destination.clone(), reason: h.reason.clone(), jobs: h.jobs })
        .collect()
}

/// Jobs per state, by state name (every state, zeros included).
fn counts(counts: &StateCounts) -> std::collections::BTreeMap<String, u64> {
    StateName::ALL.iter().map(|s| (s.as_str().to_owned(), counts.get(*s))).collect()
}

/// What uploading did.
pub fn totals(report: &DrainReport) -> wire::Totals {
    wire::Totals {
        uploaded: report.uploaded,
        already_present: report.already_present,
        bytes_uploaded: report.bytes_uploaded,
        cancelled: report.cancelled,
        retries: report.retries,
        failed: report.failed,
        holds: holds(&report.holds),
        interrupted: report.interrupted,
    }
}

/// One row of `photosync jobs`.
pub fn job(view: &JobView) -> wire::Job {
    wire::Job {
        id: view.id,
        state: view.state,
        attempts: view.attempts,
        destination: view.destination.clone(),
        path: view.path.clone(),
        size: view.size,
        waiting_on: view.waiting_on,
        next_attempt_at: view.next_attempt_at,
        error: view.error.clone(),
        last_error: view.last_error.clone(),
        receipt_key: view.receipt_key.clone(),
        acknowledged_only: view.acknowledged_only,
        updated_at: view.updated_at,
        group: view.group.clone(),
    }
}

/// Files left out, by reason.
pub fn skipped(skipped: &Skipped, unreadable: u64, unsettled: u64) -> wire::Skipped {
    wire::Skipped {
        not_media: skipped.not_media,
        hidden: skipped.hidden,
        partial_download: skipped.partial_download,
        os_metadata: skipped.os_metadata,
        excluded: skipped.excluded,
        unreadable,
        unsettled,
    }
}

/// What a scan found.
pub fn scan(report: &ScanReport) -> wire::Scan {
    wire::Scan {
        media_files: report.media_files,
        read: report.read,
        new_versions: report.new_versions,
        bytes_read: report.bytes_read,
        jobs_queued: report.jobs_queued,
        errors: report
            .errors
            .iter()
            .map(|e| wire::ScanError { path: e.path.clone(), reason: e.reason.clone() })
            .collect(),
        settling: report.settling,
        gone: report.gone,
        unavailable: report.unavailable.clone(),
        skipped: skipped(&report.skipped, report.errors.len() as u64, report.settling),
        not_media_read: report.not_media_read,
    }
}

/// What a backup did and left.
pub fn backup(outcome: &BackupOutcome) -> wire::Backup {
    wire::Backup {
        recovered: outcome.recovered as u64,
        scans: outcome.scans.iter().map(scan).collect(),
        drain: totals(&outcome.drain),
        counts: counts(&outcome.counts),
        failed: outcome.failed.iter().map(job).collect(),
        retry_wait: outcome.retry_wait.iter().map(job).collect(),
    }
}

/// What `photosync why` says of one file.
pub fn why(answer: &crate::why::Answer) -> wire::WhyAnswer {
    wire::WhyAnswer {
        path: answer.path.clone(),
        verdict: answer.verdict.to_owned(),
        reason: answer.reason.to_owned(),
        explanation: answer.explanation.clone(),
        destinations: answer
            .destinations
            .iter()
            .map(|u| wire::WhyUpload {
                destination: u.destination.clone(),
                state: u.state,
                receipt_key: u.receipt_key.clone(),
                updated_at: u.updated_at,
                error: u.error.clone(),
            })
            .collect(),
        group: answer.group.clone(),
        taken: answer.info.as_ref().map(|info| wire::Taken {
            local: info.capture.local.to_string(),
            offset: info.capture.offset_text(),
            source: info.capture.source.as_str().to_owned(),
            kind: info.kind.as_str().to_owned(),
            camera: info.camera.clone(),
        }),
    }
}

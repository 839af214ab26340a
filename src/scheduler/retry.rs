//! What a failed upload leads to: an in-run retry, `retry_wait` with
//! backoff, or `failed`; and the breaker that rests a destination after
//! several jobs in a row spent their retries there.

use tokio::time::Instant;

use super::status::RecentError;
use super::{BREAKER_THRESHOLD, Breaker, Flight, Mode, RECENT_ERRORS, RETRY_AFTER_IN_RUN, Scheduler, jitter, round};
use crate::catalog::CatalogError;
use crate::destination::DestinationError;
use crate::model::{DestinationId, JobId, Timestamp};
use crate::policy::{Deadline, RetryDecision, decide_retry};

/// How often the daemon looks again at a destination held for the user.
const USER_RECHECK: std::time::Duration = std::time::Duration::from_mins(1);

/// How long a destination that asked for fewer requests without saying
/// for how long rests.
const THROTTLE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// How many times a one-shot run waits out a job's "fewer requests" before
/// leaving it for the next run.
const THROTTLES_PER_RUN: u32 = 10;

impl Scheduler<'_> {
    pub(super) fn remember_error(&mut self, job: JobId, path: &std::path::Path, error: &str) {
        self.recent_errors.push_front(RecentError {
            at: Timestamp::now(),
            job,
            path: path.display().to_string(),
            error: error.to_owned(),
        });
        self.recent_errors.truncate(RECENT_ERRORS);
    }

    pub(super) fn failed(&mut self, flight: Flight, error: &DestinationError) -> Result<(), CatalogError> {
        let Flight { running, mut pending, .. } = flight;
        let path = pending.path();
        self.remember_error(running.id, &path, &error.message);
        let now = Timestamp::now();
        if !error.retryable() {
            tracing::warn!(path = %path.display(), "upload failed: {error}");
            self.catalog.apply(&running, &running.fail(error.message.clone())?, now)?;
            self.report.failed += 1;
            self.observer.job_done();
            return Ok(());
        }
        let tries = self.tries.entry(running.id).or_insert(0);
        *tries += 1;
        let tries = *tries;
        let failures = running.attempts + 1;
        let retry = self.settings.retry;
        let budget_left = retry.max_attempts == 0 || failures < retry.max_attempts;
        let quick = self.settings.mode == Mode::OneShot && tries < retry.attempts_per_run && budget_left;
        let delay = error.retry_after.unwrap_or_else(|| retry.in_run.delay(tries, jitter()));
        // A wait the server asked for is waited out within the run up to a limit.
        let in_run_limit = if error.retry_after.is_some() { RETRY_AFTER_IN_RUN } else { retry.in_run.cap };
        if quick && delay <= in_run_limit {
            tracing::warn!(path = %path.display(), "upload failed, retrying in {}: {error}", humantime::format_duration(round(delay)));
            let waiting = running.defer(error.message.clone(), now.after(delay))?;
            self.catalog.apply(&running, &waiting, now)?;
            self.report.retries += 1;
            pending.job = waiting;
            self.sleeping.push((Instant::now() + delay, pending));
            return Ok(());
        }
        self.tries.remove(&running.id);
        match decide_retry(now, retry.backoff, failures, retry.max_attempts, error.retry_after, jitter()) {
            RetryDecision::RetryAt(at) => {
                tracing::warn!(path = %path.display(), "upload failed; next attempt at {}: {error}", at.to_rfc3339());
                let waiting = running.defer(error.message.clone(), at)?;
                self.catalog.apply(&running, &waiting, now)?;
                self.trip(running.destination_id, error);
                // Due within moments: a one-shot run waits for it rather
                // than leave it to a run an hour away.
                if self.settings.mode == Mode::OneShot && now.until(at) <= in_run_limit {
                    self.report.retries += 1;
                    pending.job = waiting;
                    self.sleeping.push((Instant::now() + now.until(at), pending));
                    return Ok(());
                }
                let at = Deadline::at(at);
                self.next_retry = Some(self.next_retry.filter(|t| t.wall() <= at.wall()).unwrap_or(at));
            }
            RetryDecision::GiveUp => {
                let message = format!("{error} (gave up after {failures} attempts)");
                tracing::warn!(path = %path.display(), "upload failed for good: {message}");
                self.catalog.apply(&running, &running.fail(message)?, now)?;
                self.report.failed += 1;
            }
        }
        self.observer.job_done();
        Ok(())
    }

    /// The service asked for fewer requests: the job waits, uncharged (the
    /// file is not at fault), and the destination rests as long as asked,
    /// so that no other upload spends a request on a refusal meanwhile.
    pub(super) fn throttled(&mut self, flight: Flight, error: &DestinationError) -> Result<(), CatalogError> {
        let Flight { running, mut pending, .. } = flight;
        let path = pending.path();
        self.remember_error(running.id, &path, &error.message);
        let now = Timestamp::now();
        let wait = error.retry_after.unwrap_or(THROTTLE_WAIT);
        let at = now.after(wait);
        tracing::warn!(path = %path.display(), "the destination asks for fewer requests; trying again in {}: {error}", humantime::format_duration(round(wait)));
        let waiting = running.hold_off(error.message.clone(), at)?;
        self.catalog.apply(&running, &waiting, now)?;
        let destination = running.destination_id;
        let breaker = self.breakers.entry(destination).or_default();
        // When the destination may be tried again (`None`: not in this run).
        let until = match &breaker.open {
            // Held for the user, or for the rest of the run: left so.
            Some((_, until)) if breaker.for_user || until.is_none() => *until,
            // Already resting longer.
            Some((_, Some(later))) if later.wall() > at => Some(*later),
            _ => {
                let until = Deadline::at(at);
                breaker.open = Some((format!("asked for fewer requests: {error}"), Some(until)));
                breaker.for_user = false;
                breaker.resting = true;
                Some(until)
            }
        };
        let throttles = self.throttles.entry(running.id).or_insert(0);
        *throttles += 1;
        // Woken when the destination may be tried again.
        let wake = until.map(|u| now.until(u.wall()));
        if self.settings.mode == Mode::OneShot
            && let Some(wake) = wake.filter(|w| *w <= RETRY_AFTER_IN_RUN)
            && *throttles < THROTTLES_PER_RUN
        {
            pending.job = waiting;
            self.sleeping.push((Instant::now() + wake, pending));
            return Ok(());
        }
        self.throttles.remove(&running.id);
        let at = Deadline::at(at);
        self.next_retry = Some(self.next_retry.filter(|t| t.wall() <= at.wall()).unwrap_or(at));
        self.observer.job_done();
        Ok(())
    }

    /// Counts a job that exhausted its retries; enough in a row hold the destination.
    fn trip(&mut self, destination: DestinationId, error: &DestinationError) {
        if let Some(tripped) = &mut self.settling_batch
            && !tripped.insert(destination)
        {
            // The batch's fault is counted already.
            return;
        }
        let consecutive = {
            let breaker = self.breakers.entry(destination).or_default();
            breaker.consecutive += 1;
            breaker.consecutive
        };
        if consecutive >= BREAKER_THRESHOLD {
            let until = self.cooldown(consecutive);
            let name = self.targets.get(&destination).map_or("?", |t| t.name.as_str());
            tracing::warn!(destination = name, "{consecutive} uploads in a row failed; holding this destination");
            let reason = format!("{consecutive} uploads in a row failed; last error: {error}");
            if let Some(breaker) = self.breakers.get_mut(&destination)
                && !(breaker.for_user && breaker.open.is_some())
            {
                breaker.open = Some((reason, until));
                breaker.for_user = false;
                breaker.resting = false;
            }
        }
    }

    /// Holds `destination` until the user acts (signs in again) or a time
    /// the service named passes (a daily quota's reset): for the rest of a
    /// one-shot run; in the daemon until that time, or to be looked at
    /// again after [`USER_RECHECK`] (cheap: a destination remembers what
    /// the service refused and asks again only once something changed).
    pub(super) fn hold_for_user(&mut self, destination: DestinationId, error: &DestinationError) {
        let name = self.targets.get(&destination).map_or("?", |t| t.name.as_str());
        let held =
            self.breakers.get(&destination).and_then(|b| b.open.as_ref()).is_some_and(|(m, _)| *m == error.message);
        if !held {
            tracing::warn!(destination = name, "holding this destination: {error}");
        }
        let until = match self.settings.mode {
            Mode::OneShot => None,
            // Until the time the service named (a quota's reset), else a minute.
            Mode::Service => Some(Deadline::at(Timestamp::now().after(error.retry_after.unwrap_or(USER_RECHECK)))),
        };
        // Not a failure: the count of failures in a row starts afresh.
        let open = Some((error.message.clone(), until));
        self.breakers.insert(destination, Breaker { consecutive: 0, open, for_user: true, resting: false });
    }

    /// How long a failing destination rests: the rest of a one-shot run, or
    /// the backoff for that many failures in the daemon.
    pub(super) fn cooldown(&self, failures: u32) -> Option<Deadline> {
        match self.settings.mode {
            Mode::OneShot => None,
            Mode::Service => Some(Deadline::at(Timestamp::now().after(self.settings.retry.backoff.ceiling(failures)))),
        }
    }
}

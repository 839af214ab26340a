//! What people see: the progress bar, log lines that do not tear it, and
//! short descriptions of jobs.

use std::borrow::Cow;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use photosync::backup::BackupObserver;
use photosync::discover::ScanReport;
use photosync::ipc::wire;
use photosync::model::{StateName, WaitingOn};
use photosync::scheduler::RunObserver;

/// The bar currently on screen, so log lines can be printed above it.
static ACTIVE_BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// A `tracing` writer for stderr that hides the progress bar while a line is
/// written, so logs and bar never interleave.
pub fn log_writer() -> LogWriter {
    LogWriter
}

/// See [`log_writer`].
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let bar = ACTIVE_BAR.lock().unwrap_or_else(PoisonError::into_inner).clone();
        match bar {
            Some(bar) => bar.suspend(|| io::stderr().write_all(buf)).map(|()| buf.len()),
            None => io::stderr().write_all(buf).map(|()| buf.len()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

/// Progress display for `photosync backup` on a terminal: one byte bar
/// whose total grows as the scan finds files, with file counts beside it.
pub struct BackupProgress {
    bar: ProgressBar,
    jobs: AtomicU64,
    done: AtomicU64,
    scanned: AtomicU64,
    scanning: AtomicBool,
}

impl BackupProgress {
    /// A bar drawn on stdout (callers only create one when stdout is a terminal).
    pub fn new() -> Self {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stdout());
        let template = "{spinner} {bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}  {msg}";
        bar.set_style(ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()));
        bar.enable_steady_tick(Duration::from_millis(120));
        *ACTIVE_BAR.lock().unwrap_or_else(PoisonError::into_inner) = Some(bar.clone());
        Self {
            bar,
            jobs: AtomicU64::new(0),
            done: AtomicU64::new(0),
            scanned: AtomicU64::new(0),
            scanning: AtomicBool::new(true),
        }
    }

    /// Removes the bar from the screen.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
        *ACTIVE_BAR.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    fn refresh(&self) {
        let (done, jobs) = (self.done.load(Ordering::Relaxed), self.jobs.load(Ordering::Relaxed));
        let scan = if self.scanning.load(Ordering::Relaxed) {
            format!(", scanning ({} found)", self.scanned.load(Ordering::Relaxed))
        } else {
            String::new()
        };
        self.bar.set_message(format!("{done}/{jobs} files{scan}"));
    }
}

impl RunObserver for BackupProgress {
    fn queued(&self, jobs: u64, bytes: u64) {
        self.jobs.fetch_add(jobs, Ordering::Relaxed);
        self.bar.inc_length(bytes);
        self.refresh();
    }

    fn bytes(&self, delta: i64) {
        if delta >= 0 {
            self.bar.inc(delta as u64);
        } else {
            self.bar.set_position(self.bar.position().saturating_sub(delta.unsigned_abs()));
        }
    }

    fn job_done(&self) {
        self.done.fetch_add(1, Ordering::Relaxed);
        self.refresh();
    }
}

impl BackupObserver for BackupProgress {
    fn scanning(&self, report: &ScanReport) {
        self.scanned.store(report.media_files, Ordering::Relaxed);
        self.refresh();
    }

    fn scan_finished(&self) {
        self.scanning.store(false, Ordering::Relaxed);
        self.refresh();
    }
}

/// No display (stdout is not a terminal, or `--json`).
pub struct NoProgress;
impl RunObserver for NoProgress {}
impl BackupObserver for NoProgress {}

/// One line saying why a job is where it is.
pub fn describe_job(job: &wire::Job) -> String {
    let error = job.error.as_deref().unwrap_or("");
    match job.state {
        StateName::Queued => match job.waiting_on.and_then(WaitingOn::describe) {
            Some(why) => why.to_owned(),
            None => job.last_error.as_ref().map(|e| format!("last error: {e}")).unwrap_or_default(),
        },
        StateName::RetryWait => {
            let at = job.next_attempt_at.map(photosync::model::Timestamp::to_rfc3339).unwrap_or_default();
            format!("retry at {at}: {error}")
        }
        StateName::Failed | StateName::Cancelled => error.to_owned(),
        StateName::Succeeded | StateName::Acknowledged => {
            match (&job.receipt_key, job.acknowledged_only) {
                (None, _) => "dismissed".into(),
                (Some(k), false) => format!("stored as {k}"),
                // The service's word, not bytes compared: say so.
                (Some(k), true) => format!("acknowledged by the service as {k} (it gives back no hash to compare)"),
            }
        }
        StateName::Running => String::new(),
    }
}

/// `text` with every control character (newline, tab, ESC, the C1 range,
/// DEL) shown as an escape, so a file name cannot rewrite the terminal or
/// fake a line of output.
pub fn printable(text: &str) -> Cow<'_, str> {
    escape_controls(text, false)
}

/// Like [`printable`], but keeps newlines: for messages of several lines.
pub fn printable_lines(text: &str) -> Cow<'_, str> {
    escape_controls(text, true)
}

fn escape_controls(text: &str, keep_newlines: bool) -> Cow<'_, str> {
    let escaped = |c: char| c.is_control() && !(keep_newlines && c == '\n');
    if !text.chars().any(escaped) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' if escaped(c) => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if escaped(c) => out.extend(c.escape_unicode()),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Keeps the end of a path that is too long for its column.
pub fn truncate_left(text: &str, width: usize) -> String {
    let count = text.chars().count();
    if count <= width {
        return text.to_owned();
    }
    let tail: String = text.chars().skip(count - (width - 1)).collect();
    format!("…{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: file names reached the terminal raw, so a name holding
    /// a newline or an ESC sequence could rewrite the user's terminal.
    #[test]
    fn control_characters_in_names_are_escaped() {
        assert_eq!(printable("IMG_1.JPG"), "IMG_1.JPG");
        assert_eq!(printable("a\nb\tc\u{1b}[2Jd\u{9b}e\u{7f}"), "a\\nb\\tc\\u{1b}[2Jd\\u{9b}e\\u{7f}");
        assert_eq!(printable_lines("line one\nline \u{1b}two"), "line one\nline \\u{1b}two");
    }

    #[test]
    fn truncation_keeps_the_file_name() {
        assert_eq!(truncate_left("short", 10), "short");
        assert_eq!(truncate_left("/very/long/path/IMG_0001.JPG", 13), "…IMG_0001.JPG");
    }
}

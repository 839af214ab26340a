//! Keeping the scan of `photosync backup` from running far ahead of the
//! uploads.
//!
//! The scheduler holds every job it has loaded in memory. A first scan of a
//! big library finds files faster than they can be uploaded, so the queue
//! grew with the whole library (100,000 photos: tens of MiB). While uploads
//! flow and the queue holds [`AHEAD`] jobs, the scan waits; it goes on as
//! the queue drains, and at once whenever uploads do not flow (held by the
//! policy, a destination down or held, an upload window or a data budget in
//! force: then the scan must still find everything, to say what waits).
//! The daemon's discovery thread is not held back: it also follows the
//! watcher and answers requests, which must not wait for a backlog.

use std::sync::{Arc, Condvar, Mutex, PoisonError};

/// Jobs the queue may hold while uploads run before the scan waits.
pub const AHEAD: usize = 8192;

#[derive(Debug, Default)]
struct State {
    closed: bool,
    /// The scheduler has gone: nothing will open the gate again.
    gone: bool,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn update(&self, change: impl FnOnce(&mut State)) {
        change(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner));
        self.changed.notify_all();
    }
}

/// The scheduler's end: says whether the scan may go on.
#[derive(Debug)]
pub struct ScanGate(Arc<Shared>);

/// The scan's end: waits while the scheduler says so.
#[derive(Debug, Clone)]
pub struct ScanWait(Arc<Shared>);

/// A gate, open, and its scan's end.
pub fn scan_gate() -> (ScanGate, ScanWait) {
    let shared = Arc::new(Shared::default());
    (ScanGate(Arc::clone(&shared)), ScanWait(shared))
}

impl ScanGate {
    /// Opens the gate unless uploads flow and `queued` jobs wait already.
    pub fn set(&self, queued: usize, flowing: bool) {
        let closed = queued >= AHEAD && flowing;
        let mut state = self.0.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.closed != closed {
            state.closed = closed;
            drop(state);
            self.0.changed.notify_all();
        }
    }
}

impl Drop for ScanGate {
    fn drop(&mut self) {
        self.0.update(|state| state.gone = true);
    }
}

impl ScanWait {
    /// Blocks the calling thread while the gate is closed; returns at once
    /// once the scheduler has gone.
    pub fn wait(&self) {
        let state = self.0.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.closed && !state.gone {
            tracing::debug!("the scan waits for the uploads to catch up");
        }
        let _open = self
            .0
            .changed
            .wait_while(state, |state| state.closed && !state.gone)
            .unwrap_or_else(PoisonError::into_inner);
    }

    /// Whether a scan would wait now.
    #[cfg(test)]
    fn closed(&self) -> bool {
        let state = self.0.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.closed && !state.gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scan waits only while uploads run and the queue is full, goes on
    /// once the queue drains, and never waits for a scheduler that has gone.
    #[test]
    fn the_scan_waits_only_for_uploads_that_run() {
        let (gate, wait) = scan_gate();
        gate.set(AHEAD, false);
        wait.wait();
        gate.set(AHEAD - 1, true);
        wait.wait();
        gate.set(AHEAD, true);
        assert!(wait.closed());
        let waiter = std::thread::spawn({
            let wait = wait.clone();
            move || {
                wait.wait();
                // It returns only once the gate is open.
                !wait.closed()
            }
        });
        gate.set(AHEAD - 1, true);
        assert!(waiter.join().expect("waiter"), "the scan went on while the gate was closed");
        gate.set(AHEAD, true);
        drop(gate);
        wait.wait();
    }
}

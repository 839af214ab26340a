//! `POST /assets/bulk-upload-check` (`checkBulkUpload`), shared: uploads
//! that ask at the same time whether the server holds their content ask in
//! one request. Whoever's turn it is sends every SHA-1 waiting then (up to
//! [`BATCH`]), so a check waits for nothing but the request before it, and
//! a second machine's backup of a library the server already has costs a
//! fraction of a request per photo.

use std::sync::{Mutex, PoisonError};

use reqwest::header::CONTENT_TYPE;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::{ImmichDestination, TRASHED};
use crate::destination::DestinationError;

/// The most SHA-1s one request carries (the official CLI sends up to 5,000).
const BATCH: usize = 1000;

/// SHA-1s waiting to be asked about, and whose turn it is to ask.
#[derive(Default)]
pub(super) struct Checks {
    waiting: Mutex<Vec<Wanted>>,
    turn: tokio::sync::Mutex<()>,
    next: std::sync::atomic::AtomicU64,
}

struct Wanted {
    id: u64,
    sha1: String,
    reply: oneshot::Sender<Result<Option<String>, DestinationError>>,
}

/// `POST /assets/bulk-upload-check`.
#[derive(Deserialize)]
struct BulkCheck {
    results: Vec<BulkCheckResult>,
}

#[derive(Deserialize)]
struct BulkCheckResult {
    /// The id the request gave the checksum.
    id: String,
    action: String,
    #[serde(rename = "assetId")]
    asset_id: Option<String>,
    #[serde(rename = "isTrashed", default)]
    is_trashed: bool,
}

impl ImmichDestination {
    /// The id of the asset the server holds with this SHA-1, if any.
    pub(super) async fn duplicate_of(
        &self,
        cancel: &CancellationToken,
        sha1: &str,
    ) -> Result<Option<String>, DestinationError> {
        let (reply, mut answer) = oneshot::channel();
        let id = self.checks.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.checks.waiting.lock().unwrap_or_else(PoisonError::into_inner).push(Wanted {
            id,
            sha1: sha1.to_owned(),
            reply,
        });
        loop {
            tokio::select! {
                biased;
                found = &mut answer => {
                    return found.unwrap_or_else(|_| Err(DestinationError::transient("the duplicate check was dropped")));
                }
                () = cancel.cancelled() => {
                    // Only a question: whether or not it was sent, nothing changes.
                    self.checks.waiting.lock().unwrap_or_else(PoisonError::into_inner).retain(|w| w.id != id);
                    return Err(DestinationError::interrupted());
                }
                turn = self.checks.turn.lock() => {
                    self.send_checks().await;
                    drop(turn);
                }
            }
        }
    }

    /// Asks about every SHA-1 waiting now, and hands out the answers.
    async fn send_checks(&self) {
        let batch: Vec<Wanted> = {
            let mut waiting = self.checks.waiting.lock().unwrap_or_else(PoisonError::into_inner);
            let take = waiting.len().min(BATCH);
            waiting.drain(..take).collect()
        };
        if batch.is_empty() {
            return;
        }
        let assets: Vec<_> = batch.iter().map(|w| json!({"id": w.id.to_string(), "checksum": w.sha1})).collect();
        let body = json!({ "assets": assets }).to_string();
        // Answers for every upload waiting ride on it: not cut short by one's cancel.
        let cancel = CancellationToken::new();
        let checked = match self.client.get() {
            Ok(client) => {
                let request = client
                    .post(self.url("assets/bulk-upload-check"))
                    .header(CONTENT_TYPE, "application/json")
                    .body(body);
                self.json::<BulkCheck>(&cancel, request, "the duplicate check").await
            }
            Err(e) => Err(e),
        };
        for wanted in batch {
            let found = match &checked {
                Err(e) => Err(e.clone()),
                Ok(check) => match check.results.iter().find(|r| r.id == wanted.id.to_string()) {
                    // A trashed copy is no backup, and the server would refuse another.
                    Some(r) if r.action == "reject" && r.is_trashed => Err(DestinationError::permanent(TRASHED)),
                    Some(r) if r.action == "reject" => Ok(r.asset_id.clone()),
                    Some(_) => Ok(None),
                    None => Err(DestinationError::transient("Immich's duplicate check left a photo out")),
                },
            };
            let _ = wanted.reply.send(found);
        }
    }
}

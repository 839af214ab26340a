//! The library: app-created albums, found or made once and remembered in
//! the catalog
//! (<https://developers.google.com/photos/library/reference/rest/v1/albums/list>
//! with `excludeNonAppCreatedData`,
//! <https://developers.google.com/photos/library/reference/rest/v1/albums/create>),
//! and media items made from upload tokens in batches of up to 50, one
//! request at a time per destination as Google asks
//! (<https://developers.google.com/photos/library/reference/rest/v1/mediaItems/batchCreate>,
//! <https://developers.google.com/photos/library/guides/upload-media#best-practices>;
//! each result's status is read on its own).
//!
//! A token waits for others to share its request until the batch is full,
//! or `batch_wait` has passed since the oldest arrived; once every small
//! file's upload in progress here has its token waiting, only a tenth of
//! that (for the uploads the scheduler starts next). A big video's upload
//! is not waited for: it joins a batch when its token is ready. The daily
//! quota counts requests, not bytes or time, so a fuller batch is worth a
//! moment's wait.
//!
//! Each job's session records that its token was asked about (only when
//! the request goes) and the media item made (before the job hears of
//! it), so neither an interruption nor a crash makes anything twice.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{Notify, oneshot};
use tokio_util::sync::CancellationToken;

use super::{GooglePhotosDestination, upload};
use crate::destination::{DestinationError, JobId, Retry, http};

/// The most media items one `batchCreate` may carry.
pub(super) const BATCH: usize = 50;

/// An album takes 20,000 items; the next one (`title (2)`) is begun a
/// little before, so uploads already on their way still fit.
const ALBUM_FULL: u64 = 20_000 - 100;

/// Albums known by title, tokens waiting for their media items, and one
/// `batchCreate` at a time.
pub(super) struct Library {
    albums: tokio::sync::Mutex<HashMap<String, Album>>,
    waiting: Mutex<Waiting>,
    arrived: Notify,
    creating: tokio::sync::Mutex<()>,
    /// Uploads in progress at this destination (each may soon bring a token).
    uploading: AtomicUsize,
    /// The longest a token waits for others.
    wait: Duration,
}

/// An album, as remembered in the catalog under `album:TITLE`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Album {
    id: String,
    /// Items in it, as far as photosync knows.
    items: u64,
}

#[derive(Default)]
struct Waiting {
    next: u64,
    tokens: Vec<Wanted>,
}

/// A media item asked for.
struct Wanted {
    id: u64,
    job: JobId,
    album: Option<String>,
    token: String,
    name: String,
    since: Instant,
    reply: oneshot::Sender<Result<String, Refused>>,
}

/// Why no media item was made.
#[derive(Debug, Clone)]
pub(super) enum Refused {
    /// Google refused the item itself, with this status code
    /// (<https://cloud.google.com/apis/design/errors#handling_errors>) and
    /// its words.
    Item(i64, String),
    /// Anything else.
    Other(DestinationError),
}

/// What became of one token in a `batchCreate`.
struct Answer {
    result: Result<String, Refused>,
    /// Google may have made the item although no id came back (the request
    /// reached it and its answer was lost, or Google had trouble).
    maybe_made: bool,
}

/// Counts an upload in progress while it lives.
pub(super) struct Uploading<'a>(&'a Library);

impl Drop for Uploading<'_> {
    fn drop(&mut self) {
        self.0.uploading.fetch_sub(1, Ordering::SeqCst);
        // A batch may have been waiting for this upload's token.
        self.0.arrived.notify_waiters();
    }
}

impl Library {
    pub(super) fn new(wait: Duration) -> Library {
        Library {
            albums: tokio::sync::Mutex::default(),
            waiting: Mutex::default(),
            arrived: Notify::new(),
            creating: tokio::sync::Mutex::default(),
            uploading: AtomicUsize::new(0),
            wait,
        }
    }

    /// Marks an upload in progress until the guard is dropped.
    pub(super) fn uploading(&self) -> Uploading<'_> {
        self.uploading.fetch_add(1, Ordering::SeqCst);
        Uploading(self)
    }

    /// The id of the app's album called `title`, or of `title (2)`,
    /// `title (3)`… once it is full: one remembered, one found among the
    /// app's own (a crash after making it makes no second), else a new one.
    pub(super) async fn album(
        &self,
        destination: &GooglePhotosDestination,
        title: &str,
        cancel: &CancellationToken,
    ) -> Result<String, DestinationError> {
        let mut albums = http::until_cancelled(cancel, async { Ok(self.albums.lock().await) }).await?;
        for number in 1u32.. {
            let name = if number == 1 { title.to_owned() } else { format!("{title} ({number})") };
            let album = if let Some(album) = albums.get(&name) {
                album.clone()
            } else {
                let album = self.find_or_make(destination, &mut albums, &name, cancel).await?;
                remember(destination, &name, Some(&album));
                albums.insert(name.clone(), album.clone());
                album
            };
            if album.items < ALBUM_FULL {
                return Ok(album.id);
            }
        }
        Err(DestinationError::permanent("every album of this title is full"))
    }

    async fn find_or_make(
        &self,
        destination: &GooglePhotosDestination,
        albums: &mut HashMap<String, Album>,
        title: &str,
        cancel: &CancellationToken,
    ) -> Result<Album, DestinationError> {
        let key = format!("album:{title}");
        if let Some(album) = destination.sessions.note(&destination.config.name, &key).ok().flatten()
            && let Ok(album) = serde_json::from_value::<Album>(album)
        {
            // Still there, and how full (another machine may add to it)?
            if let Some(items) = album_items(destination, &album.id, cancel).await? {
                return Ok(Album { id: album.id, items: items.max(album.items) });
            }
        }
        let mut page: Option<String> = None;
        loop {
            let mut url = destination.api("v1/albums")?;
            url.query_pairs_mut().append_pair("pageSize", "50").append_pair("excludeNonAppCreatedData", "true");
            if let Some(token) = &page {
                url.query_pairs_mut().append_pair("pageToken", token);
            }
            let response = destination.send(cancel, || Ok(destination.client.get()?.get(url.clone()))).await?;
            if !response.status().is_success() {
                return Err(destination.refusal(response, "list the app's albums").await);
            }
            let listed = json_of(cancel, response, "list the app's albums").await?;
            for album in listed.get("albums").and_then(Value::as_array).into_iter().flatten() {
                let (Some(name), Some(id)) =
                    (album.get("title").and_then(Value::as_str), album.get("id").and_then(Value::as_str))
                else {
                    continue;
                };
                // Google writes the count as a string (an int64 in JSON).
                let items = album.get("mediaItemsCount").and_then(Value::as_str).and_then(|n| n.parse().ok());
                albums.entry(name.to_owned()).or_insert_with(|| Album { id: id.to_owned(), items: items.unwrap_or(0) });
            }
            if let Some(album) = albums.get(title) {
                return Ok(album.clone());
            }
            page = listed.get("nextPageToken").and_then(Value::as_str).map(str::to_owned);
            if page.is_none() {
                break;
            }
        }
        let response = destination.post_json(cancel, "v1/albums", &json!({"album": {"title": title}})).await?;
        if !response.status().is_success() {
            return Err(destination.refusal(response, "make an album").await);
        }
        let made = json_of(cancel, response, "make an album").await?;
        let id = made
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| DestinationError::transient("Google made an album without naming it"))?
            .to_owned();
        tracing::info!(album = title, "made a Google Photos album");
        Ok(Album { id, items: 0 })
    }

    /// Makes the media item of upload `token` (in `album`), sharing a
    /// `batchCreate` with other uploads' tokens, and returns its id.
    pub(super) async fn create(
        &self,
        destination: &GooglePhotosDestination,
        job: JobId,
        token: &str,
        name: &str,
        album: Option<&str>,
        cancel: &CancellationToken,
    ) -> Result<String, Refused> {
        let (reply, mut answer) = oneshot::channel();
        let id = {
            let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
            waiting.next += 1;
            let id = waiting.next;
            waiting.tokens.push(Wanted {
                id,
                job,
                album: album.map(str::to_owned),
                token: token.to_owned(),
                name: name.to_owned(),
                since: Instant::now(),
                reply,
            });
            id
        };
        self.arrived.notify_waiters();
        loop {
            tokio::select! {
                biased;
                made = &mut answer => {
                    return made.unwrap_or_else(|_| {
                        Err(Refused::Other(DestinationError::transient("the request for the media item was dropped")))
                    });
                }
                () = cancel.cancelled() => {
                    let taken_back = {
                        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
                        let before = waiting.tokens.len();
                        waiting.tokens.retain(|w| w.id != id);
                        waiting.tokens.len() < before
                    };
                    if taken_back {
                        return Err(Refused::Other(DestinationError::interrupted()));
                    }
                    // Already asked about: its answer is on its way (the
                    // request ends within the timeout), and is worth having.
                    return answer.await.unwrap_or_else(|_| Err(Refused::Other(DestinationError::interrupted())));
                }
                turn = self.creating.lock() => {
                    self.send_batch(destination, cancel).await;
                    drop(turn);
                }
            }
        }
    }

    /// Waits until a batch is worth sending, then sends the oldest token's
    /// album's batch and hands out the answers.
    async fn send_batch(&self, destination: &GooglePhotosDestination, cancel: &CancellationToken) {
        loop {
            let arrived = self.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            let deadline = {
                let waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
                let Some(oldest) = waiting.tokens.first() else { return };
                let count = waiting.tokens.len();
                let everyone = count >= self.uploading.load(Ordering::SeqCst);
                // With every upload here waiting, a moment more lets the
                // scheduler start the next ones: its slots free up together.
                let wait = if everyone { self.wait / 10 } else { self.wait };
                if count >= BATCH || oldest.since.elapsed() >= wait {
                    break;
                }
                tokio::time::Instant::from_std(oldest.since + wait)
            };
            tokio::select! {
                () = &mut arrived => {}
                () = tokio::time::sleep_until(deadline) => {}
                () = cancel.cancelled() => return,
            }
        }
        let batch: Vec<Wanted> = {
            let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
            let album = waiting.tokens[0].album.clone();
            let mut batch = Vec::new();
            let mut rest = Vec::new();
            for wanted in waiting.tokens.drain(..) {
                if wanted.album == album && batch.len() < BATCH { batch.push(wanted) } else { rest.push(wanted) }
            }
            waiting.tokens = rest;
            batch
        };
        // Each job's session says its token is being asked about, before
        // the request goes.
        let (batch, unrecorded): (Vec<Wanted>, Vec<(Wanted, DestinationError)>) =
            batch.into_iter().fold((Vec::new(), Vec::new()), |(mut ok, mut failed), wanted| {
                match upload::creating(destination, wanted.job, &wanted.token) {
                    Ok(()) => ok.push(wanted),
                    Err(error) => failed.push((wanted, error)),
                }
                (ok, failed)
            });
        for (wanted, error) in unrecorded {
            let _ = wanted.reply.send(Err(Refused::Other(error)));
        }
        if batch.is_empty() {
            return;
        }
        // Sent whatever becomes of the job that sends it: the other
        // uploads' answers ride on it.
        let answers = self.batch_create(destination, &batch, true).await;
        let made = answers.iter().filter(|a| a.result.is_ok()).count() as u64;
        let album = batch[0].album.clone();
        // Each answer is recorded and handed out first: nothing below may
        // keep a job from hearing what Google made.
        for (wanted, answer) in batch.into_iter().zip(answers) {
            let recorded = match &answer.result {
                Ok(id) => upload::made(destination, wanted.job, id),
                // Google made nothing: the token was not used after all.
                Err(_) if !answer.maybe_made => upload::not_sent(destination, wanted.job),
                Err(_) => Ok(()),
            };
            if let Err(e) = recorded {
                // The job hears of it anyway; only a crash now would ask again.
                tracing::warn!("cannot record a media item's fate in the catalog: {e}");
            }
            let _ = wanted.reply.send(answer.result);
        }
        destination.requests.made(made);
        if let Some(album) = &album {
            self.recount(destination, album, |items| items + made).await;
        }
    }

    /// One `batchCreate`: each token's media item id, or why not (and
    /// whether Google may have made it all the same). With `album_check`,
    /// a 400 first asks whether the album is still there, and how full.
    async fn batch_create(
        &self,
        destination: &GooglePhotosDestination,
        batch: &[Wanted],
        album_check: bool,
    ) -> Vec<Answer> {
        let everyone = |error: &DestinationError, maybe_made: bool| {
            batch.iter().map(|_| Answer { result: Err(Refused::Other(error.clone())), maybe_made }).collect()
        };
        let items: Vec<Value> =
            batch.iter().map(|w| json!({"simpleMediaItem": {"fileName": w.name, "uploadToken": w.token}})).collect();
        let mut body = json!({"newMediaItems": items});
        let album = batch[0].album.as_deref();
        if let Some(album) = album {
            body["albumId"] = album.into();
        }
        let cancel = CancellationToken::new();
        let response = match destination.post_json(&cancel, "v1/mediaItems:batchCreate", &body).await {
            Ok(response) => response,
            // Signed out before anything was sent; else the request may
            // have reached Google (a timeout, a cut connection).
            Err(error) => return everyone(&error, error.retry != Retry::Held),
        };
        let status = response.status();
        if status == reqwest::StatusCode::BAD_REQUEST {
            let error = destination.refusal(response, "make media items").await;
            if error.retry == Retry::Held {
                return everyone(&error, false);
            }
            if let (Some(album), true) = (album, album_check) {
                match album_items(destination, album, &cancel).await {
                    // Gone (deleted in Google Photos): found or made again.
                    Ok(None) => {
                        self.forget_album(destination, album).await;
                        return everyone(&DestinationError::transient(error.message), false);
                    }
                    // Full (others add to it too): the next goes on in a new one.
                    Ok(Some(items)) if items >= ALBUM_FULL => {
                        self.recount(destination, album, |known| known.max(items)).await;
                        return everyone(&DestinationError::transient(error.message), false);
                    }
                    Ok(Some(_)) => {}
                    Err(trouble) => return everyone(&trouble, false),
                }
            }
            if batch.len() == 1 {
                // Google will not take this one: its token is spent or bad.
                let said: String = error.message.chars().take(300).collect();
                return vec![Answer { result: Err(Refused::Item(3, said)), maybe_made: false }];
            }
            // One item spoiled the request: each is asked about alone, so
            // that only that one fails; a throttle or a hold stops it.
            let mut answers: Vec<Answer> = Vec::with_capacity(batch.len());
            for wanted in batch {
                if let Some(Err(Refused::Other(stop))) = answers.last().map(|a| &a.result)
                    && matches!(stop.retry, Retry::Throttled | Retry::Held)
                {
                    let stop = stop.clone();
                    answers.push(Answer { result: Err(Refused::Other(stop)), maybe_made: false });
                    continue;
                }
                answers.extend(Box::pin(self.batch_create(destination, std::slice::from_ref(wanted), false)).await);
            }
            return answers;
        }
        if !status.is_success() {
            // A refusal (429 and the daily quota too) made nothing; a
            // server's failure may have made something.
            return everyone(&destination.refusal(response, "make media items").await, status.is_server_error());
        }
        let answer = match json_of(&cancel, response, "make media items").await {
            Ok(answer) => answer,
            Err(error) => return everyone(&error, true),
        };
        let results = answer.get("newMediaItemResults").and_then(Value::as_array).cloned().unwrap_or_default();
        batch
            .iter()
            .enumerate()
            .map(|(index, wanted)| {
                // Each result names its token; else they come in order.
                let result = results
                    .iter()
                    .find(|r| r.get("uploadToken").and_then(Value::as_str) == Some(wanted.token.as_str()))
                    .or_else(|| results.get(index).filter(|r| r.get("uploadToken").is_none()));
                let Some(result) = result else {
                    let missing = DestinationError::transient("Google answered without the media item");
                    return Answer { result: Err(Refused::Other(missing)), maybe_made: true };
                };
                let result = item(result);
                // Google's own trouble (INTERNAL, UNAVAILABLE, DEADLINE_EXCEEDED) may hide a made item.
                let maybe_made = matches!(result, Err(Refused::Item(13 | 14 | 4, _)));
                Answer { result, maybe_made }
            })
            .collect()
    }

    /// Changes the count of the album whose id is `id` (and what the
    /// catalog keeps of it).
    async fn recount(&self, destination: &GooglePhotosDestination, id: &str, count: impl FnOnce(u64) -> u64) {
        let mut albums = self.albums.lock().await;
        if let Some((title, album)) = albums.iter_mut().find(|(_, a)| a.id == id) {
            album.items = count(album.items);
            remember(destination, title, Some(album));
        }
    }

    async fn forget_album(&self, destination: &GooglePhotosDestination, id: &str) {
        let mut albums = self.albums.lock().await;
        let gone: Vec<String> = albums.iter().filter(|(_, a)| a.id == id).map(|(t, _)| t.clone()).collect();
        for title in gone {
            albums.remove(&title);
            remember(destination, &title, None);
        }
    }
}

/// How many items the app's album `id` holds, or `None` when Google no
/// longer has it
/// (<https://developers.google.com/photos/library/reference/rest/v1/albums/get>).
async fn album_items(
    destination: &GooglePhotosDestination,
    id: &str,
    cancel: &CancellationToken,
) -> Result<Option<u64>, DestinationError> {
    let segment: String = percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC).collect();
    let url = destination.api(&format!("v1/albums/{segment}"))?;
    let response = destination.send(cancel, || Ok(destination.client.get()?.get(url.clone()))).await?;
    match response.status() {
        status if status.is_success() => {
            let album = json_of(cancel, response, "show an album").await?;
            // An int64, written as a string.
            let items = album.get("mediaItemsCount").and_then(Value::as_str).and_then(|n| n.parse().ok());
            Ok(Some(items.unwrap_or(0)))
        }
        // An id Google does not know, or no longer lets this app see.
        reqwest::StatusCode::NOT_FOUND | reqwest::StatusCode::BAD_REQUEST => Ok(None),
        _ => Err(destination.refusal(response, "show an album").await),
    }
}

/// Writes (or, with `None`, removes) what the catalog keeps of album `title`.
fn remember(destination: &GooglePhotosDestination, title: &str, album: Option<&Album>) {
    let value = album.and_then(|a| serde_json::to_value(a).ok());
    let key = format!("album:{title}");
    if let Err(e) = destination.sessions.update_note(&destination.config.name, &key, &mut |_| value.clone()) {
        // Only a saving: without it the album is looked up again.
        tracing::warn!("cannot remember a Google Photos album in the catalog: {e}");
    }
}

/// One `newMediaItemResults` entry: the media item's id, or Google's refusal.
fn item(result: &Value) -> Result<String, Refused> {
    let code = result.pointer("/status/code").and_then(Value::as_i64).unwrap_or(0);
    if code != 0 {
        let said: String = result
            .pointer("/status/message")
            .and_then(Value::as_str)
            .unwrap_or("no reason given")
            .chars()
            .filter(|c| !c.is_control())
            .take(200)
            .collect();
        return Err(Refused::Item(code, said));
    }
    result
        .pointer("/mediaItem/id")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| Refused::Other(DestinationError::transient("Google made a media item without its id")))
}

pub(super) async fn json_of(
    cancel: &CancellationToken,
    response: reqwest::Response,
    what: &str,
) -> Result<Value, DestinationError> {
    let text = http::text(cancel, response).await?;
    serde_json::from_str(&text)
        .map_err(|e| DestinationError::transient(format!("Google answered a request to {what} oddly: {e}")))
}

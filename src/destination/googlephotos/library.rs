//! The library: app-created albums, found or made once
//! (<https://developers.google.com/photos/library/reference/rest/v1/albums/list>
//! with `excludeNonAppCreatedData`,
//! <https://developers.google.com/photos/library/reference/rest/v1/albums/create>),
//! and media items made from upload tokens, one request at a time per
//! destination as Google asks
//! (<https://developers.google.com/photos/library/reference/rest/v1/mediaItems/batchCreate>;
//! each result's status is read on its own).

use std::collections::HashMap;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::GooglePhotosDestination;
use crate::destination::{DestinationError, http};

/// Albums known by title, and one `batchCreate` at a time.
#[derive(Default)]
pub(super) struct Library {
    albums: tokio::sync::Mutex<HashMap<String, String>>,
    creating: tokio::sync::Mutex<()>,
}

/// Why no media item was made.
pub(super) enum Refused {
    /// Google refused the item itself, with this status code
    /// (<https://cloud.google.com/apis/design/errors#handling_errors>) and
    /// its words.
    Item(i64, String),
    /// Anything else.
    Other(DestinationError),
}

impl Library {
    /// The id of the app's album called `title`: one found among the
    /// app's own (a crash after creating it makes no second), else a new one.
    pub(super) async fn album(
        &self,
        destination: &GooglePhotosDestination,
        title: &str,
        cancel: &CancellationToken,
    ) -> Result<String, DestinationError> {
        let mut albums = http::until_cancelled(cancel, async { Ok(self.albums.lock().await) }).await?;
        if let Some(id) = albums.get(title) {
            return Ok(id.clone());
        }
        let mut page: Option<String> = None;
        loop {
            let mut url = destination.api("v1/albums")?;
            url.query_pairs_mut().append_pair("pageSize", "50").append_pair("excludeNonAppCreatedData", "true");
            if let Some(token) = &page {
                url.query_pairs_mut().append_pair("pageToken", token);
            }
            let response = destination.access.send(cancel, || Ok(destination.client.get()?.get(url.clone()))).await?;
            if !response.status().is_success() {
                return Err(destination.refusal(response, "list the app's albums").await);
            }
            let listed = json_of(cancel, response, "list the app's albums").await?;
            for album in listed.get("albums").and_then(Value::as_array).into_iter().flatten() {
                if let (Some(name), Some(id)) =
                    (album.get("title").and_then(Value::as_str), album.get("id").and_then(Value::as_str))
                {
                    albums.entry(name.to_owned()).or_insert_with(|| id.to_owned());
                }
            }
            if let Some(id) = albums.get(title) {
                return Ok(id.clone());
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
        albums.insert(title.to_owned(), id.clone());
        Ok(id)
    }

    /// Makes the media item of upload `token` (in `album`), and returns
    /// its id.
    pub(super) async fn create(
        &self,
        destination: &GooglePhotosDestination,
        token: &str,
        name: &str,
        album: Option<&str>,
        cancel: &CancellationToken,
    ) -> Result<String, Refused> {
        let _one =
            http::until_cancelled(cancel, async { Ok(self.creating.lock().await) }).await.map_err(Refused::Other)?;
        let mut body = json!({"newMediaItems": [{"simpleMediaItem": {"fileName": name, "uploadToken": token}}]});
        if let Some(album) = album {
            body["albumId"] = album.into();
        }
        let response =
            destination.post_json(cancel, "v1/mediaItems:batchCreate", &body).await.map_err(Refused::Other)?;
        if response.status() == reqwest::StatusCode::BAD_REQUEST
            && let Some(album) = album
        {
            // The album may be gone (deleted in Google Photos): it is found or made again.
            self.albums.lock().await.retain(|_, id| id != album);
            let error = destination.refusal(response, "make a media item in the album").await;
            if error.retry == crate::destination::Retry::Held {
                return Err(Refused::Other(error));
            }
            return Err(Refused::Other(DestinationError::transient(error.message)));
        }
        if !response.status().is_success() {
            return Err(Refused::Other(destination.refusal(response, "make a media item").await));
        }
        let answer = json_of(cancel, response, "make a media item").await.map_err(Refused::Other)?;
        let result = answer
            .get("newMediaItemResults")
            .and_then(Value::as_array)
            .and_then(|r| r.first())
            .ok_or_else(|| Refused::Other(DestinationError::transient("Google answered without the media item")))?;
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
}

async fn json_of(
    cancel: &CancellationToken,
    response: reqwest::Response,
    what: &str,
) -> Result<Value, DestinationError> {
    let text = http::text(cancel, response).await?;
    serde_json::from_str(&text)
        .map_err(|e| DestinationError::transient(format!("Google answered a request to {what} oddly: {e}")))
}

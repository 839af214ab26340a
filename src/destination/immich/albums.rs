//! Albums (`album = "{year}"`): each photo goes into the album its
//! template names, created the first time it is needed (`getAllAlbums`,
//! `createAlbum`, `addAssetsToAlbum`). The albums the key can see are
//! looked up by name before one is made, under one lock per destination,
//! so neither a crash nor two uploads at once make a second album of a name.

use reqwest::header::CONTENT_TYPE;
use serde::Deserialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{ImmichDestination, encode};
use crate::destination::{DestinationError, Retry, UploadRequest};

/// What albums need besides.
pub(super) const NEED: [&str; 3] = ["album.read", "album.create", "albumAsset.create"];

/// `getAllAlbums`, `createAlbum`.
#[derive(Deserialize)]
struct Album {
    id: String,
    #[serde(rename = "albumName")]
    album_name: String,
}

/// One result of `addAssetsToAlbum`.
#[derive(Deserialize)]
struct Added {
    #[serde(default)]
    success: bool,
    error: Option<String>,
}

impl ImmichDestination {
    /// Adds asset `id` to the album `request`'s file belongs in, if albums
    /// are configured (one it is in already is fine).
    pub(super) async fn file_in_album(&self, request: &UploadRequest, id: &str) -> Result<(), DestinationError> {
        let Some(template) = &self.config.album else { return Ok(()) };
        let name = request.subject.render(template);
        if name.is_empty() {
            return Ok(());
        }
        let mut added = self.add_to_album(request, &name, id).await;
        if matches!(&added, Err(e) if e.retry == Retry::Permanent) {
            // The album was deleted in Immich since its id was learnt: find or make it again.
            self.albums.lock().await.remove(&name);
            added = self.add_to_album(request, &name, id).await;
        }
        // The photo is stored; filing it can wait (a hold or a pause stays one).
        let added = added.map_err(|e| {
            if e.retry == Retry::Permanent { DestinationError { retry: Retry::Transient, ..e } } else { e }
        })?;
        match added.first() {
            Some(added) if added.success || added.error.as_deref() == Some("duplicate") => Ok(()),
            other => Err(DestinationError::transient(format!(
                "Immich did not add the photo to the album '{}': {}",
                name.escape_debug(),
                other.and_then(|a| a.error.as_deref()).unwrap_or("no answer")
            ))),
        }
    }

    /// `addAssetsToAlbum` for asset `id` and the album called `name`.
    async fn add_to_album(
        &self,
        request: &UploadRequest,
        name: &str,
        id: &str,
    ) -> Result<Vec<Added>, DestinationError> {
        let album = self.album_id(&request.cancel, name).await?;
        let body = json!({"ids": [id]}).to_string();
        let put = self.client.get()?.put(self.url(&format!("albums/{}/assets", encode(&album))));
        self.json(&request.cancel, put.header(CONTENT_TYPE, "application/json").body(body), "adding to an album").await
    }

    /// The id of the album called `name`: known, found among the albums
    /// the key can see, or created.
    async fn album_id(&self, cancel: &CancellationToken, name: &str) -> Result<String, DestinationError> {
        let mut known = self.albums.lock().await;
        if let Some(id) = known.get(name) {
            return Ok(id.clone());
        }
        let albums: Vec<Album> =
            self.json(cancel, self.client.get()?.get(self.url("albums")), "the album list").await?;
        for album in albums {
            known.entry(album.album_name).or_insert(album.id);
        }
        if let Some(id) = known.get(name) {
            return Ok(id.clone());
        }
        let body = json!({"albumName": name}).to_string();
        let post = self.client.get()?.post(self.url("albums")).header(CONTENT_TYPE, "application/json").body(body);
        let created: Album = self.json(cancel, post, "creating an album").await?;
        tracing::info!("created the Immich album '{}'", name.escape_debug());
        known.insert(name.to_owned(), created.id.clone());
        Ok(created.id)
    }
}

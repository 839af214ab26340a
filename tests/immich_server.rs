//! A stateful fake Immich server for the tests, run in this test process on
//! its own thread on 127.0.0.1. It follows the published API of Immich 2.x
//! (`@immich/sdk` 2.7.5) and 3.x (`@immich/sdk` 3.2.2), for the operations
//! photosync uses:
//!
//! - `getServerVersion` `GET /api/server/version` → `{major, minor, patch}`
//!   (no key needed);
//! - `getMyApiKey` `GET /api/api-keys/me` → `{id, name, permissions}`;
//! - `checkBulkUpload` `POST /api/assets/bulk-upload-check`
//!   `{assets: [{id, checksum}]}` → `{results: [{id, action: accept|reject,
//!   reason: duplicate, assetId}]}` (checksum: SHA-1, hex or base64);
//! - `uploadAsset` `POST /api/assets` (multipart: `assetData`,
//!   `fileCreatedAt`, `fileModifiedAt`, `filename`, `livePhotoVideoId` (the
//!   motion part of a Live Photo, uploaded before), `sidecarData` (an
//!   `.xmp` file, kept with the asset; ignored for a duplicate), and on 2.x the required
//!   `deviceAssetId` and `deviceId`; header `x-immich-checksum`) → 201
//!   `{id, status: created}`, or 200 `{id, status: duplicate}` for content it
//!   holds;
//! - `getAllAlbums` `GET /api/albums` → `[{id, albumName, assetCount}]`;
//!   `createAlbum` `POST /api/albums` `{albumName}` → 201 `{id, albumName}`;
//!   `addAssetsToAlbum` `PUT /api/albums/{id}/assets` `{ids}` → `[{id,
//!   success, error: duplicate}]` (permissions `album.read`,
//!   `album.create`, `albumAsset.create`);
//! - `getAssetInfo` `GET /api/assets/{id}` → `{id, checksum (base64 SHA-1),
//!   originalFileName, livePhotoVideoId}`; an unknown id → 400 `Not found
//!   or no asset.read access`;
//! - `updateAsset` `PUT /api/assets/{id}` `{livePhotoVideoId}`
//!   (`UpdateAssetDto`; permission `asset.update`) → the asset; a video id
//!   the server does not hold → 400.
//!
//! Authentication is `x-api-key`: none → 401 `Authentication required`, a
//! wrong one → 401 `Invalid API key`, a missing permission → 403 `Missing
//! required permission: …`. Error bodies are shaped like each version's:
//! 2.x `{message, error, statusCode, correlationId}` (class-validator: a
//! list of messages for a bad form), 3.x `{message}` (zod:
//! `{message: "Validation failed", errors}`). A 3.x server ignores form
//! fields it does not know (zod strips them); `strict` makes this fake
//! reject them instead, so a test proves photosync sends none of 2.x's. A
//! 3.x server also rejects a `fileCreatedAt` without a UTC offset.
//! Scripted faults answer upload requests before the server would: a
//! proxy's 413 (an HTML page), or 503s.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use base64::Engine as _;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use sha1::{Digest as _, Sha1};

use crate::harness::ServerThread;

pub const API_KEY: &str = "immich-test-key";

/// One stored asset.
#[derive(Debug, Clone)]
pub struct Stored {
    pub id: String,
    pub bytes: Vec<u8>,
    pub sha1: Vec<u8>,
    /// The upload form's fields (all but the file).
    pub fields: BTreeMap<String, String>,
    /// Deleted in Immich, kept in its trash.
    pub trashed: bool,
    /// The XMP sidecar it came with (`sidecarData`).
    pub sidecar: Option<Vec<u8>>,
}

/// What the fake holds and does.
#[derive(Debug, Default)]
pub struct State {
    pub major: u64,
    pub strict: bool,
    pub permissions: Vec<String>,
    pub assets: BTreeMap<String, Stored>,
    /// Every `POST /api/assets` that reached the server, with its fields.
    pub uploads: Vec<BTreeMap<String, String>>,
    /// Statuses to answer the next upload requests with (413, 503), in order.
    pub faults: VecDeque<u16>,
    /// Statuses to answer the next `getAssetInfo` requests with, in order.
    pub read_faults: VecDeque<u16>,
    /// Every `x-api-key` that reached this server.
    pub keys_seen: Vec<String>,
    /// Answer every request with a 307 to this server instead (a proxy or
    /// sign-in page in front of Immich).
    pub redirect_to: Option<String>,
    /// How many checksums each `checkBulkUpload` carried.
    pub checks: Vec<usize>,
    /// Assets changed with `updateAsset`, in order.
    pub updates: Vec<String>,
    /// Albums by id: name and asset ids.
    pub albums: BTreeMap<String, (String, std::collections::BTreeSet<String>)>,
    next_id: u64,
}

/// A running fake.
pub struct Immich {
    pub url: String,
    pub state: Arc<Mutex<State>>,
    _server: ServerThread,
}

impl Immich {
    /// A fake of major version `major` (2 or 3) accepting [`API_KEY`] with
    /// every permission.
    pub fn start(major: u64) -> Immich {
        let state = Arc::new(Mutex::new(State { major, permissions: vec!["all".into()], ..State::default() }));
        let shared = Arc::clone(&state);
        let (server, addr) = ServerThread::start(move |ready, stopped| serve(shared, ready, stopped));
        Immich { url: format!("http://{addr}"), state, _server: server }
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The stored files' contents by original file name.
    pub fn files(&self) -> BTreeMap<String, Vec<u8>> {
        self.with(|s| {
            s.assets
                .values()
                .map(|a| (a.fields.get("filename").cloned().unwrap_or_default(), a.bytes.clone()))
                .collect()
        })
    }
}

async fn serve(
    state: Arc<Mutex<State>>,
    ready: std::sync::mpsc::Sender<std::net::SocketAddr>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    ready.send(listener.local_addr().expect("addr")).expect("send addr");
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((socket, _)) = accepted else { continue };
                let state = Arc::clone(&state);
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let state = Arc::clone(&state);
                    async move { Ok::<_, std::convert::Infallible>(handle(&state, request).await) }
                });
                tokio::spawn(async move {
                    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let _ = builder.serve_connection(TokioIo::new(socket), service).await;
                });
            }
            _ = &mut stopped => break,
        }
    }
}

fn answer(status: StatusCode, body: String) -> Response<String> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert("content-type", "application/json".parse().expect("header"));
    response
}

/// An error in the version's shape.
fn error(state: &State, status: StatusCode, message: &str) -> Response<String> {
    let body = if state.major >= 3 {
        serde_json::json!({"message": message})
    } else {
        serde_json::json!({"message": message, "error": status.canonical_reason(), "statusCode": status.as_u16(),
            "correlationId": "fake"})
    };
    answer(status, body.to_string())
}

async fn body_of(mut body: Incoming) -> Vec<u8> {
    use hyper::body::Body as _;
    let mut bytes = Vec::new();
    while let Some(frame) = std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await {
        let Ok(frame) = frame else { break };
        if let Ok(data) = frame.into_data() {
            bytes.extend_from_slice(&data);
        }
    }
    bytes
}

async fn handle(shared: &Mutex<State>, request: Request<Incoming>) -> Response<String> {
    let lock = || shared.lock().unwrap_or_else(PoisonError::into_inner);
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    {
        let mut state = lock();
        if let Some(key) = request.headers().get("x-api-key").and_then(|v| v.to_str().ok()) {
            state.keys_seen.push(key.to_owned());
        }
        if let Some(elsewhere) = &state.redirect_to {
            let mut moved = answer(StatusCode::TEMPORARY_REDIRECT, String::new());
            moved.headers_mut().insert("location", format!("{elsewhere}{path}").parse().expect("header"));
            return moved;
        }
    }
    if method == Method::GET && path == "/api/server/version" {
        let major = lock().major;
        return answer(StatusCode::OK, serde_json::json!({"major": major, "minor": 2, "patch": 2}).to_string());
    }
    if !path.starts_with("/api/") {
        // The web app, for any path outside the API.
        let mut page = answer(StatusCode::OK, "<!doctype html><title>Immich</title>".into());
        page.headers_mut().insert("content-type", "text/html".parse().expect("header"));
        return page;
    }
    let key = request.headers().get("x-api-key").and_then(|v| v.to_str().ok()).map(str::to_owned);
    {
        let state = lock();
        match key.as_deref() {
            None => return error(&state, StatusCode::UNAUTHORIZED, "Authentication required"),
            Some(k) if k != API_KEY => return error(&state, StatusCode::UNAUTHORIZED, "Invalid API key"),
            Some(_) => {}
        }
    }
    let checksum_header = request.headers().get("x-immich-checksum").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let content_type = request.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    match (method, path.as_str()) {
        (Method::GET, "/api/api-keys/me") => {
            let permissions = lock().permissions.clone();
            answer(
                StatusCode::OK,
                serde_json::json!({"id": "k1", "name": "test", "permissions": permissions}).to_string(),
            )
        }
        (Method::POST, "/api/assets/bulk-upload-check") => {
            let body = body_of(request.into_body()).await;
            bulk_check(&mut lock(), &body)
        }
        (Method::POST, "/api/assets") => upload(shared, checksum_header, &content_type, request.into_body()).await,
        (method, album) if album.starts_with("/api/albums") => {
            let body = body_of(request.into_body()).await;
            albums(shared, &method, album, &body)
        }
        (method, asset) if asset.starts_with("/api/assets/") && matches!(method, Method::GET | Method::PUT) => {
            let id =
                percent_encoding::percent_decode_str(&asset["/api/assets/".len()..]).decode_utf8_lossy().into_owned();
            let body = body_of(request.into_body()).await;
            one_asset(shared, &method, &id, &body)
        }
        _ => {
            let state = lock();
            error(&state, StatusCode::NOT_FOUND, &format!("Cannot {path}"))
        }
    }
}

/// `getAssetInfo` and `updateAsset`.
fn one_asset(shared: &Mutex<State>, method: &Method, id: &str, body: &[u8]) -> Response<String> {
    let mut state = shared.lock().unwrap_or_else(PoisonError::into_inner);
    if method == Method::GET
        && let Some(status) = state.read_faults.pop_front()
    {
        return error(&state, StatusCode::from_u16(status).expect("status"), "Service Unavailable");
    }
    if method == Method::GET {
        if !allowed(&state, "asset.read") {
            return error(&state, StatusCode::FORBIDDEN, "Missing required permission: asset.read");
        }
        return match state.assets.get(id) {
            Some(asset) => answer(
                StatusCode::OK,
                serde_json::json!({
                    "id": asset.id,
                    "checksum": base64::engine::general_purpose::STANDARD.encode(&asset.sha1),
                    "isTrashed": asset.trashed,
                    "originalFileName": asset.fields.get("filename"),
                    "livePhotoVideoId": asset.fields.get("livePhotoVideoId"),
                })
                .to_string(),
            ),
            None => error(&state, StatusCode::BAD_REQUEST, "Not found or no asset.read access"),
        };
    }
    let body: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    if !allowed(&state, "asset.update") {
        return error(&state, StatusCode::FORBIDDEN, "Missing required permission: asset.update");
    }
    let video = body["livePhotoVideoId"].as_str().map(str::to_owned);
    if video.as_ref().is_some_and(|v| !state.assets.contains_key(v)) {
        return error(&state, StatusCode::BAD_REQUEST, "Live photo video not found");
    }
    let Some(stored) = state.assets.get_mut(id) else {
        return error(&state, StatusCode::BAD_REQUEST, "Not found or no asset.update access");
    };
    if let Some(video) = video {
        stored.fields.insert("livePhotoVideoId".into(), video);
    }
    state.updates.push(id.to_owned());
    answer(StatusCode::OK, serde_json::json!({"id": id}).to_string())
}

/// `getAllAlbums`, `createAlbum`, `addAssetsToAlbum`.
fn albums(shared: &Mutex<State>, method: &Method, path: &str, body: &[u8]) -> Response<String> {
    let lock = || shared.lock().unwrap_or_else(PoisonError::into_inner);
    match (method, path) {
        (&Method::GET, "/api/albums") => {
            let state = lock();
            if !allowed(&state, "album.read") {
                return error(&state, StatusCode::FORBIDDEN, "Missing required permission: album.read");
            }
            let albums: Vec<serde_json::Value> = state
                .albums
                .iter()
                .map(
                    |(id, (name, assets))| serde_json::json!({"id": id, "albumName": name, "assetCount": assets.len()}),
                )
                .collect();
            answer(StatusCode::OK, serde_json::Value::from(albums).to_string())
        }
        (&Method::POST, "/api/albums") => {
            let body: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
            let mut state = lock();
            if !allowed(&state, "album.create") {
                return error(&state, StatusCode::FORBIDDEN, "Missing required permission: album.create");
            }
            let Some(name) = body["albumName"].as_str().map(str::to_owned) else {
                return error(&state, StatusCode::BAD_REQUEST, "albumName is required");
            };
            state.next_id += 1;
            let id = format!("a0000000-0000-4000-8000-{:012}", state.next_id);
            state.albums.insert(id.clone(), (name.clone(), std::collections::BTreeSet::new()));
            answer(StatusCode::CREATED, serde_json::json!({"id": id, "albumName": name}).to_string())
        }
        (&Method::PUT, album) if album.starts_with("/api/albums/") && album.ends_with("/assets") => {
            let id = album["/api/albums/".len()..album.len() - "/assets".len()].to_owned();
            let body: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
            let mut state = lock();
            if !allowed(&state, "albumAsset.create") {
                return error(&state, StatusCode::FORBIDDEN, "Missing required permission: albumAsset.create");
            }
            let known: std::collections::BTreeSet<String> = state.assets.keys().cloned().collect();
            let Some((_, assets)) = state.albums.get_mut(&id) else {
                return error(&state, StatusCode::BAD_REQUEST, "Not found or no album.read access");
            };
            let results: Vec<serde_json::Value> = body["ids"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .filter_map(|v| v.as_str())
                .map(|asset| {
                    if !known.contains(asset) {
                        serde_json::json!({"id": asset, "success": false, "error": "not_found"})
                    } else if assets.insert(asset.to_owned()) {
                        serde_json::json!({"id": asset, "success": true})
                    } else {
                        serde_json::json!({"id": asset, "success": false, "error": "duplicate"})
                    }
                })
                .collect();
            answer(StatusCode::OK, serde_json::Value::from(results).to_string())
        }
        _ => error(&lock(), StatusCode::NOT_FOUND, &format!("Cannot {path}")),
    }
}

/// `checkBulkUpload`.
fn bulk_check(state: &mut State, body: &[u8]) -> Response<String> {
    let body: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    if !allowed(state, "asset.upload") {
        return error(state, StatusCode::FORBIDDEN, "Missing required permission: asset.upload");
    }
    state.checks.push(body["assets"].as_array().map_or(0, Vec::len));
    let results: Vec<serde_json::Value> = body["assets"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|item| {
            let sha1 = decode_checksum(item["checksum"].as_str().unwrap_or_default());
            match state.assets.values().find(|a| Some(&a.sha1) == sha1.as_ref()) {
                Some(asset) => serde_json::json!({"id": item["id"], "action": "reject", "reason": "duplicate",
                    "assetId": asset.id, "isTrashed": asset.trashed}),
                None => serde_json::json!({"id": item["id"], "action": "accept"}),
            }
        })
        .collect();
    answer(StatusCode::OK, serde_json::json!({"results": results}).to_string())
}

/// `uploadAsset`, after a scripted fault if there is one.
async fn upload(
    shared: &Mutex<State>,
    checksum_header: Option<String>,
    content_type: &str,
    body: Incoming,
) -> Response<String> {
    let lock = || shared.lock().unwrap_or_else(PoisonError::into_inner);
    let fault = lock().faults.pop_front();
    if let Some(status) = fault {
        // Read to the end, as a proxy's lingering close does: answering an
        // unread body made hyper reset the connection, and the client saw a
        // broken pipe instead of the status, at random.
        body_of(body).await;
        let status = StatusCode::from_u16(status).expect("status");
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            // A proxy's page, before Immich sees anything.
            let mut page = answer(status, "<html><body>413 Request Entity Too Large</body></html>".into());
            page.headers_mut().insert("content-type", "text/html".parse().expect("header"));
            return page;
        }
        let state = lock();
        return error(&state, status, "Service Unavailable");
    }
    let body = body_of(body).await;
    let mut state = lock();
    if !allowed(&state, "asset.upload") {
        return error(&state, StatusCode::FORBIDDEN, "Missing required permission: asset.upload");
    }
    let Some((fields, file, sidecar)) = parse_multipart(content_type, &body) else {
        return error(&state, StatusCode::BAD_REQUEST, "Multipart: Boundary not found");
    };
    if let Some(problem) = validate(&state, &fields) {
        return if state.major >= 3 {
            answer(
                StatusCode::BAD_REQUEST,
                serde_json::json!({"message": "Validation failed", "errors": [{"message": problem}]}).to_string(),
            )
        } else {
            error(&state, StatusCode::BAD_REQUEST, &problem)
        };
    }
    if let Some(video) = fields.get("livePhotoVideoId")
        && !state.assets.contains_key(video)
    {
        return error(&state, StatusCode::BAD_REQUEST, "Live photo video not found");
    }
    let Some(file) = file else {
        return error(&state, StatusCode::BAD_REQUEST, "assetData is required");
    };
    state.uploads.push(fields.clone());
    let sha1 = Sha1::digest(&file).to_vec();
    // Like Immich, the header only lets a duplicate be found early: the
    // bytes that arrived are stored whatever it said.
    if let Some(sent) = checksum_header.as_deref().and_then(decode_checksum)
        && let Some(asset) = state.assets.values().find(|a| a.sha1 == sent)
    {
        return answer(StatusCode::OK, serde_json::json!({"id": asset.id, "status": "duplicate"}).to_string());
    }
    if let Some(asset) = state.assets.values().find(|a| a.sha1 == sha1) {
        return answer(StatusCode::OK, serde_json::json!({"id": asset.id, "status": "duplicate"}).to_string());
    }
    state.next_id += 1;
    let id = format!("00000000-0000-4000-8000-{:012}", state.next_id);
    state.assets.insert(id.clone(), Stored { id: id.clone(), bytes: file, sha1, fields, trashed: false, sidecar });
    answer(StatusCode::CREATED, serde_json::json!({"id": id, "status": "created"}).to_string())
}

/// Whether the key may do `permission`.
fn allowed(state: &State, permission: &str) -> bool {
    state.permissions.iter().any(|p| p == "all" || p == permission)
}

/// A SHA-1 sent as hex or base64.
fn decode_checksum(text: &str) -> Option<Vec<u8>> {
    if text.len() == 40 {
        return (0..40).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok()).collect();
    }
    base64::engine::general_purpose::STANDARD.decode(text).ok().filter(|b| b.len() == 20)
}

/// What the version's validation says of the form, if it refuses it.
fn validate(state: &State, fields: &BTreeMap<String, String>) -> Option<String> {
    let has_offset = |t: &str| t.ends_with('Z') || t.len() > 6 && matches!(t.as_bytes()[t.len() - 6], b'+' | b'-');
    for date in ["fileCreatedAt", "fileModifiedAt"] {
        let Some(value) = fields.get(date) else { return Some(format!("{date} is required")) };
        if state.major >= 3 && !has_offset(value) {
            return Some(format!("{date}: Invalid ISO datetime"));
        }
    }
    if state.major < 3 {
        for required in ["deviceAssetId", "deviceId"] {
            if fields.get(required).is_none_or(String::is_empty) {
                return Some(format!("{required} should not be empty"));
            }
        }
    }
    let known =
        ["fileCreatedAt", "fileModifiedAt", "filename", "duration", "isFavorite", "livePhotoVideoId", "visibility"];
    if state.strict
        && let Some(unknown) = fields.keys().find(|k| !known.contains(&k.as_str()))
    {
        return Some(format!("Unrecognized key: \"{unknown}\""));
    }
    None
}

/// A `multipart/form-data` body's text fields, its `assetData` file and
/// its `sidecarData` file.
type Form = (BTreeMap<String, String>, Option<Vec<u8>>, Option<Vec<u8>>);

fn parse_multipart(content_type: &str, body: &[u8]) -> Option<Form> {
    let boundary = content_type.split(';').find_map(|p| p.trim().strip_prefix("boundary="))?.trim_matches('"');
    let delimiter = format!("--{boundary}").into_bytes();
    let mut fields = BTreeMap::new();
    let mut file = None;
    let mut sidecar = None;
    let mut rest = body;
    let start = find(rest, &delimiter)?;
    rest = &rest[start + delimiter.len()..];
    loop {
        if rest.starts_with(b"--") {
            break;
        }
        rest = rest.strip_prefix(b"\r\n")?;
        let end = find(rest, &delimiter)?;
        let part = rest[..end].strip_suffix(b"\r\n")?;
        rest = &rest[end + delimiter.len()..];
        let split = find(part, b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&part[..split]).into_owned();
        let content = &part[split + 4..];
        let name = head
            .split(';')
            .find_map(|p| p.trim().strip_prefix("name="))
            .map(|n| n.split("\r\n").next().unwrap_or(n).trim_matches('"').to_owned())?;
        if name == "assetData" {
            file = Some(content.to_vec());
        } else if name == "sidecarData" {
            sidecar = Some(content.to_vec());
        } else {
            fields.insert(name, String::from_utf8_lossy(content).into_owned());
        }
    }
    Some((fields, file, sidecar))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

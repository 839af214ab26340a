//! A stateful fake of the Google Photos Library API and of Google's OAuth
//! endpoints, for the tests, on 127.0.0.1. It follows Google's published
//! documents for what photosync uses:
//!
//! - resumable uploads
//!   (<https://developers.google.com/photos/library/guides/resumable-uploads>):
//!   `POST /v1/uploads` with `X-Goog-Upload-Command: start`,
//!   `X-Goog-Upload-Protocol: resumable`, `X-Goog-Upload-Raw-Size`,
//!   `X-Goog-Upload-Content-Type` → `X-Goog-Upload-URL` and
//!   `X-Goog-Upload-Chunk-Granularity`; to that address `upload` (a
//!   multiple of the granularity, at `X-Goog-Upload-Offset`), `upload,
//!   finalize` (the raw-size total reached; the upload token as the body),
//!   `query` (`X-Goog-Upload-Status`, `X-Goog-Upload-Size-Received`) and
//!   `cancel`; a plain upload (the guide's "Uploading bytes",
//!   <https://developers.google.com/photos/library/guides/upload-media#uploading-bytes>):
//!   `X-Goog-Upload-Protocol: raw` with the bytes as the body → the token;
//!   a file over the size limit → 413 ("The request exceeded the max file
//!   size limit");
//! - `mediaItems:batchCreate`
//!   (<https://developers.google.com/photos/library/reference/rest/v1/mediaItems/batchCreate>):
//!   at most 50 `newMediaItems`, each result with its own `status`; an
//!   unknown or used token → `INVALID_ARGUMENT` for that item; the same
//!   bytes → the same media item id (the guide on uploading media);
//!   `albumId` must be an album this app made;
//! - `mediaItems.get`, `mediaItems:batchGet` (at most 50 `mediaItemIds`,
//!   each result in order, `NOT_FOUND` in its own status,
//!   <https://developers.google.com/photos/library/reference/rest/v1/mediaItems/batchGet>);
//!   `albums.list` with `excludeNonAppCreatedData` (`mediaItemsCount` a string),
//!   `albums.get`, `albums.create` (<https://developers.google.com/photos/library/reference/rest/v1/albums>);
//! - errors as Google's JSON `{"error": {code, message, status}}`; limits
//!   and quotas (<https://developers.google.com/photos/overview/api-limits-quotas>):
//!   a 429 per minute, or the daily quota's 429 ("Quota exceeded for quota
//!   metric 'All requests' and limit 'All requests per day'");
//! - OAuth for installed apps
//!   (<https://developers.google.com/identity/protocols/oauth2/native-app>):
//!   the code handed out by [`Google::approve_browser`] exchanged with the
//!   client secret, the PKCE verifier and the same redirect address;
//!   refresh tokens that last until revoked (`invalid_grant`).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Method, Request, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::fake_http::{self, Answer, body_of, json_answer, lock, with_type};
use crate::harness::ServerThread;

mod uploads;

use uploads::{raw_upload, too_large, upload};

pub const CLIENT_ID: &str = "1234-photosync.apps.googleusercontent.com";
pub const CLIENT_SECRET: &str = "GOCSPX-photosync-test";

/// A scripted misbehaviour for the next request whose path ends with
/// `route` (`"mediaItems:batchCreate"`; `"upload"` for an upload session's
/// address).
#[derive(Debug, Clone)]
pub enum Fault {
    /// A 429 (with `Retry-After` when given) or another status.
    Status { route: &'static str, status: u16, retry_after: Option<u64> },
    /// The daily quota's 429.
    DailyQuota { route: &'static str },
    /// Read the request, answer nothing.
    Stall { route: &'static str },
    /// Answer as usual, `ms` milliseconds late.
    Delay { route: &'static str, ms: u64 },
}

impl Fault {
    fn matches(&self, path: &str) -> bool {
        let (Fault::Status { route, .. }
        | Fault::DailyQuota { route }
        | Fault::Stall { route }
        | Fault::Delay { route, .. }) = self;
        if *route == "upload" { path.starts_with("/upload-session/") } else { path.ends_with(route) }
    }
}

/// An upload session.
#[derive(Debug, Clone)]
pub struct Upload {
    pub size: u64,
    pub bytes: Vec<u8>,
    pub finalized: bool,
    pub cancelled: bool,
}

/// A body sent to an upload session.
#[derive(Debug, Clone)]
pub struct Received {
    pub session: String,
    pub offset: u64,
    pub len: u64,
    pub accepted: bool,
}

/// A media item.
#[derive(Debug, Clone)]
pub struct Item {
    pub file_name: String,
    pub bytes: Vec<u8>,
    pub albums: Vec<String>,
}

#[derive(Debug)]
pub struct State {
    pub granularity: u64,
    pub uploads: BTreeMap<String, Upload>,
    pub received: Vec<Received>,
    /// Upload tokens: the session they finish, and whether one was used.
    pub tokens: BTreeMap<String, (String, bool)>,
    /// Media items by id.
    pub items: BTreeMap<String, Item>,
    /// App-made albums: id → title.
    pub albums: BTreeMap<String, String>,
    /// How many `newMediaItems` each `batchCreate` carried.
    pub batches: Vec<usize>,
    /// Every request: method and path (upload addresses shortened, album
    /// listings marked).
    pub requests: Vec<String>,
    pub faults: VecDeque<Fault>,
    pub refresh_tokens: BTreeMap<String, bool>,
    pub access_tokens: Vec<String>,
    pub codes: BTreeMap<String, (String, String)>,
    /// Refuse every new media item (as for a file Google will not take).
    pub refuse_items: bool,
    /// Refuse new media items whose file name contains one of these.
    pub refuse_names: Vec<String>,
    /// Refuse a whole `batchCreate` (400) holding an item whose file name
    /// contains one of these, as Google does for an argument it cannot read.
    pub spoiling_names: Vec<String>,
    /// Items each album is said to hold beyond those made here (an album
    /// filled by years of uploads, without making them).
    pub album_items_before: u64,
    /// The largest upload taken (Google's 20 GB, made small for a test).
    pub max_size: u64,
    /// `batchCreate` requests being answered now, and the most at once.
    pub creating: usize,
    pub most_creating: usize,
    pub base: String,
    next_id: u64,
}

impl Default for State {
    fn default() -> Self {
        State {
            granularity: 256 * 1024,
            uploads: BTreeMap::new(),
            received: Vec::new(),
            tokens: BTreeMap::new(),
            items: BTreeMap::new(),
            albums: BTreeMap::new(),
            batches: Vec::new(),
            requests: Vec::new(),
            faults: VecDeque::new(),
            refresh_tokens: BTreeMap::new(),
            access_tokens: Vec::new(),
            codes: BTreeMap::new(),
            refuse_items: false,
            refuse_names: Vec::new(),
            spoiling_names: Vec::new(),
            album_items_before: 0,
            max_size: 20 * 1000 * 1000 * 1000,
            creating: 0,
            most_creating: 0,
            base: String::new(),
            next_id: 0,
        }
    }
}

impl State {
    fn id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        let digest = Sha256::digest(format!("{prefix}{}", self.next_id).as_bytes());
        format!("{prefix}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..12]))
    }

    /// Every refresh and access token stops working.
    pub fn revoke(&mut self) {
        self.refresh_tokens.values_mut().for_each(|v| *v = false);
        self.access_tokens.clear();
    }

    fn tokens(&mut self, with_refresh: bool) -> Value {
        let access = self.id("ya29.");
        self.access_tokens.push(access.clone());
        let mut answer = json!({"access_token": access, "expires_in": 3599, "token_type": "Bearer",
                                "scope": "https://www.googleapis.com/auth/photoslibrary.appendonly"});
        if with_refresh {
            let refresh = self.id("1//");
            self.refresh_tokens.insert(refresh.clone(), true);
            answer["refresh_token"] = refresh.into();
        }
        answer
    }
}

pub struct Google {
    pub url: String,
    pub state: Arc<Mutex<State>>,
    _server: ServerThread,
}

impl Google {
    pub fn start() -> Google {
        let state = Arc::new(Mutex::new(State::default()));
        let (server, url) = fake_http::start(&state, |state, request| async move { handle(&state, request).await });
        lock(&state).base.clone_from(&url);
        Google { url, state, _server: server }
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut lock(&self.state))
    }

    /// A refresh token, as if the user had signed in.
    pub fn grant(&self) -> String {
        self.with(|s| s.tokens(true)["refresh_token"].as_str().expect("refresh").to_owned())
    }

    /// Media items' bytes by file name.
    pub fn files(&self) -> BTreeMap<String, Vec<u8>> {
        self.with(|s| s.items.values().map(|i| (i.file_name.clone(), i.bytes.clone())).collect())
    }

    /// What the browser does with the address photosync printed.
    pub fn approve_browser(&self, authorize_url: &str) -> String {
        let url = url::Url::parse(authorize_url).expect("an address");
        let query: BTreeMap<String, String> = url.query_pairs().into_owned().collect();
        let get = |key: &str| query.get(key).unwrap_or_else(|| panic!("no {key} in {url}")).clone();
        assert_eq!(get("client_id"), CLIENT_ID);
        assert_eq!(get("response_type"), "code");
        assert_eq!(get("access_type"), "offline", "a refresh token is asked for");
        assert_eq!(get("code_challenge_method"), "S256");
        assert!(get("scope").contains("photoslibrary.appendonly"), "{}", get("scope"));
        let redirect = get("redirect_uri");
        assert!(redirect.starts_with("http://localhost:"), "a loopback redirect: {redirect}");
        let code = self.with(|s| {
            let code = s.id("4/");
            s.codes.insert(code.clone(), (get("code_challenge"), redirect.clone()));
            code
        });
        format!("{redirect}?code={}&state={}&scope={}", urlencode(&code), get("state"), urlencode(&get("scope")))
    }
}

fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

async fn handle(shared: &Mutex<State>, request: Request<Incoming>) -> Result<Answer, std::io::Error> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().unwrap_or_default().to_owned();
    let body = body_of(body).await;
    let creating = path == "/v1/mediaItems:batchCreate";
    if creating {
        // Held open a moment, so that two requests at once would overlap.
        {
            let mut state = lock(shared);
            state.creating += 1;
            state.most_creating = state.most_creating.max(state.creating);
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        lock(shared).creating -= 1;
    }
    let mut delay = None;
    let (stall, answer) = {
        let mut state = lock(shared);
        let shown = match path.as_str() {
            p if p.starts_with("/upload-session/") => "upload".to_owned(),
            // A listing of albums (as apart from a look at the first).
            "/v1/albums" if parts.method == Method::GET && !query.contains("pageSize=1&") => {
                format!("{path} (listing)")
            }
            p => p.to_owned(),
        };
        state.requests.push(format!("{} {shown}", parts.method));
        let Ok(body) = body else { return Err(std::io::Error::other("the request's body was cut off")) };
        match state.faults.iter().position(|f| f.matches(&path)).and_then(|i| state.faults.remove(i)) {
            Some(Fault::Stall { .. }) => (true, None),
            Some(Fault::Delay { ms, .. }) => {
                delay = Some(ms);
                (false, Some(respond(&mut state, &parts.method, &parts.headers, &path, &query, &body)))
            }
            Some(Fault::Status { status, retry_after, .. }) => {
                let status = StatusCode::from_u16(status).expect("status");
                let mut answer = google_error(status, "Too many requests.");
                if let Some(seconds) = retry_after {
                    answer.headers_mut().insert("retry-after", HeaderValue::from(seconds));
                }
                (false, Some(answer))
            }
            Some(Fault::DailyQuota { .. }) => (
                false,
                Some(google_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "Quota exceeded for quota metric 'All requests' and limit 'All requests per day' of service \
                     'photoslibrary.googleapis.com' for consumer 'project_number:1234'.",
                )),
            ),
            None => (false, Some(respond(&mut state, &parts.method, &parts.headers, &path, &query, &body))),
        }
    };
    if stall {
        std::future::pending::<()>().await;
    }
    if let Some(ms) = delay {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    Ok(answer.expect("an answer"))
}

fn respond(state: &mut State, method: &Method, headers: &HeaderMap, path: &str, query: &str, body: &[u8]) -> Answer {
    if path == "/token" && method == Method::POST {
        return token(state, body);
    }
    let bearer = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    if !bearer.is_some_and(|t| state.access_tokens.iter().any(|a| a == t)) {
        return json_answer(
            StatusCode::UNAUTHORIZED,
            &json!({"error": {"code": 401, "message": "Request had invalid authentication credentials.", "status": "UNAUTHENTICATED"}}),
        );
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    if path == "/v1/uploads" && method == Method::POST && header("x-goog-upload-protocol") == "raw" {
        return raw_upload(state, body);
    }
    if path == "/v1/uploads" && method == Method::POST {
        if header("x-goog-upload-command") != "start" || header("x-goog-upload-protocol") != "resumable" {
            return google_error(StatusCode::BAD_REQUEST, "Only resumable starts are taken here.");
        }
        let Ok(size) = header("x-goog-upload-raw-size").parse::<u64>() else {
            return google_error(StatusCode::BAD_REQUEST, "X-Goog-Upload-Raw-Size is required.");
        };
        if size > state.max_size {
            return too_large();
        }
        if header("x-goog-upload-content-type").is_empty() {
            return google_error(StatusCode::BAD_REQUEST, "X-Goog-Upload-Content-Type is required.");
        }
        let id = state.id("s");
        state.uploads.insert(id.clone(), Upload { size, bytes: Vec::new(), finalized: false, cancelled: false });
        let mut answer = with_type(StatusCode::OK, "text/plain", Vec::new());
        let address = format!("{}/upload-session/{id}?upload_id={id}&upload_protocol=resumable", state.base);
        answer.headers_mut().insert("x-goog-upload-url", address.parse().expect("header"));
        answer.headers_mut().insert("x-goog-upload-chunk-granularity", HeaderValue::from(state.granularity));
        answer.headers_mut().insert("x-goog-upload-status", HeaderValue::from_static("active"));
        return answer;
    }
    if let Some(id) = path.strip_prefix("/upload-session/") {
        return upload(state, id, &header("x-goog-upload-command"), &header("x-goog-upload-offset"), body);
    }
    match (method, path) {
        (&Method::POST, "/v1/mediaItems:batchCreate") => batch_create(state, body),
        (&Method::GET, "/v1/mediaItems:batchGet") => batch_get(state, query),
        (&Method::GET, "/v1/albums") => {
            let only_ours = query.contains("excludeNonAppCreatedData=true");
            assert!(only_ours, "photosync may only look among its own albums");
            let albums: Vec<Value> = state
                .albums
                .iter()
                .map(|(id, title)| {
                    let count = state.items.values().filter(|i| i.albums.contains(id)).count() as u64
                        + state.album_items_before;
                    json!({"id": id, "title": title, "isWriteable": true, "mediaItemsCount": count.to_string()})
                })
                .collect();
            json_answer(StatusCode::OK, &json!({"albums": albums}))
        }
        (&Method::GET, _) if path.starts_with("/v1/albums/") => {
            let id = percent_encoding::percent_decode_str(&path["/v1/albums/".len()..]).decode_utf8_lossy();
            match state.albums.get(id.as_ref()) {
                Some(title) => {
                    let count = state.items.values().filter(|i| i.albums.iter().any(|a| *a == id)).count() as u64
                        + state.album_items_before;
                    json_answer(
                        StatusCode::OK,
                        &json!({"id": id, "title": title, "isWriteable": true, "mediaItemsCount": count.to_string()}),
                    )
                }
                None => google_error(StatusCode::NOT_FOUND, "Requested entity was not found."),
            }
        }
        (&Method::POST, "/v1/albums") => {
            let request: Value = serde_json::from_slice(body).unwrap_or_default();
            let Some(title) = request.pointer("/album/title").and_then(Value::as_str) else {
                return google_error(StatusCode::BAD_REQUEST, "album.title is required.");
            };
            let id = state.id("album-");
            state.albums.insert(id.clone(), title.to_owned());
            json_answer(StatusCode::OK, &json!({"id": id, "title": title, "isWriteable": true}))
        }
        (&Method::GET, _) if path.starts_with("/v1/mediaItems/") => {
            let id = percent_encoding::percent_decode_str(&path["/v1/mediaItems/".len()..]).decode_utf8_lossy();
            match state.items.get(id.as_ref()) {
                Some(item) => json_answer(StatusCode::OK, &json!({"id": id, "filename": item.file_name})),
                None => json_answer(
                    StatusCode::NOT_FOUND,
                    &json!({"error": {"code": 404, "message": "Requested entity was not found.", "status": "NOT_FOUND"}}),
                ),
            }
        }
        _ => google_error(StatusCode::NOT_FOUND, "Not found."),
    }
}

fn batch_get(state: &State, query: &str) -> Answer {
    let ids: Vec<String> = url::form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k == "mediaItemIds")
        .map(|(_, v)| v.into_owned())
        .collect();
    if ids.is_empty() || ids.len() > 50 {
        return google_error(StatusCode::BAD_REQUEST, "mediaItemIds must hold 1 to 50 ids.");
    }
    // Ids Google hands out are URL-safe base64; anything else spoils the request.
    if ids.iter().any(|id| !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')) {
        return google_error(StatusCode::BAD_REQUEST, "Request contains an invalid media item id.");
    }
    let results: Vec<Value> = ids
        .iter()
        .map(|id| match state.items.get(id) {
            Some(item) => json!({"mediaItem": {"id": id, "filename": item.file_name}}),
            None => json!({"status": {"code": 5, "message": "Requested entity was not found."}}),
        })
        .collect();
    json_answer(StatusCode::OK, &json!({"mediaItemResults": results}))
}

fn batch_create(state: &mut State, body: &[u8]) -> Answer {
    let request: Value = serde_json::from_slice(body).unwrap_or_default();
    let items = request.get("newMediaItems").and_then(Value::as_array).cloned().unwrap_or_default();
    if items.is_empty() || items.len() > 50 {
        return google_error(StatusCode::BAD_REQUEST, "newMediaItems must hold 1 to 50 items.");
    }
    let spoiled = items.iter().any(|item| {
        let name = item.pointer("/simpleMediaItem/fileName").and_then(Value::as_str).unwrap_or_default();
        state.spoiling_names.iter().any(|n| name.contains(n.as_str()))
    });
    if spoiled {
        return google_error(StatusCode::BAD_REQUEST, "Request contains an invalid argument.");
    }
    let album = request.get("albumId").and_then(Value::as_str).map(str::to_owned);
    if album.as_ref().is_some_and(|a| !state.albums.contains_key(a)) {
        return google_error(StatusCode::BAD_REQUEST, "Invalid album id: this app may only add to albums it made.");
    }
    state.batches.push(items.len());
    let mut results = Vec::new();
    for item in items {
        let token = item.pointer("/simpleMediaItem/uploadToken").and_then(Value::as_str).unwrap_or_default().to_owned();
        let file_name =
            item.pointer("/simpleMediaItem/fileName").and_then(Value::as_str).unwrap_or_default().to_owned();
        let usable = state.tokens.get(&token).filter(|(_, used)| !used).map(|(session, _)| session.clone());
        if state.refuse_items || state.refuse_names.iter().any(|n| file_name.contains(n.as_str())) {
            results.push(json!({"uploadToken": token, "status": {"code": 3, "message": "Failed: unsupported media."}}));
            continue;
        }
        let Some(session) = usable else {
            results.push(json!({"uploadToken": token, "status": {"code": 3, "message": "Failed: There was an error while trying to create this media item."}}));
            continue;
        };
        state.tokens.insert(token.clone(), (session.clone(), true));
        let bytes = state.uploads[&session].bytes.clone();
        // The same bytes are the same media item.
        let digest = Sha256::digest(&bytes);
        let id = format!("AKm{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..18]));
        let entry = state.items.entry(id.clone()).or_insert_with(|| Item {
            file_name: file_name.clone(),
            bytes,
            albums: Vec::new(),
        });
        if let Some(album) = &album
            && !entry.albums.contains(album)
        {
            entry.albums.push(album.clone());
        }
        results.push(json!({"uploadToken": token, "status": {"message": "Success"},
                            "mediaItem": {"id": id, "filename": entry.file_name, "mimeType": "image/jpeg"}}));
    }
    json_answer(StatusCode::OK, &json!({"newMediaItemResults": results}))
}

fn token(state: &mut State, body: &[u8]) -> Answer {
    let form: BTreeMap<String, String> = url::form_urlencoded::parse(body).into_owned().collect();
    let get = |key: &str| form.get(key).cloned().unwrap_or_default();
    let oauth_error = |error: &str, description: &str| {
        json_answer(StatusCode::BAD_REQUEST, &json!({"error": error, "error_description": description}))
    };
    if get("client_id") != CLIENT_ID || get("client_secret") != CLIENT_SECRET {
        return json_answer(
            StatusCode::UNAUTHORIZED,
            &json!({"error": "invalid_client", "error_description": "Unauthorized"}),
        );
    }
    match get("grant_type").as_str() {
        "authorization_code" => {
            let Some((challenge, redirect)) = state.codes.remove(&get("code")) else {
                return oauth_error("invalid_grant", "Malformed auth code.");
            };
            let proof = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(Sha256::digest(get("code_verifier").as_bytes()));
            if proof != challenge || get("redirect_uri") != redirect {
                return oauth_error("invalid_grant", "Bad Request");
            }
            json_answer(StatusCode::OK, &state.tokens(true))
        }
        "refresh_token" => {
            if state.refresh_tokens.get(&get("refresh_token")) != Some(&true) {
                return oauth_error("invalid_grant", "Token has been expired or revoked.");
            }
            json_answer(StatusCode::OK, &state.tokens(false))
        }
        _ => oauth_error("unsupported_grant_type", "Invalid grant_type."),
    }
}

fn google_error(status: StatusCode, message: &str) -> Answer {
    let code = status.as_u16();
    let kind = match code {
        400 | 413 => "INVALID_ARGUMENT",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        _ => "UNAVAILABLE",
    };
    json_answer(status, &json!({"error": {"code": code, "message": message, "status": kind}}))
}

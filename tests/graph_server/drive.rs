//! The drive: items by path, upload sessions, downloads (see the module
//! documentation of `graph_server` for the documents followed).

use base64::Engine as _;
use hyper::header::HeaderMap;
use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Answer, File, Received, Session, State, graph_error, json_answer};

/// Fragments other than the last are multiples of this.
const FRAGMENT_UNIT: u64 = 320 * 1024;
/// Each fragment is smaller than this.
const FRAGMENT_MAX: u64 = 60 * 1024 * 1024;

fn not_found() -> Answer {
    graph_error(StatusCode::NOT_FOUND, "itemNotFound", "The resource could not be found.")
}

/// Stores a file at `key` (shown as `display`).
pub fn store(state: &mut State, key: &str, display: &str, bytes: &[u8], modified: Option<String>) {
    let lower = key.to_lowercase();
    let id = match state.files.get(&lower) {
        Some(file) => file.id.clone(),
        None => state.id("item-"),
    };
    state.files.insert(lower, File { id, display: display.to_owned(), bytes: bytes.to_vec(), modified });
}

/// A driveItem for `file`.
fn item(file: &File, omit_hashes: bool) -> Value {
    let mut quick = photosync::destination::onedrive::quickxor::QuickXor::default();
    quick.update(&file.bytes);
    let mut hashes = json!({});
    if !omit_hashes {
        hashes["quickXorHash"] = quick.base64().into();
    }
    json!({
        "id": file.id,
        "name": file.display.rsplit('/').next().unwrap_or_default(),
        "size": file.bytes.len(),
        "eTag": format!("\"{{{}}},1\"", file.id),
        "file": {"mimeType": "application/octet-stream", "hashes": hashes},
        "fileSystemInfo": {"lastModifiedDateTime": file.modified.clone().unwrap_or_else(now)},
    })
}

fn now() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn later() -> String {
    (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24)).strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A Graph request below `/v1.0/` (the token already checked).
pub fn graph(state: &mut State, method: &Method, rest: &str, body: &[u8]) -> Answer {
    if matches!(rest, "me/drive/root" | "me/drive/special/approot") && method == Method::GET {
        return json_answer(StatusCode::OK, &json!({"id": "root", "name": "root", "folder": {"childCount": 0}}));
    }
    let (namespace, path) = if let Some(path) = rest.strip_prefix("me/drive/root:") {
        ("root", path)
    } else if let Some(path) = rest.strip_prefix("me/drive/special/approot:") {
        ("approot", path)
    } else {
        return not_found();
    };
    let (path, action) = if let Some(path) = path.strip_suffix(":/createUploadSession") {
        (path, "session")
    } else if let Some(path) = path.strip_suffix(":/content") {
        (path, "content")
    } else {
        (path.strip_suffix(':').unwrap_or(path), "item")
    };
    let Ok(path) = percent_encoding::percent_decode_str(path).decode_utf8() else {
        return graph_error(StatusCode::BAD_REQUEST, "invalidRequest", "The path is not UTF-8.");
    };
    if path.split('/').skip(1).any(|name| name.is_empty() || name.contains([':', '*', '?', '"', '<', '>', '|', '\\'])) {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "invalidRequest",
            "The provided name contains invalid characters.",
        );
    }
    let key = format!("{namespace}:{path}");
    let display = if namespace == "root" { path.to_string() } else { key.clone() };
    match (action, method) {
        ("item", &Method::GET) => match state.files.get(&key.to_lowercase()) {
            Some(file) => json_answer(StatusCode::OK, &item(file, state.omit_hashes)),
            None => not_found(),
        },
        ("content", &Method::GET) => match state.files.get(&key.to_lowercase()) {
            Some(file) => {
                let mut answer = json_answer(StatusCode::FOUND, &json!({}));
                let location = format!("/download/{}", file.id);
                answer.headers_mut().insert("location", location.parse().expect("a header value"));
                answer
            }
            None => not_found(),
        },
        ("session", &Method::POST) => {
            let Ok(request) = serde_json::from_slice::<Value>(body) else {
                return graph_error(StatusCode::BAD_REQUEST, "invalidRequest", "The request body is not JSON.");
            };
            let item = request.get("item").cloned().unwrap_or_default();
            let known = ["@microsoft.graph.conflictBehavior", "fileSystemInfo", "name", "description"];
            if item.as_object().is_some_and(|fields| fields.keys().any(|k| !known.contains(&k.as_str()))) {
                return graph_error(StatusCode::BAD_REQUEST, "invalidRequest", "Unknown property in the item.");
            }
            let conflict = item["@microsoft.graph.conflictBehavior"].as_str().unwrap_or("replace").to_owned();
            if conflict == "fail" && state.files.contains_key(&key.to_lowercase()) {
                return graph_error(
                    StatusCode::CONFLICT,
                    "nameAlreadyExists",
                    "The specified item name already exists.",
                );
            }
            let modified =
                item.pointer("/fileSystemInfo/lastModifiedDateTime").and_then(Value::as_str).map(str::to_owned);
            let id = state.id("s-");
            let session =
                Session { key: key.to_lowercase(), display, conflict, modified, bytes: Vec::new(), total: None };
            state.sessions.insert(id.clone(), session);
            let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id.as_bytes());
            json_answer(
                StatusCode::OK,
                &json!({"uploadUrl": format!("{}/upload/{id}?tempauth={secret}", state.base), "expirationDateTime": later(),
                        "nextExpectedRanges": ["0-"]}),
            )
        }
        _ => graph_error(StatusCode::METHOD_NOT_ALLOWED, "invalidRequest", "The method is not supported here."),
    }
}

/// A request to an upload session's address.
pub fn upload(state: &mut State, method: &Method, headers: &HeaderMap, id: &str, _query: &str, body: &[u8]) -> Answer {
    match *method {
        Method::GET => match state.sessions.get(id) {
            Some(session) => json_answer(
                StatusCode::OK,
                &json!({"expirationDateTime": later(), "nextExpectedRanges": [format!("{}-", session.bytes.len())]}),
            ),
            None => not_found(),
        },
        Method::DELETE => match state.sessions.remove(id) {
            Some(_) => json_answer(StatusCode::NO_CONTENT, &json!({})),
            None => not_found(),
        },
        Method::PUT => put(state, headers, id, body),
        _ => graph_error(StatusCode::METHOD_NOT_ALLOWED, "invalidRequest", "The method is not supported here."),
    }
}

/// `bytes a-b/total`.
fn content_range(headers: &HeaderMap) -> Option<(u64, u64, u64)> {
    let text = headers.get("content-range")?.to_str().ok()?.strip_prefix("bytes ")?;
    let (range, total) = text.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    Some((start.parse().ok()?, end.parse().ok()?, total.parse().ok()?))
}

fn put(state: &mut State, headers: &HeaderMap, id: &str, body: &[u8]) -> Answer {
    let authorization = headers.contains_key("authorization");
    let (start, end, total) = content_range(headers).unwrap_or((u64::MAX, 0, 0));
    state.received.push(Received {
        session: id.to_owned(),
        start,
        len: body.len() as u64,
        accepted: false,
        authorization,
    });
    if authorization {
        return graph_error(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "The upload address takes no Authorization header.",
        );
    }
    let Some(session) = state.sessions.get_mut(id) else { return not_found() };
    let len = body.len() as u64;
    if start == u64::MAX || end < start || end - start + 1 != len || session.total.is_some_and(|t| t != total) {
        return graph_error(StatusCode::BAD_REQUEST, "invalidRequest", "The Content-Range header is not valid.");
    }
    if len >= FRAGMENT_MAX {
        return graph_error(StatusCode::PAYLOAD_TOO_LARGE, "invalidRequest", "The fragment is too large.");
    }
    if start != session.bytes.len() as u64 {
        return graph_error(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "invalidRange",
            "The uploaded fragment overlaps or skips bytes.",
        );
    }
    if end + 1 < total && !len.is_multiple_of(FRAGMENT_UNIT) {
        return graph_error(StatusCode::BAD_REQUEST, "invalidRequest", "A fragment must be a multiple of 320 KiB.");
    }
    session.total = Some(total);
    session.bytes.extend_from_slice(body);
    if let Some(last) = state.received.last_mut() {
        last.accepted = true;
    }
    let session = state.sessions[id].clone();
    if (session.bytes.len() as u64) < total {
        return json_answer(
            StatusCode::ACCEPTED,
            &json!({"expirationDateTime": later(), "nextExpectedRanges": [format!("{}-", session.bytes.len())]}),
        );
    }
    if session.conflict == "fail" && state.files.contains_key(&session.key) {
        return graph_error(StatusCode::CONFLICT, "nameAlreadyExists", "The specified item name already exists.");
    }
    state.sessions.remove(id);
    store(state, &session.key, &session.display, &session.bytes, session.modified.clone());
    state.writes += 1;
    let file = state.files[&session.key].clone();
    json_answer(StatusCode::CREATED, &item(&file, state.omit_hashes))
}

/// A download address (needs no token).
pub fn download(state: &State, id: &str) -> Answer {
    match state.files.values().find(|f| f.id == id) {
        Some(file) => {
            let mut answer = json_answer(StatusCode::OK, &json!({}));
            *answer.body_mut() = crate::dropbox_server::Whole::new(file.bytes.clone());
            answer
        }
        None => not_found(),
    }
}

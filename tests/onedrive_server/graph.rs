//! Graph's routes: the drive, items by path (`root:` and
//! `special/approot:`), their `content` and the download URLs it leads to.

use std::time::Instant;

use hyper::header::AUTHORIZATION;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use serde_json::{Value, json};

use super::{
    APP_NAME, Answer, Call, DOWNLOAD_TTL, DRIVE_ID, HeaderMap, HeaderValue, Method, State, StatusCode, empty,
    graph_error, guid, json_answer, rfc3339, with_type,
};

/// The root folder's id.
const ROOT_ID: &str = "B5C0E0C2A7E9F1D3!101";
/// The longest decoded path.
const MAX_PATH: usize = 400;
/// What `parentReference.path` leaves as it is: RFC 3986's `pchar` and `/`.
const PATH_KEEP: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'!')
    .remove(b'$')
    .remove(b'&')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b'+')
    .remove(b',')
    .remove(b';')
    .remove(b'=')
    .remove(b':')
    .remove(b'@')
    .remove(b'/');

/// What a path-addressed request asks for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Item,
    Content,
    Create,
}

pub(super) fn bad_request(message: &str) -> Answer {
    graph_error(StatusCode::BAD_REQUEST, "invalidRequest", message, None)
}

pub(super) fn not_found() -> Answer {
    graph_error(StatusCode::NOT_FOUND, "itemNotFound", "The resource could not be found.", None)
}

pub(super) fn not_allowed() -> Answer {
    graph_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalidRequest",
        "The HTTP method in the request is not allowed on the resource.",
        None,
    )
}

/// A request below `/v1.0/`.
pub(super) fn call(state: &mut State, call: &Call) -> Answer {
    let rest = call.path.strip_prefix("/v1.0/me/drive").or_else(|| call.path.strip_prefix("/v1.0/drive"));
    let Some(rest) = rest.filter(|r| r.is_empty() || r.starts_with('/')) else {
        return bad_request(&format!("Resource not found for the segment '{}'.", call.path));
    };
    let scope = match bearer(state, call.headers) {
        Ok(scope) => scope,
        Err(refusal) => return *refusal,
    };
    if rest.is_empty() || rest == "/" {
        return if call.method == Method::GET { json_answer(StatusCode::OK, &drive(state)) } else { not_allowed() };
    }
    let (app, after) = if let Some(after) = rest.strip_prefix("/root") {
        (false, after)
    } else if let Some(after) = rest.strip_prefix("/special/approot") {
        (true, after)
    } else {
        return bad_request(&format!("Resource not found for the segment '{rest}'."));
    };
    let (raw, tail) = match after {
        "" | ":" | ":/" => ("", ""),
        _ => match after.strip_prefix(":/") {
            Some(inner) => inner.split_once(':').unwrap_or((inner, "")),
            None => return bad_request(&format!("Resource not found for the segment '{after}'.")),
        },
    };
    let op = match tail {
        "" => Op::Item,
        "/content" => Op::Content,
        "/createUploadSession" => Op::Create,
        other => return bad_request(&format!("Resource not found for the segment '{other}'.")),
    };
    if !allowed(&scope, app, op == Op::Create) {
        return graph_error(StatusCode::FORBIDDEN, "accessDenied", "Access denied", None);
    }
    let path = match resolve(app, raw) {
        Ok(path) => path,
        Err(refusal) => return *refusal,
    };
    if app {
        state.make_folders(&format!("/Apps/{APP_NAME}/"));
    }
    match (op, call.method) {
        (Op::Item, &Method::GET) => get_item(state, call, &path),
        (Op::Content, &Method::GET) => content(state, call, &path),
        (Op::Create, &Method::POST) => super::upload::create_session(state, call, &path, app),
        _ => not_allowed(),
    }
}

/// The `Authorization: Bearer` check: the token's scopes, or a 401.
fn bearer(state: &State, headers: &HeaderMap) -> Result<String, Box<Answer>> {
    let refuse = |message: &str| {
        let mut answer = Box::new(graph_error(StatusCode::UNAUTHORIZED, "InvalidAuthenticationToken", message, None));
        answer.headers_mut().insert(
            "www-authenticate",
            HeaderValue::from_static(
                "Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\", \
                 client_id=\"00000003-0000-0000-c000-000000000000\"",
            ),
        );
        answer
    };
    let Some(value) = headers.get(AUTHORIZATION) else { return Err(refuse("Access token is empty.")) };
    let value = String::from_utf8_lossy(value.as_bytes());
    let token = value.split_once(' ').filter(|(kind, _)| kind.eq_ignore_ascii_case("bearer")).map(|(_, t)| t.trim());
    match token.and_then(|t| state.access_tokens.get(t)) {
        None => Err(refuse("CompactToken parsing failed with error code: 80049217")),
        Some(access) if access.is_expired() => Err(refuse("Access token has expired or is not yet valid.")),
        Some(access) => Ok(access.scope.clone()),
    }
}

/// Whether a token with `scope` may read (or write) the drive, or only its
/// app folder (`Files.ReadWrite.AppFolder`).
fn allowed(scope: &str, app: bool, writing: bool) -> bool {
    let scopes: Vec<String> =
        scope.split_whitespace().map(|s| s.trim_start_matches("https://graph.microsoft.com/").to_lowercase()).collect();
    let has = |name: &str| scopes.iter().any(|s| s == name);
    let write = has("files.readwrite") || has("files.readwrite.all") || (app && has("files.readwrite.appfolder"));
    write || (!writing && (has("files.read") || has("files.read.all")))
}

/// The path from the drive's root (`/Backup/a.jpg`, `""` for the root) of
/// the percent-encoded `raw` path below the root or the app folder.
fn resolve(app: bool, raw: &str) -> Result<String, Box<Answer>> {
    let Ok(decoded) = percent_decode_str(raw).decode_utf8() else {
        return Err(Box::new(bad_request("The path is not valid percent-encoded UTF-8.")));
    };
    let mut names: Vec<&str> = decoded.split('/').collect();
    if names.last() == Some(&"") {
        names.pop();
    }
    let mut path = if app { format!("/Apps/{APP_NAME}") } else { String::new() };
    for name in names {
        if name.is_empty() {
            return Err(Box::new(bad_request("The path has an empty name in it.")));
        }
        if name.chars().any(|c| c.is_control() || "\\*<>?:|\"".contains(c)) {
            return Err(Box::new(graph_error(
                StatusCode::BAD_REQUEST,
                "invalidRequest",
                &format!("The name '{name}' contains invalid characters."),
                Some("invalidPath"),
            )));
        }
        path.push('/');
        path.push_str(name);
    }
    if path.chars().count() > MAX_PATH {
        return Err(Box::new(graph_error(
            StatusCode::BAD_REQUEST,
            "invalidRequest",
            "Path exceeds maximum length.",
            Some("pathIsTooLong"),
        )));
    }
    Ok(path)
}

/// Why OneDrive will not store a file or folder `name` (the last in its
/// path when `last`), if it will not.
pub(super) fn refused_name(name: &str, last: bool) -> Option<String> {
    let lower = name.to_lowercase();
    let device = lower.len() == 4
        && (lower.starts_with("com") || lower.starts_with("lpt"))
        && lower.as_bytes()[3].is_ascii_digit();
    if name.trim() != name {
        Some(format!("The name '{name}' begins or ends with a space."))
    } else if device
        || ["con", "prn", "aux", "nul", ".lock", "desktop.ini"].contains(&lower.as_str())
        || lower.contains("_vti_")
        || name.starts_with("~$")
    {
        Some(format!("The name '{name}' is not allowed."))
    } else if !last && name.ends_with('.') {
        Some(format!("The folder name '{name}' ends with a period."))
    } else {
        None
    }
}

/// The drive resource.
fn drive(state: &State) -> Value {
    let used = state.used();
    let total = state.quota.unwrap_or(1 << 40);
    let remaining = total.saturating_sub(used);
    let level = match remaining * 100 / total.max(1) {
        0 => "exceeded",
        1 => "critical",
        2..=9 => "nearing",
        _ => "normal",
    };
    json!({
        "id": DRIVE_ID,
        "driveType": "personal",
        "owner": {"user": {"displayName": "Test User", "id": DRIVE_ID}},
        "quota": {"deleted": 0, "remaining": remaining, "state": level, "total": total, "used": used},
    })
}

/// Whether the request's `If-None-Match` names the item's `eTag` or `cTag`.
fn unchanged(call: &Call, description: &Value) -> bool {
    call.header("if-none-match").is_some_and(|tag| tag == description["eTag"] || tag == description["cTag"])
}

/// `GET …:/{path}:`.
fn get_item(state: &mut State, call: &Call, path: &str) -> Answer {
    let Some(description) = describe_item(state, path) else { return not_found() };
    if unchanged(call, &description) {
        return empty(StatusCode::NOT_MODIFIED);
    }
    json_answer(StatusCode::OK, &description)
}

/// `GET …:/{path}:/content`: a 302 to a download URL.
fn content(state: &mut State, call: &Call, path: &str) -> Answer {
    let Some(description) = describe_item(state, path) else { return not_found() };
    let Some(location) = description["@microsoft.graph.downloadUrl"].as_str() else {
        return bad_request("Only driveItems with the file property can be downloaded.");
    };
    if unchanged(call, &description) {
        return empty(StatusCode::NOT_MODIFIED);
    }
    let mut answer = empty(StatusCode::FOUND);
    answer.headers_mut().insert("location", HeaderValue::from_str(location).expect("a header value"));
    answer
}

/// The `driveItem` at `path` (from the drive's root), if there is one.
pub(super) fn describe_item(state: &mut State, path: &str) -> Option<Value> {
    let key = path.to_lowercase();
    let children = |state: &State| {
        let prefix = format!("{key}/");
        let below = state.items.iter().filter(|(k, _)| k.starts_with(&prefix));
        let count = below.clone().filter(|(k, _)| !k[prefix.len()..].contains('/')).count();
        (count, below.map(|(_, i)| i.bytes.len() as u64).sum::<u64>())
    };
    if key.is_empty() {
        let (count, size) = children(state);
        let now = rfc3339(jiff::Timestamp::now());
        return Some(json!({
            "id": ROOT_ID, "name": "root", "root": {}, "folder": {"childCount": count}, "size": size,
            "createdDateTime": now, "lastModifiedDateTime": now,
            "eTag": format!("\"{{{}}},1\"", guid(ROOT_ID)), "cTag": format!("\"c:{{{}}},1\"", guid(ROOT_ID)),
            "parentReference": {"driveId": DRIVE_ID, "driveType": "personal"},
        }));
    }
    let item = state.items.get(&key)?.clone();
    let (parent, _) = item.path.rsplit_once('/').unwrap_or_default();
    let parent_id = state.items.get(&parent.to_lowercase()).map_or(ROOT_ID.to_owned(), |p| p.id.clone());
    let tag = guid(&item.id);
    let mut description = json!({
        "id": item.id,
        "name": item.name(),
        "size": item.bytes.len(),
        "eTag": format!("\"{{{tag}}},{}\"", item.version),
        "cTag": format!("\"c:{{{tag}}},{}\"", item.version),
        "createdDateTime": item.created,
        "lastModifiedDateTime": item.modified,
        "parentReference": {
            "driveId": DRIVE_ID,
            "driveType": "personal",
            "id": parent_id,
            "path": format!("/drive/root:{}", utf8_percent_encode(parent, PATH_KEEP)),
        },
        "fileSystemInfo": {"createdDateTime": item.fs_created, "lastModifiedDateTime": item.fs_modified},
    });
    if item.folder {
        let (count, size) = children(state);
        description["folder"] = json!({"childCount": count});
        description["size"] = size.into();
        if key == format!("/apps/{}", APP_NAME.to_lowercase()) {
            description["specialFolder"] = json!({"name": "approot"});
        }
    } else {
        let mut file = json!({"mimeType": mime_type(item.name())});
        if !state.omit_hashes {
            file["hashes"] = json!({"quickXorHash": item.quick_xor});
        }
        description["file"] = file;
        let token = state.unique("dl-");
        state.downloads.insert(token.clone(), (key, Instant::now()));
        description["@microsoft.graph.downloadUrl"] = format!("{}/download/{token}", state.base).into();
    }
    Some(description)
}

fn mime_type(name: &str) -> &'static str {
    let extension = name.rsplit_once('.').map(|(_, e)| e.to_lowercase()).unwrap_or_default();
    match extension.as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "heic" => "image/heic",
        "gif" => "image/gif",
        "mp4" => "video/mp4",
        "mov" => "video/quicktime",
        "txt" => "text/plain",
        _ => "application/octet-stream",
    }
}

/// `GET {downloadUrl}`: the file's bytes, or the `Range` asked for (206).
pub(super) fn download(state: &mut State, call: &Call, token: &str) -> Answer {
    if *call.method != Method::GET {
        return not_allowed();
    }
    let Some((key, issued)) = state.downloads.get(token) else { return not_found() };
    if issued.elapsed() > DOWNLOAD_TTL {
        return graph_error(StatusCode::UNAUTHORIZED, "unauthenticated", "The download URL has expired.", None);
    }
    let Some(item) = state.items.get(key).filter(|i| !i.folder) else { return not_found() };
    let len = item.bytes.len() as u64;
    let range = call.header("range").and_then(|r| {
        let (start, end) = r.strip_prefix("bytes=")?.split_once('-')?;
        let (start, end) = match (start.parse::<u64>().ok(), end.parse::<u64>().ok()) {
            (Some(s), Some(e)) => (s, e.min(len.checked_sub(1)?)),
            (Some(s), None) if end.is_empty() => (s, len.checked_sub(1)?),
            (None, Some(n)) if start.is_empty() => (len.saturating_sub(n), len.checked_sub(1)?),
            _ => return None,
        };
        (start <= end).then_some((start, end))
    });
    let Some((start, end)) = range else {
        return with_type(StatusCode::OK, "application/octet-stream", item.bytes.clone());
    };
    let part = item.bytes[start as usize..=end as usize].to_vec();
    let mut answer = with_type(StatusCode::PARTIAL_CONTENT, "application/octet-stream", part);
    let content_range = format!("bytes {start}-{end}/{len}");
    answer.headers_mut().insert("content-range", HeaderValue::from_str(&content_range).expect("a header value"));
    answer
}

//! The `/2/` routes: uploads, upload sessions, download, metadata, and
//! `check/user`; their arguments checked as Stone checks them.

use std::time::Instant;

use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};

use super::{
    Answer, HeaderMap, HeaderValue, SESSION_LIFETIME, Session, State, StatusCode, content_hash, endpoint_error,
    header_safe, hex, ok, text, with_type,
};

/// Names Dropbox will not store.
const DISALLOWED: [&str; 6] = ["desktop.ini", "thumbs.db", ".ds_store", "icon\r", ".dropbox", ".dropbox.attr"];
/// `CommitInfo`'s fields.
const COMMIT: [&str; 7] =
    ["path", "mode", "autorename", "client_modified", "mute", "property_groups", "strict_conflict"];
/// The pattern of a `WritePathOrId`, for the message refusing another path.
const WRITE_PATH: &str = r"(/(.|[\r\n])*)|(ns:[0-9]+(/(.|[\r\n])*)?)|(id:.*)";
/// The pattern of a `ReadPath`.
const READ_PATH: &str = r"(/(.|[\r\n])*|id:.*)|(rev:[0-9a-f]{9,})|(ns:[0-9]+(/(.|[\r\n])*)?)";

/// How a route takes its argument.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Style {
    Upload,
    Download,
    Rpc,
}

/// Checks the request's form and token, then runs the route. `function` is
/// the path below `/2/`, e.g. `files/upload`.
pub(super) fn call(state: &mut State, headers: &HeaderMap, function: &str, body: &[u8]) -> Answer {
    let style = match function {
        "files/upload"
        | "files/upload_session/start"
        | "files/upload_session/append_v2"
        | "files/upload_session/finish" => Style::Upload,
        "files/download" => Style::Download,
        "files/get_metadata" | "check/user" | "users/get_current_account" => Style::Rpc,
        _ => return text(StatusCode::NOT_FOUND, &format!("Unknown API function: \"{function}\"")),
    };
    let bad = |detail: &str| {
        text(StatusCode::BAD_REQUEST, &format!("Error in call to API function \"{function}\": {detail}"))
    };
    let content_type = headers.get("content-type").map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_owned());
    let content_type = content_type.unwrap_or_default();
    let expected: &[&str] = match style {
        Style::Upload => &["application/octet-stream", "text/plain; charset=dropbox-cors-hack"],
        Style::Rpc => &["application/json", "application/json; charset=utf-8", "text/plain; charset=dropbox-cors-hack"],
        Style::Download => &[""],
    };
    if !expected.contains(&content_type.as_str()) {
        return bad(&if style == Style::Download {
            format!(
                "You provided a non-empty HTTP \"Content-Type\" header (\"{content_type}\"). This API function \
                 requires that the header be missing or empty."
            )
        } else {
            format!("Bad HTTP \"Content-Type\" header: \"{content_type}\". Expecting one of {expected:?}.")
        });
    }
    if let Some(refusal) = super::oauth::bearer_refusal(state, headers, function) {
        return refusal;
    }
    let (place, arg) = if style == Style::Rpc {
        ("request body", serde_json::from_slice::<Value>(body).ok())
    } else {
        let Some(raw) = headers.get("dropbox-api-arg") else {
            return bad("Must provide HTTP header \"Dropbox-API-Arg\" or URL parameter \"arg\".");
        };
        let safe = raw.as_bytes().iter().all(|&b| b < 0x7F);
        ("HTTP header \"Dropbox-API-Arg\"", serde_json::from_slice::<Value>(raw.as_bytes()).ok().filter(|_| safe))
    };
    let Some(arg) = arg else { return bad(&format!("{place}: could not decode input as JSON")) };
    let result = match function {
        "users/get_current_account" => current_account(&arg),
        "files/upload" => upload(state, &arg, body),
        "files/upload_session/start" => start(state, &arg, body),
        "files/upload_session/append_v2" => append(state, &arg, body),
        "files/upload_session/finish" => finish(state, &arg, body),
        "files/download" => download(state, &arg),
        "files/get_metadata" => get_metadata(state, &arg),
        _ => check_user(&arg),
    };
    result.unwrap_or_else(|detail| bad(&format!("{place}: {detail}")))
}

/// A route's answer, or what makes its argument bad input.
type Outcome = Result<Answer, String>;

/// `files/upload`: `UploadArg` → `FileMetadata`; `UploadError`.
fn upload(state: &mut State, arg: &Value, body: &[u8]) -> Outcome {
    let mut known = COMMIT.to_vec();
    known.push("content_hash");
    let map = fields(arg, &known)?;
    let commit = commit_info(map)?;
    if let Some(refusal) = refuse_data(state, hash_arg(map)?, body) {
        return Ok(refusal);
    }
    match save(state, &commit, body) {
        Ok(metadata) => Ok(ok(&metadata)),
        Err(reason) => {
            // The bytes wait in a closed session, for a `finish` elsewhere.
            let id = state.unique("pid_upload_session:");
            let session = Session { id: id.clone(), bytes: body.to_vec(), closed: true, created_at: Instant::now() };
            state.sessions.insert(id.clone(), session);
            Ok(endpoint_error(&json!({".tag": "path", "reason": reason, "upload_session_id": id})))
        }
    }
}

/// `files/upload_session/start`: `UploadSessionStartArg` → `{session_id}`.
fn start(state: &mut State, arg: &Value, body: &[u8]) -> Outcome {
    let map = fields(arg, &["close", "session_type", "content_hash"])?;
    let close = flag(map, "close")?;
    if let Some(kind) = field(map, "session_type") {
        match kind.as_str().or_else(|| kind.get(".tag").and_then(Value::as_str)) {
            Some("sequential") => {}
            Some("concurrent") => return Err("session_type: this fake serves sequential sessions only".into()),
            _ => return Err(format!("session_type: unknown tag {kind}")),
        }
    }
    if let Some(refusal) = refuse_data(state, hash_arg(map)?, body) {
        return Ok(refusal);
    }
    let id = state.unique("pid_upload_session:");
    state.sessions.insert(
        id.clone(),
        Session { id: id.clone(), bytes: body.to_vec(), closed: close, created_at: Instant::now() },
    );
    state.accept();
    Ok(ok(&json!({"session_id": id})))
}

/// `files/upload_session/append:2`: `UploadSessionAppendArg` → `null`;
/// `UploadSessionAppendError`.
fn append(state: &mut State, arg: &Value, body: &[u8]) -> Outcome {
    let map = fields(arg, &["cursor", "close", "content_hash"])?;
    let (id, offset) = cursor(map)?;
    let close = flag(map, "close")?;
    let hash = hash_arg(map)?;
    if body.len() as u64 > state.max_request {
        return Ok(endpoint_error(&json!({".tag": "payload_too_large"})));
    }
    let Some(session) = live_session(state, &id) else {
        return Ok(endpoint_error(&json!({".tag": "not_found"})));
    };
    if session.closed {
        return Ok(endpoint_error(&json!({".tag": "closed"})));
    }
    let length = session.bytes.len() as u64;
    if offset != length {
        return Ok(endpoint_error(&json!({".tag": "incorrect_offset", "correct_offset": length})));
    }
    if hash.is_some_and(|h| h != content_hash(body)) {
        return Ok(endpoint_error(&json!({".tag": "content_hash_mismatch"})));
    }
    session.bytes.extend_from_slice(body);
    session.closed = close;
    state.accept();
    Ok(ok(&Value::Null))
}

/// `files/upload_session/finish`: `UploadSessionFinishArg` → `FileMetadata`;
/// `UploadSessionFinishError`. The call's data is appended before the
/// commit; a commit that fails (`path`) leaves the session, data and all.
fn finish(state: &mut State, arg: &Value, body: &[u8]) -> Outcome {
    let map = fields(arg, &["cursor", "commit", "content_hash"])?;
    let (id, offset) = cursor(map)?;
    let commit =
        commit_info(fields(required(field(map, "commit"), "commit")?, &COMMIT).map_err(|e| format!("commit: {e}"))?)?;
    let hash = hash_arg(map)?;
    if body.len() as u64 > state.max_request {
        return Ok(endpoint_error(&json!({".tag": "payload_too_large"})));
    }
    let lookup_failed = |error: Value| endpoint_error(&json!({".tag": "lookup_failed", "lookup_failed": error}));
    let Some(session) = live_session(state, &id) else {
        return Ok(lookup_failed(json!({".tag": "not_found"})));
    };
    let length = session.bytes.len() as u64;
    if offset != length {
        return Ok(lookup_failed(json!({".tag": "incorrect_offset", "correct_offset": length})));
    }
    if session.closed && !body.is_empty() {
        return Ok(lookup_failed(json!({".tag": "closed"})));
    }
    if hash.is_some_and(|h| h != content_hash(body)) {
        return Ok(endpoint_error(&json!({".tag": "content_hash_mismatch"})));
    }
    session.bytes.extend_from_slice(body);
    session.closed = true;
    state.accept();
    let session = state.sessions.remove(&id).expect("the session");
    match save(state, &commit, &session.bytes) {
        Ok(metadata) => Ok(ok(&metadata)),
        Err(reason) => {
            state.sessions.insert(id, session);
            Ok(endpoint_error(&json!({".tag": "path", "path": reason})))
        }
    }
}

/// `files/download`: `DownloadArg` → the bytes, `FileMetadata` in
/// `Dropbox-API-Result`; `DownloadError`.
fn download(state: &State, arg: &Value) -> Outcome {
    let map = fields(arg, &["path", "rev"])?;
    let path = required(string(map, "path")?, "path")?;
    match lookup(state, path)? {
        Ok(Found::File(lower, file)) => {
            let mut answer = with_type(StatusCode::OK, "application/octet-stream", file.bytes.clone());
            let result = HeaderValue::from_str(&header_safe(&metadata(&lower, file))).expect("header-safe JSON");
            answer.headers_mut().insert("dropbox-api-result", result);
            Ok(answer)
        }
        Ok(Found::Folder(..)) => Ok(endpoint_error(&json!({".tag": "path", "path": {".tag": "not_file"}}))),
        Err(error) => Ok(endpoint_error(&json!({".tag": "path", "path": error}))),
    }
}

/// `files/get_metadata`: `GetMetadataArg` → `Metadata`; `GetMetadataError`.
fn get_metadata(state: &State, arg: &Value) -> Outcome {
    let known = [
        "path",
        "include_media_info",
        "include_deleted",
        "include_has_explicit_shared_members",
        "include_property_groups",
    ];
    let map = fields(arg, &known)?;
    let path = required(string(map, "path")?, "path")?;
    Ok(match lookup(state, path)? {
        Ok(Found::File(lower, file)) => ok(&metadata(&lower, file)),
        Ok(Found::Folder(lower, display)) => {
            let id = format!("id:folder-{}", &hex(&Sha256::digest(lower.as_bytes()))[..16]);
            let name = display.rsplit('/').next().unwrap_or_default();
            ok(&json!({".tag": "folder", "name": name, "id": id, "path_lower": lower, "path_display": display}))
        }
        Err(error) => endpoint_error(&json!({".tag": "path", "path": error})),
    })
}

/// `users/get_current_account` (`users.stone`): no argument (`null`) →
/// `FullAccount`, abridged.
fn current_account(arg: &Value) -> Outcome {
    if !arg.is_null() {
        return Err("request body: expected null, got a value".into());
    }
    Ok(ok(&json!({
        "account_id": super::ACCOUNT_ID,
        "name": {"given_name": "Test", "surname": "User", "familiar_name": "Test", "display_name": "Test User",
                 "abbreviated_name": "TU"},
        "email": "test@example.org",
        "email_verified": true,
        "disabled": false,
        "country": "DE",
        "locale": "en",
        "is_paired": false,
        "account_type": {".tag": "basic"},
    })))
}

/// `check/user`: `EchoArg` → `EchoResult`.
fn check_user(arg: &Value) -> Outcome {
    let map = fields(arg, &["query"])?;
    let query = string(map, "query")?.unwrap_or_default();
    if query.chars().count() > 500 {
        return Err(format!("query: '{query}' must be at most 500 characters"));
    }
    Ok(ok(&json!({"result": query})))
}

/// A `FileMetadata`.
fn metadata(lower: &str, file: &super::File) -> Value {
    json!({
        ".tag": "file",
        "name": file.path_display.rsplit('/').next().unwrap_or_default(),
        "id": file.id,
        "client_modified": file.client_modified,
        "server_modified": file.server_modified,
        "rev": file.rev,
        "size": file.bytes.len(),
        "path_lower": lower,
        "path_display": file.path_display,
        "is_downloadable": true,
        "content_hash": file.content_hash,
    })
}

/// The refusal of a call's data: too large, or not the content hash sent.
fn refuse_data(state: &State, hash: Option<&str>, body: &[u8]) -> Option<Answer> {
    if body.len() as u64 > state.max_request {
        return Some(endpoint_error(&json!({".tag": "payload_too_large"})));
    }
    hash.is_some_and(|h| h != content_hash(body)).then(|| endpoint_error(&json!({".tag": "content_hash_mismatch"})))
}

/// An open session younger than 7 days.
fn live_session<'a>(state: &'a mut State, id: &str) -> Option<&'a mut Session> {
    state.sessions.get_mut(id).filter(|s| s.created_at.elapsed() < SESSION_LIFETIME)
}

/// A `CommitInfo`'s `mode`.
enum Mode {
    Add,
    Overwrite,
    Update(String),
}

/// A checked `CommitInfo`.
struct Commit {
    path: String,
    mode: Mode,
    autorename: bool,
    client_modified: Option<String>,
    strict_conflict: bool,
}

fn commit_info(map: &Map<String, Value>) -> Result<Commit, String> {
    let path = required(string(map, "path")?, "path")?;
    if !path.starts_with('/') {
        return Err(format!("path: '{path}' did not match pattern '{WRITE_PATH}'"));
    }
    let mode = match field(map, "mode") {
        None => Mode::Add,
        Some(mode) => match (mode.as_str(), mode.get(".tag").and_then(Value::as_str)) {
            (Some("add"), _) | (_, Some("add")) => Mode::Add,
            (Some("overwrite"), _) | (_, Some("overwrite")) => Mode::Overwrite,
            (_, Some("update")) => match mode.get("update").and_then(Value::as_str) {
                Some(rev) if rev.len() >= 9 && rev.bytes().all(|b| b.is_ascii_hexdigit()) => Mode::Update(rev.into()),
                _ => return Err(format!("mode: bad rev in {mode}")),
            },
            _ => return Err(format!("mode: unknown tag {mode}")),
        },
    };
    let client_modified = string(map, "client_modified")?;
    if let Some(time) = client_modified
        && !is_timestamp(time)
    {
        return Err(format!("client_modified: time data '{time}' does not match format '%Y-%m-%dT%H:%M:%SZ'"));
    }
    flag(map, "mute")?;
    Ok(Commit {
        path: path.to_owned(),
        mode,
        autorename: flag(map, "autorename")?,
        client_modified: client_modified.map(str::to_owned),
        strict_conflict: flag(map, "strict_conflict")?,
    })
}

/// A `DropboxTimestamp`: `%Y-%m-%dT%H:%M:%SZ`, and a real time.
fn is_timestamp(text: &str) -> bool {
    let shape = text.len() == 20
        && text.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            10 => b == b'T',
            13 | 16 => b == b':',
            19 => b == b'Z',
            _ => b.is_ascii_digit(),
        });
    shape && text.parse::<jiff::Timestamp>().is_ok()
}

/// Saves `bytes` at the commit's path by `WriteMode`'s rules: the file's
/// metadata, or the `WriteError`.
fn save(state: &mut State, commit: &Commit, bytes: &[u8]) -> Result<Value, Value> {
    if let Some(refusal) = write_refusal(&commit.path) {
        return Err(refusal);
    }
    let conflict = |what: &str| json!({".tag": "conflict", "conflict": {".tag": what}});
    let lower = commit.path.to_lowercase();
    if lower.match_indices('/').skip(1).any(|(i, _)| state.files.contains_key(&lower[..i])) {
        return Err(conflict("file_ancestor"));
    }
    let mut what = "file";
    for attempt in 0..100 {
        let path = if attempt == 0 { commit.path.clone() } else { renamed(&commit.path, attempt) };
        let lower = path.to_lowercase();
        let folder = format!("{lower}/");
        let clash = if state.files.keys().any(|k| k.starts_with(&folder)) {
            Some("folder")
        } else {
            match (state.files.get(&lower), &commit.mode) {
                (Some(file), _) if !commit.strict_conflict && file.bytes == bytes => {
                    return Ok(metadata(&lower, file));
                }
                (None, Mode::Update(_)) if commit.strict_conflict => Some("file"),
                (None, _) | (Some(_), Mode::Overwrite) => None,
                (Some(file), Mode::Update(rev)) if file.rev == *rev => None,
                (Some(_), _) => Some("file"),
            }
        };
        match clash {
            None => {
                state.writes += 1;
                let lower = state.store(&path, bytes, commit.client_modified.clone());
                return Ok(metadata(&lower, &state.files[&lower]));
            }
            Some(clash) if !commit.autorename => return Err(conflict(clash)),
            Some(clash) => what = clash,
        }
    }
    Err(conflict(what))
}

/// `name (n).ext` for `name.ext`.
fn renamed(path: &str, n: u32) -> String {
    let (folder, name) = path.rsplit_once('/').unwrap_or(("", path));
    match name.rfind('.').filter(|&dot| dot > 0) {
        Some(dot) => format!("{folder}/{} ({n}){}", &name[..dot], &name[dot..]),
        None => format!("{folder}/{name} ({n})"),
    }
}

/// Whether a path (starting with `/`) has an empty or over-long component.
fn malformed(path: &str) -> bool {
    path[1..].split('/').any(|c| c.is_empty() || c.chars().count() > 255)
}

/// The `WriteError` for a path Dropbox will not write, if it will not.
fn write_refusal(path: &str) -> Option<Value> {
    if malformed(path) {
        return Some(json!({".tag": "malformed_path"}));
    }
    path.split('/').any(|c| DISALLOWED.contains(&c.to_lowercase().as_str())).then(|| json!({".tag": "disallowed_name"}))
}

/// What a path leads to.
enum Found<'a> {
    /// Its lowercase path, and the file.
    File(String, &'a super::File),
    /// A folder (one holding files): its lowercase and displayed paths.
    Folder(String, String),
}

/// Looks up a `ReadPath` (`/…`, `id:…`, `rev:…`): what is there, or the
/// `LookupError`; `Err` for a path of the wrong form.
fn lookup<'a>(state: &'a State, path: &str) -> Result<Result<Found<'a>, Value>, String> {
    let by = |test: &dyn Fn(&super::File) -> bool| {
        state.files.iter().find(|(_, f)| test(f)).map(|(lower, f)| Found::File(lower.clone(), f))
    };
    let found = if let Some(id) = path.strip_prefix("id:") {
        by(&|f| f.id == format!("id:{id}"))
    } else if let Some(rev) = path.strip_prefix("rev:").filter(|r| r.len() >= 9) {
        by(&|f| f.rev == rev)
    } else if path.starts_with('/') {
        if malformed(path) {
            return Ok(Err(json!({".tag": "malformed_path"})));
        }
        let lower = path.to_lowercase();
        let folder = format!("{lower}/");
        match state.files.get(&lower) {
            Some(file) => Some(Found::File(lower, file)),
            None => state.files.iter().find(|(k, _)| k.starts_with(&folder)).map(|(_, inside)| {
                let depth = lower.matches('/').count();
                let display: Vec<&str> = inside.path_display.split('/').take(depth + 1).collect();
                Found::Folder(lower, display.join("/"))
            }),
        }
    } else {
        return Err(format!("path: '{path}' did not match pattern '{READ_PATH}'"));
    };
    Ok(found.ok_or_else(|| json!({".tag": "not_found"})))
}

/// A `content_hash` argument: 64 characters when present.
fn hash_arg(map: &Map<String, Value>) -> Result<Option<&str>, String> {
    let hash = string(map, "content_hash")?;
    match hash {
        Some(h) if h.chars().count() != 64 => Err(format!("content_hash: '{h}' must be 64 characters long")),
        _ => Ok(hash),
    }
}

/// An `UploadSessionCursor`: session id and offset.
fn cursor(map: &Map<String, Value>) -> Result<(String, u64), String> {
    let cursor = fields(required(field(map, "cursor"), "cursor")?, &["session_id", "offset"])
        .map_err(|e| format!("cursor: {e}"))?;
    let id = required(string(cursor, "session_id")?, "cursor.session_id")?;
    let offset = match field(cursor, "offset") {
        Some(offset) => offset.as_u64().ok_or_else(|| format!("cursor.offset: expected integer, got {offset}"))?,
        None => return Err("missing required field 'cursor.offset'".into()),
    };
    Ok((id.to_owned(), offset))
}

/// A struct's fields: an object with no field it does not know.
fn fields<'a>(value: &'a Value, known: &[&str]) -> Result<&'a Map<String, Value>, String> {
    let map = value.as_object().ok_or_else(|| format!("expected object, got {value}"))?;
    match map.keys().find(|k| !known.contains(&k.as_str())) {
        Some(unknown) => Err(format!("unknown field '{unknown}'")),
        None => Ok(map),
    }
}

/// A field's value, `None` when absent or null.
fn field<'a>(map: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    map.get(name).filter(|v| !v.is_null())
}

fn required<T>(value: Option<T>, name: &str) -> Result<T, String> {
    value.ok_or_else(|| format!("missing required field '{name}'"))
}

fn string<'a>(map: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, String> {
    field(map, name).map(|v| v.as_str().ok_or_else(|| format!("{name}: expected string, got {v}"))).transpose()
}

/// A Boolean, false when absent.
fn flag(map: &Map<String, Value>, name: &str) -> Result<bool, String> {
    Ok(field(map, name)
        .map(|v| v.as_bool().ok_or_else(|| format!("{name}: expected boolean, got {v}")))
        .transpose()?
        .unwrap_or(false))
}

//! Upload sessions: `createUploadSession`, and the upload URLs it hands
//! out (`PUT` fragments, `GET` the status, `DELETE`, the deferred commit).

use hyper::header::AUTHORIZATION;
use serde_json::{Map, Value};

use super::graph::{bad_request, describe_item, not_allowed, refused_name};
use super::{
    APP_NAME, Answer, Call, Conflict, FRAGMENT_UNIT, Method, QuickXor, Session, State, StatusCode, empty, graph_error,
    json_answer,
};

/// The properties of a `driveItemUploadableProperties`.
const UPLOADABLE: [&str; 8] = [
    "@microsoft.graph.conflictBehavior",
    "@odata.type",
    "description",
    "driveItemSource",
    "fileSize",
    "fileSystemInfo",
    "mediaSource",
    "name",
];
/// The properties of a `fileSystemInfo`.
const FILE_SYSTEM_INFO: [&str; 4] = ["@odata.type", "createdDateTime", "lastAccessedDateTime", "lastModifiedDateTime"];

/// What the `createUploadSession` body asks for.
struct Asked {
    conflict: Conflict,
    fs_created: Option<String>,
    fs_modified: Option<String>,
    defer_commit: bool,
    file_size: Option<u64>,
}

/// Reads the `createUploadSession` body (and the query's
/// `@microsoft.graph.conflictBehavior`); `Err` is why it is bad input.
fn asked(call: &Call, name: &str) -> Result<Asked, String> {
    let mut asked =
        Asked { conflict: Conflict::Fail, fs_created: None, fs_modified: None, defer_commit: false, file_size: None };
    for (key, value) in url::form_urlencoded::parse(call.query.as_bytes()) {
        if key == "@microsoft.graph.conflictBehavior" {
            asked.conflict = conflict(&value)?;
        }
    }
    if call.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(asked);
    }
    let body: Value =
        serde_json::from_slice(call.body).map_err(|e| format!("Unable to read JSON request payload: {e}"))?;
    let top = object(&body, &["item", "deferCommit"], "microsoft.graph.createUploadSession")?;
    if let Some(defer) = top.get("deferCommit") {
        asked.defer_commit = defer.as_bool().ok_or("deferCommit is not a Boolean")?;
    }
    let Some(item) = top.get("item") else { return Ok(asked) };
    let item = object(item, &UPLOADABLE, "microsoft.graph.driveItemUploadableProperties")?;
    if let Some(behavior) = item.get("@microsoft.graph.conflictBehavior") {
        asked.conflict = conflict(behavior.as_str().ok_or("@microsoft.graph.conflictBehavior is not a string")?)?;
    }
    if let Some(given) = item.get("name") {
        let given = given.as_str().ok_or("name is not a string")?;
        if given != name {
            return Err(format!("The name '{given}' in the request body is not the path's name '{name}'."));
        }
    }
    if let Some(size) = item.get("fileSize") {
        asked.file_size = Some(size.as_u64().ok_or("fileSize is not an Int64")?);
    }
    if let Some(info) = item.get("fileSystemInfo") {
        let info = object(info, &FILE_SYSTEM_INFO, "microsoft.graph.fileSystemInfo")?;
        asked.fs_created = time(info.get("createdDateTime"))?;
        asked.fs_modified = time(info.get("lastModifiedDateTime"))?;
        time(info.get("lastAccessedDateTime"))?;
    }
    Ok(asked)
}

/// `value` as an object with no property but `known`.
fn object<'a>(value: &'a Value, known: &[&str], kind: &str) -> Result<&'a Map<String, Value>, String> {
    let map = value.as_object().ok_or_else(|| format!("A {kind} must be a JSON object."))?;
    if let Some(unknown) = map.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(format!(
            "The property '{unknown}' does not exist on type '{kind}'. Make sure to only use property names that are \
             defined by the type."
        ));
    }
    Ok(map)
}

fn conflict(value: &str) -> Result<Conflict, String> {
    match value {
        "fail" => Ok(Conflict::Fail),
        "replace" => Ok(Conflict::Replace),
        "rename" => Ok(Conflict::Rename),
        other => Err(format!("'{other}' is not a valid value for @microsoft.graph.conflictBehavior.")),
    }
}

/// A `DateTimeOffset`, as UTC to the second.
fn time(value: Option<&Value>) -> Result<Option<String>, String> {
    let Some(value) = value else { return Ok(None) };
    let text = value.as_str().ok_or("a date and time is not a string")?;
    let time: jiff::Timestamp =
        text.parse().map_err(|e| format!("Cannot convert '{text}' to a DateTimeOffset: {e}"))?;
    Ok(Some(time.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()))
}

/// Forgets sessions past their expiry.
fn purge(state: &mut State) {
    let now = jiff::Timestamp::now();
    state.sessions.retain(|_, s| s.expires > now);
}

/// The ancestors of `path` that are files, if any: nothing can go below one.
fn blocked(state: &State, path: &str) -> bool {
    let lower = path.to_lowercase();
    lower.match_indices('/').skip(1).any(|(i, _)| state.items.get(&lower[..i]).is_some_and(|item| !item.folder))
}

/// `POST …:/{path}:/createUploadSession`.
pub(super) fn create_session(state: &mut State, call: &Call, path: &str, app: bool) -> Answer {
    let (parent, name) = path.rsplit_once('/').unwrap_or_default();
    if name.is_empty() || path.eq_ignore_ascii_case(&format!("/Apps/{APP_NAME}")) {
        return bad_request("An upload session needs the path of a file.");
    }
    let names = parent.split('/').skip(if app { 3 } else { 1 });
    let refusal = names.map(|n| refused_name(n, false)).chain([refused_name(name, true)]).flatten().next();
    if let Some(reason) = refusal {
        return graph_error(StatusCode::BAD_REQUEST, "invalidRequest", &reason, Some("invalidPath"));
    }
    let asked = match asked(call, name) {
        Ok(asked) => asked,
        Err(reason) => return bad_request(&reason),
    };
    let taken = |message: &str| graph_error(StatusCode::CONFLICT, "nameAlreadyExists", message, None);
    if blocked(state, path) {
        return taken("A file is in the way of a folder on the path.");
    }
    match state.items.get(&path.to_lowercase()) {
        Some(item) if item.folder => return taken("The specified item name already exists."),
        Some(_) if asked.conflict == Conflict::Fail && state.conflict_at_creation => {
            return taken("The specified item name already exists.");
        }
        _ => {}
    }
    purge(state);
    if state.one_session_per_path && state.sessions.values().any(|s| s.path.eq_ignore_ascii_case(path)) {
        return taken(
            "A file with the same name is currently being uploaded. Change the filename and try to save again.",
        );
    }
    if let (Some(quota), Some(size)) = (state.quota, asked.file_size)
        && state.used() + size > quota
    {
        return graph_error(
            StatusCode::INSUFFICIENT_STORAGE,
            "quotaLimitReached",
            "Insufficient Space Available",
            None,
        );
    }
    let id = state.unique("up-");
    let tempauth = state.unique("ta-");
    let session = Session {
        tempauth: tempauth.clone(),
        path: path.to_owned(),
        conflict: asked.conflict,
        fs_created: asked.fs_created,
        fs_modified: asked.fs_modified,
        defer_commit: asked.defer_commit,
        total: None,
        bytes: Vec::new(),
        hasher: QuickXor::default(),
        expires: expiry(state),
        complete: false,
    };
    let mut created = session.status();
    created["uploadUrl"] = format!("{}/upload/{id}?tempauth={tempauth}", state.base).into();
    state.sessions.insert(id, session);
    json_answer(StatusCode::OK, &created)
}

fn expiry(state: &State) -> jiff::Timestamp {
    let lifetime = jiff::SignedDuration::try_from(state.session_lifetime).expect("a lifetime");
    jiff::Timestamp::now().checked_add(lifetime).expect("a time")
}

/// `bytes {start}-{end}/{total}`.
pub(super) fn parse_range(text: &str) -> Option<(u64, u64, u64)> {
    let (range, total) = text.strip_prefix("bytes ")?.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    Some((start.parse().ok()?, end.parse().ok()?, total.parse().ok()?))
}

/// A request to an upload URL (`/upload/{id}?tempauth=…`).
pub(super) fn upload_url(state: &mut State, call: &Call, id: &str) -> Answer {
    purge(state);
    let Some(session) = state.sessions.get(id) else {
        return graph_error(
            StatusCode::NOT_FOUND,
            "itemNotFound",
            "The upload session was not found.",
            Some("uploadSessionNotFound"),
        );
    };
    let tempauth = url::form_urlencoded::parse(call.query.as_bytes()).find(|(k, _)| k == "tempauth").map(|(_, v)| v);
    if tempauth.as_deref() != Some(session.tempauth.as_str()) {
        return graph_error(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "The tempauth token is missing or not valid.",
            None,
        );
    }
    match *call.method {
        Method::PUT => put_fragment(state, call, id),
        Method::GET => json_answer(StatusCode::OK, &session.status()),
        Method::DELETE => {
            state.sessions.remove(id);
            empty(StatusCode::NO_CONTENT)
        }
        Method::POST if session.defer_commit && session.complete && call.body.is_empty() => commit(state, id),
        Method::POST => graph_error(
            StatusCode::BAD_REQUEST,
            "invalidRequest",
            "The upload session is not complete, or does not defer its commit.",
            Some("uploadSessionIncomplete"),
        ),
        _ => not_allowed(),
    }
}

/// `PUT {uploadUrl}` with a fragment.
fn put_fragment(state: &mut State, call: &Call, id: &str) -> Answer {
    if call.headers.contains_key(AUTHORIZATION) {
        return graph_error(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "An upload URL takes no Authorization header: the URL authorizes the request.",
            None,
        );
    }
    let Some((start, end, total)) = call.header("content-range").as_deref().and_then(parse_range) else {
        return bad_request("The Content-Range header is missing or is not 'bytes {start}-{end}/{total}'.");
    };
    let Some(length) = call.header("content-length").and_then(|l| l.parse::<u64>().ok()) else {
        return graph_error(
            StatusCode::LENGTH_REQUIRED,
            "invalidRequest",
            "A Content-Length header is required.",
            None,
        );
    };
    if start > end || end >= total {
        return bad_request(&format!("The range {start}-{end} is not within a file of {total} bytes."));
    }
    if length != end - start + 1 {
        return bad_request(&format!("Content-Length {length} is not the length of the range {start}-{end}."));
    }
    let max_fragment = state.max_fragment;
    let lifetime = expiry(state);
    let session = state.sessions.get_mut(id).expect("a session");
    if length >= max_fragment {
        return graph_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalidRequest",
            &format!("A fragment must be smaller than {max_fragment} bytes."),
            Some("maxFragmentLengthExceeded"),
        );
    }
    if session.total.is_some_and(|t| t != total) {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "invalidRequest",
            "Declared total size for this fragment is different from that of the upload session.",
            Some("fragmentLengthMismatch"),
        );
    }
    let next = session.bytes.len() as u64;
    if start != next || session.complete {
        let (message, detail) = if start < next || session.complete {
            ("Uploaded fragment overlaps with existing data.", "fragmentOverlap")
        } else {
            ("Uploaded fragment is out of order.", "fragmentOutOfOrder")
        };
        return graph_error(StatusCode::RANGE_NOT_SATISFIABLE, "invalidRange", message, Some(detail));
    }
    let last = end + 1 == total;
    if !last && length % FRAGMENT_UNIT != 0 {
        return bad_request(&format!(
            "The fragment of {length} bytes is not a multiple of 320 KiB (327,680 bytes): only the last fragment may \
             be shorter."
        ));
    }
    session.bytes.extend_from_slice(call.body);
    session.hasher.update(call.body);
    session.total = Some(total);
    session.expires = lifetime;
    session.complete = last;
    let (status, defer) = (session.status(), session.defer_commit);
    state.accept();
    if last && !defer { commit(state, id) } else { json_answer(StatusCode::ACCEPTED, &status) }
}

/// Stores the complete session's file, as its conflict behaviour says; the
/// session stays (until it expires) when that fails.
fn commit(state: &mut State, id: &str) -> Answer {
    let session = state.sessions.get(id).expect("a session");
    let mut path = session.path.clone();
    let (size, conflict) = (session.bytes.len() as u64, session.conflict);
    let taken = |message: &str| graph_error(StatusCode::CONFLICT, "nameAlreadyExists", message, None);
    if blocked(state, &path) {
        return taken("A file is in the way of a folder on the path.");
    }
    let existing = state.items.get(&path.to_lowercase());
    if existing.is_some_and(|item| item.folder) {
        return taken("The specified item name already exists.");
    }
    let mut freed = 0;
    if let Some(item) = existing {
        match conflict {
            Conflict::Fail => {
                return taken(
                    "Another file exists with the same name as the uploaded session. You can redirect the upload \
                     session to use a new filename by calling PUT with the new metadata and \
                     @microsoft.graph.sourceUrl attribute.",
                );
            }
            Conflict::Replace => freed = item.bytes.len() as u64,
            Conflict::Rename => path = free_name(state, &path),
        }
    }
    if state.quota.is_some_and(|quota| state.used() - freed + size > quota) {
        return graph_error(
            StatusCode::INSUFFICIENT_STORAGE,
            "quotaLimitReached",
            "Insufficient Space Available",
            None,
        );
    }
    let session = state.sessions.remove(id).expect("a session");
    let hash = session.hasher.base64();
    let replaced = state.insert_file(&path, session.bytes, hash, session.fs_created, session.fs_modified);
    state.writes += 1;
    let description = describe_item(state, &path).expect("the file just stored");
    json_answer(if replaced { StatusCode::OK } else { StatusCode::CREATED }, &description)
}

/// `path` with ` 1`, ` 2`… before its extension, the first that is free.
fn free_name(state: &State, path: &str) -> String {
    let (folder, name) = path.rsplit_once('/').unwrap_or_default();
    let (stem, extension) = match name.rsplit_once('.') {
        Some((stem, extension)) if !stem.is_empty() => (stem, format!(".{extension}")),
        _ => (name, String::new()),
    };
    (1..=u64::MAX)
        .map(|n| format!("{folder}/{stem} {n}{extension}"))
        .find(|candidate| !state.items.contains_key(&candidate.to_lowercase()))
        .expect("a free name")
}

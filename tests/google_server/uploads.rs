//! The fake's upload endpoint: resumable sessions (`start` is answered in
//! the main module; `upload`, `upload, finalize`, `query`, `cancel` here)
//! and plain (`raw`) uploads, as Google's guides describe them
//! (<https://developers.google.com/photos/library/guides/resumable-uploads>,
//! <https://developers.google.com/photos/library/guides/upload-media#uploading-bytes>).

use hyper::StatusCode;
use hyper::header::HeaderValue;

use super::{Received, State, Upload, google_error};
use crate::fake_http::{Answer, with_type};

pub(super) fn upload(state: &mut State, id: &str, command: &str, offset: &str, body: &[u8]) -> Answer {
    let granularity = state.granularity;
    let Some(upload) = state.uploads.get_mut(id) else {
        return google_error(StatusCode::NOT_FOUND, "No such upload session.");
    };
    let status = |u: &Upload| {
        if u.cancelled {
            "cancelled"
        } else if u.finalized {
            "final"
        } else {
            "active"
        }
    };
    match command {
        "query" => {
            let mut answer = with_type(StatusCode::OK, "text/plain", Vec::new());
            answer.headers_mut().insert("x-goog-upload-status", HeaderValue::from_static(status(upload)));
            answer.headers_mut().insert("x-goog-upload-size-received", HeaderValue::from(upload.bytes.len() as u64));
            answer
        }
        "cancel" => {
            upload.cancelled = true;
            with_type(StatusCode::OK, "text/plain", Vec::new())
        }
        "upload" | "upload, finalize" => {
            let finalize = command == "upload, finalize";
            let claimed: u64 = offset.parse().unwrap_or(u64::MAX);
            state.received.push(Received {
                session: id.to_owned(),
                offset: claimed,
                len: body.len() as u64,
                accepted: false,
            });
            let upload = state.uploads.get_mut(id).expect("the session");
            if status(upload) != "active" {
                return google_error(StatusCode::BAD_REQUEST, "The upload session is not active.");
            }
            if claimed != upload.bytes.len() as u64 {
                return google_error(StatusCode::BAD_REQUEST, "X-Goog-Upload-Offset does not match what was received.");
            }
            if !finalize && !(body.len() as u64).is_multiple_of(granularity) {
                return google_error(StatusCode::BAD_REQUEST, "A chunk must be a multiple of the granularity.");
            }
            upload.bytes.extend_from_slice(body);
            if finalize && upload.bytes.len() as u64 != upload.size {
                return google_error(StatusCode::BAD_REQUEST, "The upload does not have X-Goog-Upload-Raw-Size bytes.");
            }
            upload.finalized = finalize;
            if let Some(last) = state.received.last_mut() {
                last.accepted = true;
            }
            if !finalize {
                return with_type(StatusCode::OK, "text/plain", Vec::new());
            }
            let token = state.id("CAIS");
            state.tokens.insert(token.clone(), (id.to_owned(), false));
            with_type(StatusCode::OK, "text/plain", token.into_bytes())
        }
        _ => google_error(StatusCode::BAD_REQUEST, "Unknown X-Goog-Upload-Command."),
    }
}

/// A plain upload: the body is the whole file.
pub(super) fn raw_upload(state: &mut State, body: &[u8]) -> Answer {
    if body.len() as u64 > state.max_size {
        return too_large();
    }
    let id = state.id("s");
    state.received.push(Received { session: id.clone(), offset: 0, len: body.len() as u64, accepted: true });
    state.uploads.insert(
        id.clone(),
        Upload { size: body.len() as u64, bytes: body.to_vec(), finalized: true, cancelled: false },
    );
    let token = state.id("CAIS");
    state.tokens.insert(token.clone(), (id, false));
    with_type(StatusCode::OK, "text/plain", token.into_bytes())
}

pub(super) fn too_large() -> Answer {
    google_error(StatusCode::PAYLOAD_TOO_LARGE, "The request exceeded the max file size limit of 20 GB.")
}

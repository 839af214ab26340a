//! Reading the file an upload sends, for destinations that send it in
//! pieces they hold in memory (Dropbox chunks, OneDrive fragments): opened
//! with its scanned size checked, read in positioned pieces, and read
//! without sending to rebuild hashes when an upload resumes.

use std::os::unix::fs::FileExt as _;
use std::sync::Arc;

use super::{DestinationError, UploadRequest, http};

/// Opens the source, checking it still has the scanned size.
pub fn open(request: &UploadRequest) -> Result<Arc<std::fs::File>, DestinationError> {
    let file = std::fs::File::open(&request.source).map_err(|e| http::read_error(request, &e))?;
    let len = file.metadata().map_err(|e| http::read_error(request, &e))?.len();
    if len != request.size {
        return Err(DestinationError::source_changed(format!(
            "{} changed since it was scanned ({len} bytes, not {})",
            request.source.display(),
            request.size
        )));
    }
    Ok(Arc::new(file))
}

/// Reads `len` bytes of `file` at `offset`.
pub async fn read_at(
    request: &UploadRequest,
    file: &Arc<std::fs::File>,
    offset: u64,
    len: u64,
) -> Result<bytes::Bytes, DestinationError> {
    let file = Arc::clone(file);
    let read = tokio::task::spawn_blocking(move || -> std::io::Result<bytes::Bytes> {
        let mut buffer = vec![0u8; usize::try_from(len).map_err(std::io::Error::other)?];
        file.read_exact_at(&mut buffer, offset)?;
        Ok(bytes::Bytes::from(buffer))
    })
    .await
    .map_err(|e| DestinationError::transient(format!("reading failed: {e}")))?;
    read.map_err(|e| http::read_error(request, &e))
}

/// Feeds bytes `from..to` of `file` to `state` with `update` (read, not
/// sent), and gives it back.
pub async fn read_into<S: Send + 'static>(
    request: &UploadRequest,
    file: &Arc<std::fs::File>,
    from: u64,
    to: u64,
    mut state: S,
    update: fn(&mut S, &[u8]),
) -> Result<S, DestinationError> {
    let file = Arc::clone(file);
    let done = tokio::task::spawn_blocking(move || -> std::io::Result<S> {
        let mut buffer = vec![0u8; http::READ_CHUNK];
        let mut at = from;
        while at < to {
            let n = usize::try_from((to - at).min(http::READ_CHUNK as u64)).map_err(std::io::Error::other)?;
            file.read_exact_at(&mut buffer[..n], at)?;
            update(&mut state, &buffer[..n]);
            at += n as u64;
        }
        Ok(state)
    })
    .await
    .map_err(|e| DestinationError::transient(format!("reading failed: {e}")))?;
    done.map_err(|e| http::read_error(request, &e))
}

/// The source changed since it was scanned.
pub fn changed(request: &UploadRequest) -> DestinationError {
    DestinationError::source_changed(format!("{} changed since it was scanned", request.source.display()))
}

/// A time in UTC, whole seconds, as the cloud services take it.
pub fn utc_seconds(time: std::time::SystemTime) -> String {
    jiff::Timestamp::try_from(time)
        .map_or_else(|_| "1970-01-01T00:00:00Z".to_owned(), |t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
}

//! What a file is and what it contains: media-type sniffing by extension and
//! magic bytes, the content hash, and when and with what it was taken.
//!
//! [`inspect`] reads a file once, front to back: the first block decides
//! whether it is a photo or video at all, its metadata headers give the
//! capture time ([`capture`]), and the same pass computes its SHA-256.
//! Nothing here knows about the catalog or destinations.

pub mod capture;
pub mod group;
pub mod sidecar;
mod sniff;

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::model::ContentHash;
use capture::Embedded;

pub use sniff::{MediaKind, is_media_extension, sniff};

/// Read size for hashing: large enough to keep syscalls rare, small enough to
/// stay in cache.
const BLOCK: usize = 256 * 1024;

/// How much of a file's beginning decides whether it is a photo or video
/// (the first block [`inspect`] reads).
pub const HEAD: usize = BLOCK;

/// What one read pass learned about a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inspection {
    /// A photo or video, with its hash and the byte count that was hashed.
    Media {
        /// Kind from the magic bytes.
        kind: MediaKind,
        /// SHA-256 of the content.
        hash: ContentHash,
        /// Bytes read.
        size: u64,
        /// What its metadata says of its capture.
        embedded: Embedded,
        /// Its SHA-1 (hex), when asked for: Immich knows content by it.
        sha1: Option<String>,
    },
    /// The content is not a photo or video whatever its name says.
    NotMedia,
}

/// Sniffs, reads the capture metadata of, and hashes `file` in one pass
/// (metadata past the first block, such as a video's `moov` at its end, is
/// read within [`capture`]'s budget); with `sha1`, its SHA-1 too, in the
/// same pass. `len` is the file's length as last seen (its stat): it sizes
/// the first read, so a small photo is read whole by it; what is hashed is
/// what the file holds, whatever its length now.
pub fn inspect(file: &mut File, len: u64, now: jiff::Timestamp, sha1: bool) -> io::Result<Inspection> {
    let mut buffer = buffer_for(len);
    let mut head_len = read_known(file, &mut buffer, len)?;
    if head_len == buffer.len() && head_len < BLOCK {
        // It grew since its length was taken: sniff it from a whole block.
        buffer.resize(BLOCK, 0);
        head_len += read_full(file, &mut buffer[head_len..])?;
    }
    // A read that filled less than the buffer ended at the file's end: a
    // small photo needs no further read to learn it.
    let whole = head_len < buffer.len();
    let Some(kind) = sniff(&buffer[..head_len]) else {
        return Ok(Inspection::NotMedia);
    };
    let len = if whole { head_len as u64 } else { len.max(head_len as u64) };
    let embedded = capture::embedded(file, len, &buffer[..head_len], now);
    let mut also = sha1.then(sha1::Sha1::new);
    let (hash, size) = if whole {
        hash_head(&buffer[..head_len], also.as_mut())
    } else {
        hash_on(file, &mut buffer, head_len, also.as_mut())?
    };
    let sha1 = also.map(|h| crate::model::hex(&h.finalize()));
    Ok(Inspection::Media { kind, hash, size, embedded, sha1 })
}

/// Checks that `file` holds a sidecar of `kind` and hashes it in the same
/// pass; `None` if its content is not what its name says.
pub fn inspect_sidecar(file: &mut File, kind: sidecar::SidecarKind) -> io::Result<Option<(ContentHash, u64)>> {
    let mut buffer = vec![0u8; BLOCK];
    let head_len = read_full(file, &mut buffer)?;
    if !sidecar::sniff(kind, &buffer[..head_len]) {
        return Ok(None);
    }
    hash_on(file, &mut buffer, head_len, None).map(Some)
}

/// The kind and capture metadata of the file at `path` from its headers
/// alone, without hashing it; `None` if it is not a photo or video. For
/// files recorded before capture times were kept.
pub fn describe(path: &Path, now: jiff::Timestamp) -> io::Result<Option<(MediaKind, Embedded)>> {
    let mut file = File::open(path)?;
    // Enough to sniff and to hold most headers; the capture reader fetches
    // what lies further on demand.
    let mut head = vec![0u8; 64 * 1024];
    let head_len = read_full(&mut file, &mut head)?;
    let Some(kind) = sniff(&head[..head_len]) else { return Ok(None) };
    Ok(Some((kind, capture::embedded(&file, file.metadata()?.len(), &head[..head_len], now))))
}

/// SHA-256 of the whole file at `path`, with its length.
pub fn hash_file(path: &Path) -> io::Result<(ContentHash, u64)> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    hash_open(&mut file, len)
}

/// SHA-256 and length of the whole of an open `file` (read from its
/// start), expected to hold about `len` bytes (it sizes the buffer). A
/// small file is read where it starts, without moving to it first.
pub fn hash_open(file: &mut File, len: u64) -> io::Result<(ContentHash, u64)> {
    let mut buffer = buffer_for(len);
    let head_len = read_known_at(file, &mut buffer, len)?;
    if head_len < buffer.len() {
        return Ok(hash_head(&buffer[..head_len], None));
    }
    io::Seek::seek(file, io::SeekFrom::Start(head_len as u64))?;
    hash_on(file, &mut buffer, head_len, None)
}

/// A read buffer for a file of `len` bytes: a block, or less for a small
/// file (zeroing a whole block for each small photo cost more than reading
/// it). One byte more than the file, so that a file that grew is still read
/// to its end, in more reads.
fn buffer_for(len: u64) -> Vec<u8> {
    vec![0u8; usize::try_from(len).map_or(BLOCK, |len| len.saturating_add(1).min(BLOCK))]
}

/// SHA-256 and length of `content`, the whole of a file read in one go;
/// `also` hashes the same bytes, when given.
fn hash_head(content: &[u8], also: Option<&mut sha1::Sha1>) -> (ContentHash, u64) {
    if let Some(also) = also {
        also.update(content);
    }
    (ContentHash::from_digest(&Sha256::digest(content)), content.len() as u64)
}

/// SHA-256 of the first `head_len` bytes of `buffer` (the file's start,
/// read already) and the rest of `file`, with the total length.
/// `also` hashes the same bytes, when given.
fn hash_on(
    file: &mut File,
    buffer: &mut [u8],
    head_len: usize,
    mut also: Option<&mut sha1::Sha1>,
) -> io::Result<(ContentHash, u64)> {
    let mut hasher = Sha256::new();
    hasher.update(&buffer[..head_len]);
    if let Some(also) = also.as_deref_mut() {
        also.update(&buffer[..head_len]);
    }
    let mut size = head_len as u64;
    loop {
        let n = read_retrying(file, buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        if let Some(also) = also.as_deref_mut() {
            also.update(&buffer[..n]);
        }
        size += n as u64;
    }
    Ok((ContentHash::from_digest(&hasher.finalize()), size))
}

pub(crate) fn read_retrying(file: &mut File, buffer: &mut [u8]) -> io::Result<usize> {
    loop {
        match file.read(buffer) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

/// Fills `buffer` as far as the file allows, or until a read comes back
/// short with exactly the file's length `len` read (its length when looked
/// at): a small photo then costs one read, not a second that finds nothing.
/// (A file that grew meanwhile fills the buffer, one byte longer than its
/// length; one that did not but whose file system reads short is read as
/// the `len` bytes it had, a whole version.)
fn read_known(file: &mut File, buffer: &mut [u8], len: u64) -> io::Result<usize> {
    fill_known(buffer, len, |rest, _| read_retrying(file, rest))
}

/// [`read_known`] from the file's start, wherever its position is (which
/// it leaves there).
fn read_known_at(file: &File, buffer: &mut [u8], len: u64) -> io::Result<usize> {
    fill_known(buffer, len, |rest, at| {
        loop {
            match std::os::unix::fs::FileExt::read_at(file, rest, at) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => return other,
            }
        }
    })
}

/// The loop of [`read_known`]: `read` fills the rest of the buffer from
/// the file's offset given.
fn fill_known(
    buffer: &mut [u8],
    len: u64,
    mut read: impl FnMut(&mut [u8], u64) -> io::Result<usize>,
) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        let n = read(&mut buffer[filled..], filled as u64)?;
        filled += n;
        if n == 0 || filled as u64 == len {
            break;
        }
    }
    Ok(filled)
}

/// Fills `buffer` as far as the file allows.
fn read_full(file: &mut File, buffer: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        let n = read_retrying(file, &mut buffer[filled..])?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn temp_file(content: &[u8]) -> File {
        let mut file = tempfile::tempfile().expect("tempfile");
        file.write_all(content).expect("write");
        std::io::Seek::rewind(&mut file).expect("rewind");
        file
    }

    fn inspect_file(file: &mut File, now: jiff::Timestamp, sha1: bool) -> io::Result<Inspection> {
        let len = file.metadata()?.len();
        inspect(file, len, now, sha1)
    }

    #[test]
    fn inspect_hashes_the_whole_file_across_blocks() {
        let mut content = vec![0xFF, 0xD8, 0xFF, 0xE0];
        content.extend((0..BLOCK * 2 + 17).map(|i| (i % 251) as u8));
        let expected = ContentHash::from_digest(&Sha256::digest(&content));
        let got = inspect_file(&mut temp_file(&content), jiff::Timestamp::now(), false).expect("inspect");
        let size = content.len() as u64;
        let media = |sha1| Inspection::Media {
            kind: MediaKind::Photo,
            hash: expected.clone(),
            size,
            embedded: Embedded::default(),
            sha1,
        };
        assert_eq!(got, media(None));
        // With the SHA-1 Immich knows content by, in the same pass.
        let sha1 = crate::model::hex(&sha1::Sha1::digest(&content));
        let got = inspect_file(&mut temp_file(&content), jiff::Timestamp::now(), true).expect("inspect");
        assert_eq!(got, media(Some(sha1)));
    }

    /// A small photo is hashed from the first read alone, and what is
    /// hashed is what the file holds even when the length it was asked
    /// with (the walk's stat) is out of date, either way.
    #[test]
    fn a_small_photo_is_hashed_whole_whatever_length_was_seen() {
        let content = [0xFF, 0xD8, 0xFF, 0xE0, 1, 2, 3, 4, 5];
        let expected = ContentHash::from_digest(&Sha256::digest(content));
        for seen in [9, 4, 100, 0] {
            let got = inspect(&mut temp_file(&content), seen, jiff::Timestamp::now(), false).expect("inspect");
            let Inspection::Media { hash, size, .. } = got else { panic!("not media: {got:?}") };
            assert_eq!((hash, size), (expected.clone(), 9), "seen as {seen} bytes");
        }
    }

    /// Regression: a small photo took two reads, the second finding
    /// nothing. Here the file is a pipe whose writer stays open: a second
    /// read would say it has nothing yet instead of the end.
    #[test]
    fn a_small_photo_of_the_length_seen_takes_one_read() {
        let content = [0xFF, 0xD8, 0xFF, 0xE0, 1, 2, 3, 4, 5];
        let (reader, mut writer) = std::io::pipe().expect("pipe");
        writer.write_all(&content).expect("write");
        let mut file = File::from(std::os::fd::OwnedFd::from(reader));
        rustix::fs::fcntl_setfl(&file, rustix::fs::OFlags::NONBLOCK).expect("non-blocking");
        let got = inspect(&mut file, 9, jiff::Timestamp::now(), false).expect("one read");
        let Inspection::Media { hash, size, .. } = got else { panic!("not media: {got:?}") };
        assert_eq!((hash, size), (ContentHash::from_digest(&Sha256::digest(content)), 9));
    }

    /// Regression: reading back a small copy moved to its start first, then
    /// took a second read that found nothing. It is read where it starts,
    /// once, and its position is left where it was; a large one is read
    /// whole all the same.
    #[test]
    fn a_small_file_is_hashed_from_its_start_without_moving() {
        for len in [9, BLOCK + 3] {
            let content: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut file = temp_file(&content);
            io::Seek::seek(&mut file, io::SeekFrom::Start(4)).expect("seek");
            let got = hash_open(&mut file, len as u64).expect("hash");
            assert_eq!(got, (ContentHash::from_digest(&Sha256::digest(&content)), len as u64));
            let position = io::Seek::stream_position(&mut file).expect("position");
            assert_eq!(position, if len < BLOCK { 4 } else { len as u64 }, "{len} bytes");
        }
    }

    #[test]
    fn inspect_rejects_text_named_like_a_photo() {
        assert_eq!(
            inspect_file(&mut temp_file(b"not a photo\n"), jiff::Timestamp::now(), false).expect("inspect"),
            Inspection::NotMedia
        );
        assert_eq!(
            inspect_file(&mut temp_file(b""), jiff::Timestamp::now(), false).expect("inspect"),
            Inspection::NotMedia
        );
    }
}

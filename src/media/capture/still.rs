//! Where the EXIF block sits in still-image containers: a JPEG's `APP1`
//! segment (EXIF 2.32 §4.5.4), a PNG's `eXIf` chunk (PNG 3rd edition
//! §11.3.6) or the hex "raw profile" text chunk `ImageMagick` wrote before
//! `eXIf` existed, a WebP's `EXIF` chunk (RFC 9649 §2.7), the JPEG inside a
//! Fujifilm RAF, and the `TTW` block of a Minolta MRW. Each returns where
//! the TIFF header is.

use super::reader::{MAX_READ, Reader};

/// Where a file's TIFF structure is.
pub(super) enum Exif {
    /// At this offset in the file.
    At(u64),
    /// Decoded from the file (a PNG's hex text).
    Decoded(Vec<u8>),
}

/// Longest EXIF block decoded from a PNG's text.
const MAX_DECODED: usize = 256 * 1024;

/// The `APP1` identifier of an EXIF segment.
const EXIF_ID: &[u8] = b"Exif\0\0";

/// The TIFF header inside a JPEG starting at `start`.
pub(super) fn jpeg(reader: &Reader<'_>, start: u64) -> Option<u64> {
    if reader.bytes(start, 2)?[..] != [0xFF, 0xD8] {
        return None;
    }
    let mut at = start + 2;
    loop {
        reader.step()?;
        let marker = reader.bytes(at, 4)?;
        if marker[0] != 0xFF {
            return None;
        }
        match marker[1] {
            // Fill bytes before a marker.
            0xFF => {
                at += 1;
                continue;
            }
            // Start of scan, end of image: the metadata segments are over.
            0xDA | 0xD9 => return None,
            // Markers without a length.
            0x01 | 0xD0..=0xD7 => {
                at += 2;
                continue;
            }
            _ => {}
        }
        let length = u64::from(u16::from_be_bytes([marker[2], marker[3]]));
        if length < 2 {
            return None;
        }
        if marker[1] == 0xE1 && length >= 2 + EXIF_ID.len() as u64 + 8 && reader.bytes(at + 4, 6)?[..] == *EXIF_ID {
            return Some(at + 4 + EXIF_ID.len() as u64);
        }
        at += 2 + length;
    }
}

/// The TIFF header of a PNG: its `eXIf` chunk, else a `tEXt` or `zTXt`
/// chunk named `Raw profile type exif` (or `APP1`) holding it as hex.
pub(super) fn png(reader: &Reader<'_>) -> Option<Exif> {
    let mut at = 8;
    let mut profile = None;
    loop {
        // A budget spent or a file cut short keeps what was found.
        let Some(header) = reader.step().and_then(|()| reader.bytes(at, 8)) else { return profile };
        let length = u64::from(u32::from_be_bytes([header[0], header[1], header[2], header[3]]));
        match &header[4..8] {
            b"eXIf" => return Some(Exif::At(at + 8)),
            b"IEND" => return profile,
            // A profile in hand: no need to walk the image data for an `eXIf`.
            b"IDAT" if profile.is_some() => return profile,
            kind @ (b"tEXt" | b"zTXt") if profile.is_none() && length <= MAX_READ as u64 => {
                let chunk = reader.bytes(at + 8, length as usize)?;
                profile = raw_profile(&chunk, kind == b"zTXt").map(Exif::Decoded);
            }
            _ => {}
        }
        at += 12 + length;
    }
}

/// The EXIF block of a text chunk `Raw profile type exif`: after the
/// keyword, a line with the profile's name, a line with its length in
/// bytes, then that many bytes as hex digits (in `zTXt`, deflated).
fn raw_profile(chunk: &[u8], compressed: bool) -> Option<Vec<u8>> {
    let (keyword, rest) = chunk.split_at(chunk.iter().position(|&b| b == 0)?);
    if keyword != b"Raw profile type exif" && keyword != b"Raw profile type APP1" {
        return None;
    }
    let text = if compressed {
        // A compression method byte (0: deflate), then a zlib stream.
        miniz_oxide::inflate::decompress_to_vec_zlib_with_limit(rest.get(2..)?, 4 * MAX_DECODED).ok()?
    } else {
        rest.get(1..)?.to_vec()
    };
    let mut words = text.split(u8::is_ascii_whitespace).filter(|w| !w.is_empty());
    let _name = words.next()?;
    let length: usize = std::str::from_utf8(words.next()?).ok()?.parse().ok()?;
    if length > MAX_DECODED {
        return None;
    }
    let mut bytes = Vec::with_capacity(length);
    let mut digits = words.flatten().map(|d| char::from(*d).to_digit(16));
    while bytes.len() < length {
        let (high, low) = (digits.next()??, digits.next()??);
        bytes.push((high << 4 | low) as u8);
    }
    if bytes.starts_with(EXIF_ID) {
        bytes.drain(..EXIF_ID.len());
    }
    // An APP1 profile may hold XMP instead: only a TIFF structure counts.
    (bytes.starts_with(b"II*\0") || bytes.starts_with(b"MM\0*")).then_some(bytes)
}

/// The TIFF header inside a WebP's `EXIF` chunk (some writers put the
/// JPEG-style `Exif\0\0` before it).
pub(super) fn webp(reader: &Reader<'_>) -> Option<u64> {
    let mut at = 12;
    loop {
        reader.step()?;
        let header = reader.bytes(at, 8)?;
        let length = u64::from(u32::from_le_bytes([header[4], header[5], header[6], header[7]]));
        if &header[..4] == b"EXIF" {
            let data = at + 8;
            let skip = if reader.bytes(data, 6).is_some_and(|id| *id == *EXIF_ID) { 6 } else { 0 };
            return Some(data + skip);
        }
        // Chunks are padded to an even length.
        at += 8 + length + (length & 1);
    }
}

/// The TIFF header in the JPEG preview of a Fujifilm RAF, whose offset the
/// RAF header gives at byte 84.
pub(super) fn raf(reader: &Reader<'_>) -> Option<u64> {
    let jpeg_at = reader.u32_be(84)?;
    jpeg(reader, u64::from(jpeg_at))
}

/// The TIFF header of a Minolta MRW: the file opens with a `\0MRM` block
/// whose data is a sequence of blocks (a 4-byte name, a big-endian length),
/// one of which, `\0TTW`, is a TIFF structure.
pub(super) fn mrw(reader: &Reader<'_>) -> Option<u64> {
    let end = 8 + u64::from(reader.u32_be(4)?);
    let mut at = 8;
    while at + 8 <= end {
        reader.step()?;
        let header = reader.bytes(at, 8)?;
        if &header[..4] == b"\0TTW" {
            return Some(at + 8);
        }
        at += 8 + u64::from(u32::from_be_bytes([header[4], header[5], header[6], header[7]]));
    }
    None
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn finds_the_exif_block_in_each_container() {
        let tiff = b"II*\0\x08\0\0\0";
        let mut jpeg_file = vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, 0, 0, 0xFF, 0xE1];
        jpeg_file.extend_from_slice(&((2 + 6 + tiff.len()) as u16).to_be_bytes());
        jpeg_file.extend_from_slice(b"Exif\0\0");
        jpeg_file.extend_from_slice(tiff);
        assert_eq!(jpeg(&Reader::memory(&jpeg_file), 0), Some(18));

        let mut png_file = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
        png_file.extend_from_slice(&[0; 13 + 4]);
        png_file.extend_from_slice(&(tiff.len() as u32).to_be_bytes());
        png_file.extend_from_slice(b"eXIf");
        png_file.extend_from_slice(tiff);
        assert!(matches!(png(&Reader::memory(&png_file)), Some(Exif::At(41))));

        let mut webp_file = b"RIFF\0\0\0\0WEBPVP8X\x0a\0\0\0".to_vec();
        webp_file.extend_from_slice(&[0; 10]);
        webp_file.extend_from_slice(b"EXIF");
        webp_file.extend_from_slice(&(6 + tiff.len() as u32).to_le_bytes());
        webp_file.extend_from_slice(b"Exif\0\0");
        webp_file.extend_from_slice(tiff);
        assert_eq!(webp(&Reader::memory(&webp_file)), Some(12 + 18 + 8 + 6));
    }

    #[test]
    fn legacy_png_profiles_and_minolta_blocks_are_found() {
        let tiff = b"II*\0\x08\0\0\0";
        let hex = crate::model::hex(&[&b"Exif\0\0"[..], tiff].concat());
        let text = format!("\nexif\n      14\n{}\n{}\n", &hex[..16], &hex[16..]);
        let plain = [&b"Raw profile type exif\0"[..], text.as_bytes()].concat();
        assert_eq!(raw_profile(&plain, false).as_deref(), Some(&tiff[..]));
        let deflated = miniz_oxide::deflate::compress_to_vec_zlib(text.as_bytes(), 6);
        let compressed = [&b"Raw profile type exif\0\0"[..], &deflated].concat();
        assert_eq!(raw_profile(&compressed, true).as_deref(), Some(&tiff[..]));
        assert_eq!(raw_profile(b"Comment\0hello", false), None);
        let short = [&b"Raw profile type exif\0\nexif\n 9999\n00ff"[..]].concat();
        assert_eq!(raw_profile(&short, false), None, "fewer digits than the length says");

        let mut mrw_file = b"\0MRM\0\0\0\x18\0PRD\0\0\0\x02xx\0TTW\0\0\0\x08".to_vec();
        mrw_file.extend_from_slice(tiff);
        assert_eq!(mrw(&Reader::memory(&mrw_file)), Some(26));
    }

    #[test]
    fn malformed_containers_end_the_search() {
        // A JPEG whose segments run past the end, or claim a length of 0.
        assert_eq!(jpeg(&Reader::memory(&[0xFF, 0xD8, 0xFF, 0xE1, 0xFF, 0xFF]), 0), None);
        assert_eq!(jpeg(&Reader::memory(&[0xFF, 0xD8, 0xFF, 0xE1, 0, 0, 0, 0]), 0), None);
        // Endless fill bytes stop at the step budget or the end.
        let mut fill = vec![0xFF, 0xD8];
        fill.resize(100_000, 0xFF);
        assert_eq!(jpeg(&Reader::memory(&fill), 0), None);
        // A PNG chunk claiming 4 GB.
        let png_file = b"\x89PNG\r\n\x1a\n\xff\xff\xff\xffIDAT".to_vec();
        assert!(png(&Reader::memory(&png_file)).is_none());
    }
}

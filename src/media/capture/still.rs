//! Where the EXIF block sits in still-image containers: a JPEG's `APP1`
//! segment (EXIF 2.32 §4.5.4), a PNG's `eXIf` chunk (PNG 3rd edition
//! §11.3.6), a WebP's `EXIF` chunk (RFC 9649 §2.7), and the JPEG inside a
//! Fujifilm RAF. Each returns the offset of the TIFF header.

use super::reader::Reader;

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

/// The TIFF header inside a PNG's `eXIf` chunk.
pub(super) fn png(reader: &Reader<'_>) -> Option<u64> {
    let mut at = 8;
    loop {
        reader.step()?;
        let header = reader.bytes(at, 8)?;
        let length = u64::from(u32::from_be_bytes([header[0], header[1], header[2], header[3]]));
        match &header[4..8] {
            b"eXIf" => return Some(at + 8),
            b"IEND" => return None,
            _ => at += 12 + length,
        }
    }
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
        assert_eq!(png(&Reader::memory(&png_file)), Some(8 + 25 + 8));

        let mut webp_file = b"RIFF\0\0\0\0WEBPVP8X\x0a\0\0\0".to_vec();
        webp_file.extend_from_slice(&[0; 10]);
        webp_file.extend_from_slice(b"EXIF");
        webp_file.extend_from_slice(&(6 + tiff.len() as u32).to_le_bytes());
        webp_file.extend_from_slice(b"Exif\0\0");
        webp_file.extend_from_slice(tiff);
        assert_eq!(webp(&Reader::memory(&webp_file)), Some(12 + 18 + 8 + 6));
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
        assert_eq!(png(&Reader::memory(&png_file)), None);
    }
}

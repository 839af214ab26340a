//! Media detection: a file counts as a photo or video when its extension is
//! one we know *and* its first bytes carry a matching container signature.
//! Extensions alone let through text files named `.jpg`; signatures alone
//! would make us open every file in the tree.

use std::ffi::OsStr;

/// Broad class of a media file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    /// A still image (JPEG, HEIF, PNG, raw, …).
    Photo,
    /// A moving image (MP4, `QuickTime`, Matroska, MPEG-TS, …).
    Video,
}

/// Extensions of photos and videos we back up, lowercase.
const EXTENSIONS: &[&str] = &[
    // Photos.
    "jpg", "jpeg", "jpe", "jfif", "heic", "heif", "hif", "avif", "png", "gif", "webp", "tif", "tiff", "jxl",
    "bmp", // Raw formats.
    "dng", "cr2", "cr3", "crw", "nef", "nrw", "arw", "srf", "sr2", "orf", "rw2", "raf", "pef", "srw", "x3f", "rwl",
    "3fr", "erf", "kdc", "dcr", "mrw", "mos", "iiq", "raw", // Videos.
    "mp4", "m4v", "mov", "qt", "3gp", "3g2", "mts", "m2ts", "ts", "avi", "mkv", "webm", "mpg", "mpeg", "wmv", "insv",
    "lrv",
];

/// Whether the extension is one a photo or video may carry.
pub fn is_media_extension(extension: &OsStr) -> bool {
    let Some(ext) = extension.to_str() else { return false };
    EXTENSIONS.iter().any(|known| known.eq_ignore_ascii_case(ext))
}

/// ISO base media brands (`ftyp` major brand) that are still images.
const IMAGE_BRANDS: &[&[u8; 4]] = &[
    b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1", b"avif", b"avis", b"crx ",
];

/// ISO base media brands that are audio only.
const AUDIO_BRANDS: &[&[u8; 4]] = &[b"M4A ", b"M4B ", b"M4P ", b"F4A ", b"F4B "];

/// Classifies content by its first bytes; `None` when it is not a photo or
/// video container we know.
pub fn sniff(head: &[u8]) -> Option<MediaKind> {
    use MediaKind::{Photo, Video};
    let starts = |magic: &[u8]| head.starts_with(magic);
    let at = |offset: usize, magic: &[u8]| head.get(offset..offset + magic.len()) == Some(magic);

    if starts(b"\xFF\xD8\xFF")
        || starts(b"\x89PNG\r\n\x1A\n")
        || starts(b"GIF87a")
        || starts(b"GIF89a")
        || starts(b"II*\0")
        || starts(b"MM\0*")
        || starts(b"II+\0")
        || starts(b"MM\0+")
        || starts(b"IIRO")
        || starts(b"IIRS")
        || starts(b"MMOR")
        || starts(b"IIU\0")
        || starts(b"FUJIFILMCCD-RAW")
        || (starts(b"II\x1A\0\0\0") && at(6, b"HEAPCCDR"))
        || starts(b"FOVb")
        || starts(b"\xFF\x0A")
        || starts(b"\0\0\0\x0CJXL \r\n\x87\n")
        || (starts(b"BM") && head.len() >= 26)
    {
        return Some(Photo);
    }
    if starts(b"RIFF") && at(8, b"WEBP") {
        return Some(Photo);
    }
    if starts(b"RIFF") && at(8, b"AVI ") {
        return Some(Video);
    }
    if at(4, b"ftyp") {
        let brand = head.get(8..12)?;
        if AUDIO_BRANDS.iter().any(|b| b.as_slice() == brand) {
            return None;
        }
        return Some(if IMAGE_BRANDS.iter().any(|b| b.as_slice() == brand) { Photo } else { Video });
    }
    // QuickTime files that predate `ftyp` open with another top-level atom.
    if [b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"].iter().any(|atom| at(4, *atom)) {
        return Some(Video);
    }
    if starts(b"\x1A\x45\xDF\xA3")          // Matroska / WebM
        || starts(b"\0\0\x01\xBA")          // MPEG program stream
        || starts(b"\x30\x26\xB2\x75\x8E\x66\xCF\x11") // ASF / WMV
        || (head.first() == Some(&0x47) && head.get(188) == Some(&0x47)) // MPEG-TS
        || (head.get(4) == Some(&0x47) && head.get(196) == Some(&0x47))
    // M2TS (192-byte packets)
    {
        return Some(Video);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn padded(prefix: &[u8]) -> Vec<u8> {
        let mut v = prefix.to_vec();
        v.resize(256, 0);
        v
    }

    #[test]
    fn signatures() {
        let mut ts = vec![0u8; 400];
        ts[0] = 0x47;
        ts[188] = 0x47;
        let table: Vec<(&str, Vec<u8>, Option<MediaKind>)> = vec![
            ("jpeg", padded(b"\xFF\xD8\xFF\xE1"), Some(MediaKind::Photo)),
            ("png", padded(b"\x89PNG\r\n\x1A\n"), Some(MediaKind::Photo)),
            ("gif", padded(b"GIF89a"), Some(MediaKind::Photo)),
            ("tiff/dng/nef", padded(b"II*\0\x08\0\0\0"), Some(MediaKind::Photo)),
            ("orf", padded(b"IIRO"), Some(MediaKind::Photo)),
            ("raf", padded(b"FUJIFILMCCD-RAW 0201"), Some(MediaKind::Photo)),
            ("webp", padded(b"RIFF\0\0\0\0WEBPVP8 "), Some(MediaKind::Photo)),
            ("heic", padded(b"\0\0\0\x18ftypheic"), Some(MediaKind::Photo)),
            ("cr3", padded(b"\0\0\0\x18ftypcrx "), Some(MediaKind::Photo)),
            ("mp4", padded(b"\0\0\0\x20ftypisom"), Some(MediaKind::Video)),
            ("mov", padded(b"\0\0\0\x14ftypqt  "), Some(MediaKind::Video)),
            ("old mov", padded(b"\0\0\0\x08wide"), Some(MediaKind::Video)),
            ("3gp", padded(b"\0\0\0\x14ftyp3gp5"), Some(MediaKind::Video)),
            ("m4a audio", padded(b"\0\0\0\x20ftypM4A "), None),
            ("mkv", padded(b"\x1A\x45\xDF\xA3"), Some(MediaKind::Video)),
            ("avi", padded(b"RIFF\0\0\0\0AVI LIST"), Some(MediaKind::Video)),
            ("mpeg-ts", ts, Some(MediaKind::Video)),
            ("text", padded(b"not a photo\n"), None),
            ("empty", Vec::new(), None),
            ("truncated ftyp", b"\0\0\0\x18ftyp".to_vec(), None),
        ];
        for (name, head, expected) in table {
            assert_eq!(sniff(&head), expected, "{name}");
        }
    }

    #[test]
    fn extensions_are_case_insensitive() {
        for (ext, expected) in
            [("JPG", true), ("jpeg", true), ("HEIC", true), ("Mov", true), ("txt", false), ("part", false)]
        {
            assert_eq!(is_media_extension(OsStr::new(ext)), expected, "{ext}");
        }
    }
}

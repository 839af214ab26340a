//! Media detection: a file counts as a photo or video when its extension is
//! one we know *and* its first bytes carry a matching container signature.
//! Extensions alone let through text files named `.jpg`; signatures alone
//! would make us open every file in the tree.

use std::ffi::OsStr;

pub use crate::model::MediaKind;

/// Extensions of photos and videos we back up, lowercase.
const EXTENSIONS: &[&str] = &[
    // Photos.
    "jpg", "jpeg", "jpe", "jfif", "heic", "heif", "hif", "avif", "png", "gif", "webp", "tif", "tiff", "jxl",
    "bmp", // Raw formats.
    "dng", "cr2", "cr3", "crw", "nef", "nrw", "arw", "srf", "sr2", "orf", "rw2", "raf", "pef", "srw", "x3f", "rwl",
    "3fr", "erf", "kdc", "dcr", "mrw", "mos", "iiq", "raw",
    // JPEGs by another name: stereo, multi-picture, Insta360 photos.
    "jps", "mpo", "insp", // Videos.
    "mp4", "m4v", "mov", "qt", "3gp", "3g2", "mts", "m2ts", "ts", "avi", "mkv", "webm", "mpg", "mpeg", "wmv", "insv",
    "lrv", "dv",
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
/// video container we know. Each signature is the opening its format's
/// published description gives.
pub fn sniff(head: &[u8]) -> Option<MediaKind> {
    use MediaKind::{Photo, Video};
    let starts = |magic: &[u8]| head.starts_with(magic);
    let at = |offset: usize, magic: &[u8]| head.get(offset..offset + magic.len()) == Some(magic);

    // JPEG (ITU T.81 B.1.1.2: SOI, then a marker), and JPS, MPO, INSP.
    if starts(b"\xFF\xD8\xFF")
        // PNG (ISO/IEC 15948 §5.2) and GIF (GIF89a specification §17).
        || starts(b"\x89PNG\r\n\x1A\n")
        || starts(b"GIF87a")
        || starts(b"GIF89a")
        // TIFF (TIFF 6.0 §2) and BigTIFF: DNG and most raws (NEF, NRW,
        // ARW, SRF, SR2, CR2, PEF, SRW, 3FR, ERF, KDC, DCR, MOS, RWL, IIQ).
        || starts(b"II*\0")
        || starts(b"MM\0*")
        || starts(b"II+\0")
        || starts(b"MM\0+")
        // Olympus ORF: TIFF with its own magic ("IIRO", "IIRS", "MMOR").
        || starts(b"IIRO")
        || starts(b"IIRS")
        || starts(b"MMOR")
        // Panasonic RW2 / RAW: TIFF with 0x55 for 42.
        || starts(b"IIU\0")
        // Fujifilm RAF.
        || starts(b"FUJIFILMCCD-RAW")
        // Canon CRW (CIFF 1.0r4 §2.1: byte order, header length, "HEAPCCDR").
        || (starts(b"II\x1A\0\0\0") && at(6, b"HEAPCCDR"))
        // Sigma/Foveon X3F (X3F format description: "FOVb").
        || starts(b"FOVb")
        // Minolta MRW: the file is one "\0MRM" block (dcraw parse_minolta).
        || starts(b"\0MRM")
        // Kyocera/Contax N Digital RAW: "ARECOYK" at byte 25 (dcraw identify).
        || at(25, b"ARECOYK")
        // Phase One IIQ before TIFF: "IIII" or "MMMM" (dcraw parse_phase_one).
        || ((starts(b"IIII") || starts(b"MMMM")) && head.len() >= 16)
        // JPEG XL (ISO/IEC 18181-1 §9.1 codestream; 18181-2 container box).
        || starts(b"\xFF\x0A")
        || starts(b"\0\0\0\x0CJXL \r\n\x87\n")
        || is_bmp(head)
    {
        return Some(Photo);
    }
    // RIFF (Microsoft RIFF: "RIFF", size, form type): WebP and AVI.
    if starts(b"RIFF") && at(8, b"WEBP") {
        return Some(Photo);
    }
    if starts(b"RIFF") && at(8, b"AVI ") {
        return Some(Video);
    }
    // ISO base media (ISO/IEC 14496-12 §4.3): MP4, MOV, 3GP, HEIF, AVIF, CR3.
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
    // Matroska and WebM (RFC 8794 §8: the EBML element).
    if starts(b"\x1A\x45\xDF\xA3")
        // MPEG program stream pack and MPEG video sequence header (ISO/IEC 13818-1 §2.5.3.3; 13818-2 §6.2.2.1).
        || starts(b"\0\0\x01\xBA")
        || starts(b"\0\0\x01\xB3")
        // ASF: WMV, WMA's video kin (ASF specification §3.1, Header Object GUID).
        || starts(b"\x30\x26\xB2\x75\x8E\x66\xCF\x11\xA6\xD9\x00\xAA\x00\x62\xCE\x6C")
        || is_transport_stream(head, 188, 0)
        || is_transport_stream(head, 192, 4)
        || is_dv(head)
    {
        return Some(Video);
    }
    None
}

/// BMP (Microsoft, BITMAPFILEHEADER): "BM", the file size, two reserved
/// zero words, the pixel offset, then a BITMAPCOREHEADER/BITMAPINFOHEADER
/// (or a later one) whose size says which.
fn is_bmp(head: &[u8]) -> bool {
    const HEADER_SIZES: [u32; 7] = [12, 40, 52, 56, 64, 108, 124];
    let word = |at: usize| head.get(at..at + 4).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes);
    head.starts_with(b"BM") && word(6) == Some(0) && word(14).is_some_and(|size| HEADER_SIZES.contains(&size))
}

/// MPEG transport stream (ISO/IEC 13818-1 §2.4.3.2): `packet`-byte
/// packets, each with the sync byte 0x47 at `offset` (188 and 0; Blu-ray's
/// M2TS: 192 and 4, after a timestamp). The first three packets must have
/// it (two, in a file that short).
fn is_transport_stream(head: &[u8], packet: usize, offset: usize) -> bool {
    let syncs: Vec<u8> = (0..3).filter_map(|i| head.get(offset + i * packet).copied()).collect();
    syncs.len() >= 2 && syncs.iter().all(|&b| b == 0x47)
}

/// DV (IEC 61834-2, SMPTE 314M): a DIF block of section type "header"
/// (0x1F), sequence 0, DIF block 0 (0x07 0x00), and the DSF byte, whose
/// top bit tells 525/625 lines and whose other bits are 0x3F.
fn is_dv(head: &[u8]) -> bool {
    matches!(head, [0x1F, 0x07, 0x00, dsf, ..] if dsf & 0x7F == 0x3F)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn padded(prefix: &[u8]) -> Vec<u8> {
        let mut v = prefix.to_vec();
        v.resize(256, 0);
        v
    }

    /// Packets of `packet` bytes with the sync byte at `offset`, `count` of them.
    fn packets(packet: usize, offset: usize, count: usize) -> Vec<u8> {
        let mut v = vec![0u8; packet * 3];
        for i in 0..count {
            v[offset + i * packet] = 0x47;
        }
        v
    }

    #[test]
    fn signatures() {
        let mut kyocera = vec![0x20u8; 25];
        kyocera.extend(b"ARECOYK");
        let mut kyocera_shifted = vec![0x20u8; 24];
        kyocera_shifted.extend(b"ARECOYK");
        let photo = Some(MediaKind::Photo);
        let video = Some(MediaKind::Video);
        // Each format, then a near miss that must not match.
        let table: Vec<(&str, Vec<u8>, Option<MediaKind>)> = vec![
            ("jpeg", padded(b"\xFF\xD8\xFF\xE1"), photo),
            ("jpeg without a marker", padded(b"\xFF\xD8\x00\xE1"), None),
            ("png", padded(b"\x89PNG\r\n\x1A\n"), photo),
            ("png with a bad line ending", padded(b"\x89PNG\n\n\x1A\n"), None),
            ("gif", padded(b"GIF89a"), photo),
            ("gif of no version", padded(b"GIF8"), None),
            ("tiff/dng/nef", padded(b"II*\0\x08\0\0\0"), photo),
            ("bigtiff", padded(b"MM\0+\0\x08\0\0"), photo),
            ("tiff of another number", padded(b"II*\x01"), None),
            ("orf", padded(b"IIRO"), photo),
            ("orf (S)", padded(b"IIRS"), photo),
            ("orf, big-endian", padded(b"MMOR"), photo),
            ("rw2", padded(b"IIU\0"), photo),
            ("raf", padded(b"FUJIFILMCCD-RAW 0201"), photo),
            ("raf cut short", padded(b"FUJIFILMCCD"), None),
            ("crw", padded(b"II\x1A\0\0\0HEAPCCDR"), photo),
            ("crw of another heap", padded(b"II\x1A\0\0\0HEAPJPGM"), None),
            ("x3f", padded(b"FOVb"), photo),
            ("mrw", padded(b"\0MRM\0\0\x0B\x48\0PRD"), photo),
            ("not mrw", padded(b"\0MRN\0\0\x0B\x48"), None),
            ("kyocera raw", padded(&kyocera), photo),
            ("ARECOYK a byte early", padded(&kyocera_shifted), None),
            ("phase one iiq", padded(b"IIII\x01\0\0\0"), photo),
            ("IIII and nothing after", b"IIII".to_vec(), None),
            ("jxl codestream", padded(b"\xFF\x0A\xFA\x7F"), photo),
            ("jxl container", padded(b"\0\0\0\x0CJXL \r\n\x87\n"), photo),
            ("jxl container, bad box", padded(b"\0\0\0\x0CJXL \r\n\x87\r"), None),
            ("bmp", padded(b"BM\x70\x17\0\0\0\0\0\0\x36\0\0\0\x28\0\0\0"), photo),
            ("BM then text", padded(b"BMW drivers' manual, chapter 1\n"), None),
            ("webp", padded(b"RIFF\0\0\0\0WEBPVP8 "), photo),
            ("riff wave audio", padded(b"RIFF\0\0\0\0WAVEfmt "), None),
            ("heic", padded(b"\0\0\0\x18ftypheic"), photo),
            ("heif", padded(b"\0\0\0\x18ftypmif1"), photo),
            ("heif sequence", padded(b"\0\0\0\x18ftypmsf1"), photo),
            ("avif", padded(b"\0\0\0\x18ftypavif"), photo),
            ("avif sequence", padded(b"\0\0\0\x18ftypavis"), photo),
            ("cr3", padded(b"\0\0\0\x18ftypcrx "), photo),
            ("mp4", padded(b"\0\0\0\x20ftypisom"), video),
            ("mov", padded(b"\0\0\0\x14ftypqt  "), video),
            ("old mov", padded(b"\0\0\0\x08wide"), video),
            ("3gp", padded(b"\0\0\0\x14ftyp3gp5"), video),
            ("m4a audio", padded(b"\0\0\0\x20ftypM4A "), None),
            ("truncated ftyp", b"\0\0\0\x18ftyp".to_vec(), None),
            ("mkv", padded(b"\x1A\x45\xDF\xA3"), video),
            ("almost ebml", padded(b"\x1A\x45\xDF\xA4"), None),
            ("avi", padded(b"RIFF\0\0\0\0AVI LIST"), video),
            ("mpeg-ps", padded(b"\0\0\x01\xBA\x44"), video),
            ("mpeg video", padded(b"\0\0\x01\xB3\x14"), video),
            ("mpeg, another start code", padded(b"\0\0\x01\xB7"), None),
            ("asf/wmv", padded(b"\x30\x26\xB2\x75\x8E\x66\xCF\x11\xA6\xD9\x00\xAA\x00\x62\xCE\x6C"), video),
            (
                "asf guid, last byte off",
                padded(b"\x30\x26\xB2\x75\x8E\x66\xCF\x11\xA6\xD9\x00\xAA\x00\x62\xCE\x6D"),
                None,
            ),
            ("mpeg-ts", packets(188, 0, 3), video),
            ("one sync byte in three packets", packets(188, 0, 1), None),
            ("m2ts", packets(192, 4, 3), video),
            ("m2ts missing its third sync", packets(192, 4, 2), None),
            ("dv 525", padded(b"\x1F\x07\x00\x3F"), video),
            ("dv 625", padded(b"\x1F\x07\x00\xBF"), video),
            ("dv, not a header block", padded(b"\x1F\x07\x01\x3F"), None),
            ("text", padded(b"not a photo\n"), None),
            ("empty", Vec::new(), None),
        ];
        for (name, head, expected) in table {
            assert_eq!(sniff(&head), expected, "{name}");
        }
    }

    #[test]
    fn extensions_are_case_insensitive() {
        for (ext, expected) in [
            ("JPG", true),
            ("jpeg", true),
            ("HEIC", true),
            ("Mov", true),
            ("MRW", true),
            ("mpo", true),
            ("dv", true),
            ("txt", false),
            ("part", false),
        ] {
            assert_eq!(is_media_extension(OsStr::new(ext)), expected, "{ext}");
        }
    }
}

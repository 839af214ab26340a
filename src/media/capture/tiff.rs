//! The few EXIF tags a capture time needs, read from a TIFF structure (the
//! EXIF block of a JPEG, HEIF, PNG or WebP, or a TIFF-based raw file
//! itself): IFD0's `Make` and `Model`, and in the EXIF IFD the original and
//! digitised times with their offsets (EXIF 2.32, CIPA DC-008, §4.6.5).
//! Offsets outside the file, oversized counts and unknown byte orders end
//! the walk quietly.

use super::reader::Reader;

/// `Make` (IFD0).
const MAKE: u16 = 0x010F;
/// `Model` (IFD0).
const MODEL: u16 = 0x0110;
/// Pointer to the EXIF IFD.
const EXIF_IFD: u16 = 0x8769;
/// `DateTimeOriginal`.
const DATE_ORIGINAL: u16 = 0x9003;
/// `DateTimeDigitized` (exiftool's `CreateDate`).
const DATE_DIGITIZED: u16 = 0x9004;
/// `OffsetTimeOriginal`.
const OFFSET_ORIGINAL: u16 = 0x9011;
/// `OffsetTimeDigitized`.
const OFFSET_DIGITIZED: u16 = 0x9012;
/// `OffsetTime` (of `ModifyDate`).
const OFFSET: u16 = 0x9010;
/// `MakerNote` (EXIF IFD): the camera maker's own directory.
const MAKER_NOTE: u16 = 0x927C;
/// In Apple's maker note: the identifier a Live Photo's still shares with
/// its video (exiftool's `MediaGroupUUID`, formerly `ContentIdentifier`).
const APPLE_CONTENT_ID: u16 = 0x0011;
/// How Apple's maker note opens: `Apple iOS\0`, a 2-byte version, then the
/// byte order; its directory follows at offset 14, its offsets counted from
/// the note's start (exiftool's `Image::ExifTool::Apple`).
const APPLE_NOTE: &[u8] = b"Apple iOS\0";

/// TIFF type ASCII.
const ASCII: u16 = 2;

/// Longest text value kept (dates are 20 bytes, makes and models short).
const MAX_TEXT: u32 = 128;

/// Most entries read from one directory.
const MAX_ENTRIES: u16 = 512;

/// What the EXIF of one file holds for us.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Tags {
    pub date_original: Option<String>,
    pub offset_original: Option<String>,
    pub date_digitized: Option<String>,
    pub offset_digitized: Option<String>,
    pub offset: Option<String>,
    pub content_id: Option<String>,
    pub make: Option<String>,
    pub model: Option<String>,
}

impl Tags {
    /// Whether a date was found.
    pub(super) fn has_date(&self) -> bool {
        self.date_original.is_some() || self.date_digitized.is_some()
    }

    /// Fills what `self` lacks from `other`.
    pub(super) fn merge(&mut self, other: Tags) {
        let fill = |mine: &mut Option<String>, theirs: Option<String>| {
            if mine.is_none() {
                *mine = theirs;
            }
        };
        fill(&mut self.date_original, other.date_original);
        fill(&mut self.offset_original, other.offset_original);
        fill(&mut self.date_digitized, other.date_digitized);
        fill(&mut self.offset_digitized, other.offset_digitized);
        fill(&mut self.offset, other.offset);
        fill(&mut self.content_id, other.content_id);
        fill(&mut self.make, other.make);
        fill(&mut self.model, other.model);
    }
}

#[derive(Clone, Copy)]
enum Order {
    Little,
    Big,
}

/// A TIFF structure starting at `base` in the file.
struct Tiff<'r, 'a> {
    reader: &'r Reader<'a>,
    base: u64,
    order: Order,
}

/// Reads the tags of the TIFF structure at `base` (its header: `II*\0`,
/// `MM\0*`, or the `IIRO`/`IIU\0` of Olympus and Panasonic raws).
pub(super) fn read(reader: &Reader<'_>, base: u64) -> Tags {
    let mut tags = Tags::default();
    let Some(header) = reader.bytes(base, 8) else { return tags };
    let order = match &header[..2] {
        b"II" => Order::Little,
        b"MM" => Order::Big,
        _ => return tags,
    };
    let tiff = Tiff { reader, base, order };
    let magic = tiff.u16(&header[2..4]);
    if !matches!(magic, 42 | 0x4F52 | 0x5352 | 0x55) {
        return tags;
    }
    let ifd0 = tiff.u32(&header[4..8]);
    tiff.directory(ifd0, &mut tags, Dir::Ifd0);
    tags
}

/// Which directory is read: what its tags mean, and where it may lead.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Dir {
    /// IFD0: may point at the EXIF IFD.
    Ifd0,
    /// The EXIF IFD: may hold a maker note.
    Exif,
    /// Apple's maker note.
    Apple,
}

impl Tiff<'_, '_> {
    fn u16(&self, b: &[u8]) -> u16 {
        let b = [b[0], b[1]];
        match self.order {
            Order::Little => u16::from_le_bytes(b),
            Order::Big => u16::from_be_bytes(b),
        }
    }

    fn u32(&self, b: &[u8]) -> u32 {
        let b = [b[0], b[1], b[2], b[3]];
        match self.order {
            Order::Little => u32::from_le_bytes(b),
            Order::Big => u32::from_be_bytes(b),
        }
    }

    /// Reads the directory at `offset`; from IFD0 follows the EXIF IFD
    /// pointer, and from there an Apple maker note (each once, and only
    /// downward: no pointer can loop).
    fn directory(&self, offset: u32, tags: &mut Tags, dir: Dir) -> Option<()> {
        let start = self.base + u64::from(offset);
        let count = self.u16(&self.reader.bytes(start, 2)?).min(MAX_ENTRIES);
        let entries = self.reader.bytes(start + 2, usize::from(count) * 12)?;
        let (mut exif_ifd, mut maker_note) = (None, None);
        for entry in entries.chunks_exact(12) {
            self.reader.step()?;
            let tag = self.u16(&entry[..2]);
            if dir == Dir::Apple {
                if tag == APPLE_CONTENT_ID && tags.content_id.is_none() {
                    tags.content_id = self.text(entry);
                }
                continue;
            }
            let slot = match tag {
                MAKE => &mut tags.make,
                MODEL => &mut tags.model,
                DATE_ORIGINAL => &mut tags.date_original,
                DATE_DIGITIZED => &mut tags.date_digitized,
                OFFSET_ORIGINAL => &mut tags.offset_original,
                OFFSET_DIGITIZED => &mut tags.offset_digitized,
                OFFSET => &mut tags.offset,
                EXIF_IFD => {
                    exif_ifd = Some(self.u32(&entry[8..12]));
                    continue;
                }
                MAKER_NOTE => {
                    maker_note = Some(self.u32(&entry[8..12]));
                    continue;
                }
                _ => continue,
            };
            if slot.is_none() {
                *slot = self.text(entry);
            }
        }
        if let Some(note) = maker_note.filter(|_| dir == Dir::Exif) {
            self.apple_note(self.base + u64::from(note), tags);
        }
        match exif_ifd {
            Some(exif) if dir == Dir::Ifd0 && exif != offset => self.directory(exif, tags, Dir::Exif),
            _ => Some(()),
        }
    }

    /// The content identifier in Apple's maker note at `at`, if it is one.
    fn apple_note(&self, at: u64, tags: &mut Tags) -> Option<()> {
        let header = self.reader.bytes(at, APPLE_NOTE.len() + 4)?;
        if !header.starts_with(APPLE_NOTE) {
            return None;
        }
        let order = match &header[APPLE_NOTE.len() + 2..] {
            b"MM" => Order::Big,
            b"II" => Order::Little,
            _ => return None,
        };
        Tiff { reader: self.reader, base: at, order }.directory(14, tags, Dir::Apple)
    }

    /// The ASCII value of a 12-byte entry, trimmed at its NUL and of spaces.
    fn text(&self, entry: &[u8]) -> Option<String> {
        if self.u16(&entry[2..4]) != ASCII {
            return None;
        }
        let count = self.u32(&entry[4..8]);
        if count == 0 || count > MAX_TEXT {
            return None;
        }
        let value = if count <= 4 {
            entry[8..8 + count as usize].to_vec()
        } else {
            let at = self.base + u64::from(self.u32(&entry[8..12]));
            self.reader.bytes(at, count as usize)?.into_owned()
        };
        let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
        let text = String::from_utf8_lossy(&value[..end]).trim().to_owned();
        (!text.is_empty()).then_some(text)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A little-endian TIFF with IFD0 (`Make`, `Model`, the EXIF pointer)
    /// and an EXIF IFD holding `tags` (tag, ASCII value).
    pub(crate) fn tiff(make: &str, model: &str, exif: &[(u16, &str)]) -> Vec<u8> {
        fn ascii(value: &str) -> Vec<u8> {
            let mut v = value.as_bytes().to_vec();
            v.push(0);
            v
        }
        fn directory(out: &mut Vec<u8>, entries: &[(u16, u16, Vec<u8>)]) {
            // Values go after the directory: 2 + 12n + 4 bytes.
            let mut data_at = out.len() + 2 + 12 * entries.len() + 4;
            let mut data = Vec::new();
            out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
            for (tag, kind, value) in entries {
                out.extend_from_slice(&tag.to_le_bytes());
                out.extend_from_slice(&kind.to_le_bytes());
                let count = if *kind == ASCII { value.len() } else { 1 };
                out.extend_from_slice(&(count as u32).to_le_bytes());
                if value.len() <= 4 {
                    let mut inline = value.clone();
                    inline.resize(4, 0);
                    out.extend_from_slice(&inline);
                } else {
                    out.extend_from_slice(&(data_at as u32).to_le_bytes());
                    data.extend_from_slice(value);
                    data_at += value.len();
                }
            }
            out.extend_from_slice(&[0; 4]);
            out.extend_from_slice(&data);
        }
        let mut out = b"II*\0\x08\0\0\0".to_vec();
        let exif_entries: Vec<(u16, u16, Vec<u8>)> = exif.iter().map(|(t, v)| (*t, ASCII, ascii(v))).collect();
        // IFD0 size is known up front: three entries and their two strings.
        let outside = |v: &str| if ascii(v).len() > 4 { ascii(v).len() } else { 0 };
        let ifd0_len = 2 + 12 * 3 + 4 + outside(make) + outside(model);
        let exif_at = (8 + ifd0_len) as u32;
        directory(
            &mut out,
            &[(MAKE, ASCII, ascii(make)), (MODEL, ASCII, ascii(model)), (EXIF_IFD, 4, exif_at.to_le_bytes().to_vec())],
        );
        assert_eq!(out.len() as u32, exif_at);
        directory(&mut out, &exif_entries);
        out
    }

    #[test]
    fn reads_dates_offsets_and_camera() {
        let bytes = tiff(
            "Canon",
            "Canon EOS R5",
            &[
                (DATE_ORIGINAL, "2019:06:15 14:22:33"),
                (OFFSET_ORIGINAL, "+02:00"),
                (DATE_DIGITIZED, "2019:06:15 14:22:34"),
            ],
        );
        let tags = read(&Reader::memory(&bytes), 0);
        assert_eq!(tags.date_original.as_deref(), Some("2019:06:15 14:22:33"));
        assert_eq!(tags.offset_original.as_deref(), Some("+02:00"));
        assert_eq!(tags.date_digitized.as_deref(), Some("2019:06:15 14:22:34"));
        assert_eq!(tags.make.as_deref(), Some("Canon"));
        assert_eq!(tags.model.as_deref(), Some("Canon EOS R5"));
    }

    #[test]
    fn broken_structures_yield_what_was_readable() {
        let whole = tiff("Nikon", "Z 6", &[(DATE_ORIGINAL, "2020:01:02 03:04:05")]);
        // Every truncation parses without panicking.
        for len in 0..whole.len() {
            let _ = read(&Reader::memory(&whole[..len]), 0);
        }
        // An EXIF pointer at itself, and a count far past the file.
        let mut looping = whole.clone();
        let exif_entry = 8 + 2 + 24;
        looping[exif_entry + 8..exif_entry + 12].copy_from_slice(&8u32.to_le_bytes());
        assert_eq!(read(&Reader::memory(&looping), 0).date_original, None);
        let mut huge = whole;
        huge[8..10].copy_from_slice(&0xFFFFu16.to_le_bytes());
        assert_eq!(read(&Reader::memory(&huge), 0), Tags::default());
        assert_eq!(read(&Reader::memory(b"XX*\0\x08\0\0\0"), 0), Tags::default(), "unknown byte order");
    }
}

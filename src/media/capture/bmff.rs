//! ISO base media files (ISO/IEC 14496-12): HEIF/AVIF stills, MP4/MOV
//! videos and Canon CR3 raws. Boxes are walked by their headers, seeking
//! past media data, so a 4 GB video costs a few small reads.
//!
//! - HEIF/AVIF (ISO/IEC 23008-12 §9.1 and Annex A.2.1): the `Exif` item
//!   named in `meta/iinf`, located by `meta/iloc`, whose data starts with
//!   a 4-byte offset to the TIFF header.
//! - `QuickTime` (Apple's `QuickTime` File Format: "Movie header atom",
//!   "Metadata atoms and types"): the `com.apple.quicktime.creationdate` key
//!   of `moov/meta` (or `moov/udta/meta`, where ffmpeg writes it; an ISO
//!   8601 time with its zone), else the movie
//!   header's creation time (seconds since 1904, UTC), and the `make`,
//!   `model` and `content.identifier` keys.
//! - CR3: the TIFF structures `CMT1` (IFD0) and `CMT2` (EXIF) in Canon's
//!   `uuid` box inside `moov`.

use super::reader::{MAX_READ, Reader};
use super::tiff::{self, Tags};

/// Canon's metadata box in a CR3 (`85c0b687-820f-11e0-8111-f4ce462b6a48`).
const CANON_UUID: [u8; 16] =
    [0x85, 0xc0, 0xb6, 0x87, 0x82, 0x0f, 0x11, 0xe0, 0x81, 0x11, 0xf4, 0xce, 0x46, 0x2b, 0x6a, 0x48];

/// One box: its type and where its payload starts and ends.
#[derive(Debug, Clone, Copy)]
struct Bx {
    kind: [u8; 4],
    start: u64,
    end: u64,
}

/// The boxes between `start` and `end`, in order. A box that claims more
/// than its parent holds is cut to the parent (a truncated file still
/// yields what it has); a size smaller than its header ends the walk.
fn boxes<'r>(reader: &'r Reader<'_>, start: u64, end: u64) -> impl Iterator<Item = Bx> + 'r {
    let mut at = start;
    std::iter::from_fn(move || {
        reader.step()?;
        let header = reader.bytes(at, 8.min(end.checked_sub(at)? as usize))?;
        if header.len() < 8 {
            return None;
        }
        let size = u64::from(u32::from_be_bytes([header[0], header[1], header[2], header[3]]));
        let kind = [header[4], header[5], header[6], header[7]];
        let (header_len, size) = match size {
            0 => (8, end - at),
            1 => {
                let large = reader.bytes(at + 8, 8)?;
                (16, u64::from_be_bytes(large[..].try_into().ok()?))
            }
            n => (8, n),
        };
        if size < header_len {
            return None;
        }
        let found = Bx { kind, start: at + header_len, end: at.saturating_add(size).min(end) };
        if found.start > found.end {
            // A header cut by the end of its parent.
            return None;
        }
        at = found.end;
        Some(found)
    })
}

fn child(reader: &Reader<'_>, parent: Bx, kind: [u8; 4]) -> Option<Bx> {
    boxes(reader, parent.start, parent.end).find(|b| b.kind == kind)
}

/// What the metadata of an ISO base media file holds.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Found {
    /// EXIF tags (HEIF, AVIF, CR3).
    pub exif: Tags,
    /// `com.apple.quicktime.creationdate`.
    pub creation_date: Option<String>,
    /// The movie header's creation time, seconds since 1904-01-01 UTC.
    pub movie_created: Option<u64>,
    /// `com.apple.quicktime.make` and `model`.
    pub make: Option<String>,
    pub model: Option<String>,
    /// `com.apple.quicktime.content.identifier`: shared by a Live Photo's
    /// video and its still.
    pub content_id: Option<String>,
}

/// Reads the metadata of an ISO base media file.
pub(super) fn read(reader: &Reader<'_>) -> Found {
    let mut found = Found::default();
    for top in boxes(reader, 0, reader.len()) {
        match &top.kind {
            b"meta" => {
                if let Some(tags) = heif_exif(reader, top) {
                    found.exif.merge(tags);
                }
            }
            b"moov" => movie(reader, top, &mut found),
            _ => {}
        }
    }
    found
}

/// The payload of a `meta` box: a full box in ISO files, a plain one in
/// `QuickTime` files (whose first child, `hdlr`, then starts at once).
fn meta_payload(reader: &Reader<'_>, meta: Bx) -> Bx {
    let plain = reader.bytes(meta.start + 4, 4).is_some_and(|kind| *kind == *b"hdlr");
    if plain { meta } else { Bx { start: meta.start + 4, ..meta } }
}

/// The EXIF tags of a HEIF/AVIF file's `Exif` item.
fn heif_exif(reader: &Reader<'_>, meta: Bx) -> Option<Tags> {
    let meta = meta_payload(reader, meta);
    let item = exif_item_id(reader, child(reader, meta, *b"iinf")?)?;
    let (method, offset) = item_location(reader, child(reader, meta, *b"iloc")?, item)?;
    let data = match method {
        0 => offset,
        1 => child(reader, meta, *b"idat")?.start.checked_add(offset)?,
        _ => return None,
    };
    let tiff_offset = reader.u32_be(data)?;
    Some(tiff::read(reader, data.checked_add(4 + u64::from(tiff_offset))?))
}

/// The id of the item of type `Exif` in `iinf`.
fn exif_item_id(reader: &Reader<'_>, iinf: Bx) -> Option<u32> {
    let version = reader.bytes(iinf.start, 1)?[0];
    let entries = iinf.start + if version == 0 { 6 } else { 8 };
    for infe in boxes(reader, entries, iinf.end).filter(|b| &b.kind == b"infe") {
        let head = reader.up_to(infe.start, 16)?;
        let (id, kind_at) = match head.first()? {
            2 => (u32::from(u16::from_be_bytes([*head.get(4)?, *head.get(5)?])), 8),
            3 => (u32::from_be_bytes(head.get(4..8)?.try_into().ok()?), 10),
            _ => continue,
        };
        if head.get(kind_at..kind_at + 4)? == b"Exif" {
            return Some(id);
        }
    }
    None
}

/// A big-endian cursor over an in-memory box payload.
struct Cursor<'b> {
    bytes: &'b [u8],
    at: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let slice = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(slice)
    }

    /// An unsigned number of `size` bytes (0, 2, 4 or 8; 0 reads as 0).
    fn number(&mut self, size: usize) -> Option<u64> {
        match size {
            0 => Some(0),
            2 => Some(u64::from(u16::from_be_bytes(self.take(2)?.try_into().ok()?))),
            4 => Some(u64::from(u32::from_be_bytes(self.take(4)?.try_into().ok()?))),
            8 => Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?)),
            _ => None,
        }
    }
}

/// Where `iloc` puts `item`: its construction method and the offset of its
/// first extent.
fn item_location(reader: &Reader<'_>, iloc: Bx, item: u32) -> Option<(u8, u64)> {
    let payload = reader.bytes(iloc.start, usize::try_from(iloc.end - iloc.start).ok()?.min(MAX_READ))?;
    let mut c = Cursor { bytes: &payload, at: 0 };
    let version = c.take(4)?[0];
    let sizes = c.take(2)?;
    let (offset_size, length_size) = (usize::from(sizes[0] >> 4), usize::from(sizes[0] & 15));
    let (base_size, index_size) = (usize::from(sizes[1] >> 4), usize::from(sizes[1] & 15));
    let wide = version >= 2;
    let count = c.number(if wide { 4 } else { 2 })?;
    for _ in 0..count {
        reader.step()?;
        let id = c.number(if wide { 4 } else { 2 })?;
        let method = if version >= 1 { (c.number(2)? & 15) as u8 } else { 0 };
        c.take(2)?; // data_reference_index
        let base = c.number(base_size)?;
        let extents = c.number(2)?;
        let mut first = None;
        for _ in 0..extents {
            reader.step()?;
            if version >= 1 {
                c.number(index_size)?;
            }
            let offset = c.number(offset_size)?;
            c.number(length_size)?;
            first.get_or_insert(offset);
        }
        if id == u64::from(item) {
            return Some((method, base.checked_add(first?)?));
        }
    }
    None
}

/// The movie header, the `QuickTime` keys and Canon's EXIF in `moov`.
fn movie(reader: &Reader<'_>, moov: Bx, found: &mut Found) {
    for b in boxes(reader, moov.start, moov.end) {
        match &b.kind {
            b"mvhd" => found.movie_created = movie_created(reader, b),
            b"meta" => {
                keys(reader, meta_payload(reader, b), found);
            }
            // Where ffmpeg writes the keys.
            b"udta" => {
                if let Some(meta) = child(reader, b, *b"meta") {
                    keys(reader, meta_payload(reader, meta), found);
                }
            }
            b"uuid" if reader.bytes(b.start, 16).is_some_and(|id| *id == CANON_UUID) => {
                for cmt in boxes(reader, b.start + 16, b.end) {
                    if matches!(&cmt.kind, b"CMT1" | b"CMT2") {
                        found.exif.merge(tiff::read(reader, cmt.start));
                    }
                }
            }
            _ => {}
        }
    }
}

/// `mvhd`'s creation time: version 0 has 32-bit times, version 1 64-bit.
fn movie_created(reader: &Reader<'_>, mvhd: Bx) -> Option<u64> {
    let head = reader.bytes(mvhd.start, 12)?;
    match head[0] {
        0 => Some(u64::from(u32::from_be_bytes(head[4..8].try_into().ok()?))),
        1 => Some(u64::from_be_bytes(head[4..12].try_into().ok()?)),
        _ => None,
    }
}

/// The values of the keys we want from `meta`'s `keys` and `ilst`.
fn keys(reader: &Reader<'_>, meta: Bx, found: &mut Found) -> Option<()> {
    let keys = child(reader, meta, *b"keys")?;
    let table = reader.bytes(keys.start, usize::try_from(keys.end - keys.start).ok()?.min(MAX_READ))?;
    let mut c = Cursor { bytes: &table, at: 4 };
    let count = c.number(4)?;
    let mut names = Vec::new();
    for _ in 0..count {
        reader.step()?;
        let size = usize::try_from(c.number(4)?).ok()?;
        let entry = c.take(size.checked_sub(4)?)?;
        names.push(entry.get(4..).unwrap_or_default().to_vec());
    }
    let ilst = child(reader, meta, *b"ilst")?;
    for item in boxes(reader, ilst.start, ilst.end) {
        let index = u32::from_be_bytes(item.kind) as usize;
        let Some(name) = index.checked_sub(1).and_then(|i| names.get(i)) else { continue };
        let slot = match name.as_slice() {
            b"com.apple.quicktime.creationdate" => &mut found.creation_date,
            b"com.apple.quicktime.make" => &mut found.make,
            b"com.apple.quicktime.model" => &mut found.model,
            b"com.apple.quicktime.content.identifier" => &mut found.content_id,
            _ => continue,
        };
        // `data`: type indicator 1 is UTF-8; then a locale, then the value.
        let Some(data) = child(reader, item, *b"data") else { continue };
        let Some(value) = reader.bytes(data.start, usize::try_from(data.end - data.start).ok()?.min(256)) else {
            continue;
        };
        if value.len() > 8 && value[..4] == [0, 0, 0, 1] {
            *slot = Some(String::from_utf8_lossy(&value[8..]).trim().to_owned());
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bx(kind: [u8; 4], payload: &[u8]) -> Vec<u8> {
        let mut out = ((8 + payload.len()) as u32).to_be_bytes().to_vec();
        out.extend_from_slice(&kind);
        out.extend_from_slice(payload);
        out
    }

    /// A `QuickTime` movie with an `mvhd` and the Apple creation-date key.
    fn movie_file(created: u32, creationdate: &str) -> Vec<u8> {
        let mut mvhd = vec![0; 4];
        mvhd.extend_from_slice(&created.to_be_bytes());
        mvhd.extend_from_slice(&[0; 92]);
        let name = b"com.apple.quicktime.creationdate";
        let mut key = ((8 + name.len()) as u32).to_be_bytes().to_vec();
        key.extend_from_slice(b"mdta");
        key.extend_from_slice(name);
        let mut keys_payload = vec![0; 4];
        keys_payload.extend_from_slice(&1u32.to_be_bytes());
        keys_payload.extend_from_slice(&key);
        let mut data = vec![0, 0, 0, 1, 0, 0, 0, 0];
        data.extend_from_slice(creationdate.as_bytes());
        let ilst = bx(*b"ilst", &bx(1u32.to_be_bytes(), &bx(*b"data", &data)));
        let meta = [bx(*b"hdlr", &[0; 25]), bx(*b"keys", &keys_payload), ilst].concat();
        let moov = [bx(*b"mvhd", &mvhd), bx(*b"meta", &meta)].concat();
        [bx(*b"ftyp", b"qt  \0\0\0\0"), bx(*b"mdat", &[0; 64]), bx(*b"moov", &moov)].concat()
    }

    #[test]
    fn reads_the_movie_header_and_the_apple_creation_key() {
        let file = movie_file(3_643_371_000, "2019-02-12T15:27:12+0800");
        let found = read(&Reader::memory(&file));
        assert_eq!(found.movie_created, Some(3_643_371_000));
        assert_eq!(found.creation_date.as_deref(), Some("2019-02-12T15:27:12+0800"));
    }

    #[test]
    fn truncated_and_hostile_movies_cost_bounded_work() {
        let file = movie_file(3_643_371_000, "2019-02-12T15:27:12+0800");
        for len in 0..file.len() {
            let _ = read(&Reader::memory(&file[..len]));
        }
        // A 64-bit box size of 10 GB, and a box claiming to hold itself.
        let mut huge = bx(*b"ftyp", b"isom");
        huge.extend_from_slice(&1u32.to_be_bytes());
        huge.extend_from_slice(b"moov");
        huge.extend_from_slice(&(10u64 << 30).to_be_bytes());
        assert_eq!(read(&Reader::memory(&huge)), Found::default());
        let tiny = [0, 0, 0, 4, b'm', b'o', b'o', b'v'];
        assert_eq!(read(&Reader::memory(&tiny)), Found::default());
        // Regression: a 64-bit box header cut by its parent's end made a
        // box that ended before it began, and its length underflowed.
        let meta = bx(*b"meta", &[bx(*b"hdlr", &[]), vec![0, 0, 0, 1], b"keys".to_vec()].concat());
        let mut cut = [bx(*b"ftyp", b"qt  "), bx(*b"moov", &meta)].concat();
        cut.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0x40]);
        assert_eq!(read(&Reader::memory(&cut)), Found::default());
    }

    #[test]
    fn finds_the_exif_item_of_a_heif_file() {
        let exif = tiff::tests::tiff("Apple", "iPhone 15", &[(0x9003, "2024:05:06 07:08:09")]);
        let mut infe = vec![2, 0, 0, 0, 0, 7, 0, 0];
        infe.extend_from_slice(b"Exif");
        let iinf = bx(*b"iinf", &[&[0, 0, 0, 0, 0, 1][..], &bx(*b"infe", &infe)].concat());
        // iloc version 1, 4-byte offsets and lengths; item 7 in idat at 0.
        let mut iloc = vec![1, 0, 0, 0, 0x44, 0x00, 0, 1, 0, 7, 0, 1, 0, 0, 0, 1];
        iloc.extend_from_slice(&0u32.to_be_bytes());
        iloc.extend_from_slice(&((4 + exif.len()) as u32).to_be_bytes());
        let idat = bx(*b"idat", &[&0u32.to_be_bytes()[..], &exif].concat());
        let meta =
            bx(*b"meta", &[&[0, 0, 0, 0][..], &bx(*b"hdlr", &[0; 25]), &iinf, &bx(*b"iloc", &iloc), &idat].concat());
        let file = [bx(*b"ftyp", b"heic\0\0\0\0mif1heic"), meta].concat();
        let found = read(&Reader::memory(&file));
        assert_eq!(found.exif.date_original.as_deref(), Some("2024:05:06 07:08:09"));
        assert_eq!(found.exif.model.as_deref(), Some("iPhone 15"));
    }
}

//! Sidecars: the small text files that travel with a photo — Adobe XMP
//! (`IMG_1.CR2.xmp` or `IMG_1.xmp`: edits, ratings, keywords), Apple's
//! `.AAE` edit lists (`IMG_1234.AAE`, and `IMG_O1234.AAE` for the edited
//! original), and Google Takeout's metadata (`IMG_1.HEIC.json`,
//! `IMG_1.HEIC.supplemental-metadata.json`, the suffix cut short by
//! Takeout's name limit). One is backed up only beside the photo or video it
//! describes, and only if its content is what its name says; a `.json` or
//! `.xmp` on its own is not a photo.
//!
//! (A camera's `.THM` thumbnail is a JPEG: it is backed up as a photo.)

use std::path::{Path, PathBuf};

use super::group::Folders;
use super::is_media_extension;

/// What a sidecar holds, by its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SidecarKind {
    /// XMP (ISO 16684-1), a packet of RDF/XML.
    Xmp,
    /// Apple's adjustment list, a property list.
    Aae,
    /// Google Takeout's metadata, JSON.
    TakeoutJson,
}

/// The kind of sidecar `path` is named as, if any.
pub fn kind_of(path: &Path) -> Option<SidecarKind> {
    let ext = path.extension()?.to_str()?;
    if ext.eq_ignore_ascii_case("xmp") {
        Some(SidecarKind::Xmp)
    } else if ext.eq_ignore_ascii_case("aae") {
        Some(SidecarKind::Aae)
    } else if ext.eq_ignore_ascii_case("json") {
        Some(SidecarKind::TakeoutJson)
    } else {
        None
    }
}

/// Whether the first bytes of a file are what a sidecar of `kind` holds.
pub fn sniff(kind: SidecarKind, head: &[u8]) -> bool {
    let text = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    let first = text.iter().position(|b| !b.is_ascii_whitespace()).map_or(&b""[..], |i| &text[i..]);
    let contains = |needle: &[u8]| text.windows(needle.len()).any(|w| w == needle);
    match kind {
        SidecarKind::Xmp => first.starts_with(b"<") && (contains(b"<x:xmpmeta") || contains(b"<rdf:RDF")),
        SidecarKind::Aae => first.starts_with(b"bplist00") || (first.starts_with(b"<") && contains(b"<plist")),
        SidecarKind::TakeoutJson => first.starts_with(b"{"),
    }
}

/// The photo or video beside `path` that the sidecar describes, found by
/// name: for `NAME.EXT.xmp` and the Takeout names, `NAME.EXT` itself; for
/// `NAME.xmp` and `NAME.AAE`, a photo or video named `NAME.*` in the same
/// folder (the one a group would take as its key: a raw, else a photo,
/// else a video; `IMG_O1234.AAE` also looks for `IMG_1234.*`), from the
/// folder listings `folders` keeps.
pub fn partner(path: &Path, kind: SidecarKind, folders: &mut Folders) -> Option<PathBuf> {
    let dir = path.parent()?;
    let name = path.file_name()?.to_str()?;
    let stem = &name[..name.rfind('.')?];
    let named = |file: &str| {
        let candidate = dir.join(file);
        let ext = Path::new(file).extension()?;
        (is_media_extension(ext) && candidate.is_file()).then_some(candidate)
    };
    match kind {
        SidecarKind::TakeoutJson => named(takeout_media_name(stem)?),
        SidecarKind::Xmp => named(stem).or_else(|| folders.with_stem(dir, &[stem])),
        SidecarKind::Aae => {
            let original = stem.strip_prefix("IMG_O").filter(|rest| rest.starts_with(|c: char| c.is_ascii_digit()));
            let unedited = original.map(|digits| format!("IMG_{digits}"));
            let edited = original.map(|digits| format!("IMG_E{digits}"));
            let stems: Vec<&str> = std::iter::once(stem).chain(unedited.as_deref()).chain(edited.as_deref()).collect();
            folders.with_stem(dir, &stems)
        }
    }
}

/// `IMG_1.HEIC` from the stem of a Takeout sidecar: `IMG_1.HEIC`, or
/// `IMG_1.HEIC.supplemental-metadata`, or that suffix cut short
/// (`IMG_1.HEIC.supplemental-metad`, `IMG_1.HEIC.supp`).
fn takeout_media_name(stem: &str) -> Option<&str> {
    let (before, last) = stem.rsplit_once('.')?;
    if !last.is_empty() && "supplemental-metadata".starts_with(last) && before.contains('.') {
        return Some(before);
    }
    Some(stem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contents_must_match_the_name() {
        let xmp = b"<?xpacket begin='' id='W5M0MpCehiHzreSzNTczkc9d'?>\n<x:xmpmeta xmlns:x='adobe:ns:meta/'>";
        assert!(sniff(SidecarKind::Xmp, xmp));
        assert!(!sniff(SidecarKind::Xmp, b"<html><body>not xmp</body></html>"));
        let aae = b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\">\n<plist version=\"1.0\">";
        assert!(sniff(SidecarKind::Aae, aae));
        assert!(sniff(SidecarKind::Aae, b"bplist00\xd1\x01\x02"));
        assert!(!sniff(SidecarKind::Aae, b"hello"));
        assert!(sniff(SidecarKind::TakeoutJson, b"\xEF\xBB\xBF  {\"title\": \"IMG_1.HEIC\"}"));
        assert!(!sniff(SidecarKind::TakeoutJson, b"[1, 2]"));
    }

    #[test]
    fn partners_are_found_by_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in ["IMG_1.CR2", "IMG_1.JPG", "IMG_2.MOV", "IMG_2.HEIC", "IMG_1234.HEIC", "notes.txt", "DSC_9.jpg"] {
            std::fs::write(dir.path().join(name), b"x").expect("write");
        }
        let mut folders = Folders::default();
        let mut partner_of = |name: &str| {
            let path = dir.path().join(name);
            partner(&path, kind_of(&path).expect("a sidecar name"), &mut folders)
                .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
        };
        assert_eq!(partner_of("IMG_1.CR2.xmp").as_deref(), Some("IMG_1.CR2"));
        assert_eq!(partner_of("IMG_1.xmp").as_deref(), Some("IMG_1.CR2"), "the raw before its JPEG");
        assert_eq!(partner_of("IMG_2.xmp").as_deref(), Some("IMG_2.HEIC"), "the still before the video");
        assert_eq!(partner_of("img_2.aae").as_deref(), Some("IMG_2.HEIC"), "case does not matter");
        assert_eq!(partner_of("IMG_O1234.AAE").as_deref(), Some("IMG_1234.HEIC"));
        assert_eq!(partner_of("IMG_1234.HEIC.json").as_deref(), Some("IMG_1234.HEIC"));
        assert_eq!(partner_of("IMG_1234.HEIC.supplemental-metadata.json").as_deref(), Some("IMG_1234.HEIC"));
        assert_eq!(partner_of("IMG_1234.HEIC.supplemental-me.json").as_deref(), Some("IMG_1234.HEIC"));
        assert_eq!(partner_of("DSC_9.jpg.xmp").as_deref(), Some("DSC_9.jpg"));
        assert_eq!(partner_of("notes.xmp"), None, "a text file is no partner");
        assert_eq!(partner_of("package.json"), None);
        assert_eq!(partner_of("IMG_9.xmp"), None);
    }
}

//! Files that travel together: a Live Photo's still and video
//! (`IMG_0001.HEIC` + `IMG_0001.MOV`, or iCloud's `IMG_0001_HEVC.MOV`), a raw
//! and its JPEG (`DSC_0002.NEF` + `DSC_0002.JPG`), and the sidecars beside
//! a photo ([`super::sidecar`]). A group has a *key* file — a raw before
//! other photos, a photo before a video, then by name — and its other
//! members take the key's capture time, camera and stem, so a date layout
//! puts them in its folder and `{stem}.{ext}` names them alike
//! (`IMG_0001_HEVC.MOV` goes as `IMG_0001.MOV`).
//!
//! Groups are found on disk, in the folder of the file being read, so a
//! member is named right even when it is read before its key.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::{is_media_extension, sidecar};
use crate::model::GroupName;

/// Raw formats: the key of a raw + JPEG pair.
const RAW: &[&str] = &[
    "dng", "cr2", "cr3", "crw", "nef", "nrw", "arw", "srf", "sr2", "orf", "rw2", "raf", "pef", "srw", "x3f", "rwl",
    "3fr", "erf", "kdc", "dcr", "mrw", "mos", "iiq", "raw",
];

/// Videos: members of a Live Photo, never its key while a photo is there.
const VIDEO: &[&str] =
    &["mp4", "m4v", "mov", "qt", "3gp", "3g2", "mts", "m2ts", "ts", "avi", "mkv", "webm", "mpg", "mpeg", "wmv"];

/// How far apart two files' capture times may be and still be one group.
pub const MAX_APART_SECONDS: i64 = 2;

/// Whether `path` is named like a video (a Live Photo's motion part, in a
/// group: members are described as their key, so their kind is the key's).
pub fn is_video(path: &Path) -> bool {
    path.extension().is_some_and(|ext| is_one_of(ext, VIDEO))
}

fn is_one_of(ext: &OsStr, list: &[&str]) -> bool {
    ext.to_str().is_some_and(|e| list.iter().any(|k| k.eq_ignore_ascii_case(e)))
}

/// Which file of a group is its key: lower first.
fn rank(name: &str) -> u8 {
    match Path::new(name).extension() {
        Some(ext) if is_one_of(ext, RAW) => 0,
        Some(ext) if is_one_of(ext, VIDEO) => 2,
        _ => 1,
    }
}

/// The stem files of one group share, lowercase: the name before its
/// extension, without iCloud's `_HEVC` on a Live Photo's video.
fn base_stem(name: &str) -> Option<String> {
    let path = Path::new(name);
    let stem = path.file_stem()?.to_str()?;
    let video = path.extension().is_some_and(|ext| is_one_of(ext, VIDEO));
    let stem = if video { strip_suffix_ignore_case(stem, "_HEVC").unwrap_or(stem) } else { stem };
    Some(stem.to_lowercase())
}

fn strip_suffix_ignore_case<'s>(text: &'s str, suffix: &str) -> Option<&'s str> {
    let split = text.len().checked_sub(suffix.len())?;
    (text.is_char_boundary(split) && text[split..].eq_ignore_ascii_case(suffix)).then(|| &text[..split])
}

/// How many folders' listings are kept: a walk that comes back to a folder
/// after its subfolders finds it still listed.
const KEPT: usize = 8;

/// The photos and videos of the folders last looked at, by base stem: one
/// listing serves every file of a folder, until the folder changes.
#[derive(Debug, Default)]
pub struct Folders {
    /// Most recently used first.
    listings: Vec<Listing>,
}

#[derive(Debug)]
struct Listing {
    dir: PathBuf,
    /// The folder's modification time when listed: a file added or removed
    /// since changes it, and the folder is listed again.
    modified: Option<SystemTime>,
    by_stem: HashMap<String, Vec<String>>,
}

impl Folders {
    /// The key of the group `path` (a photo or video) belongs to by name,
    /// if it is another file: a same-stem photo or video beside it that
    /// ranks before it.
    pub fn key_beside(&mut self, path: &Path) -> Option<PathBuf> {
        let dir = path.parent()?;
        let name = path.file_name()?.to_str()?;
        let stem = base_stem(name)?;
        let names = self.listing(dir).by_stem.get(&stem)?;
        // The file itself competes, listed or not.
        let key = names.iter().map(String::as_str).chain([name]).min_by_key(|n| (rank(n), *n))?;
        (key != name).then(|| dir.join(key))
    }

    /// The photos and videos beside `path` with its stem (itself not
    /// among them), by name.
    pub fn siblings(&mut self, path: &Path) -> Vec<PathBuf> {
        let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(OsStr::to_str)) else {
            return Vec::new();
        };
        let Some(stem) = base_stem(name) else { return Vec::new() };
        let mut names: Vec<&String> =
            self.listing(dir).by_stem.get(&stem).into_iter().flatten().filter(|n| *n != name).collect();
        names.sort();
        names.into_iter().map(|n| dir.join(n)).collect()
    }

    /// The photo or video in `dir` whose stem is one of `stems` (ignoring
    /// case), the group key first: a raw, else a photo, else a video.
    pub fn with_stem(&mut self, dir: &Path, stems: &[&str]) -> Option<PathBuf> {
        let listing = self.listing(dir);
        let names = stems.iter().filter_map(|s| listing.by_stem.get(&s.to_lowercase())).flatten();
        // A video's `_HEVC` name counts only by its own stem.
        let exact = names.filter(|n| {
            Path::new(n.as_str())
                .file_stem()
                .and_then(OsStr::to_str)
                .is_some_and(|s| stems.iter().any(|stem| stem.eq_ignore_ascii_case(s)))
        });
        exact.min_by_key(|n| (rank(n), n.as_str())).map(|n| dir.join(n))
    }

    fn listing(&mut self, dir: &Path) -> &Listing {
        let modified = std::fs::metadata(dir).and_then(|m| m.modified()).ok();
        if let Some(found) = self.listings.iter().position(|l| l.dir == dir && l.modified == modified) {
            let listing = self.listings.remove(found);
            self.listings.insert(0, listing);
        } else {
            self.listings.retain(|l| l.dir != dir);
            self.listings.insert(0, Listing { dir: dir.to_owned(), modified, by_stem: list(dir) });
            self.listings.truncate(KEPT);
        }
        &self.listings[0]
    }
}

/// The photos and videos of `dir` by base stem.
fn list(dir: &Path) -> HashMap<String, Vec<String>> {
    let mut by_stem: HashMap<String, Vec<String>> = HashMap::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(name) = entry.file_name().into_string() else { continue };
        let path = Path::new(&name);
        let media = path.extension().is_some_and(is_media_extension) && sidecar::kind_of(path).is_none();
        if let Some(stem) = base_stem(&name).filter(|_| media && !name.starts_with('.')) {
            by_stem.entry(stem).or_default().push(name);
        }
    }
    by_stem
}

/// What a sidecar's stem holds after its photo's stem: `.CR2` for
/// `IMG_1.CR2.xmp` beside `IMG_1.CR2`, nothing for `IMG_1.xmp`.
pub fn inner_suffix(sidecar: &Path, photo: &Path) -> String {
    let (Some(own), Some(photo)) =
        (sidecar.file_stem().and_then(OsStr::to_str), photo.file_stem().and_then(OsStr::to_str))
    else {
        return String::new();
    };
    match own.get(..photo.len()) {
        Some(head) if head.eq_ignore_ascii_case(photo) => own[photo.len()..].to_owned(),
        _ => String::new(),
    }
}

/// The group `member` joins: `key`'s (its path below the source is
/// `key_rel`), named with the key's stem.
pub fn join(key: &Path, key_rel: Vec<u8>) -> Option<GroupName> {
    Some(GroupName { key: key_rel, stem: key.file_stem()?.to_str()?.to_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_raws_then_photos_then_videos() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in ["IMG_0001.HEIC", "IMG_0001_HEVC.MOV", "DSC_2.NEF", "DSC_2.JPG", "VID_3.MP4", "IMG_4.jpg", "x.xmp"]
        {
            std::fs::write(dir.path().join(name), b"x").expect("write");
        }
        let mut folders = Folders::default();
        let mut key = |name: &str| {
            let found = folders.key_beside(&dir.path().join(name));
            found.map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
        };
        assert_eq!(key("IMG_0001_HEVC.MOV").as_deref(), Some("IMG_0001.HEIC"));
        assert_eq!(key("IMG_0001.HEIC"), None, "the key has none beside it");
        assert_eq!(key("DSC_2.JPG").as_deref(), Some("DSC_2.NEF"));
        assert_eq!(key("DSC_2.NEF"), None);
        assert_eq!(key("VID_3.MP4"), None, "alone");
        assert_eq!(key("IMG_4.jpg"), None);
        assert_eq!(key("DSC_2.jpeg").as_deref(), Some("DSC_2.NEF"), "a file not yet listed is ranked too");
        assert_eq!(key("IMG_0001.DNG"), None, "a raw not yet listed is its own key");
    }

    #[test]
    fn sidecars_keep_what_follows_their_photos_stem() {
        let suffix = |sidecar: &str, photo: &str| inner_suffix(Path::new(sidecar), Path::new(photo));
        assert_eq!(suffix("IMG_1.CR2.xmp", "IMG_1.CR2"), ".CR2");
        assert_eq!(suffix("img_1.xmp", "IMG_1.CR2"), "");
        assert_eq!(suffix("IMG_1.HEIC.supplemental-metad.json", "IMG_1.HEIC"), ".HEIC.supplemental-metad");
        assert_eq!(suffix("IMG_O1234.AAE", "IMG_1234.HEIC"), "");
    }
}

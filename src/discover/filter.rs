//! Names a backup never wants: hidden files, partial downloads and temporary
//! files, and the litter operating systems leave in photo folders.

use std::ffi::OsStr;

use super::SkipReason;

/// Suffixes of files still being written by a browser, sync tool or editor.
const PARTIAL_SUFFIXES: &[&str] = &[".part", ".partial", ".tmp", ".temp", ".crdownload", ".download", ".swp", "~"];

/// System litter that is never a photo.
const LITTER: &[&str] = &["thumbs.db", "desktop.ini", "ehthumbs.db", "icon\r"];

/// Dotfiles and dot-folders (`.DS_Store`, `.thumbnails`, `.Trash-1000`).
pub fn is_hidden(name: &OsStr) -> bool {
    name.as_encoded_bytes().first() == Some(&b'.')
}

/// Why a backup skips a file of this name whatever it contains, if it does.
pub fn junk_reason(name: &OsStr) -> Option<SkipReason> {
    if is_hidden(name) {
        return Some(SkipReason::Hidden);
    }
    let lower = name.to_string_lossy().to_lowercase();
    if LITTER.contains(&lower.as_str()) {
        Some(SkipReason::OsMetadata)
    } else if lower.starts_with("~$") || PARTIAL_SUFFIXES.iter().any(|suffix| lower.ends_with(suffix)) {
        Some(SkipReason::PartialDownload)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn junk_names() {
        let table = [
            ("IMG_0001.JPG", false),
            ("clip.mp4", false),
            (".DS_Store", true),
            (".IMG_9999.JPG.part", true),
            ("IMG_0001.tmp", true),
            ("video.mp4.crdownload", true),
            ("Thumbs.db", true),
            ("photo.jpg~", true),
            ("~$draft.jpg", true),
        ];
        for (name, ignored) in table {
            assert_eq!(junk_reason(OsStr::new(name)).is_some(), ignored, "{name}");
        }
    }
}

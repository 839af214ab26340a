//! Names a backup never wants: hidden files, partial downloads and temporary
//! files, and the litter operating systems leave in photo folders.

use std::ffi::OsStr;

/// Suffixes of files still being written by a browser, sync tool or editor.
const PARTIAL_SUFFIXES: &[&str] = &[".part", ".partial", ".tmp", ".temp", ".crdownload", ".download", ".swp", "~"];

/// System litter that is never a photo.
const LITTER: &[&str] = &["thumbs.db", "desktop.ini", "ehthumbs.db", "icon\r"];

/// Dotfiles and dot-folders (`.DS_Store`, `.thumbnails`, `.Trash-1000`).
pub fn is_hidden(name: &OsStr) -> bool {
    name.as_encoded_bytes().first() == Some(&b'.')
}

/// Whether a file name is one a backup must skip whatever it contains.
pub fn is_ignored_name(name: &OsStr) -> bool {
    if is_hidden(name) {
        return true;
    }
    let lower = name.to_string_lossy().to_lowercase();
    LITTER.contains(&lower.as_str())
        || lower.starts_with("~$")
        || PARTIAL_SUFFIXES.iter().any(|suffix| lower.ends_with(suffix))
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
            assert_eq!(is_ignored_name(OsStr::new(name)), ignored, "{name}");
        }
    }
}

//! Paths the walk builds, taken apart by their bytes. `Path`'s own
//! `strip_prefix`, `parent` and `file_name` parse every component each time:
//! a rescan asked for them several times per file, and that parsing cost as
//! much as the file's stat. The paths here are the walk's own (a root joined
//! with names), so a byte prefix is their relative path; anything else
//! (a `.` or doubled `/` in it) goes through `Path`'s parsing.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;

/// `path` relative to `root`, as `Path::strip_prefix` gives it, or `None`
/// where that fails or gives an empty path (the root itself).
pub fn relative<'p>(root: &Path, path: &'p Path) -> Option<&'p Path> {
    let root_bytes = root.as_os_str().as_bytes();
    let rest = path.as_os_str().as_bytes().strip_prefix(root_bytes).and_then(|rest| {
        // The root ends at a separator: its own trailing `/`, or the next byte.
        if root_bytes.ends_with(b"/") { Some(rest) } else { rest.strip_prefix(b"/") }
    });
    match rest {
        Some(rest) if is_plain(rest) => Some(Path::new(OsStr::from_bytes(rest))),
        _ => path.strip_prefix(root).ok().filter(|relative| !relative.as_os_str().is_empty()),
    }
}

/// Whether one of the folders of `folder` (a plain relative path's folder,
/// as [`split_folder`](crate::model::split_folder) gives it) is hidden: its name starts with a `.`.
pub fn is_hidden_folder(folder: &[u8]) -> bool {
    folder.starts_with(b".") || folder.windows(2).any(|pair| pair == b"/.")
}

/// A non-empty relative path whose bytes are its components joined by
/// single `/`s: nothing that `Path` would read differently (no leading,
/// trailing or doubled `/`, no `.` component).
pub fn is_plain(relative: &[u8]) -> bool {
    !relative.is_empty() && relative.split(|&b| b == b'/').all(|component| !component.is_empty() && component != b".")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::split_folder;

    /// The byte-wise answers are `Path`'s, on plain paths and on the ones
    /// that need its parsing.
    #[test]
    fn relative_paths_are_what_path_gives() {
        let roots = ["/lib", "/lib/", "/l/./ib", "/", "lib", "/lib//x"];
        let paths = [
            "/lib/a.jpg",
            "/lib/2024/07/a.jpg",
            "/lib//a.jpg",
            "/lib/./a.jpg",
            "/lib/a/./b.jpg",
            "/lib/a/",
            "/lib",
            "/lib/",
            "/library/a.jpg",
            "/l/./ib/a.jpg",
            "/l/ib/a.jpg",
            "lib/a.jpg",
            "/lib//x/y.jpg",
            "/lib/x/y.jpg",
            "/lib/.a/b.jpg",
            "/lib/a/../b.jpg",
        ];
        for root in roots {
            for path in paths {
                let expected =
                    Path::new(path).strip_prefix(root).ok().filter(|relative| !relative.as_os_str().is_empty());
                assert_eq!(relative(Path::new(root), Path::new(path)), expected, "{path} under {root}");
            }
        }
    }

    #[test]
    fn a_plain_path_splits_as_path_parses_it() {
        for path in ["a.jpg", "2024/a.jpg", "2024/07/IMG 1.HEIC", ".hidden/a.jpg"] {
            let (folder, name) = split_folder(path.as_bytes());
            let parsed = Path::new(path);
            assert_eq!(OsStr::from_bytes(name), parsed.file_name().expect("name"), "{path}");
            let parent = parsed.parent().expect("parent").as_os_str().as_bytes();
            assert_eq!(folder.strip_suffix(b"/").unwrap_or(folder), parent, "{path}");
        }
        let hidden = ["a.jpg", ".a.jpg", ".x/a.jpg", "x/.y/a.jpg", "x.y/a.jpg", "x/y./a.jpg", "x/y/.z.jpg"];
        for path in hidden {
            let parsed = Path::new(path).parent().is_some_and(|dir| dir.iter().any(|c| c.as_bytes().starts_with(b".")));
            assert_eq!(is_hidden_folder(split_folder(path.as_bytes()).0), parsed, "{path}");
        }
    }
}

//! Whether a source folder is there to be read.
//!
//! A missing photo and an unplugged SD card look alike from inside a
//! folder: both are "no file here". Before anything concludes that files are
//! gone, [`availability`] looks at the source's root: a root that is
//! missing, or an empty folder on another device than before (the mount
//! point of an unmounted disk), or empty where it held photos and its device
//! was never recorded, is *unavailable*. Its jobs wait with that reason and
//! nothing is cancelled or forgotten until it is back. An empty folder on its
//! usual device was emptied (a card wiped after its backup): its files are
//! gone, and should they come back they are uploaded again.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

use crate::catalog::{Catalog, CatalogError};

/// What a look at a source's root found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Availability {
    /// The folder is there; it is on `device`.
    Available {
        /// `st_dev` of the root.
        device: u64,
    },
    /// The folder is not there now, but was (an unmounted disk, a network
    /// share that is down): wait for it, conclude nothing.
    Unavailable(String),
    /// The folder never was there, or is not a folder: a configuration
    /// problem to report.
    Broken(String),
}

/// Looks at the root of the source recorded as `root_text` in the catalog.
pub fn availability(catalog: &Catalog, root: &Path, root_text: &str) -> Result<Availability, CatalogError> {
    let known_device = catalog.source_device(root_text)?;
    let metadata = match fs::metadata(root) {
        Ok(m) => m,
        Err(e) => {
            let seen_before = known_device.is_some() || catalog.has_files(root_text)?;
            let what = if e.kind() == io::ErrorKind::NotFound {
                "is missing".to_owned()
            } else {
                format!("cannot be read ({e})")
            };
            return Ok(if seen_before {
                Availability::Unavailable(format!("source {} {what}; is its disk mounted?", root.display()))
            } else if e.kind() == io::ErrorKind::NotFound {
                Availability::Broken(format!("the source folder {} does not exist", root.display()))
            } else {
                Availability::Broken(format!("cannot read the source folder {}: {e}", root.display()))
            });
        }
    };
    if !metadata.is_dir() {
        return Ok(Availability::Broken(format!("the source {} is not a folder", root.display())));
    }
    let device = metadata.dev();
    if has_visible_entries(root) {
        return Ok(Availability::Available { device });
    }
    // Empty. On the device it was on before, its photos were deleted; on
    // another one, it is the mount point of a disk that is not mounted.
    match known_device {
        Some(known) if known != device => Ok(Availability::Unavailable(format!(
            "source {} is not mounted (an empty folder on another device than before)",
            root.display()
        ))),
        // Never seen with its device (an older catalog): holding is the safe side.
        None if catalog.has_files(root_text)? => Ok(Availability::Unavailable(format!(
            "source {} is empty but held photos before; is its disk mounted?",
            root.display()
        ))),
        _ => Ok(Availability::Available { device }),
    }
}

/// Whether the folder holds anything but hidden entries (an unmounted mount
/// point is empty, or holds at most a `.DS_Store` or `.Trash` folder). An
/// unreadable folder counts as holding something: the walk reports why.
fn has_visible_entries(dir: &Path) -> bool {
    match fs::read_dir(dir) {
        Ok(entries) => entries.flatten().any(|e| !super::filter::is_hidden(&e.file_name())),
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_root_is_unavailable_only_when_it_was_seen_before() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut catalog = Catalog::open(&dir.path().join("c.sqlite")).expect("open");
        let root = dir.path().join("card");
        let text = root.to_str().expect("utf-8");
        assert!(
            matches!(availability(&catalog, &root, text), Ok(Availability::Broken(m)) if m.contains("does not exist"))
        );

        fs::create_dir(&root).expect("mkdir");
        let Ok(Availability::Available { device }) = availability(&catalog, &root, text) else {
            panic!("an empty folder never seen before is available");
        };
        catalog.record_source_device(text, device).expect("record");
        fs::remove_dir(&root).expect("unmount");
        assert!(
            matches!(availability(&catalog, &root, text), Ok(Availability::Unavailable(m)) if m.contains("missing"))
        );

        fs::create_dir(&root).expect("empty mount point");
        catalog.record_source_device(text, device + 1).expect("recorded on another device");
        assert!(
            matches!(availability(&catalog, &root, text), Ok(Availability::Unavailable(m)) if m.contains("not mounted"))
        );
        fs::write(root.join(".DS_Store"), b"x").expect("litter");
        assert!(
            matches!(availability(&catalog, &root, text), Ok(Availability::Unavailable(_))),
            "hidden litter is not content"
        );
        fs::write(root.join("IMG_1.JPG"), b"x").expect("a photo");
        assert!(
            matches!(availability(&catalog, &root, text), Ok(Availability::Available { .. })),
            "moved to another disk"
        );
        fs::remove_file(root.join("IMG_1.JPG")).expect("wiped");
        catalog.record_source_device(text, device).expect("recorded on this device");
        assert!(matches!(availability(&catalog, &root, text), Ok(Availability::Available { .. })), "emptied in place");
    }
}

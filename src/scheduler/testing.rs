//! What the scheduler's tests share: a library recorded as scanned, with
//! its jobs queued, and an observer that counts what it is told.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use super::{Mode, QUEUE_WINDOW, RunObserver, Settings, Target, open_targets};
use crate::catalog::Catalog;
use crate::config::{Config, Order};
use crate::model::{AssetInfo, Capture, CaptureSource, ContentHash, MediaKind, Timestamp};

/// Counts the jobs the observer is told of.
#[derive(Default)]
pub(super) struct Told(pub(super) AtomicU64);
impl RunObserver for Told {
    fn queued(&self, jobs: u64, _bytes: u64) {
        self.0.fetch_add(jobs, Ordering::Relaxed);
    }
}

/// A library of `photos` files, recorded as scanned, with a queued job
/// at each destination (folders; `missing` ones not there).
pub(super) fn library(
    dir: &std::path::Path,
    photos: u8,
    destinations: &[&str],
    missing: &[&str],
) -> (Catalog, Vec<Target>, Settings) {
    let root = dir.display();
    let mut text = format!("state_dir = \"{root}/state\"\n[[source]]\npath = \"{root}/photos\"\n");
    for name in destinations {
        let _ = write!(text, "[[destination]]\nname = \"{name}\"\ntype = \"folder\"\npath = \"{root}/{name}\"\n");
        if !missing.contains(name) {
            std::fs::create_dir(dir.join(name)).expect("destination");
        }
    }
    let config = Config::parse(&text, &dir.join("config.toml")).expect("config");
    let mut catalog = Catalog::open(&dir.join("c.sqlite")).expect("open");
    let targets = open_targets(&mut catalog, &config).expect("targets");
    let photos_dir = dir.join("photos");
    std::fs::create_dir(&photos_dir).expect("photos");
    let mut writer = catalog.scan_writer(&photos_dir.display().to_string());
    for n in 1..=photos {
        let name = format!("{n}.jpg");
        let content = [n; 5];
        std::fs::write(photos_dir.join(&name), content).expect("photo");
        let stat = crate::discover::stat_of(&std::fs::metadata(photos_dir.join(&name)).expect("stat"));
        // Taken a day apart: the queue's order is known.
        let capture = Capture {
            local: jiff::civil::date(2020, 6, 1).at(12, 0, 0, 0) + jiff::Span::new().days(i64::from(n)),
            offset: Some(jiff::tz::Offset::UTC),
            source: CaptureSource::Exif,
        };
        let info = AssetInfo { kind: MediaKind::Photo, capture, camera: None, group: None };
        let hash = ContentHash::from_digest(&Sha256::digest(content));
        writer.record(name.as_bytes(), stat, hash, info, Timestamp(1)).expect("record");
    }
    writer.finish(Timestamp(1)).expect("finish");
    let settings = Settings {
        retry: config.retry,
        max_concurrent: 1,
        mode: Mode::OneShot,
        order: Order::Newest,
        budget: None,
        queue_window: QUEUE_WINDOW,
    };
    (catalog, targets, settings)
}

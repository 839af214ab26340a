//! Files and assets: the stat cache that lets a scan skip unchanged files,
//! and the asset versions it records for changed ones.

use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, params};

use super::folder::Folder;
use super::jobs::{active_destinations, enqueue_asset, revive_asset};
use super::{Catalog, Result};
use crate::model::{AssetId, AssetInfo, ContentHash, Timestamp, split_folder};

/// Most records buffered before they are written.
const BATCH: usize = 256;

/// Longest a record waits in the buffer: short, so uploads can start on
/// freshly found files while the scan goes on.
const BATCH_AGE: Duration = Duration::from_millis(100);

/// What identifies an unchanged file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStat {
    /// Length in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Inode number (a replaced file gets a new one).
    pub inode: u64,
}

/// What a flush wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flushed {
    /// Files recorded (new, changed or merely touched).
    pub records: u64,
    /// Content versions not seen at their path before.
    pub new_versions: u64,
    /// Jobs created for them.
    pub jobs_queued: u64,
}

struct Record {
    rel_path: Vec<u8>,
    stat: FileStat,
    hash: ContentHash,
    info: AssetInfo,
}

/// A file the catalog holds with the stat it has now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unchanged {
    /// Its current version.
    pub asset: AssetId,
    /// Whether that version's kind and capture time are recorded (versions
    /// recorded before they were kept have neither).
    pub described: bool,
}

/// Buffered writer used by one scan of one source. Records are written in
/// short transactions (at most 256 records or 100 ms old), each
/// of which also queues the jobs for what it recorded, so the write lock is
/// never held while files are read. Call [`ScanWriter::finish`] to write the
/// rest; records still buffered when it is dropped are lost (the next scan
/// reads those files again).
pub struct ScanWriter<'c> {
    conn: &'c Connection,
    source: String,
    buffer: Vec<Record>,
    /// Files found not to be media, with their stat.
    not_media: Vec<(Vec<u8>, FileStat)>,
    /// Metadata read for versions recorded without it.
    descriptions: Vec<(AssetId, AssetInfo)>,
    /// SHA-1s of contents read, written with the next records.
    sha1s: Vec<(ContentHash, String)>,
    /// New versions are marked as found live (while the daemon runs).
    live: bool,
    oldest: Option<Instant>,
    /// What is known of files is read a folder at a time (see [`ScanWriter::by_folder`]).
    by_folder: bool,
    folder: Folder,
}

/// Where a file's stat is kept: with its current version, or as not media.
#[derive(Debug, Clone, Copy)]
pub(super) enum Table {
    Files,
    NotMedia,
}

/// The stat recorded for `rel_path` of `source` in `table`.
pub(super) fn recorded_stat(
    conn: &Connection,
    table: Table,
    source: &str,
    rel_path: &[u8],
) -> Result<Option<FileStat>> {
    let sql = match table {
        Table::Files => "SELECT size, mtime_ns, inode FROM files WHERE source = ?1 AND rel_path = ?2",
        Table::NotMedia => "SELECT size, mtime_ns, inode FROM not_media WHERE source = ?1 AND rel_path = ?2",
    };
    Ok(conn
        .prepare_cached(sql)?
        .query_row(params![source, rel_path], |r| {
            Ok(FileStat { size: r.get::<_, i64>(0)? as u64, mtime_ns: r.get(1)?, inode: r.get::<_, i64>(2)? as u64 })
        })
        .optional()?)
}

impl Catalog {
    /// Starts recording a scan of `source`.
    pub fn scan_writer(&mut self, source: &str) -> ScanWriter<'_> {
        ScanWriter {
            conn: &self.conn,
            source: source.to_owned(),
            buffer: Vec::new(),
            not_media: Vec::new(),
            descriptions: Vec::new(),
            sha1s: Vec::new(),
            live: false,
            oldest: None,
            by_folder: false,
            folder: Folder::default(),
        }
    }
}

impl ScanWriter<'_> {
    /// Marks the versions this writer records as found live: they appeared
    /// while the daemon ran, so they go before the backlog.
    #[must_use]
    pub fn live(mut self) -> Self {
        self.live = true;
        self
    }

    /// Reads what the catalog knows of files a folder at a time, for a walk
    /// that comes to the files of each folder together (before its
    /// subfolders): one query per folder instead of two per file.
    #[must_use]
    pub fn by_folder(mut self) -> Self {
        self.by_folder = true;
        self
    }

    /// The folder of `rel_path` as the catalog holds it (read now if the
    /// walk has just come to it), and the file's name in it.
    fn folder_of<'p>(&mut self, rel_path: &'p [u8]) -> Result<(&Folder, &'p [u8])> {
        let (prefix, name) = split_folder(rel_path);
        if self.folder.prefix.as_deref() != Some(prefix) {
            self.folder = Folder::read(self.conn, &self.source, prefix)?;
        }
        Ok((&self.folder, name))
    }

    /// The file at `rel_path` if it is recorded with exactly this stat (so
    /// its content need not be read again).
    pub fn unchanged(&mut self, rel_path: &[u8], stat: FileStat) -> Result<Option<Unchanged>> {
        if self.by_folder {
            let (folder, name) = self.folder_of(rel_path)?;
            return Ok(folder
                .files
                .get(name)
                .filter(|(recorded, _)| *recorded == stat)
                .map(|(_, unchanged)| *unchanged));
        }
        let found = self
            .conn
            .prepare_cached(
                "SELECT f.size, f.mtime_ns, f.inode, f.asset_id, a.capture_source IS NOT NULL
                 FROM files f JOIN assets a ON a.id = f.asset_id WHERE f.source = ?1 AND f.rel_path = ?2",
            )?
            .query_row(params![self.source, rel_path], |r| {
                let recorded = FileStat {
                    size: r.get::<_, i64>(0)? as u64,
                    mtime_ns: r.get(1)?,
                    inode: r.get::<_, i64>(2)? as u64,
                };
                Ok((recorded, Unchanged { asset: AssetId(r.get(3)?), described: r.get(4)? }))
            })
            .optional()?;
        Ok(found.filter(|(recorded, _)| *recorded == stat).map(|(_, unchanged)| unchanged))
    }

    /// Buffers what `asset` (recorded without it) is and when it was taken.
    pub fn describe(&mut self, asset: AssetId, info: AssetInfo, now: Timestamp) -> Result<Flushed> {
        self.descriptions.push((asset, info));
        self.flush_if_due(now)
    }

    /// Whether the file at `rel_path` was read with exactly this stat and
    /// found not to be a photo or video (so it need not be read again).
    pub fn is_known_not_media(&mut self, rel_path: &[u8], stat: FileStat) -> Result<bool> {
        if self.by_folder {
            let (folder, name) = self.folder_of(rel_path)?;
            return Ok(folder.not_media.get(name) == Some(&stat));
        }
        Ok(recorded_stat(self.conn, Table::NotMedia, &self.source, rel_path)? == Some(stat))
    }

    /// Buffers that the file at `rel_path`, with this stat, is not a photo
    /// or video; writes the buffer when it is full or old enough and
    /// returns what that wrote.
    pub fn record_not_media(&mut self, rel_path: &[u8], stat: FileStat, now: Timestamp) -> Result<Flushed> {
        self.not_media.push((rel_path.to_vec(), stat));
        self.flush_if_due(now)
    }

    /// Buffers the SHA-1 of the content whose SHA-256 is `hash`, written
    /// with the next records.
    pub fn record_sha1(&mut self, hash: &ContentHash, sha1: String) {
        self.sha1s.push((hash.clone(), sha1));
    }

    /// Buffers the current content of a file; writes the buffer when it is
    /// full or old enough and returns what that wrote.
    pub fn record(
        &mut self,
        rel_path: &[u8],
        stat: FileStat,
        hash: ContentHash,
        info: AssetInfo,
        now: Timestamp,
    ) -> Result<Flushed> {
        self.buffer.push(Record { rel_path: rel_path.to_vec(), stat, hash, info });
        self.flush_if_due(now)
    }

    fn flush_if_due(&mut self, now: Timestamp) -> Result<Flushed> {
        let oldest = *self.oldest.get_or_insert_with(Instant::now);
        if self.buffer.len() + self.not_media.len() + self.descriptions.len() >= BATCH || oldest.elapsed() >= BATCH_AGE
        {
            self.flush(now)
        } else {
            Ok(Flushed::default())
        }
    }

    /// Writes whatever is buffered.
    pub fn finish(mut self, now: Timestamp) -> Result<Flushed> {
        self.flush(now)
    }

    fn flush(&mut self, now: Timestamp) -> Result<Flushed> {
        self.oldest = None;
        if self.buffer.is_empty() && self.not_media.is_empty() && self.descriptions.is_empty() {
            return Ok(Flushed::default());
        }
        let mut flushed = Flushed::default();
        // A `Transaction` rolls back when dropped, so a failed write or a
        // failed COMMIT (disk full, I/O error) never leaves the write lock held.
        let tx = rusqlite::Transaction::new_unchecked(self.conn, rusqlite::TransactionBehavior::Immediate)?;
        self.write_buffer(now, &mut flushed)?;
        tx.commit()?;
        self.buffer.clear();
        self.not_media.clear();
        self.descriptions.clear();
        self.sha1s.clear();
        Ok(flushed)
    }

    fn write_buffer(&self, now: Timestamp, flushed: &mut Flushed) -> Result<()> {
        let conn = self.conn;
        let source = &self.source;
        for (hash, sha1) in &self.sha1s {
            conn.prepare_cached("INSERT OR IGNORE INTO content_sha1 (sha256, sha1) VALUES (?1, ?2)")?
                .execute(params![hash.as_hex(), sha1])?;
        }
        let destinations = if self.buffer.is_empty() { Vec::new() } else { active_destinations(conn)? };
        // Most files never were anything but media: then nothing to forget.
        let had_not_media: bool = !self.buffer.is_empty()
            && conn
                .prepare_cached("SELECT EXISTS (SELECT 1 FROM not_media WHERE source = ?1)")?
                .query_row(params![source], |r| r.get(0))?;
        let insert = format!(
            "INSERT INTO assets (source, rel_path, size, mtime_ns, inode, sha256, first_seen, live, {})
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)
             ON CONFLICT (source, rel_path, sha256) DO NOTHING",
            super::info::WRITTEN
        );
        for Record { rel_path, stat, hash, info } in &self.buffer {
            let (size, inode) = (stat.size as i64, stat.inode as i64);
            let hex = hash.as_hex();
            // A new version, with what it is, in one statement (the common case).
            let written = super::info::Written::of(info);
            let version: [&dyn rusqlite::ToSql; 8] =
                [source, rel_path, &size, &stat.mtime_ns, &inode, &hex, &now.0, &self.live];
            let inserted = conn
                .prepare_cached(&insert)?
                .execute(rusqlite::params_from_iter(version.into_iter().chain(written.values())))?;
            let asset_id = if inserted == 1 {
                flushed.new_versions += 1;
                conn.last_insert_rowid()
            } else {
                // A version recorded before: this path held this content.
                let id: i64 = conn
                    .prepare_cached("SELECT id FROM assets WHERE source = ?1 AND rel_path = ?2 AND sha256 = ?3")?
                    .query_row(params![source, rel_path, hex], |r| r.get(0))?;
                conn.prepare_cached("UPDATE assets SET size = ?2, mtime_ns = ?3, inode = ?4 WHERE id = ?1")?
                    .execute(params![id, size, stat.mtime_ns, inode])?;
                super::info::record(conn, AssetId(id), info)?;
                // Its cancelled jobs come back: its content is at its path again.
                flushed.jobs_queued += revive_asset(conn, AssetId(id), now)? as u64;
                id
            };
            conn.prepare_cached(
                "INSERT INTO files (source, rel_path, size, mtime_ns, inode, asset_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (source, rel_path) DO UPDATE SET
                   size = excluded.size, mtime_ns = excluded.mtime_ns,
                   inode = excluded.inode, asset_id = excluded.asset_id",
            )?
            .execute(params![source, rel_path, size, stat.mtime_ns, inode, asset_id])?;
            flushed.jobs_queued += enqueue_asset(conn, AssetId(asset_id), &destinations, now)? as u64;
            if had_not_media {
                // It may have been something else before.
                conn.prepare_cached("DELETE FROM not_media WHERE source = ?1 AND rel_path = ?2")?
                    .execute(params![source, rel_path])?;
            }
            flushed.records += 1;
        }
        for (rel_path, stat) in &self.not_media {
            conn.prepare_cached(
                "INSERT INTO not_media (source, rel_path, size, mtime_ns, inode) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (source, rel_path) DO UPDATE SET size = ?3, mtime_ns = ?4, inode = ?5",
            )?
            .execute(params![source, rel_path, stat.size as i64, stat.mtime_ns, stat.inode as i64])?;
        }
        for (asset, info) in &self.descriptions {
            super::info::record(conn, *asset, info)?;
            flushed.records += 1;
        }
        Ok(())
    }
}

impl Catalog {
    /// Makes the stat cache forget what it knows of one file, so the next
    /// scan reads it again (its content changed without its stat changing).
    pub fn forget_stat(&mut self, source: &str, rel_path: &[u8]) -> Result<()> {
        self.conn
            .prepare_cached("UPDATE files SET mtime_ns = -1 WHERE source = ?1 AND rel_path = ?2")?
            .execute(params![source, rel_path])?;
        Ok(())
    }

    /// Whether any file of `source` is recorded.
    pub fn has_files(&self, source: &str) -> Result<bool> {
        Ok(self
            .conn
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM files WHERE source = ?1)")?
            .query_row(params![source], |r| r.get(0))?)
    }

    /// The device the root of `source` was on when it was last scanned.
    pub fn source_device(&self, source: &str) -> Result<Option<u64>> {
        Ok(self
            .conn
            .prepare_cached("SELECT device FROM sources WHERE path = ?1")?
            .query_row(params![source], |r| r.get::<_, i64>(0))
            .optional()?
            .map(|d| d as u64))
    }

    /// Remembers the device the root of `source` is on.
    pub fn record_source_device(&mut self, source: &str, device: u64) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO sources (path, device) VALUES (?1, ?2)
                 ON CONFLICT (path) DO UPDATE SET device = excluded.device",
            )?
            .execute(params![source, device as i64])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(byte: u8) -> ContentHash {
        ContentHash::from_digest(&[byte; 32])
    }

    use super::super::info::example as info;

    /// A version recorded before capture times were kept is described by a
    /// later scan without being recorded again; what a version was first
    /// found to be stays.
    #[test]
    fn versions_recorded_without_metadata_are_described_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut catalog = Catalog::open(&dir.path().join("c.sqlite")).expect("open");
        let stat = FileStat { size: 10, mtime_ns: 5, inode: 9 };
        let mut w = catalog.scan_writer("/src");
        w.record(b"a.jpg", stat, hash(1), info(), Timestamp(1)).expect("record");
        w.finish(Timestamp(1)).expect("finish");
        catalog.conn.execute("UPDATE assets SET capture_source = NULL", []).expect("as an old catalog left it");
        let mut w = catalog.scan_writer("/src");
        let unchanged = w.unchanged(b"a.jpg", stat).expect("query").expect("unchanged");
        assert!(!unchanged.described);
        let mut later = info();
        later.capture.source = crate::model::CaptureSource::Mtime;
        w.describe(unchanged.asset, later.clone(), Timestamp(2)).expect("describe");
        w.finish(Timestamp(2)).expect("finish");
        let mut w = catalog.scan_writer("/src");
        assert!(w.unchanged(b"a.jpg", stat).expect("query").expect("unchanged").described);
        w.describe(unchanged.asset, info(), Timestamp(3)).expect("describe again");
        w.finish(Timestamp(3)).expect("finish");
        let source: String =
            catalog.conn.query_row("SELECT capture_source FROM assets", [], |r| r.get(0)).expect("source");
        assert_eq!(source, "mtime", "the first description stays");
    }

    #[test]
    fn stat_cache_and_versions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut catalog = Catalog::open(&dir.path().join("c.sqlite")).expect("open");
        let stat = FileStat { size: 10, mtime_ns: 5, inode: 9 };
        let mut w = catalog.scan_writer("/src");
        assert!(w.unchanged(b"a.jpg", stat).expect("query").is_none());
        w.record(b"a.jpg", stat, hash(1), info(), Timestamp(1)).expect("record");
        assert_eq!(w.flush(Timestamp(1)).expect("flush").new_versions, 1);
        assert!(w.unchanged(b"a.jpg", stat).expect("query").is_some());

        let touched = FileStat { mtime_ns: 6, ..stat };
        assert!(w.unchanged(b"a.jpg", touched).expect("query").is_none());
        w.record(b"a.jpg", touched, hash(1), info(), Timestamp(2)).expect("record");
        assert_eq!(w.flush(Timestamp(2)).expect("flush").new_versions, 0, "same content is a known version");
        assert!(w.unchanged(b"a.jpg", touched).expect("query").is_some());
        w.record(b"a.jpg", touched, hash(2), info(), Timestamp(3)).expect("record");
        assert_eq!(w.finish(Timestamp(3)).expect("finish").new_versions, 1, "edited content is a new version");
    }

    /// Regression: the scan writer's raw `BEGIN`/`COMMIT` kept the write
    /// lock when `COMMIT` failed (disk full, I/O error), so every later
    /// write by anyone failed with "busy".
    #[test]
    fn a_failed_commit_releases_the_write_lock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut catalog = Catalog::open(&dir.path().join("c.sqlite")).expect("open");
        super::super::tests::fail_commits_after_inserts_into(&catalog.conn, "files");
        let mut w = catalog.scan_writer("/src");
        w.record(b"a.jpg", FileStat { size: 1, mtime_ns: 1, inode: 1 }, hash(1), info(), Timestamp(1))
            .expect("buffered");
        assert!(w.finish(Timestamp(1)).is_err(), "the commit fails");
        assert!(catalog.conn.is_autocommit(), "no transaction (and no write lock) is left open");
        let other = Connection::open(dir.path().join("c.sqlite")).expect("second connection");
        other.execute_batch("BEGIN IMMEDIATE; COMMIT;").expect("another writer gets the lock");
    }

    /// A walk reads the catalog a folder at a time: each file is found in
    /// its own folder only, whatever bytes its name holds (a name sorting
    /// just after the folder's `/`, one that is not UTF-8, a subfolder's).
    #[test]
    fn a_walk_finds_each_file_in_its_own_folder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut catalog = Catalog::open(&dir.path().join("c.sqlite")).expect("open");
        let paths: [&[u8]; 7] =
            [b"a.jpg", b"sub.jpg", b"sub/b.jpg", b"sub/deeper/c.jpg", b"sub0.jpg", b"sub/\xff\xfe.jpg", b"sub/~.jpg"];
        let mut w = catalog.scan_writer("/src");
        for (i, path) in paths.iter().enumerate() {
            let stat = FileStat { size: i as u64, mtime_ns: 1, inode: i as u64 };
            w.record(path, stat, hash(i as u8), info(), Timestamp(1)).expect("record");
        }
        w.record_not_media(b"sub/notes.txt", FileStat { size: 9, mtime_ns: 1, inode: 99 }, Timestamp(1))
            .expect("record");
        w.finish(Timestamp(1)).expect("finish");
        let mut w = catalog.scan_writer("/src").by_folder();
        for (i, path) in paths.iter().enumerate() {
            let stat = FileStat { size: i as u64, mtime_ns: 1, inode: i as u64 };
            assert!(w.unchanged(path, stat).expect("query").is_some(), "{}", String::from_utf8_lossy(path));
            let touched = FileStat { mtime_ns: 2, ..stat };
            assert!(w.unchanged(path, touched).expect("query").is_none(), "{}", String::from_utf8_lossy(path));
        }
        assert!(w.unchanged(b"sub/a.jpg", FileStat { size: 0, mtime_ns: 1, inode: 0 }).expect("query").is_none());
        assert!(w.unchanged(b"deeper/c.jpg", FileStat { size: 3, mtime_ns: 1, inode: 3 }).expect("query").is_none());
        let notes = FileStat { size: 9, mtime_ns: 1, inode: 99 };
        assert!(w.is_known_not_media(b"sub/notes.txt", notes).expect("query"));
        assert!(!w.is_known_not_media(b"notes.txt", notes).expect("query"));
    }

    #[test]
    fn records_are_written_in_batches() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut catalog = Catalog::open(&dir.path().join("c.sqlite")).expect("open");
        let mut w = catalog.scan_writer("/src");
        let mut written = 0;
        for i in 0..BATCH as u64 {
            let stat = FileStat { size: i, mtime_ns: 1, inode: i };
            written += w
                .record(format!("{i}.jpg").as_bytes(), stat, hash(i as u8), info(), Timestamp(1))
                .expect("record")
                .new_versions;
        }
        assert_eq!(written, BATCH as u64, "a full buffer is written at once");
        assert!(w.buffer.is_empty());
    }
}

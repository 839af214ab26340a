//! Files and assets: the stat cache that lets a scan skip unchanged files,
//! and the asset versions it records for changed ones.

use rusqlite::{Connection, OptionalExtension, params};

use super::{Catalog, Result};
use crate::model::{AssetId, ContentHash, Timestamp};

/// Writes per transaction during a scan: enough to amortise commits, few
/// enough that a killed scan loses little work.
const BATCH: usize = 512;

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

/// Whether a recorded file version was new to the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// A content version not seen at this path before.
    NewVersion(AssetId),
    /// Same content as a known version (e.g. touched, or edited back).
    KnownVersion(AssetId),
}

/// Batched writer used by one scan. Call [`ScanWriter::finish`] to commit the
/// last batch; dropping it without finishing rolls that batch back (the next
/// scan redoes it).
pub struct ScanWriter<'c> {
    conn: &'c Connection,
    writes: usize,
    in_transaction: bool,
}

impl Catalog {
    /// Starts recording a scan.
    pub fn scan_writer(&mut self) -> ScanWriter<'_> {
        ScanWriter { conn: &self.conn, writes: 0, in_transaction: false }
    }
}

impl ScanWriter<'_> {
    /// Whether the file at `source`/`rel_path` is recorded with exactly this
    /// stat (so its content need not be read again).
    pub fn is_unchanged(&self, source: &str, rel_path: &[u8], stat: FileStat) -> Result<bool> {
        let known = self
            .conn
            .prepare_cached("SELECT size, mtime_ns, inode FROM files WHERE source = ?1 AND rel_path = ?2")?
            .query_row(params![source, rel_path], |r| {
                Ok(FileStat { size: r.get::<_, i64>(0)? as u64, mtime_ns: r.get(1)?, inode: r.get::<_, i64>(2)? as u64 })
            })
            .optional()?;
        Ok(known == Some(stat))
    }

    /// Records the current content of a file.
    pub fn record(
        &mut self,
        source: &str,
        rel_path: &[u8],
        stat: FileStat,
        hash: &ContentHash,
        now: Timestamp,
    ) -> Result<Recorded> {
        self.begin_if_needed()?;
        let (size, inode) = (stat.size as i64, stat.inode as i64);
        let existing: Option<i64> = self
            .conn
            .prepare_cached("SELECT id FROM assets WHERE source = ?1 AND rel_path = ?2 AND sha256 = ?3")?
            .query_row(params![source, rel_path, hash.as_hex()], |r| r.get(0))
            .optional()?;
        let recorded = if let Some(id) = existing {
            self.conn
                .prepare_cached("UPDATE assets SET size = ?2, mtime_ns = ?3, inode = ?4 WHERE id = ?1")?
                .execute(params![id, size, stat.mtime_ns, inode])?;
            Recorded::KnownVersion(AssetId(id))
        } else {
            self.conn
                .prepare_cached(
                    "INSERT INTO assets (source, rel_path, size, mtime_ns, inode, sha256, first_seen)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?
                .execute(params![source, rel_path, size, stat.mtime_ns, inode, hash.as_hex(), now.0])?;
            Recorded::NewVersion(AssetId(self.conn.last_insert_rowid()))
        };
        let asset_id = match recorded {
            Recorded::NewVersion(id) | Recorded::KnownVersion(id) => id,
        };
        self.conn
            .prepare_cached(
                "INSERT INTO files (source, rel_path, size, mtime_ns, inode, asset_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (source, rel_path) DO UPDATE SET
                   size = excluded.size, mtime_ns = excluded.mtime_ns,
                   inode = excluded.inode, asset_id = excluded.asset_id",
            )?
            .execute(params![source, rel_path, size, stat.mtime_ns, inode, asset_id.0])?;
        self.writes += 1;
        if self.writes >= BATCH {
            self.commit()?;
        }
        Ok(recorded)
    }

    /// Commits the last batch.
    pub fn finish(mut self) -> Result<()> {
        self.commit()
    }

    fn begin_if_needed(&mut self) -> Result<()> {
        if !self.in_transaction {
            self.conn.execute_batch("BEGIN IMMEDIATE")?;
            self.in_transaction = true;
        }
        Ok(())
    }

    fn commit(&mut self) -> Result<()> {
        if self.in_transaction {
            self.conn.execute_batch("COMMIT")?;
            self.in_transaction = false;
            self.writes = 0;
        }
        Ok(())
    }
}

impl Drop for ScanWriter<'_> {
    fn drop(&mut self) {
        if self.in_transaction {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(byte: u8) -> ContentHash {
        ContentHash::from_digest(&[byte; 32])
    }

    #[test]
    fn stat_cache_and_versions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut catalog = Catalog::open(&dir.path().join("c.sqlite")).expect("open");
        let stat = FileStat { size: 10, mtime_ns: 5, inode: 9 };
        let mut w = catalog.scan_writer();
        assert!(!w.is_unchanged("/src", b"a.jpg", stat).expect("query"));
        let first = w.record("/src", b"a.jpg", stat, &hash(1), Timestamp(1)).expect("record");
        assert!(matches!(first, Recorded::NewVersion(_)));
        assert!(w.is_unchanged("/src", b"a.jpg", stat).expect("query"));

        let touched = FileStat { mtime_ns: 6, ..stat };
        assert!(!w.is_unchanged("/src", b"a.jpg", touched).expect("query"));
        let again = w.record("/src", b"a.jpg", touched, &hash(1), Timestamp(2)).expect("record");
        assert_eq!(again, match first {
            Recorded::NewVersion(id) => Recorded::KnownVersion(id),
            Recorded::KnownVersion(_) => unreachable!(),
        });
        let edited = w.record("/src", b"a.jpg", touched, &hash(2), Timestamp(3)).expect("record");
        assert!(matches!(edited, Recorded::NewVersion(id) if Recorded::NewVersion(id) != first));
        w.finish().expect("commit");
    }
}

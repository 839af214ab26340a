//! What each asset is and when it was taken ([`AssetInfo`]), as the
//! `assets` table keeps it: written when a version is recorded, or later
//! for versions recorded before capture times were kept.

use std::os::unix::ffi::OsStrExt as _;

use rusqlite::{Connection, Row, ToSql, params};

use super::{CatalogError, Result};
use crate::model::{AssetId, AssetInfo, Capture, CaptureSource, ContentHash, GroupName, MediaKind};

/// The `assets` columns [`from_row`] decodes, in order.
pub(super) const COLUMNS: &str =
    "a.kind, a.captured, a.capture_offset, a.capture_source, a.camera, a.group_key, a.group_stem";

/// Decodes [`COLUMNS`] starting at `base`: `None` for an asset whose
/// metadata has not been read yet.
pub(super) fn from_row(row: &Row<'_>, base: usize) -> Result<Option<AssetInfo>> {
    let Some(source) = row.get::<_, Option<String>>(base + 3)? else { return Ok(None) };
    let corrupt = |what: &str| CatalogError::Corrupt(format!("asset: bad {what}"));
    let source = CaptureSource::parse(&source).ok_or_else(|| corrupt("capture_source"))?;
    let kind = MediaKind::parse(&row.get::<_, String>(base)?).ok_or_else(|| corrupt("kind"))?;
    let local = row.get::<_, String>(base + 1)?.parse().map_err(|_| corrupt("captured"))?;
    let offset = row
        .get::<_, Option<i32>>(base + 2)?
        .map(|seconds| jiff::tz::Offset::from_seconds(seconds).map_err(|_| corrupt("capture_offset")))
        .transpose()?;
    let group = match (row.get::<_, Option<Vec<u8>>>(base + 5)?, row.get(base + 6)?) {
        (Some(key), Some(stem)) => Some(GroupName { key, stem }),
        _ => None,
    };
    Ok(Some(AssetInfo { kind, capture: Capture { local, offset, source }, camera: row.get(base + 4)?, group }))
}

/// Records `info` for `asset` unless it has some already (what a version
/// was first found to be stays, so a touch never moves it in a layout).
pub(super) fn record(conn: &Connection, asset: AssetId, info: &AssetInfo) -> Result<()> {
    let written = Written::of(info);
    conn.prepare_cached(
        "UPDATE assets SET kind = ?2, captured = ?3, capture_offset = ?4, capture_source = ?5, captured_at = ?6,
           camera = ?7, group_key = ?8, group_stem = ?9
         WHERE id = ?1 AND capture_source IS NULL",
    )?
    .execute(rusqlite::params_from_iter(std::iter::once(&asset.0 as &dyn ToSql).chain(written.values())))?;
    Ok(())
}

/// The `assets` columns [`Written`] fills, in its order (after `id` in
/// [`record`], after the version's own columns in a scan's INSERT).
pub(super) const WRITTEN: &str =
    "kind, captured, capture_offset, capture_source, captured_at, camera, group_key, group_stem";

/// An [`AssetInfo`] as the `assets` columns of [`WRITTEN`] hold it.
pub(super) struct Written<'i> {
    kind: &'static str,
    captured: String,
    offset: Option<i32>,
    source: &'static str,
    at: i64,
    camera: Option<&'i str>,
    group_key: Option<&'i [u8]>,
    group_stem: Option<&'i str>,
}

impl<'i> Written<'i> {
    pub(super) fn of(info: &'i AssetInfo) -> Self {
        let capture = &info.capture;
        Written {
            kind: info.kind.as_str(),
            captured: capture.local.to_string(),
            offset: capture.offset.map(jiff::tz::Offset::seconds),
            source: capture.source.as_str(),
            at: capture.epoch_seconds(&jiff::tz::TimeZone::system()),
            camera: info.camera.as_deref(),
            group_key: info.group.as_ref().map(|g| g.key.as_slice()),
            group_stem: info.group.as_ref().map(|g| g.stem.as_str()),
        }
    }

    /// The values, in [`WRITTEN`]'s order.
    pub(super) fn values(&self) -> [&dyn ToSql; 8] {
        [
            &self.kind,
            &self.captured,
            &self.offset,
            &self.source,
            &self.at,
            &self.camera,
            &self.group_key,
            &self.group_stem,
        ]
    }
}

/// How far the backup has come through the photos' capture times.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Photos and videos not yet at every current destination.
    pub to_go: u64,
    /// When the most recently taken of them was taken (wall clock):
    /// everything taken later is backed up (of the photos whose capture
    /// time has been read; versions from an older catalog not scanned since
    /// count in `to_go` only).
    pub newest: Option<jiff::civil::DateTime>,
    /// When the earliest of them was taken: everything taken before is
    /// backed up (as for `newest`).
    pub oldest: Option<jiff::civil::DateTime>,
}

impl super::Catalog {
    /// What is left to back up, by capture time: versions with a job at a
    /// current destination that is not acknowledged (failed ones count:
    /// they are not backed up).
    pub fn backlog(&self) -> Result<Backlog> {
        const LEFT: &str =
            "FROM jobs j JOIN assets a ON a.id = j.asset_id JOIN destinations d ON d.id = j.destination_id
             WHERE d.active = 1 AND j.state IN ('queued', 'running', 'retry_wait', 'succeeded', 'failed')";
        // With one min() or max() in a query, SQLite takes the bare column
        // from the row that has it: two passes in all.
        let parse = |text: Option<String>| text.and_then(|t| t.parse().ok());
        let (to_go, newest): (i64, Option<String>) = self
            .conn
            .prepare_cached(&format!("SELECT COUNT(DISTINCT a.id), MAX(a.captured_at), a.captured {LEFT}"))?
            .query_row([], |r| Ok((r.get(0)?, r.get::<_, Option<i64>>(1)?.and(r.get(2)?))))?;
        let oldest: Option<String> = self
            .conn
            .prepare_cached(&format!("SELECT MIN(a.captured_at), a.captured {LEFT} AND a.captured_at IS NOT NULL"))?
            .query_row([], |r| Ok(r.get::<_, Option<i64>>(0)?.and(r.get(1)?)))?;
        Ok(Backlog { to_go: to_go as u64, newest: parse(newest), oldest: parse(oldest) })
    }

    /// Records what `asset` is and when it was taken, unless known already.
    pub fn record_info(&mut self, asset: AssetId, info: &AssetInfo) -> Result<()> {
        record(&self.conn, asset, info)
    }

    /// What `asset` is and when it was taken, if that was read.
    pub fn asset_info(&self, asset: AssetId) -> Result<Option<AssetInfo>> {
        let sql = format!("SELECT {COLUMNS} FROM assets a WHERE a.id = ?1");
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let mut rows = stmt.query(params![asset.0])?;
        match rows.next()? {
            Some(row) => from_row(row, 0),
            None => Ok(None),
        }
    }

    /// The files of `source` whose current version is a member of the group
    /// keyed by `key` (a path below the source).
    pub fn group_members(&self, source: &str, key: &[u8]) -> Result<Vec<Vec<u8>>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT f.rel_path FROM assets a JOIN files f ON f.asset_id = a.id
             WHERE a.source = ?1 AND a.group_key = ?2 ORDER BY f.rel_path",
        )?;
        let rows = stmt.query_map(params![source, key], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The Live Photo video of the group keyed by `key` in `source` (a path
    /// below it), as its current version: its path, content hash and size.
    /// (A member is described as its key, kind included: the video is told
    /// by its name.)
    pub fn live_video(&self, source: &str, key: &[u8]) -> Result<Option<(Vec<u8>, ContentHash, u64)>> {
        self.group_member(source, key, crate::media::group::is_video)
    }

    /// The first member (by path) of the group keyed by `key` in `source`
    /// whose path `wanted` picks, as its current version.
    fn group_member(
        &self,
        source: &str,
        key: &[u8],
        wanted: impl Fn(&std::path::Path) -> bool,
    ) -> Result<Option<(Vec<u8>, ContentHash, u64)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT f.rel_path, a.sha256, a.size FROM assets a JOIN files f ON f.asset_id = a.id
             WHERE a.source = ?1 AND a.group_key = ?2 ORDER BY f.rel_path",
        )?;
        let mut rows = stmt.query(params![source, key])?;
        while let Some(row) = rows.next()? {
            let rel: Vec<u8> = row.get(0)?;
            if !wanted(std::path::Path::new(std::ffi::OsStr::from_bytes(&rel))) {
                continue;
            }
            let hash: String = row.get(1)?;
            let hash = ContentHash::from_hex(&hash).ok_or_else(|| CatalogError::Corrupt("asset: bad sha256".into()))?;
            return Ok(Some((rel, hash, u64::try_from(row.get::<_, i64>(2)?).unwrap_or(0))));
        }
        Ok(None)
    }

    /// The SHA-1 (hex) of the content whose SHA-256 is `hash`, if a scan
    /// computed it.
    pub fn sha1_of(&self, hash: &ContentHash) -> Result<Option<String>> {
        let mut stmt = self.conn.prepare_cached("SELECT sha1 FROM content_sha1 WHERE sha256 = ?1")?;
        let mut rows = stmt.query(params![hash.as_hex()])?;
        Ok(rows.next()?.map(|row| row.get(0)).transpose()?)
    }

    /// The current version of the file at `rel_path` in `source`: its
    /// content hash and size.
    pub fn current_version(&self, source: &str, rel_path: &[u8]) -> Result<Option<(ContentHash, u64)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT a.sha256, a.size FROM files f JOIN assets a ON a.id = f.asset_id
             WHERE f.source = ?1 AND f.rel_path = ?2",
        )?;
        let mut rows = stmt.query(params![source, rel_path])?;
        let Some(row) = rows.next()? else { return Ok(None) };
        let hash: String = row.get(0)?;
        let hash = ContentHash::from_hex(&hash).ok_or_else(|| CatalogError::Corrupt("asset: bad sha256".into()))?;
        Ok(Some((hash, u64::try_from(row.get::<_, i64>(1)?).unwrap_or(0))))
    }

    /// What the current version of `rel_path` in `source` is and when it
    /// was taken, if a scan recorded that.
    pub fn current_info(&self, source: &str, rel_path: &[u8]) -> Result<Option<AssetInfo>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM files f JOIN assets a ON a.id = f.asset_id WHERE f.source = ?1 AND f.rel_path = ?2"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let mut rows = stmt.query(params![source, rel_path])?;
        match rows.next()? {
            Some(row) => from_row(row, 0),
            None => Ok(None),
        }
    }
}

/// A photo taken on 2019-06-15 at 14:22:33 with a Canon EOS R5, for tests.
#[cfg(test)]
pub(super) fn example() -> AssetInfo {
    AssetInfo {
        kind: MediaKind::Photo,
        capture: Capture {
            local: jiff::civil::date(2019, 6, 15).at(14, 22, 33, 0),
            offset: None,
            source: CaptureSource::Exif,
        },
        camera: Some("Canon EOS R5".to_owned()),
        group: None,
    }
}

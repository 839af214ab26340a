//! Progress of resumable multipart uploads: the upload id and each finished
//! part, recorded by the uploading task as parts finish, on a connection of
//! its own so uploads never wait for the scheduler loop.

use std::path::Path;
use std::sync::{Mutex, PoisonError};

use rusqlite::{Connection, OptionalExtension, params};

use super::{BUSY_TIMEOUT, Catalog, Result};
use crate::destination::{MultipartProgress, PartRecord, PartStore, StoreError};
use crate::model::{JobId, RemoteKey, Timestamp};

/// The multipart progress log. Implements [`PartStore`] for destinations.
pub struct UploadLog {
    conn: Mutex<Connection>,
}

impl UploadLog {
    /// Opens the log of the catalog at `path` (which must exist and be migrated).
    pub fn open(path: &Path) -> Result<UploadLog> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        Ok(UploadLog { conn: Mutex::new(conn) })
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> std::result::Result<T, StoreError> {
        let conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        f(&conn).map_err(|e| Box::new(e) as StoreError)
    }
}

impl Catalog {
    /// A multipart progress log on this catalog.
    pub fn upload_log(&self) -> Result<UploadLog> {
        UploadLog::open(&self.path)
    }
}

impl PartStore for UploadLog {
    fn load(&self, job: JobId) -> std::result::Result<Option<MultipartProgress>, StoreError> {
        self.with(|conn| {
            let head = conn
                .query_row(
                    "SELECT key, upload_id, part_size FROM multipart_uploads WHERE job_id = ?1",
                    params![job.0],
                    |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?)),
                )
                .optional()?;
            let Some((key, upload_id, part_size)) = head else { return Ok(None) };
            let mut stmt = conn.prepare(
                "SELECT part_number, etag, md5, size FROM multipart_parts WHERE job_id = ?1 ORDER BY part_number",
            )?;
            let parts = stmt
                .query_map(params![job.0], |r| {
                    Ok(PartRecord {
                        number: r.get(0)?,
                        etag: r.get(1)?,
                        md5: r.get(2)?,
                        size: r.get::<_, i64>(3)? as u64,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(Some(MultipartProgress { key: RemoteKey(key), upload_id, part_size: part_size as u64, parts }))
        })
    }

    fn begin(
        &self,
        job: JobId,
        key: &RemoteKey,
        upload_id: &str,
        part_size: u64,
    ) -> std::result::Result<(), StoreError> {
        self.with(|conn| {
            conn.execute("DELETE FROM multipart_uploads WHERE job_id = ?1", params![job.0])?;
            conn.execute(
                "INSERT INTO multipart_uploads (job_id, key, upload_id, part_size, started_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![job.0, key.0, upload_id, part_size as i64, Timestamp::now().0],
            )?;
            Ok(())
        })
    }

    fn record(&self, job: JobId, part: &PartRecord) -> std::result::Result<(), StoreError> {
        self.with(|conn| {
            conn.execute(
                "INSERT OR REPLACE INTO multipart_parts (job_id, part_number, etag, md5, size) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![job.0, part.number, part.etag, part.md5, part.size as i64],
            )?;
            Ok(())
        })
    }

    fn forget(&self, job: JobId) -> std::result::Result<(), StoreError> {
        self.with(|conn| {
            conn.execute("DELETE FROM multipart_uploads WHERE job_id = ?1", params![job.0])?;
            Ok(())
        })
    }
}

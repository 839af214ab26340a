//! Numbered schema migrations. The database's `user_version` is the number of
//! migrations applied; each runs in its own transaction. Never edit a
//! released migration: append a new one.

use rusqlite::Connection;

use super::{CatalogError, Result};

const MIGRATIONS: &[&str] = &[
    // 1: destinations, assets, the stat cache and jobs.
    r"
    CREATE TABLE destinations (
        id        INTEGER PRIMARY KEY,
        name      TEXT NOT NULL,
        kind      TEXT NOT NULL,
        location  TEXT NOT NULL,
        active    INTEGER NOT NULL DEFAULT 1,
        UNIQUE (kind, location)
    );

    -- One version of one media file.
    CREATE TABLE assets (
        id          INTEGER PRIMARY KEY,
        source      TEXT NOT NULL,
        rel_path    BLOB NOT NULL,
        size        INTEGER NOT NULL,
        mtime_ns    INTEGER NOT NULL,
        inode       INTEGER NOT NULL,
        sha256      TEXT NOT NULL,
        first_seen  INTEGER NOT NULL,
        UNIQUE (source, rel_path, sha256)
    );
    CREATE INDEX assets_by_hash ON assets (sha256);

    -- What is at each path now: the stat cache that spares re-reading
    -- unchanged files, pointing at the current version.
    CREATE TABLE files (
        source    TEXT NOT NULL,
        rel_path  BLOB NOT NULL,
        size      INTEGER NOT NULL,
        mtime_ns  INTEGER NOT NULL,
        inode     INTEGER NOT NULL,
        asset_id  INTEGER NOT NULL REFERENCES assets (id),
        PRIMARY KEY (source, rel_path)
    ) WITHOUT ROWID;

    -- The upload of one asset to one destination.
    CREATE TABLE jobs (
        id               INTEGER PRIMARY KEY,
        asset_id         INTEGER NOT NULL REFERENCES assets (id),
        destination_id   INTEGER NOT NULL REFERENCES destinations (id),
        state            TEXT NOT NULL CHECK (state IN
                           ('queued', 'running', 'retry_wait', 'succeeded', 'failed', 'acknowledged', 'cancelled')),
        waiting_on       TEXT,
        attempts         INTEGER NOT NULL DEFAULT 0,
        started_at       INTEGER,
        next_attempt_at  INTEGER,
        error            TEXT,
        last_error       TEXT,
        receipt_key      BLOB,
        receipt_size     INTEGER,
        receipt_sha256   TEXT,
        receipt_version  TEXT,
        created_at       INTEGER NOT NULL,
        updated_at       INTEGER NOT NULL,
        UNIQUE (asset_id, destination_id)
    );
    CREATE INDEX jobs_by_state ON jobs (state, destination_id);
    CREATE INDEX jobs_by_receipt ON jobs (destination_id, receipt_sha256) WHERE receipt_sha256 IS NOT NULL;
    ",
    // 2: resumable multipart uploads: the upload id and every finished part,
    // written as they finish, so an interrupted upload continues where it stopped.
    r"
    CREATE TABLE multipart_uploads (
        job_id      INTEGER PRIMARY KEY REFERENCES jobs (id),
        key         BLOB NOT NULL,
        upload_id   TEXT NOT NULL,
        part_size   INTEGER NOT NULL,
        started_at  INTEGER NOT NULL
    );
    CREATE TABLE multipart_parts (
        job_id       INTEGER NOT NULL REFERENCES multipart_uploads (job_id) ON DELETE CASCADE,
        part_number  INTEGER NOT NULL,
        etag         TEXT NOT NULL,
        md5          TEXT NOT NULL,
        size         INTEGER NOT NULL,
        PRIMARY KEY (job_id, part_number)
    );
    ",
    // 3: `seq` orders jobs by when they were (re)queued by discovery, so the
    // scheduler loads revived jobs as well as new ones; `sources` remembers
    // the device of each source root, so an unmounted disk is told apart
    // from deleted photos. Jobs that older versions cancelled because their
    // file was missing for a moment, and whose file is still recorded at its
    // path, are queued again: what is in the source must reach the destination.
    r"
    ALTER TABLE jobs ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
    UPDATE jobs SET seq = id;
    CREATE INDEX jobs_by_seq ON jobs (seq);
    CREATE INDEX files_by_asset ON files (asset_id);
    CREATE TABLE sources (
        path    TEXT PRIMARY KEY,
        device  INTEGER NOT NULL
    ) WITHOUT ROWID;
    UPDATE jobs SET state = 'queued', waiting_on = 'nothing', last_error = COALESCE(error, last_error), error = NULL
     WHERE state = 'cancelled' AND asset_id IN (SELECT asset_id FROM files);
    ",
];

/// The schema version this build writes.
pub const LATEST: i64 = MIGRATIONS.len() as i64;

/// The version recorded in the database.
pub fn version(conn: &Connection) -> Result<i64> {
    Ok(conn.pragma_query_value(None, "user_version", |r| r.get(0))?)
}

/// Brings the database up to [`LATEST`]. Each step takes the write lock
/// first and re-reads the version, so two processes opening a new catalog at
/// once cannot both apply a migration.
pub fn migrate(conn: &mut Connection) -> Result<()> {
    loop {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let found = version(&tx)?;
        if found > LATEST {
            return Err(CatalogError::TooNew { found, supported: LATEST });
        }
        let Some(sql) = MIGRATIONS.get(usize::try_from(found).unwrap_or(0)) else {
            return Ok(());
        };
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", found + 1)?;
        tx.commit()?;
    }
}

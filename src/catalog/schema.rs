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
    // 4: resumable uploads of any destination: an opaque, versioned session
    // per job and its confirmed pieces, replacing the S3-only multipart
    // tables (open multipart uploads are carried across).
    r"
    CREATE TABLE sessions (
        job_id      INTEGER PRIMARY KEY REFERENCES jobs (id),
        kind        TEXT NOT NULL,
        version     INTEGER NOT NULL,
        state       TEXT NOT NULL,
        created_at  INTEGER NOT NULL
    );
    CREATE TABLE session_pieces (
        job_id  INTEGER NOT NULL REFERENCES sessions (job_id) ON DELETE CASCADE,
        number  INTEGER NOT NULL,
        data    TEXT NOT NULL,
        PRIMARY KEY (job_id, number)
    );
    INSERT INTO sessions (job_id, kind, version, state, created_at)
      SELECT job_id, 's3-multipart', 1,
             json_object('key', CAST(key AS TEXT), 'upload_id', upload_id, 'part_size', part_size), started_at
      FROM multipart_uploads;
    INSERT INTO session_pieces (job_id, number, data)
      SELECT job_id, part_number, json_object('etag', etag, 'md5', md5, 'size', size) FROM multipart_parts;
    DROP TABLE multipart_parts;
    DROP TABLE multipart_uploads;
    ",
    // 5: files read and found not to be photos or videos, with the stat
    // they had then: not read again until that changes.
    r"
    CREATE TABLE not_media (
        source    TEXT NOT NULL,
        rel_path  BLOB NOT NULL,
        size      INTEGER NOT NULL,
        mtime_ns  INTEGER NOT NULL,
        inode     INTEGER NOT NULL,
        PRIMARY KEY (source, rel_path)
    ) WITHOUT ROWID;
    ",
    // 6: what each asset is and when it was taken: `kind` (photo, video),
    // the capture's wall-clock time, its UTC offset when known, where it
    // was read (exif, quicktime, filename, mtime; NULL: not read yet, so
    // the next scan reads the headers of an unchanged file without hashing
    // it again), the instant for ordering, the camera, and for a member of
    // a group (a Live Photo's video, a raw's JPEG, a sidecar) its key file
    // and the key's stem; `live` marks a
    // version the daemon found while it ran (past its first scan): it is
    // uploaded before the backlog. Sidecars (.xmp, .aae, .json) are backed
    // up from now on: the "not media" verdicts kept for them are forgotten,
    // so the next scan reads them.
    r"
    ALTER TABLE assets ADD COLUMN live INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE assets ADD COLUMN kind TEXT;
    ALTER TABLE assets ADD COLUMN captured TEXT;
    ALTER TABLE assets ADD COLUMN capture_offset INTEGER;
    ALTER TABLE assets ADD COLUMN capture_source TEXT;
    ALTER TABLE assets ADD COLUMN captured_at INTEGER;
    ALTER TABLE assets ADD COLUMN camera TEXT;
    ALTER TABLE assets ADD COLUMN group_key BLOB;
    ALTER TABLE assets ADD COLUMN group_stem TEXT;
    CREATE INDEX assets_by_group ON assets (source, group_key) WHERE group_key IS NOT NULL;
    DELETE FROM not_media WHERE lower(CAST(rel_path AS TEXT)) LIKE '%.xmp'
      OR lower(CAST(rel_path AS TEXT)) LIKE '%.aae' OR lower(CAST(rel_path AS TEXT)) LIKE '%.json';
    ",
    // 7: bytes sent over each metered network in each period of its data
    // budget (`cycle`: the period's first day, `YYYY-MM-DD`), kept so that
    // no restart resets a count.
    r"
    CREATE TABLE metered_usage (
        network  TEXT NOT NULL,
        cycle    TEXT NOT NULL,
        name     TEXT NOT NULL,
        bytes    INTEGER NOT NULL,
        PRIMARY KEY (network, cycle)
    ) WITHOUT ROWID;
    ",
    // 8: what a destination keeps about its service beyond one upload (an
    // album's id, the requests sent today), as JSON under the destination's
    // name and a key of its own.
    r"
    CREATE TABLE service_notes (
        scope    TEXT NOT NULL,
        key      TEXT NOT NULL,
        value    TEXT NOT NULL,
        PRIMARY KEY (scope, key)
    ) WITHOUT ROWID;
    ",
    // 9: the SHA-1 of content, by its SHA-256, for destinations that know
    // content by SHA-1 (Immich): computed in the scan's read, so an upload
    // need not read the file again to ask whether the server has it.
    r"
    CREATE TABLE content_sha1 (
        sha256   TEXT PRIMARY KEY,
        sha1     TEXT NOT NULL
    ) WITHOUT ROWID;
    ",
    // 10: the scheduler asks for the jobs queued since its last look
    // (`state = 'queued' AND seq > ?`) after every batch a scan writes; by
    // state alone that read every queued job each time, quadratic in a
    // first scan of a big library.
    r"
    CREATE INDEX jobs_by_state_seq ON jobs (state, seq);
    ",
    // 11: no query looks an asset up by its hash alone, and an index on
    // random 64-character keys cost a first scan of 100,000 photos most of
    // its time: each batch of new versions dirtied pages all over it.
    r"
    DROP INDEX assets_by_hash;
    ",
    // 12: a job's state is checked by equalities: SQLite built a temporary
    // table from the CHECK's IN list for every statement that wrote a job
    // (a first backup of 100,000 photos writes 300,000), half the cost of
    // each. The table is rebuilt with the same columns, rows and indexes
    // (the catalog migrates with foreign keys off, as SQLite's procedure
    // for changing a table's constraints requires).
    r"
    CREATE TABLE jobs_new (
        id               INTEGER PRIMARY KEY,
        asset_id         INTEGER NOT NULL REFERENCES assets (id),
        destination_id   INTEGER NOT NULL REFERENCES destinations (id),
        state            TEXT NOT NULL CHECK (state = 'queued' OR state = 'running' OR state = 'retry_wait'
                           OR state = 'succeeded' OR state = 'failed' OR state = 'acknowledged'
                           OR state = 'cancelled'),
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
        seq              INTEGER NOT NULL DEFAULT 0,
        UNIQUE (asset_id, destination_id)
    );
    INSERT INTO jobs_new (id, asset_id, destination_id, state, waiting_on, attempts, started_at, next_attempt_at,
                          error, last_error, receipt_key, receipt_size, receipt_sha256, receipt_version,
                          created_at, updated_at, seq)
      SELECT id, asset_id, destination_id, state, waiting_on, attempts, started_at, next_attempt_at,
             error, last_error, receipt_key, receipt_size, receipt_sha256, receipt_version,
             created_at, updated_at, seq
      FROM jobs;
    DROP TABLE jobs;
    ALTER TABLE jobs_new RENAME TO jobs;
    CREATE INDEX jobs_by_state ON jobs (state, destination_id);
    CREATE INDEX jobs_by_receipt ON jobs (destination_id, receipt_sha256) WHERE receipt_sha256 IS NOT NULL;
    CREATE INDEX jobs_by_seq ON jobs (seq);
    CREATE INDEX jobs_by_state_seq ON jobs (state, seq);
    ",
    // 13: every file of a source has a job at a destination once a scan
    // has queued them all; the scan after asks again only when the
    // destination has become active since (files recorded while it was
    // not have none). Asking after every scan was a tenth of a rescan.
    r"
    CREATE TABLE queued_everywhere (
        source          TEXT NOT NULL,
        destination_id  INTEGER NOT NULL REFERENCES destinations (id),
        PRIMARY KEY (source, destination_id)
    ) WITHOUT ROWID;
    ",
    // 14: content already stored at a destination is looked up by the first
    // 8 bytes of its SHA-256 (then checked whole): the index of whole
    // 64-character hashes took four times the pages, and a first backup
    // of 100,000 photos, whose receipts land at random places in it, read
    // and wrote most of them again with each batch.
    r"
    DROP INDEX jobs_by_receipt;
    CREATE INDEX jobs_by_receipt ON jobs (destination_id, unhex(substr(receipt_sha256, 1, 16)))
      WHERE receipt_sha256 IS NOT NULL;
    ",
    // 15: one index of jobs by state, then destination, then seq, in place
    // of two (by state and destination; by state and seq): every job
    // changes state twice on its way to a receipt, and each change moved
    // its entry in both. The scheduler's look for jobs queued since its
    // last one names the destinations, so it still reads only those.
    r"
    DROP INDEX jobs_by_state;
    DROP INDEX jobs_by_state_seq;
    CREATE INDEX jobs_by_state ON jobs (state, destination_id, seq);
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
    // A migration that rebuilds a table drops the old one, which the rows
    // of other tables refer to: SQLite's procedure for that runs with
    // foreign keys off (they cannot change inside a transaction).
    let enforced: bool = conn.pragma_query_value(None, "foreign_keys", |r| r.get(0))?;
    conn.pragma_update(None, "foreign_keys", false)?;
    let migrated = migrate_all(conn);
    conn.pragma_update(None, "foreign_keys", enforced)?;
    migrated
}

fn migrate_all(conn: &mut Connection) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: sidecars an older photosync had found "not media" stayed
    /// skipped after the upgrade (the cached verdict was never revisited).
    #[test]
    fn cached_verdicts_on_sidecars_are_forgotten() {
        let mut conn = Connection::open_in_memory().expect("open");
        for sql in &MIGRATIONS[..5] {
            conn.execute_batch(sql).expect("old migration");
        }
        conn.pragma_update(None, "user_version", 5).expect("version 5");
        conn.execute_batch(
            "INSERT INTO not_media VALUES ('/s', CAST('a/IMG_1.XMP' AS BLOB), 1, 1, 1),
               ('/s', CAST('IMG_1.AAE' AS BLOB), 1, 1, 2), ('/s', CAST('x.json' AS BLOB), 1, 1, 3),
               ('/s', CAST('notes.txt' AS BLOB), 1, 1, 4);",
        )
        .expect("verdicts");
        migrate(&mut conn).expect("migrate");
        let left: Vec<String> = conn
            .prepare("SELECT CAST(rel_path AS TEXT) FROM not_media")
            .expect("query")
            .query_map([], |r| r.get(0))
            .expect("rows")
            .map(|r| r.expect("row"))
            .collect();
        assert_eq!(left, ["notes.txt"]);
    }

    /// The jobs table rebuilt for its new CHECK keeps every row, its
    /// indexes and the sessions that refer to its jobs, and still refuses a
    /// state that is none.
    #[test]
    fn jobs_keep_their_rows_and_checks_through_the_rebuild() {
        let mut conn = Connection::open_in_memory().expect("open");
        for sql in &MIGRATIONS[..11] {
            conn.execute_batch(sql).expect("old migration");
        }
        conn.pragma_update(None, "user_version", 11).expect("version 11");
        conn.execute_batch(
            "INSERT INTO destinations (id, name, kind, location) VALUES (1, 'nas', 'folder', '/n');
             INSERT INTO assets (id, source, rel_path, size, mtime_ns, inode, sha256, first_seen)
               VALUES (1, '/s', CAST('a.jpg' AS BLOB), 1, 1, 1, 'aa', 1), (2, '/s', CAST('b.jpg' AS BLOB), 1, 1, 2, 'bb', 1);
             INSERT INTO jobs (id, asset_id, destination_id, state, waiting_on, attempts, created_at, updated_at, seq,
                               receipt_key, receipt_size, receipt_sha256, last_error)
               VALUES (7, 1, 1, 'acknowledged', NULL, 2, 1, 5, 3, CAST('a.jpg' AS BLOB), 1, 'aa', 'timed out'),
                      (9, 2, 1, 'queued', 'nothing', 0, 2, 2, 4, NULL, NULL, NULL, NULL);
             INSERT INTO sessions VALUES (9, 'folder', 1, '{}', 3);",
        )
        .expect("jobs");
        let rows = |conn: &Connection| -> Vec<String> {
            conn.prepare(
                "SELECT json_array(id, asset_id, destination_id, state, waiting_on, attempts, created_at,
                                 updated_at, seq, hex(receipt_key), receipt_size, receipt_sha256, last_error)
                           FROM jobs ORDER BY id",
            )
            .expect("query")
            .query_map([], |r| r.get(0))
            .expect("rows")
            .map(|r| r.expect("row"))
            .collect()
        };
        let before = rows(&conn);
        migrate(&mut conn).expect("migrate");
        assert_eq!(rows(&conn), before);
        let indexes: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'jobs' ORDER BY name")
            .expect("query")
            .query_map([], |r| r.get(0))
            .expect("rows")
            .map(|r| r.expect("row"))
            .collect();
        assert_eq!(indexes, ["jobs_by_receipt", "jobs_by_seq", "jobs_by_state", "sqlite_autoindex_jobs_1"]);
        conn.pragma_update(None, "foreign_keys", "ON").expect("foreign keys");
        let dangling: i64 =
            conn.query_row("SELECT COUNT(*) FROM pragma_foreign_key_check", [], |r| r.get(0)).expect("check");
        assert_eq!(dangling, 0);
        let bogus = conn.execute("UPDATE jobs SET state = 'bogus' WHERE id = 9", []);
        assert!(bogus.is_err(), "a state that is none is refused");
        let orphan = conn.execute(
            "INSERT INTO jobs (asset_id, destination_id, state, created_at, updated_at) VALUES (99, 1, 'queued', 1, 1)",
            [],
        );
        assert!(orphan.is_err(), "a job of no asset is refused");
    }

    /// Regression: the index that finds content already stored keyed each
    /// receipt by its whole 64-character hash, and a first backup of
    /// 100,000 photos rewrote most of its pages with every batch. Keyed by
    /// the first 8 bytes, it takes a third of the pages or fewer.
    #[test]
    fn the_receipt_index_keeps_a_prefix_of_each_hash() {
        let mut conn = Connection::open_in_memory().expect("open");
        migrate(&mut conn).expect("migrate");
        conn.execute_batch(
            "INSERT INTO destinations (id, name, kind, location) VALUES (1, 'nas', 'folder', '/n');
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
             INSERT INTO assets (id, source, rel_path, size, mtime_ns, inode, sha256, first_seen)
               SELECT i, '/s', CAST(i AS BLOB), 1, 1, i, lower(hex(randomblob(32))), 1 FROM n;
             INSERT INTO jobs (asset_id, destination_id, state, created_at, updated_at, receipt_key, receipt_size,
                               receipt_sha256)
               SELECT id, 1, 'succeeded', 1, 1, rel_path, 1, sha256 FROM assets;
             CREATE INDEX whole_hashes ON jobs (destination_id, receipt_sha256) WHERE receipt_sha256 IS NOT NULL;",
        )
        .expect("receipts");
        let pages = |index: &str| -> i64 {
            conn.query_row("SELECT COUNT(*) FROM dbstat WHERE name = ?1", [index], |r| r.get(0)).expect("pages")
        };
        let (prefix, whole) = (pages("jobs_by_receipt"), pages("whole_hashes"));
        assert!(prefix * 3 <= whole, "{prefix} pages against {whole} for whole hashes");
    }

    /// An upload open when a catalog of version 3 is migrated goes on from
    /// the parts it had, now as a session.
    #[test]
    fn open_multipart_uploads_are_carried_into_sessions() {
        let mut conn = Connection::open_in_memory().expect("open");
        for sql in &MIGRATIONS[..3] {
            conn.execute_batch(sql).expect("old migration");
        }
        conn.pragma_update(None, "user_version", 3).expect("version 3");
        conn.execute_batch(
            "INSERT INTO destinations VALUES (1, 'b', 's3', 'x', 1);
             INSERT INTO assets VALUES (1, '/s', X'612E6D7034', 9, 1, 1, 'ab', 1);
             INSERT INTO jobs (id, asset_id, destination_id, state, waiting_on, attempts, created_at, updated_at, seq)
               VALUES (7, 1, 1, 'queued', 'nothing', 0, 1, 1, 1);
             INSERT INTO multipart_uploads VALUES (7, CAST('p/a.mp4' AS BLOB), 'up-1', 5242880, 42);
             INSERT INTO multipart_parts VALUES (7, 1, '\"e1\"', 'aa', 5242880), (7, 2, '\"e2\"', 'bb', 4);",
        )
        .expect("an open upload");
        migrate(&mut conn).expect("migrate");
        let (kind, state, created): (String, String, i64) = conn
            .query_row("SELECT kind, state, created_at FROM sessions WHERE job_id = 7", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .expect("session");
        assert_eq!(kind, "s3-multipart");
        let state: serde_json::Value = serde_json::from_str(&state).expect("json");
        assert_eq!(state, serde_json::json!({"key": "p/a.mp4", "upload_id": "up-1", "part_size": 5_242_880}));
        assert_eq!(created, 42);
        let pieces: Vec<(u32, String)> = conn
            .prepare("SELECT number, data FROM session_pieces WHERE job_id = 7 ORDER BY number")
            .expect("query")
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("rows")
            .map(|r| r.expect("row"))
            .collect();
        assert_eq!(pieces.len(), 2);
        let second: serde_json::Value = serde_json::from_str(&pieces[1].1).expect("json");
        assert_eq!(second, serde_json::json!({"etag": "\"e2\"", "md5": "bb", "size": 4}));
    }
}

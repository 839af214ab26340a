//! The catalog: the `SQLite` database that is photosync's only durable state.
//!
//! It owns rusqlite; no other module writes SQL. [`Catalog::open`] applies
//! the numbered migrations in `schema` and sets WAL mode; [`RunLock`] keeps
//! two writers (two cron runs, or a run and a daemon) off the same catalog.
//! Typed queries live beside the tables they read: `scan` for files and
//! assets, `jobs` for the upload queue, `listing` for what people are shown
//! of it, `sessions` for resumable uploads.
//!
//! Durability: every job transition is one `UPDATE`, committed before the
//! caller acts on it: in a transaction of its own, or in a batch the
//! scheduler opens ([`Catalog::begin_batch`]) to record the transitions of
//! many jobs at once and commits before it starts or settles any of them
//! (a transaction per transition cost more than copying a small photo).
//! `synchronous = NORMAL` in WAL mode
//! survives a process kill (kill -9) without loss; after a power cut the last
//! transitions may roll back, which is safe because every upload is
//! idempotent (a destination that already holds the content answers
//! "already present" instead of storing it twice).

mod folder;
mod info;
mod jobs;
mod listing;
mod pending;
mod scan;
mod schema;
mod seen;
mod sessions;
mod usage;

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags};

use crate::model::{JobId, TransitionError};

pub use info::Backlog;
pub use listing::{JobFilter, JobView, ReceiptRow, StateCounts};
pub use pending::{PendingJob, Queued};
pub use scan::{FileStat, Flushed, ScanWriter, Unchanged};
pub use seen::SeenPaths;
pub use sessions::SessionLog;

/// How long a statement waits for another process's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Sets how `conn` waits for another connection's write lock: in short
/// naps, for up to [`BUSY_TIMEOUT`]. A scan and the scheduler take turns at
/// the lock many times a second, each holding it a few milliseconds;
/// `SQLite`'s own waits (1, 2, 5, 10 … 100 ms) left the waiter asleep long
/// after the lock was free, and a first backup spent most of its time so.
fn wait_when_busy(conn: &mut Connection) -> rusqlite::Result<()> {
    let mut since = std::time::Instant::now();
    conn.busy_handler(Some(move |count: i32| {
        if count == 0 {
            since = std::time::Instant::now();
        }
        let waited = since.elapsed();
        if waited >= BUSY_TIMEOUT {
            return false;
        }
        let nap =
            if waited < Duration::from_millis(50) { Duration::from_micros(100) } else { Duration::from_millis(2) };
        std::thread::sleep(nap);
        true
    }))
}

/// A catalog problem.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The database could not be opened or created.
    #[error("cannot open catalog {path}: {source}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// Why.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Another process held a write lock for longer than the busy timeout.
    #[error("the catalog is busy: another process kept it locked for {} s", BUSY_TIMEOUT.as_secs())]
    Busy,
    /// The catalog was written by an older photosync, which is running.
    #[error(
        "the catalog in {dir} was written by an older photosync, which is running{pid}; \
         ask again once it has finished or been upgraded"
    )]
    Outdated {
        /// The state directory.
        dir: PathBuf,
        /// ` (pid N)` when known.
        pid: String,
    },
    /// Another photosync process is running against this catalog.
    #[error("another photosync process{pid} is using the catalog in {dir}; try again when it has finished")]
    Locked {
        /// The state directory.
        dir: PathBuf,
        /// ` (pid N)` when known.
        pid: String,
    },
    /// The database was written by a newer photosync.
    #[error(
        "the catalog has schema version {found}, newer than this photosync understands ({supported}); upgrade photosync"
    )]
    TooNew {
        /// Version in the file.
        found: i64,
        /// Highest version this build knows.
        supported: i64,
    },
    /// A row violates an invariant (hand-edited or corrupted database).
    #[error("catalog row is inconsistent: {0}")]
    Corrupt(String),
    /// The job changed under us (another writer); the transition was not applied.
    #[error("job {0} changed in the catalog while it was being updated")]
    Stale(JobId),
    /// An illegal lifecycle edge was attempted.
    #[error(transparent)]
    Transition(#[from] TransitionError),
    /// Any other `SQLite` failure.
    #[error("catalog error: {0}")]
    Sqlite(rusqlite::Error),
}

impl From<rusqlite::Error> for CatalogError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => Self::Busy,
            _ => Self::Sqlite(e),
        }
    }
}

/// Result alias for catalog operations.
pub type Result<T, E = CatalogError> = std::result::Result<T, E>;

/// An open catalog.
pub struct Catalog {
    conn: Connection,
    path: PathBuf,
}

/// Takes group and others' access away from the file at `path`.
fn keep_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path)?.permissions().mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o700))?;
    }
    Ok(())
}

impl Catalog {
    /// Opens (creating if needed) the catalog at `path` and migrates it to
    /// the current schema.
    pub fn open(path: &Path) -> Result<Catalog> {
        let open_error =
            |source: Box<dyn std::error::Error + Send + Sync>| CatalogError::Open { path: path.to_owned(), source };
        if let Some(dir) = path.parent() {
            use std::os::unix::fs::DirBuilderExt as _;
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| open_error(Box::new(e)))?;
        }
        let conn = Connection::open(path).map_err(|e| open_error(Box::new(e)))?;
        // Upload sessions in it can be capabilities (OneDrive's upload
        // addresses): readable by the user alone. SQLite gives its journal
        // files the database's permissions.
        keep_private(path).map_err(|e| open_error(Box::new(e)))?;
        Self::configure(conn, path).map_err(|e| match e {
            CatalogError::Sqlite(inner) => open_error(Box::new(inner)),
            other => other,
        })
    }

    /// Opens an existing catalog read-only (for listings while something
    /// else may be writing). `None` when there is no catalog yet. A catalog
    /// an older photosync wrote is brought up to date first, as the queries
    /// need what the migrations add — but only while no other photosync runs
    /// on it (holding its run lock): one that does may be that older
    /// photosync, which must not find its catalog changed under it.
    pub fn open_read_only(path: &Path) -> Result<Option<Catalog>> {
        if !path.exists() {
            return Ok(None);
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(path, flags)
            .map_err(|e| CatalogError::Open { path: path.to_owned(), source: Box::new(e) })?;
        wait_when_busy(&mut conn)?;
        let version = schema::version(&conn)?;
        if version > schema::LATEST {
            return Err(CatalogError::TooNew { found: version, supported: schema::LATEST });
        }
        if version < schema::LATEST {
            drop(conn);
            let dir = path.parent().unwrap_or(Path::new("."));
            let _lock = RunLock::acquire(dir).map_err(|e| match e {
                CatalogError::Locked { dir, pid } => CatalogError::Outdated { dir, pid },
                other => other,
            })?;
            return Catalog::open(path).map(Some);
        }
        Ok(Some(Catalog { conn, path: path.to_owned() }))
    }

    fn configure(mut conn: Connection, path: &Path) -> Result<Catalog> {
        wait_when_busy(&mut conn)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // 8 MiB of pages (the default is 2): a first scan of a big library
        // read the same index pages from the file again and again.
        conn.pragma_update(None, "cache_size", -8192)?;
        // Plans that do not depend on the values bound: otherwise SQLite
        // prepared the scan's query of a folder's files again for every
        // folder (its range bounds are parameters), a tenth of the time a
        // first scan spent in the catalog.
        conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
        schema::migrate(&mut conn)?;
        Ok(Catalog { conn, path: path.to_owned() })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens a write transaction that every write joins until
    /// [`Catalog::commit_batch`]: many transitions committed at once. Nothing
    /// may act on them before the commit.
    pub fn begin_batch(&mut self) -> Result<()> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        Ok(())
    }

    /// Commits the batch [`Catalog::begin_batch`] opened. A COMMIT that
    /// fails (disk full, an I/O error) rolls the batch back, so the write
    /// lock is never kept.
    pub fn commit_batch(&mut self) -> Result<()> {
        if self.conn.is_autocommit() {
            return Ok(());
        }
        self.conn.execute_batch("COMMIT").map_err(|e| {
            self.rollback_batch();
            e.into()
        })
    }

    /// Throws the open batch away (after an error, so that the write lock is
    /// not kept).
    pub fn rollback_batch(&mut self) {
        if !self.conn.is_autocommit()
            && let Err(e) = self.conn.execute_batch("ROLLBACK")
        {
            tracing::warn!("cannot roll back a batch of job transitions: {e}");
        }
    }

    /// Runs `SQLite`'s own consistency check; `Ok(())` when it says "ok".
    pub fn integrity_check(&self) -> Result<()> {
        let verdict: String = self.conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
        if verdict == "ok" { Ok(()) } else { Err(CatalogError::Corrupt(verdict)) }
    }
}

/// An exclusive, advisory lock on a state directory, held for as long as
/// this value lives. Two `photosync backup` runs from overlapping cron jobs
/// cannot both process the queue; the second is told who holds it.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

impl RunLock {
    /// Takes the lock without waiting.
    pub fn acquire(state_dir: &Path) -> Result<RunLock> {
        let io_error = |e: std::io::Error| CatalogError::Open { path: state_dir.to_owned(), source: Box::new(e) };
        std::fs::create_dir_all(state_dir).map_err(io_error)?;
        let path = state_dir.join("photosync.lock");
        let mut file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io_error)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let pid = holder.trim().parse::<u32>().map(|p| format!(" (pid {p})")).unwrap_or_default();
                return Err(CatalogError::Locked { dir: state_dir.to_owned(), pid });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io_error(e)),
        }
        file.set_len(0).map_err(io_error)?;
        file.rewind().map_err(io_error)?;
        writeln!(file, "{}", std::process::id()).map_err(io_error)?;
        Ok(RunLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Makes every transaction that inserts into `table` fail at COMMIT, as
    /// a full disk or an I/O error would: the insert breaks a foreign key
    /// that is checked only then.
    pub(super) fn fail_commits_after_inserts_into(conn: &Connection, table: &str) {
        conn.execute_batch(&format!(
            "CREATE TEMP TABLE parent (id INTEGER PRIMARY KEY);
             CREATE TEMP TABLE child (parent_id INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED);
             CREATE TEMP TRIGGER break_commit AFTER INSERT ON main.{table} BEGIN
               INSERT INTO child VALUES (42);
             END;"
        ))
        .expect("set up a failing commit");
    }

    /// Regression: a batch whose COMMIT failed (disk full, an I/O error)
    /// stayed open, keeping the write lock from every other writer.
    #[test]
    fn a_batch_whose_commit_fails_releases_the_write_lock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut catalog = Catalog::open(&dir.path().join("c.sqlite")).expect("open");
        fail_commits_after_inserts_into(&catalog.conn, "sources");
        catalog.begin_batch().expect("begin");
        catalog.conn.execute("INSERT INTO sources (path, device) VALUES ('/s', 1)", []).expect("a write in the batch");
        assert!(catalog.commit_batch().is_err(), "the commit fails");
        assert!(catalog.conn.is_autocommit(), "no batch (and no write lock) is left open");
        let other = Connection::open(dir.path().join("c.sqlite")).expect("second connection");
        other.execute_batch("BEGIN IMMEDIATE; COMMIT;").expect("another writer gets the lock");
    }

    #[test]
    fn second_lock_on_a_state_dir_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = RunLock::acquire(dir.path()).expect("first lock");
        let err = RunLock::acquire(dir.path()).expect_err("second lock must fail");
        assert!(err.to_string().contains(&format!("pid {}", std::process::id())), "{err}");
        drop(first);
        RunLock::acquire(dir.path()).expect("lock is free again");
    }

    #[test]
    fn reopening_keeps_schema_and_passes_integrity_check() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.sqlite");
        Catalog::open(&path).expect("create");
        let catalog = Catalog::open(&path).expect("reopen");
        catalog.integrity_check().expect("ok");
        assert_eq!(schema::version(&catalog.conn).expect("version"), schema::LATEST);
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.sqlite");
        let catalog = Catalog::open(&path).expect("create");
        catalog.conn.pragma_update(None, "user_version", schema::LATEST + 1).expect("bump");
        drop(catalog);
        assert!(matches!(Catalog::open(&path), Err(CatalogError::TooNew { .. })));
    }
}

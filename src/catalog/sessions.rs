//! Resumable upload sessions ([`crate::destination::Session`]): opaque,
//! versioned records written by the uploading tasks as the server confirms
//! each piece, on a connection of their own so uploads never wait for the
//! scheduler loop.

use std::path::Path;
use std::sync::{Mutex, PoisonError};

use rusqlite::{Connection, OptionalExtension, params};

use super::{Catalog, Result};
use crate::destination::{Session, SessionStore, StoreError};
use crate::model::{JobId, Timestamp};

/// The session log. Implements [`SessionStore`] for destinations.
pub struct SessionLog {
    conn: Mutex<Connection>,
}

impl SessionLog {
    /// Opens the log of the catalog at `path` (which must exist and be migrated).
    pub fn open(path: &Path) -> Result<SessionLog> {
        let mut conn = Connection::open(path)?;
        super::wait_when_busy(&mut conn)?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        Ok(SessionLog { conn: Mutex::new(conn) })
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> std::result::Result<T, StoreError> {
        let conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        f(&conn).map_err(|e| Box::new(e) as StoreError)
    }
}

impl Catalog {
    /// A session log on this catalog.
    pub fn session_log(&self) -> Result<SessionLog> {
        SessionLog::open(&self.path)
    }
}

fn json(text: &str) -> rusqlite::Result<serde_json::Value> {
    serde_json::from_str(text)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e)))
}

impl SessionStore for SessionLog {
    fn load(&self, job: JobId) -> std::result::Result<Option<Session>, StoreError> {
        self.with(|conn| {
            let head = conn
                .query_row(
                    "SELECT kind, version, state, created_at FROM sessions WHERE job_id = ?1",
                    params![job.0],
                    |r| Ok((r.get::<_, String>(0)?, r.get::<_, u32>(1)?, r.get::<_, String>(2)?, r.get::<_, i64>(3)?)),
                )
                .optional()?;
            let Some((kind, version, state, created_at)) = head else { return Ok(None) };
            let mut stmt = conn.prepare("SELECT number, data FROM session_pieces WHERE job_id = ?1 ORDER BY number")?;
            let pieces = stmt
                .query_map(params![job.0], |r| Ok((r.get::<_, u32>(0)?, json(&r.get::<_, String>(1)?)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(Some(Session { kind, version, state: json(&state)?, pieces, created_at: Timestamp(created_at) }))
        })
    }

    fn begin(
        &self,
        job: JobId,
        kind: &str,
        version: u32,
        state: &serde_json::Value,
    ) -> std::result::Result<(), StoreError> {
        self.with(|conn| {
            // One step: a crash between the two leaves the old session, not none.
            let tx = conn.unchecked_transaction()?;
            tx.execute("DELETE FROM sessions WHERE job_id = ?1", params![job.0])?;
            tx.execute(
                "INSERT INTO sessions (job_id, kind, version, state, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![job.0, kind, version, state.to_string(), Timestamp::now().0],
            )?;
            tx.commit()
        })
    }

    fn record(&self, job: JobId, number: u32, piece: &serde_json::Value) -> std::result::Result<(), StoreError> {
        self.with(|conn| {
            conn.execute(
                "INSERT OR REPLACE INTO session_pieces (job_id, number, data) VALUES (?1, ?2, ?3)",
                params![job.0, number, piece.to_string()],
            )?;
            Ok(())
        })
    }

    fn forget(&self, job: JobId) -> std::result::Result<(), StoreError> {
        self.with(|conn| {
            conn.execute("DELETE FROM sessions WHERE job_id = ?1", params![job.0])?;
            Ok(())
        })
    }

    fn note(&self, scope: &str, key: &str) -> std::result::Result<Option<serde_json::Value>, StoreError> {
        self.with(|conn| read_note(conn, scope, key))
    }

    fn update_note(
        &self,
        scope: &str,
        key: &str,
        change: &mut dyn FnMut(Option<serde_json::Value>) -> Option<serde_json::Value>,
    ) -> std::result::Result<Option<serde_json::Value>, StoreError> {
        let mut conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        update_note(&mut conn, scope, key, change).map_err(|e| Box::new(e) as StoreError)
    }
}

fn update_note(
    conn: &mut Connection,
    scope: &str,
    key: &str,
    change: &mut dyn FnMut(Option<serde_json::Value>) -> Option<serde_json::Value>,
) -> rusqlite::Result<Option<serde_json::Value>> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let new = change(read_note(&tx, scope, key)?);
    match &new {
        Some(value) => tx.execute(
            "INSERT OR REPLACE INTO service_notes (scope, key, value) VALUES (?1, ?2, ?3)",
            params![scope, key, value.to_string()],
        )?,
        None => tx.execute("DELETE FROM service_notes WHERE scope = ?1 AND key = ?2", params![scope, key])?,
    };
    tx.commit()?;
    Ok(new)
}

fn read_note(conn: &Connection, scope: &str, key: &str) -> rusqlite::Result<Option<serde_json::Value>> {
    conn.query_row("SELECT value FROM service_notes WHERE scope = ?1 AND key = ?2", params![scope, key], |r| {
        r.get::<_, String>(0)
    })
    .optional()?
    .map(|text| json(&text))
    .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::FileStat;
    use crate::config::{DestinationConfig, DestinationKind};
    use crate::model::ContentHash;

    #[derive(serde::Deserialize)]
    struct State {
        id: String,
    }

    #[derive(serde::Deserialize)]
    struct Piece {
        etag: String,
    }

    #[test]
    fn a_session_and_its_pieces_round_trip_and_are_forgotten_together() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut catalog = Catalog::open(&dir.path().join("c.sqlite")).expect("open");
        let folder = DestinationKind::Folder(crate::destination::folder::FolderConfig { path: "/d".into() });
        catalog
            .sync_destinations(&[DestinationConfig {
                name: "d".into(),
                kind: folder,
                layout: crate::layout::Layout::default(),
            }])
            .expect("sync");
        let mut w = catalog.scan_writer("/s");
        w.record(
            b"a.mp4",
            FileStat { size: 1, mtime_ns: 1, inode: 1 },
            ContentHash::from_digest(&[1; 32]),
            crate::catalog::info::example(),
            Timestamp(1),
        )
        .expect("record");
        w.finish(Timestamp(1)).expect("finish");
        let log = catalog.session_log().expect("log");
        let job = JobId(1);
        assert_eq!(log.load(job).expect("load"), None);
        log.begin(job, "test", 2, &serde_json::json!({"id": "u1"})).expect("begin");
        log.record(job, 2, &serde_json::json!({"etag": "b"})).expect("piece");
        log.record(job, 1, &serde_json::json!({"etag": "a"})).expect("piece");
        let session = log.load(job).expect("load").expect("there");
        assert_eq!((session.kind.as_str(), session.version), ("test", 2));
        assert_eq!(session.pieces.iter().map(|(n, _)| *n).collect::<Vec<_>>(), [1, 2], "in order");
        let (state, pieces): (State, Vec<Piece>) = session.decode("test", 2).expect("decodes");
        assert_eq!(state.id, "u1");
        assert_eq!(pieces.iter().map(|p| p.etag.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert!(session.decode::<State, Piece>("test", 1).is_none(), "another version starts afresh");
        log.begin(job, "test", 2, &serde_json::json!({"id": "u2"})).expect("begin again");
        assert!(log.load(job).expect("load").expect("there").pieces.is_empty(), "a new session drops old pieces");
        log.forget(job).expect("forget");
        assert_eq!(log.load(job).expect("load"), None);
    }

    #[test]
    fn notes_are_kept_per_destination_and_changed_atomically() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.sqlite");
        let log = Catalog::open(&path).expect("open").session_log().expect("log");
        assert_eq!(log.note("g", "albums").expect("read"), None);
        let add = |n: u64| {
            move |old: Option<serde_json::Value>| Some(serde_json::json!(old.and_then(|v| v.as_u64()).unwrap_or(0) + n))
        };
        assert_eq!(log.update_note("g", "requests", &mut add(2)).expect("add"), Some(serde_json::json!(2)));
        assert_eq!(log.update_note("g", "requests", &mut add(3)).expect("add"), Some(serde_json::json!(5)));
        log.update_note("other", "requests", &mut add(7)).expect("add");
        let reopened = Catalog::open(&path).expect("reopen").session_log().expect("log");
        assert_eq!(reopened.note("g", "requests").expect("read"), Some(serde_json::json!(5)));
        assert_eq!(reopened.note("other", "requests").expect("read"), Some(serde_json::json!(7)));
        assert_eq!(reopened.update_note("g", "requests", &mut |_| None).expect("remove"), None);
        assert_eq!(reopened.note("g", "requests").expect("read"), None);
    }
}

//! What a complete scan found, and forgetting what it did not.

use std::collections::HashSet;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};

use rusqlite::params;

use super::{Catalog, Result};

/// The relative paths a scan found, kept as 64-bit fingerprints: a set of
/// 100,000 paths as byte strings cost an allocation and a hash for each
/// when the scan found them and again for each recorded path read back (a
/// tenth of a rescan). Two paths may share a fingerprint; then a file that
/// is gone passes for found and is forgotten a scan later (the key is
/// random in each process, so such a pair does not meet twice), while a
/// file that was found is never taken for gone.
pub struct SeenPaths {
    key: RandomState,
    fingerprints: HashSet<u64, BuildHasherDefault<Fingerprint>>,
}

impl Default for SeenPaths {
    fn default() -> Self {
        SeenPaths { key: RandomState::new(), fingerprints: HashSet::default() }
    }
}

impl SeenPaths {
    /// Notes that `rel_path` was found.
    pub fn insert(&mut self, rel_path: &[u8]) {
        self.fingerprints.insert(self.key.hash_one(rel_path));
    }

    /// Whether `rel_path` was found (or one sharing its fingerprint).
    pub fn contains(&self, rel_path: &[u8]) -> bool {
        self.fingerprints.contains(&self.key.hash_one(rel_path))
    }
}

/// Hashes a set of fingerprints: they are already hashes, so each is its own.
#[derive(Default)]
struct Fingerprint(u64);

impl Hasher for Fingerprint {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u64`s go in; anything else is folded in all the same.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, fingerprint: u64) {
        self.0 = fingerprint;
    }
}

impl Catalog {
    /// Forgets the recorded files of `source` that a complete scan did not
    /// find (`seen` holds every path it did): they were deleted or moved
    /// away. Their assets stop being current, so their queued jobs are
    /// cancelled rather than waited for; should the content come back, it is
    /// recorded again and its job revived. Returns how many were forgotten.
    pub fn forget_unseen(&mut self, source: &str, seen: &SeenPaths) -> Result<u64> {
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut forgotten = 0;
        // Files, then what was found not to be media: those gone are forgotten too.
        for table in ["files", "not_media"] {
            let gone = {
                let mut stmt = tx.prepare_cached(&format!("SELECT rel_path FROM {table} WHERE source = ?1"))?;
                let mut rows = stmt.query(params![source])?;
                let mut gone = Vec::new();
                while let Some(row) = rows.next()? {
                    let rel_path = row.get_ref(0)?.as_bytes().map_err(rusqlite::Error::from)?;
                    if !seen.contains(rel_path) {
                        gone.push(rel_path.to_vec());
                    }
                }
                gone
            };
            for rel_path in &gone {
                tx.prepare_cached(&format!("DELETE FROM {table} WHERE source = ?1 AND rel_path = ?2"))?
                    .execute(params![source, rel_path])?;
            }
            if table == "files" {
                forgotten = gone.len() as u64;
            }
        }
        tx.commit()?;
        Ok(forgotten)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn found_paths_are_found_and_others_are_not() {
        let mut seen = SeenPaths::default();
        let found: Vec<String> = (0..10_000).map(|i| format!("{:03}/IMG_{i:05}.JPG", i / 100)).collect();
        for path in &found {
            seen.insert(path.as_bytes());
        }
        assert!(found.iter().all(|path| seen.contains(path.as_bytes())));
        let others = (0..10_000).filter(|i| seen.contains(format!("{:03}/IMG_{i:05}.HEIC", i / 100).as_bytes()));
        assert_eq!(others.count(), 0);
    }
}

//! Bytes sent over each metered network per period of its data budget
//! (the `metered_usage` table): added to as uploads send, read when the
//! machine joins a metered network.

use rusqlite::params;

use super::Result;

impl super::Catalog {
    /// Bytes counted for `network` in the period that began on `cycle`.
    pub fn metered_usage(&self, network: &str, cycle: jiff::civil::Date) -> Result<u64> {
        let bytes: Option<i64> = self
            .conn
            .prepare_cached("SELECT bytes FROM metered_usage WHERE network = ?1 AND cycle = ?2")?
            .query_row(params![network, cycle.to_string()], |r| r.get(0))
            .map(Some)
            .or_else(|e| if e == rusqlite::Error::QueryReturnedNoRows { Ok(None) } else { Err(e) })?;
        Ok(bytes.map_or(0, |b| u64::try_from(b).unwrap_or(0)))
    }

    /// Adds `bytes` to `network`'s count (called `name`) for the period
    /// that began on `cycle`; the new total.
    pub fn add_metered_usage(
        &mut self,
        network: &str,
        name: &str,
        cycle: jiff::civil::Date,
        bytes: u64,
    ) -> Result<u64> {
        let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
        let total: i64 = self
            .conn
            .prepare_cached(
                "INSERT INTO metered_usage (network, cycle, name, bytes) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (network, cycle) DO UPDATE SET bytes = bytes + excluded.bytes, name = excluded.name
                 RETURNING bytes",
            )?
            .query_row(params![network, cycle.to_string(), name, bytes], |r| r.get(0))?;
        Ok(u64::try_from(total).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use jiff::civil::date;

    use crate::catalog::Catalog;

    #[test]
    fn counts_add_up_per_network_and_period() {
        let dir = tempfile::tempdir().expect("dir");
        let mut catalog = Catalog::open(&dir.path().join("catalog.db")).expect("catalog");
        let december = date(2026, 12, 1);
        assert_eq!(catalog.metered_usage("nm:a", december).expect("read"), 0);
        assert_eq!(catalog.add_metered_usage("nm:a", "Hotspot", december, 5).expect("add"), 5);
        assert_eq!(catalog.add_metered_usage("nm:a", "Hotspot", december, 7).expect("add"), 12);
        catalog.add_metered_usage("nm:b", "Other", december, 100).expect("add");
        catalog.add_metered_usage("nm:a", "Hotspot", date(2027, 1, 1), 1).expect("add");
        drop(catalog);
        let catalog = Catalog::open(&dir.path().join("catalog.db")).expect("catalog");
        assert_eq!(catalog.metered_usage("nm:a", december).expect("read"), 12, "kept across a reopen");
        assert_eq!(catalog.metered_usage("nm:b", december).expect("read"), 100);
        assert_eq!(catalog.metered_usage("nm:a", date(2027, 1, 1)).expect("read"), 1);
    }
}

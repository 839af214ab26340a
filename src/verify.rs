//! `photosync verify`: proves that every acknowledged receipt still holds.
//!
//! A receipt says "this destination holds these bytes under this key". Over
//! months a disk flips a bit, someone tidies a bucket, a NAS is restored
//! from an old snapshot; the catalog would never know. [`verify`] asks each
//! destination about each receipt's object ([`Destination::verify`]: a folder
//! re-reads and hashes the file; S3 compares the server's checksum or
//! `ETag`, or reads the object back with `deep`), once per object however
//! many jobs share it, a few at a time. What is missing or changed is
//! reported; with `--repair` the CLI or the daemon queues those jobs again
//! ([`crate::model::Job::repair`]), and nothing that is there is overwritten.
//!
//! This module only looks; it writes nothing to the catalog.
//!
//! [`Destination::verify`]: crate::destination::Destination::verify

use std::collections::BTreeMap;

use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};

use crate::catalog::ReceiptRow;
use crate::destination::Verdict;
use crate::model::{DestinationId, JobId};
use crate::scheduler::Target;

/// How many objects are checked at once.
const AT_ONCE: usize = 4;

/// What to check.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyOptions {
    /// Only this destination (by name).
    pub destination: Option<String>,
    /// Only this many objects, chosen at random (a spot check).
    pub sample: Option<usize>,
    /// Read every object back and hash it, whatever the server says.
    pub deep: bool,
}

/// What is wrong with one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// Nothing is at the key.
    Missing,
    /// Something else is at the key.
    Corrupt,
    /// The destination could not be asked (unreachable, refused).
    Unchecked,
}

/// One object that does not hold, and the jobs whose receipts name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// What is wrong.
    pub kind: ProblemKind,
    /// Destination label.
    pub destination: String,
    /// The object's key (lossy UTF-8).
    pub key: String,
    /// Why, in words.
    pub reason: String,
    /// The jobs whose receipts name it.
    pub jobs: Vec<JobId>,
    /// Their source files.
    pub paths: Vec<String>,
}

/// What a verification found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// Receipts looked at.
    pub receipts: u64,
    /// Objects looked at (receipts sharing an object count once).
    pub objects: u64,
    /// Objects that hold.
    pub held: u64,
    /// Objects that do not, or could not be checked.
    pub problems: Vec<Problem>,
    /// Jobs queued for upload again (`--repair`).
    pub repaired: Vec<JobId>,
}

impl VerifyReport {
    /// Jobs whose object is missing or corrupt: the ones `--repair` queues.
    pub fn broken_jobs(&self) -> Vec<JobId> {
        self.problems.iter().filter(|p| p.kind != ProblemKind::Unchecked).flat_map(|p| p.jobs.clone()).collect()
    }

    /// Whether anything is missing or corrupt.
    pub fn found_damage(&self) -> bool {
        self.problems.iter().any(|p| p.kind != ProblemKind::Unchecked)
    }
}

/// Receives progress.
pub trait VerifyObserver: Send + Sync {
    /// This many objects will be checked.
    fn objects(&self, _count: u64) {}
    /// One more object was checked.
    fn checked(&self) {}
}

/// An observer that ignores everything.
pub struct Quiet;
impl VerifyObserver for Quiet {}

/// The targets `options` asks for, or why there are none.
pub fn chosen<'t>(targets: &'t [Target], options: &VerifyOptions) -> Result<Vec<&'t Target>, String> {
    let Some(name) = &options.destination else { return Ok(targets.iter().collect()) };
    if let Some(target) = targets.iter().find(|t| &t.name == name) {
        return Ok(vec![target]);
    }
    let known: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
    Err(format!("no destination is called `{name}`; configured: {}", known.join(", ")))
}

/// Checks `chunk`'s objects (each one's rows) at `target`, in one go where
/// it can.
async fn check(
    target: &Target,
    chunk: Vec<Vec<ReceiptRow>>,
    deep: bool,
    observer: &dyn VerifyObserver,
) -> Vec<(String, Vec<ReceiptRow>, Result<Verdict, crate::destination::DestinationError>)> {
    let receipts: Vec<_> = chunk.iter().map(|rows| rows[0].receipt.clone()).collect();
    let mut verdicts = target.destination.verify_many(&receipts, deep).await.into_iter();
    chunk
        .into_iter()
        .map(|rows| {
            observer.checked();
            let verdict = verdicts.next().unwrap_or_else(|| {
                Err(crate::destination::DestinationError::transient("the destination gave no verdict"))
            });
            (target.name.clone(), rows, verdict)
        })
        .collect()
}

/// Checks the objects `receipts` name at `targets`.
pub async fn verify(
    receipts: Vec<ReceiptRow>,
    targets: &[&Target],
    options: &VerifyOptions,
    observer: &dyn VerifyObserver,
) -> VerifyReport {
    let mut report = VerifyReport { receipts: receipts.len() as u64, ..VerifyReport::default() };
    // One check per object, however many jobs share it.
    let mut objects: BTreeMap<(DestinationId, Vec<u8>, String), Vec<ReceiptRow>> = BTreeMap::new();
    for row in receipts {
        let key = (row.destination, row.receipt.key.0.clone(), row.receipt.sha256.as_hex().to_owned());
        objects.entry(key).or_default().push(row);
    }
    let mut objects: Vec<Vec<ReceiptRow>> = objects.into_values().collect();
    if let Some(sample) = options.sample {
        fastrand::shuffle(&mut objects);
        objects.truncate(sample);
        report.receipts = objects.iter().map(|rows| rows.len() as u64).sum();
    }
    report.objects = objects.len() as u64;
    observer.objects(report.objects);

    // Objects of one destination go together, as many at a time as it
    // checks in one request.
    let mut chunks: Vec<(&Target, Vec<Vec<ReceiptRow>>)> = Vec::new();
    // Each destination's chunk still filling, by its place in `chunks`.
    let mut filling: std::collections::HashMap<DestinationId, usize> = std::collections::HashMap::new();
    for rows in objects {
        let Some(target) = targets.iter().find(|t| t.id == rows[0].destination) else { continue };
        let size = target.destination.verify_batch().max(1);
        if let Some(i) = filling.get(&target.id).copied().filter(|&i| chunks[i].1.len() < size) {
            chunks[i].1.push(rows);
        } else {
            filling.insert(target.id, chunks.len());
            chunks.push((target, vec![rows]));
        }
    }
    let checks: Vec<_> =
        chunks.into_iter().map(|(target, chunk)| check(target, chunk, options.deep, observer)).collect();
    let checks = futures_util::stream::iter(checks).buffer_unordered(AT_ONCE);
    let results: Vec<_> = checks.collect::<Vec<_>>().await.into_iter().flatten().collect();
    for (destination, rows, verdict) in results {
        let (kind, reason) = match verdict {
            Ok(Verdict::Holds) => {
                report.held += 1;
                continue;
            }
            Ok(Verdict::Missing) => (ProblemKind::Missing, "not at the destination".to_owned()),
            Ok(Verdict::Differs(reason)) => (ProblemKind::Corrupt, reason),
            Err(error) => (ProblemKind::Unchecked, error.message),
        };
        report.problems.push(Problem {
            kind,
            destination,
            key: rows[0].receipt.key.to_string(),
            reason,
            jobs: rows.iter().map(|r| r.job).collect(),
            paths: rows.iter().map(|r| r.path.clone()).collect(),
        });
    }
    report.problems.sort_by(|a, b| (&a.destination, &a.key).cmp(&(&b.destination, &b.key)));
    report
}

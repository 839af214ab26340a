//! Bounded random access to a file's bytes for the metadata parsers. Every
//! read is checked against the file's length and a budget of bytes and of
//! steps, so a hostile file (a box claiming 10 GB, a chain of entries that
//! points back at itself) costs bounded time and memory: the parse ends with
//! "no date", never with an error or a hang.

use std::borrow::Cow;
use std::cell::Cell;
use std::fs::File;
use std::os::unix::fs::FileExt as _;

/// Most bytes read from the file beyond the first block, in all.
const READ_BUDGET: usize = 4 << 20;

/// Longest single read (a `moov` metadata box, an `iloc` table).
pub(super) const MAX_READ: usize = 1 << 20;

/// Most parsing steps (boxes, segments, directory entries) per file.
const STEP_BUDGET: u32 = 20_000;

/// A file's bytes, read on demand within a budget.
pub(super) struct Reader<'a> {
    /// The file (`None`: all of it is in `head`).
    file: Option<&'a File>,
    /// Its first bytes, already in memory.
    head: &'a [u8],
    len: u64,
    budget: Cell<usize>,
    steps: Cell<u32>,
}

impl<'a> Reader<'a> {
    /// `file`, `len` bytes long, whose first bytes are `head`.
    pub(super) fn file(file: &'a File, len: u64, head: &'a [u8]) -> Self {
        Self { file: Some(file), head, len, budget: Cell::new(READ_BUDGET), steps: Cell::new(STEP_BUDGET) }
    }

    /// A buffer (metadata decoded from a file, and tests).
    pub(super) fn memory(bytes: &'a [u8]) -> Self {
        Self {
            file: None,
            head: bytes,
            len: bytes.len() as u64,
            budget: Cell::new(READ_BUDGET),
            steps: Cell::new(STEP_BUDGET),
        }
    }

    /// The file's length.
    pub(super) fn len(&self) -> u64 {
        self.len
    }

    /// Exactly `len` bytes at `offset`, or `None` past the end of the file,
    /// over the budget, above [`MAX_READ`], or on a read error.
    pub(super) fn bytes(&self, offset: u64, len: usize) -> Option<Cow<'a, [u8]>> {
        let end = offset.checked_add(len as u64)?;
        if end > self.len || len > MAX_READ {
            return None;
        }
        if end <= self.head.len() as u64 {
            return Some(Cow::Borrowed(&self.head[offset as usize..end as usize]));
        }
        let left = self.budget.get().checked_sub(len)?;
        self.budget.set(left);
        let mut buffer = vec![0; len];
        self.file?.read_exact_at(&mut buffer, offset).ok()?;
        Some(Cow::Owned(buffer))
    }

    /// Up to `len` bytes at `offset` (fewer at the end of the file).
    pub(super) fn up_to(&self, offset: u64, len: usize) -> Option<Cow<'a, [u8]>> {
        let available = self.len.checked_sub(offset)?;
        self.bytes(offset, len.min(usize::try_from(available).unwrap_or(usize::MAX)))
    }

    /// A big-endian `u32` at `offset`.
    pub(super) fn u32_be(&self, offset: u64) -> Option<u32> {
        let b = self.bytes(offset, 4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Takes one step of a loop; `None` once the file has used its budget.
    pub(super) fn step(&self) -> Option<()> {
        let left = self.steps.get().checked_sub(1)?;
        self.steps.set(left);
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    #[test]
    fn reads_stay_inside_the_file_and_the_budget() {
        let reader = Reader::memory(b"0123456789");
        assert_eq!(reader.bytes(2, 3).as_deref(), Some(&b"234"[..]));
        assert_eq!(reader.bytes(8, 3), None, "past the end");
        assert_eq!(reader.bytes(u64::MAX, 2), None, "an offset that overflows");
        assert_eq!(reader.up_to(8, 100).as_deref(), Some(&b"89"[..]));

        let mut file = tempfile::tempfile().expect("tempfile");
        file.write_all(&vec![7u8; READ_BUDGET + 10]).expect("write");
        let reader = Reader::file(&file, (READ_BUDGET + 10) as u64, b"77");
        assert_eq!(reader.bytes(0, 2).as_deref(), Some(&b"77"[..]), "the head costs nothing");
        let mut read = 0;
        while reader.bytes(0, MAX_READ).is_some() {
            read += MAX_READ;
        }
        assert_eq!(read, READ_BUDGET, "reads stop when the budget is spent");
    }
}

//! Dropbox's content hash (<https://www.dropbox.com/developers/reference/content-hash>):
//! the file split into 4 MiB blocks, each block's SHA-256, and the
//! SHA-256 of those digests joined, in hex. Fed in pieces of any size;
//! the digests of whole blocks are kept, so the hash of a chunk that
//! starts on a block boundary (what an upload session's append carries)
//! costs no second pass over its bytes.

use sha2::{Digest as _, Sha256};

use crate::destination::http::hex;

/// Dropbox's block size.
pub const BLOCK: u64 = 4 * 1024 * 1024;

/// A content hash being computed.
#[derive(Clone, Default)]
pub struct ContentHasher {
    block: Sha256,
    in_block: u64,
    digests: Vec<[u8; 32]>,
}

impl ContentHasher {
    /// Feeds the next bytes.
    pub fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let room = usize::try_from(BLOCK - self.in_block).unwrap_or(usize::MAX);
            let (now, rest) = data.split_at(room.min(data.len()));
            self.block.update(now);
            self.in_block += now.len() as u64;
            if self.in_block == BLOCK {
                self.digests.push(std::mem::take(&mut self.block).finalize().into());
                self.in_block = 0;
            }
            data = rest;
        }
    }

    /// Bytes fed so far.
    pub fn len(&self) -> u64 {
        self.digests.len() as u64 * BLOCK + self.in_block
    }

    /// Whether nothing was fed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The content hash of everything fed so far.
    pub fn hex(&self) -> String {
        self.tail_hex(0)
    }

    /// The content hash of what was fed from block `first` on (from byte
    /// `first * BLOCK`): a chunk's own hash, when it starts on a block
    /// boundary and ends on one or at the end of the file.
    pub fn tail_hex(&self, first: usize) -> String {
        let mut outer = Sha256::new();
        for digest in self.digests.get(first..).unwrap_or_default() {
            outer.update(digest);
        }
        if self.in_block > 0 {
            outer.update(self.block.clone().finalize());
        }
        hex(&outer.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| ((i * 31 + 7) % 251) as u8).collect()
    }

    /// Expected values from `rclone hashsum dropbox` (rclone 1.75.2) over
    /// files of [`pattern`] bytes, and over "hello world".
    #[test]
    fn matches_rclone_at_block_edges() {
        for (len, expected) in [
            (0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
            (1, "b6d58dfa6547c1eb7f0d4ffd3e3bd6452213210ea51baa70b97c31f011187215"),
            (4_194_304, "c3e676634f2ffa44c48012c2fd13cd98765cb5b9ccc35f3ff7363f3352d74c9f"),
            (4_194_305, "b72986f16bd52c8d15f1eb0bb8433433ded7680313e86e903d8ea86b576a084f"),
            (9_711_423, "d3d873fa099687b3673916e6a085438e313e21ca903da532e8cb3a64e653b674"),
        ] {
            let bytes = pattern(len);
            let mut whole = ContentHasher::default();
            whole.update(&bytes);
            assert_eq!(whole.hex(), expected, "{len} bytes in one piece");
            let mut pieces = ContentHasher::default();
            for piece in bytes.chunks(1_000_003) {
                pieces.update(piece);
            }
            assert_eq!(pieces.hex(), expected, "{len} bytes in pieces");
            assert_eq!(pieces.len(), len as u64);
        }
        let mut hello = ContentHasher::default();
        hello.update(b"hello world");
        assert_eq!(hello.hex(), "bc62d4b80d9e36da29c16c5d4d9f11731f36052c72401a76c23c0fb5a9b74423");
    }

    #[test]
    fn a_chunk_on_block_boundaries_has_its_own_hash() {
        let bytes = pattern(9_711_423);
        let mut whole = ContentHasher::default();
        whole.update(&bytes[..BLOCK as usize * 2]);
        whole.update(&bytes[BLOCK as usize * 2..]);
        let mut tail = ContentHasher::default();
        tail.update(&bytes[BLOCK as usize * 2..]);
        assert_eq!(whole.tail_hex(2), tail.hex());
    }
}

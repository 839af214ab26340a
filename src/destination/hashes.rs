//! The hashes of remote services that photosync computes itself, to prove
//! that what a service stored is the scanned file: SHA-256 (local disks, S3
//! checksums), Dropbox's content hash, SHA-1 (Immich, some rclone remotes),
//! MD5 (S3, Google Drive…) and OneDrive's QuickXorHash; as lowercase hex,
//! the way rclone reports them.

use std::io::Read as _;
use std::path::Path;

use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::destination::http::hex;
use crate::model::ContentHash;

/// A hash photosync can compute, as rclone names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashKind {
    /// SHA-256.
    Sha256,
    /// Dropbox's content hash: SHA-256 over the SHA-256s of 4 MiB blocks.
    Dropbox,
    /// SHA-1.
    Sha1,
    /// MD5.
    Md5,
    /// OneDrive's QuickXorHash.
    QuickXor,
}

impl HashKind {
    /// Strongest first.
    pub const PREFERRED: [HashKind; 5] =
        [HashKind::Sha256, HashKind::Dropbox, HashKind::Sha1, HashKind::Md5, HashKind::QuickXor];

    /// rclone's name for it (`operations/fsinfo` lists these).
    pub fn name(self) -> &'static str {
        match self {
            HashKind::Sha256 => "sha256",
            HashKind::Dropbox => "dropbox",
            HashKind::Sha1 => "sha1",
            HashKind::Md5 => "md5",
            HashKind::QuickXor => "quickxor",
        }
    }

    /// The kind rclone calls `name`.
    pub fn named(name: &str) -> Option<HashKind> {
        HashKind::PREFERRED.into_iter().find(|k| k.name() == name)
    }
}

/// One read of `path`: its SHA-256 and its `kind` hash (hex).
pub fn hash_file(path: &Path, kind: HashKind) -> std::io::Result<(ContentHash, String)> {
    let mut file = std::fs::File::open(path)?;
    let mut sha256 = Sha256::new();
    let mut other = Hasher::new(kind);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        sha256.update(&buf[..n]);
        other.update(&buf[..n]);
    }
    let sha256 = sha256.finalize();
    let other = match other {
        Hasher::SameAsSha256 => hex(&sha256),
        other => other.finish(),
    };
    Ok((ContentHash::from_digest(&sha256), other))
}

/// The hash being computed beside the SHA-256 every upload needs.
enum Hasher {
    SameAsSha256,
    Dropbox(DropboxHasher),
    Sha1(Sha1),
    Md5(Md5),
    QuickXor(QuickXorHasher),
}

impl Hasher {
    fn new(kind: HashKind) -> Hasher {
        match kind {
            HashKind::Sha256 => Hasher::SameAsSha256,
            HashKind::Dropbox => Hasher::Dropbox(DropboxHasher::default()),
            HashKind::Sha1 => Hasher::Sha1(Sha1::new()),
            HashKind::Md5 => Hasher::Md5(Md5::new()),
            HashKind::QuickXor => Hasher::QuickXor(QuickXorHasher::default()),
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::SameAsSha256 => {}
            Hasher::Dropbox(h) => h.update(data),
            Hasher::Sha1(h) => h.update(data),
            Hasher::Md5(h) => h.update(data),
            Hasher::QuickXor(h) => h.update(data),
        }
    }

    fn finish(self) -> String {
        match self {
            Hasher::SameAsSha256 => String::new(),
            Hasher::Dropbox(h) => hex(&h.finish()),
            Hasher::Sha1(h) => hex(&h.finalize()),
            Hasher::Md5(h) => hex(&h.finalize()),
            Hasher::QuickXor(h) => hex(&h.finish()),
        }
    }
}

/// Dropbox's content hash (Dropbox developers, "Content hash"): the file
/// in 4 MiB blocks, each block's SHA-256, and the SHA-256 of those
/// digests one after another.
#[derive(Default)]
struct DropboxHasher {
    block: Sha256,
    in_block: usize,
    digests: Sha256,
}

impl DropboxHasher {
    const BLOCK: usize = 4 * 1024 * 1024;

    fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let take = data.len().min(Self::BLOCK - self.in_block);
            self.block.update(&data[..take]);
            self.in_block += take;
            data = &data[take..];
            if self.in_block == Self::BLOCK {
                self.end_block();
            }
        }
    }

    fn end_block(&mut self) {
        let block = std::mem::take(&mut self.block).finalize();
        self.digests.update(block);
        self.in_block = 0;
    }

    fn finish(mut self) -> [u8; 32] {
        if self.in_block > 0 {
            self.end_block();
        }
        self.digests.finalize().into()
    }
}

/// OneDrive's QuickXorHash (Microsoft Graph docs, "QuickXorHash"): byte n
/// of the file goes, by exclusive or, into a 160-bit ring at bit 11·n
/// (mod 160); the file's length (64-bit, little-endian) then goes the same
/// way into the last 8 of the ring's 20 bytes (little-endian).
#[derive(Default)]
struct QuickXorHasher {
    ring: [u8; 20],
    length: u64,
}

impl QuickXorHasher {
    const BITS: u64 = 160;

    fn update(&mut self, data: &[u8]) {
        // The bit where this call's first byte goes.
        let mut bit = (self.length % Self::BITS * 11 % Self::BITS) as usize;
        for &byte in data {
            let shifted = u16::from(byte) << (bit % 8);
            let at = bit / 8;
            self.ring[at] ^= shifted as u8;
            self.ring[(at + 1) % 20] ^= (shifted >> 8) as u8;
            bit = (bit + 11) % Self::BITS as usize;
        }
        self.length += data.len() as u64;
    }

    fn finish(mut self) -> [u8; 20] {
        for (i, b) in self.length.to_le_bytes().into_iter().enumerate() {
            self.ring[12 + i] ^= b;
        }
        self.ring
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes that do not repeat within a block.
    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| ((i * 31 + 7 * (i >> 8)) & 0xff) as u8).collect()
    }

    /// Each hash of `data(len)`, fed in pieces of `piece` bytes.
    fn hashed(kind: HashKind, len: usize, piece: usize) -> String {
        let mut hasher = Hasher::new(kind);
        for chunk in data(len).chunks(piece.max(1)) {
            hasher.update(chunk);
        }
        hasher.finish()
    }

    // The expected values are what rclone 1.75.2 computes
    // (`rclone hashsum dropbox|quickxor` on the same bytes).
    const MIB: usize = 1024 * 1024;

    #[test]
    fn dropbox_content_hashes_match_rclone() {
        for (len, expected) in [
            (0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
            (1, "1406e05881e299367766d313e26c05564ec91bf721d31726bd6e46e60689539a"),
            (1000, "5310e17abd27ea9e1793198a8f50e9ef5009c3c566cce6c26b5e810151343966"),
            (4 * MIB, "c265390dfcbe1fa070f6b278f6ced087995927e5ab5faa44fcc88066bb9ca724"),
            (4 * MIB + 1, "381ff29ff7b660a7894d4cbecbe3c5b8775f057eccc42b22e28accb3dc8c7386"),
            (9 * MIB + 5, "72fceaaa62c3fcd4f98551e412afa6bc8936cef59f3fb1f5debff8fd51c92d9a"),
        ] {
            for piece in [MIB, 1000, 4 * MIB + 3] {
                assert_eq!(hashed(HashKind::Dropbox, len, piece), expected, "{len} bytes in pieces of {piece}");
            }
        }
    }

    #[test]
    fn quickxor_hashes_match_rclone() {
        for (len, expected) in [
            (0, "0000000000000000000000000000000000000000"),
            (1, "0000000000000000000000000100000000000000"),
            (3, "00f8800f00000000000000000300000000000000"),
            (160, "5d551c7a638caf9b92613696a97fef3850ce00b9"),
            (1000, "bd80090306f7167733049fe5e1aedf652edbcf75"),
            (4 * MIB, "a1dad009a7ce49d8cad28c0bd12528561de37d8c"),
            (4 * MIB + 1, "a1dad009a7ce49d8cad28c0bd02528561de37d8c"),
            (9 * MIB + 5, "a1dad009a7ce49d8ca2a0c046ee5ff561de37d8c"),
        ] {
            for piece in [MIB, 7, 160] {
                assert_eq!(hashed(HashKind::QuickXor, len, piece), expected, "{len} bytes in pieces of {piece}");
            }
        }
    }

    #[test]
    fn one_read_gives_the_sha256_and_the_other_hash() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        std::fs::write(&path, data(1000)).expect("write");
        let (sha256, md5) = hash_file(&path, HashKind::Md5).expect("hash");
        assert_eq!(sha256, ContentHash::from_digest(&Sha256::digest(data(1000))));
        assert_eq!(md5, hex(&Md5::digest(data(1000))));
        let (_, same) = hash_file(&path, HashKind::Sha256).expect("hash");
        assert_eq!(same, sha256.as_hex());
    }
}

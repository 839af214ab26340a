//! OneDrive's QuickXorHash
//! (<https://learn.microsoft.com/onedrive/developer/code-snippets/quickxorhash>):
//! a 160-bit value into which byte *k* of the file is `XOR`ed at bit offset
//! (11·*k*) mod 160, wrapping around, with the file's length (64 bits,
//! little-endian) `XOR`ed into its last 8 bytes. Graph reports it in base64.
//!
//! Bytes 160 apart land at the same offset, so they are first
//! `XOR`ed together per position (a cheap pass over the data) and placed once,
//! when the hash is read.

use base64::Engine as _;

const WIDTH: usize = 160;
const SHIFT: usize = 11;

/// A QuickXorHash being computed.
#[derive(Clone)]
pub struct QuickXor {
    /// Bytes at each position modulo 160, `XOR`ed together.
    folded: [u8; WIDTH],
    len: u64,
}

impl Default for QuickXor {
    fn default() -> Self {
        Self { folded: [0; WIDTH], len: 0 }
    }
}

impl QuickXor {
    /// Feeds the next bytes.
    pub fn update(&mut self, data: &[u8]) {
        let mut at = (self.len % WIDTH as u64) as usize;
        for &byte in data {
            self.folded[at] ^= byte;
            at += 1;
            if at == WIDTH {
                at = 0;
            }
        }
        self.len += data.len() as u64;
    }

    /// The 20-byte hash of everything fed so far.
    pub fn digest(&self) -> [u8; 20] {
        let mut out = [0u8; 20];
        for (position, &byte) in self.folded.iter().enumerate() {
            if byte == 0 {
                continue;
            }
            let bit = (position * SHIFT) % WIDTH;
            let (index, offset) = (bit / 8, bit % 8);
            out[index] ^= byte << offset;
            if offset > 0 {
                out[(index + 1) % 20] ^= byte >> (8 - offset);
            }
        }
        for (i, b) in self.len.to_le_bytes().iter().enumerate() {
            out[12 + i] ^= b;
        }
        out
    }

    /// The hash as Graph reports it (standard base64).
    pub fn base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.digest())
    }
}

/// A reported hash as bytes (Graph's standard base64; the URL-safe
/// alphabet is taken too), `None` when it is not one.
pub fn decode(reported: &str) -> Option<[u8; 20]> {
    let engine = if reported.contains(['-', '_']) {
        &base64::engine::general_purpose::URL_SAFE
    } else {
        &base64::engine::general_purpose::STANDARD
    };
    engine.decode(reported.trim()).ok()?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        crate::destination::http::hex(bytes)
    }

    /// Expected values from `rclone hashsum quickxor` (rclone 1.75.2) over
    /// files of `(i * 31 + 7) % 251` bytes, and Microsoft's "hello world".
    #[test]
    fn matches_rclone_and_microsoft() {
        for (len, expected) in [
            (0, "0000000000000000000000000000000000000000"),
            (1, "0700000000000000000000000100000000000000"),
            (159, "3b3e3b27942398d8d87c0cc9d28fb9fc0f580782"),
            (160, "3b3e3b27942398d8d87c0cc9ed8fb9fc0f58e796"),
            (161, "fd3e3b27942398d8d87c0cc9ec8fb9fc0f58e796"),
            (1_048_579, "e30195a3986fc84c47057297ab4c1fcb393c097d"),
        ] {
            let bytes: Vec<u8> = (0..len).map(|i| ((i * 31 + 7) % 251) as u8).collect();
            let mut whole = QuickXor::default();
            whole.update(&bytes);
            assert_eq!(hex(&whole.digest()), expected, "{len} bytes");
            let mut pieces = QuickXor::default();
            for piece in bytes.chunks(97) {
                pieces.update(piece);
            }
            assert_eq!(hex(&pieces.digest()), expected, "{len} bytes in pieces");
        }
        let mut hello = QuickXor::default();
        hello.update(b"hello world");
        assert_eq!(hello.base64(), "aCgDG9jwBhDc4Q1yawMZAAAAAAA=");
        assert_eq!(decode("aCgDG9jwBhDc4Q1yawMZAAAAAAA="), Some(hello.digest()));
        assert_eq!(decode("not a hash"), None);
    }
}

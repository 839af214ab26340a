//! The QuickXorHash
//! (<https://learn.microsoft.com/onedrive/developer/code-snippets/quickxorhash>).

use std::fmt::Write as _;

use base64::Engine as _;

/// The QuickXorHash of `bytes`, in standard base64 as Graph reports it.
pub fn quick_xor_hash(bytes: &[u8]) -> String {
    let mut hasher = QuickXor::default();
    hasher.update(bytes);
    hasher.base64()
}

/// The QuickXorHash, fed in pieces: a 160-bit block, byte `i` of the data
/// folded in by XOR at bit `11·i mod 160`, and the data's 64-bit
/// little-endian length folded into its last 8 bytes (Microsoft's C#
/// sample). Bytes 160 apart land on the same bits, so each of 160 columns
/// keeps the XOR of its bytes.
#[derive(Debug, Clone)]
pub struct QuickXor {
    columns: [u8; 160],
    len: u64,
}

impl Default for QuickXor {
    fn default() -> QuickXor {
        QuickXor { columns: [0; 160], len: 0 }
    }
}

impl QuickXor {
    pub fn update(&mut self, mut data: &[u8]) {
        let mut column = (self.len % 160) as usize;
        self.len += data.len() as u64;
        while column != 0 && !data.is_empty() {
            self.columns[column] ^= data[0];
            data = &data[1..];
            column = (column + 1) % 160;
        }
        let mut blocks = data.chunks_exact(160);
        for block in &mut blocks {
            for (c, b) in self.columns.iter_mut().zip(block) {
                *c ^= b;
            }
        }
        for (c, b) in self.columns.iter_mut().zip(blocks.remainder()) {
            *c ^= b;
        }
    }

    pub fn digest(&self) -> [u8; 20] {
        let mut out = [0u8; 20];
        for (i, &b) in self.columns.iter().enumerate() {
            let bit = i * 11 % 160;
            let (byte, shift) = (bit / 8, bit % 8);
            out[byte] ^= b << shift;
            if shift != 0 {
                out[(byte + 1) % 20] ^= b >> (8 - shift);
            }
        }
        for (o, l) in out[12..].iter_mut().zip(self.len.to_le_bytes()) {
            *o ^= l;
        }
        out
    }

    pub fn base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.digest())
    }
}

/// Lowercase hex.
pub(super) fn hex(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(text, "{byte:02x}");
    }
    text
}

//! The hasher of the persistent stores' small lookup tables: the interned tag lists met while
//! decoding rows, SQLite's type ids, and the (type, tag) pairs a PostgreSQL handle knows to be
//! stored. Each is looked up once or more per row or per tag, on short keys, where SipHash
//! would cost more than the rest of the lookup.
//!
//! One 64×64→128-bit multiply per 8 bytes of key, folded to 64 bits; keyed per table from the
//! standard library's random keys, so that stored names cannot be chosen to collide.

use std::hash::{BuildHasher, Hasher};

/// Builds a [`FastHasher`] keyed for one table.
#[derive(Clone)]
pub struct FastState(u64);

impl Default for FastState {
    fn default() -> Self {
        FastState(std::collections::hash_map::RandomState::new().hash_one("krescent.fast") | 1)
    }
}

impl BuildHasher for FastState {
    type Hasher = FastHasher;
    fn build_hasher(&self) -> FastHasher {
        FastHasher(self.0)
    }
}

/// The hasher built by [`FastState`].
pub struct FastHasher(u64);

impl FastHasher {
    /// Mixes one word in: the 128-bit product of the state and the word with an odd constant,
    /// its halves folded together.
    #[inline]
    fn absorb(&mut self, word: u64) {
        let product = u128::from(self.0 ^ word) * u128::from(0x9e37_79b9_7f4a_7c15_u64);
        self.0 = (product as u64) ^ ((product >> 64) as u64);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            let mut w = [0u8; 8];
            w.copy_from_slice(word);
            self.absorb(u64::from_le_bytes(w));
        }
        let tail = words.remainder();
        let mut w = [0u8; 8];
        w[..tail.len()].copy_from_slice(tail);
        // The tail's length goes into its top byte, so "a" and "a\0" differ.
        self.absorb(u64::from_le_bytes(w) ^ ((tail.len() as u64) << 56));
    }

    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.absorb(u64::from(n));
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.absorb(n as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(state: &FastState, bytes: &[u8]) -> u64 {
        state.hash_one(bytes)
    }

    #[test]
    fn equal_keys_hash_alike_and_near_keys_apart() {
        let state = FastState::default();
        assert_eq!(
            hash(&state, b"product:P-01234"),
            hash(&state, b"product:P-01234")
        );
        let keys: [&[u8]; 6] = [
            b"",
            b"\0",
            b"a",
            b"a\0",
            b"product:P-01234",
            b"product:P-01235",
        ];
        let hashes: std::collections::HashSet<u64> = keys.iter().map(|k| hash(&state, k)).collect();
        assert_eq!(hashes.len(), keys.len(), "distinct keys collided");
    }

    #[test]
    fn the_low_bits_spread_over_buckets() {
        // A table of 1024 buckets indexes by the low 10 bits: 10,000 product tags must not
        // crowd into a few of them.
        let state = FastState::default();
        let mut buckets = [0u32; 1024];
        for p in 0..10_000 {
            let key = format!("product:P-{p:05}");
            buckets[(hash(&state, key.as_bytes()) & 1023) as usize] += 1;
        }
        let fullest = buckets.iter().copied().max().unwrap_or(0);
        assert!(
            fullest < 40,
            "a bucket holds {fullest} of 10,000 keys (about 10 expected)"
        );
    }
}

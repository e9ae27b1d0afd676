//! Event ids: UUID v7 (48 bits of Unix milliseconds, 74 random bits), made without a system
//! call per id.
//!
//! `Uuid::now_v7()` asks the operating system for randomness on every call, which costs more
//! than storing the event in a batched append. Here each thread seeds a SplitMix64 generator
//! once from the operating system (through one `now_v7()`), and every id takes its random bits
//! from it. Ids stay unique across threads and processes as long as the seeds differ, which
//! the 74 random bits of the seeding id make certain in practice.

use std::cell::Cell;

use chrono::Utc;
use uuid::Uuid;

thread_local! {
    static STATE: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    let random = Uuid::now_v7().as_u128();
    // The low 64 bits of a v7 UUID are its variant and 62 random bits; mix in the next
    // random bits too.
    (random as u64) ^ ((random >> 64) as u64).rotate_left(32)
}

/// The next 64 bits of the thread's SplitMix64 sequence.
fn next(state: &Cell<u64>) -> u64 {
    let s = state.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
    state.set(s);
    let mut z = s;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `n` new UUID v7 ids with the current time.
pub fn new_ids(n: usize) -> Vec<Uuid> {
    let millis = u64::try_from(Utc::now().timestamp_millis()).unwrap_or(0);
    STATE.with(|state| {
        (0..n)
            .map(|_| {
                let a = next(state).to_le_bytes();
                let b = next(state).to_le_bytes();
                let random = [a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], b[0], b[1]];
                uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid()
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::new_ids;

    #[test]
    fn ids_are_v7_and_unique_across_threads() {
        let handles: Vec<_> = (0..4)
            .map(|_| std::thread::spawn(|| new_ids(10_000)))
            .collect();
        let mut seen = HashSet::new();
        for h in handles {
            for id in h.join().unwrap() {
                assert_eq!(id.get_version_num(), 7);
                assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
                assert!(seen.insert(id), "duplicate id {id}");
            }
        }
        assert_eq!(seen.len(), 40_000);
    }
}

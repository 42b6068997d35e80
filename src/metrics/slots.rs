//! Key id → stats block: a lock-free open-addressing index in shared memory.
//!
//! Each entry's state word is `tag << 32 | state`, with `tag` the high half of the key's
//! hash. A claimer CASes EMPTY → CLAIMING|tag, writes the key, then publishes READY|tag with
//! Release. A reader that meets a CLAIMING entry with another tag moves on at once (it cannot
//! be the same key); only a same-tag claim in flight (a few dozen ns) is waited for.
//! Entries are never freed, so a READY entry is immutable and readers need no lock.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Key ids longer than this are not stored (they go to `other`): slots stay fixed-size.
pub const KEY_MAX_LEN: usize = 64;

/// Stats block 0 holds requests without a key id, block 1 keys that found no slot.
pub(crate) const UNAUTH_SLOT: u32 = 0;
pub(crate) const OTHER_SLOT: u32 = 1;
pub(crate) const FIRST_KEY_SLOT: u32 = 2;

const EMPTY: u64 = 0;
const CLAIMING: u64 = 1;
const READY: u64 = 2;
const STATE_MASK: u64 = 3;
const KEY_WORDS: usize = KEY_MAX_LEN / 8;
/// Past this many probes the table is crowded near this hash: count under `other`.
const MAX_PROBES: usize = 32;
/// A same-key claim takes nanoseconds; if it takes this long its writer was descheduled or
/// died mid-claim, and one sample under `other` beats stalling the worker.
const MAX_SPINS: u32 = 4096;

pub(crate) const UNAUTH_LABEL: &str = "-";
pub(crate) const OTHER_LABEL: &str = "other";

#[repr(C)]
pub(crate) struct IndexEntry {
    state: AtomicU64,
    /// `key_len << 32 | stats block`; written before READY.
    meta: AtomicU64,
    /// Key bytes packed little-endian, zero-padded; atomics so racing reads are defined.
    key: [AtomicU64; KEY_WORDS],
}

type Packed = [u64; KEY_WORDS];

/// `key` (at most KEY_MAX_LEN bytes; longer ones are cut) as little-endian words, zero-padded:
/// one copy into a fixed buffer, then whole-word loads (a per-chunk copy of a variable length
/// cost several times as much, on every lookup of a key and of a model).
fn pack(key: &[u8]) -> Packed {
    let mut b = [0u8; KEY_MAX_LEN];
    let n = key.len().min(KEY_MAX_LEN);
    b[..n].copy_from_slice(&key[..n]);
    core::array::from_fn(|i| {
        let w = &b[i * 8..i * 8 + 8];
        u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]])
    })
}

/// Fixed seed: every worker and every reload must place a key in the same entry.
fn hash(words: &Packed, len: usize) -> u64 {
    let mut h = 0x243f_6a88_85a3_08d3u64 ^ len as u64;
    for &w in &words[..len.div_ceil(8)] {
        h = (h ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^= h >> 29;
    }
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^ (h >> 32)
}

impl IndexEntry {
    fn matches(&self, words: &Packed, len: usize) -> bool {
        (self.meta.load(Ordering::Relaxed) >> 32) as usize == len
            && words[..len.div_ceil(8)]
                .iter()
                .zip(&self.key)
                .all(|(w, k)| *w == k.load(Ordering::Relaxed))
    }

    fn slot(&self) -> u32 {
        self.meta.load(Ordering::Relaxed) as u32
    }

    /// Key bytes and stats block of a READY entry, `None` otherwise.
    pub fn read(&self) -> Option<([u8; KEY_MAX_LEN], usize, u32)> {
        if self.state.load(Ordering::Acquire) & STATE_MASK != READY {
            return None;
        }
        let meta = self.meta.load(Ordering::Relaxed);
        let mut bytes = [0u8; KEY_MAX_LEN];
        for (i, k) in self.key.iter().enumerate() {
            bytes[i * 8..i * 8 + 8].copy_from_slice(&k.load(Ordering::Relaxed).to_le_bytes());
        }
        let len = ((meta >> 32) as usize).min(KEY_MAX_LEN);
        Some((bytes, len, meta as u32))
    }
}

/// Hands out stats blocks once each; never past `max_keys`.
fn alloc_block(next_key: &AtomicU32, max_keys: u32) -> u32 {
    let mut n = next_key.load(Ordering::Relaxed);
    while n < max_keys {
        match next_key.compare_exchange_weak(n, n + 1, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return FIRST_KEY_SLOT + n,
            Err(cur) => n = cur,
        }
    }
    OTHER_SLOT
}

/// Stats block for `key`, inserting it if new. Never allocates, never blocks for long.
pub(crate) fn lookup(index: &[IndexEntry], next_key: &AtomicU32, max_keys: u32, key: &[u8]) -> u32 {
    // The special labels double as key ids so the rendered `key` label stays unique.
    if key.is_empty() || key == UNAUTH_LABEL.as_bytes() {
        return UNAUTH_SLOT;
    }
    if key.len() > KEY_MAX_LEN || key == OTHER_LABEL.as_bytes() {
        return OTHER_SLOT;
    }
    debug_assert!(index.len().is_power_of_two());
    let mask = index.len() - 1;
    let words = pack(key);
    let h = hash(&words, key.len());
    let tag = h >> 32 << 32;
    let mut pos = h as usize & mask;
    for _ in 0..MAX_PROBES.min(index.len()) {
        let e = &index[pos];
        let mut st = e.state.load(Ordering::Acquire);
        let mut spins = 0;
        loop {
            if st == EMPTY {
                match e.state.compare_exchange(
                    EMPTY,
                    tag | CLAIMING,
                    Ordering::Acquire,
                    Ordering::Acquire,
                ) {
                    Ok(_) => {
                        // Keys past the bound still get an entry (pointing at `other`): the
                        // next lookup of that key then stops here instead of probing on.
                        let slot = alloc_block(next_key, max_keys);
                        for (k, w) in e.key.iter().zip(words) {
                            k.store(w, Ordering::Relaxed);
                        }
                        e.meta.store(
                            (key.len() as u64) << 32 | u64::from(slot),
                            Ordering::Relaxed,
                        );
                        e.state.store(tag | READY, Ordering::Release);
                        return slot;
                    }
                    Err(cur) => {
                        st = cur;
                        continue;
                    }
                }
            }
            if st & !STATE_MASK != tag {
                break;
            }
            if st & STATE_MASK == CLAIMING {
                spins += 1;
                if spins > MAX_SPINS {
                    return OTHER_SLOT;
                }
                std::hint::spin_loop();
                st = e.state.load(Ordering::Acquire);
                continue;
            }
            if e.matches(&words, key.len()) {
                return e.slot();
            }
            break;
        }
        pos = (pos + 1) & mask;
    }
    OTHER_SLOT
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(n: usize) -> Vec<IndexEntry> {
        // SAFETY: all-zero bytes are a valid IndexEntry (EMPTY state, atomics of 0).
        (0..n).map(|_| unsafe { std::mem::zeroed() }).collect()
    }

    #[test]
    fn insert_then_find() {
        let t = table(16);
        let next = AtomicU32::new(0);
        let a = lookup(&t, &next, 4, b"key-a");
        let b = lookup(&t, &next, 4, b"key-b");
        assert_eq!(a, FIRST_KEY_SLOT);
        assert_eq!(b, FIRST_KEY_SLOT + 1);
        assert_eq!(lookup(&t, &next, 4, b"key-a"), a);
        assert_eq!(next.load(Ordering::Relaxed), 2);
        let (bytes, len, slot) = t
            .iter()
            .find_map(|e| e.read().filter(|r| r.2 == b))
            .unwrap();
        assert_eq!(&bytes[..len], b"key-b");
        assert_eq!(slot, b);
    }

    #[test]
    fn specials_and_long_keys() {
        let t = table(8);
        let next = AtomicU32::new(0);
        assert_eq!(lookup(&t, &next, 4, b""), UNAUTH_SLOT);
        assert_eq!(lookup(&t, &next, 4, b"-"), UNAUTH_SLOT);
        assert_eq!(lookup(&t, &next, 4, b"other"), OTHER_SLOT);
        assert_eq!(lookup(&t, &next, 4, &[b'x'; 65]), OTHER_SLOT);
        let k64 = [b'y'; 64];
        let s = lookup(&t, &next, 4, &k64);
        assert_eq!(s, FIRST_KEY_SLOT);
        assert_eq!(lookup(&t, &next, 4, &k64), s);
        // A prefix of a stored key is a different key.
        assert_ne!(lookup(&t, &next, 4, &k64[..63]), s);
    }

    #[test]
    fn bound_sends_extra_keys_to_other_and_full_table_too() {
        let t = table(8);
        let next = AtomicU32::new(0);
        let mut slots = Vec::new();
        for i in 0..20 {
            slots.push(lookup(&t, &next, 3, format!("k{i}").as_bytes()));
        }
        assert_eq!(&slots[..3], &[2, 3, 4]);
        assert!(slots[3..].iter().all(|&s| s == OTHER_SLOT));
        assert_eq!(next.load(Ordering::Relaxed), 3);
        // Tracked keys stay found even with the table full of overflow entries.
        assert_eq!(lookup(&t, &next, 3, b"k1"), 3);
    }
}

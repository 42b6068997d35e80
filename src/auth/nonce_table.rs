//! The replay store's policy, over a fixed array of slots that the nginx glue places in shared
//! memory (and that tests and benches place on the heap).
//!
//! Why not the `lru` crate or an rbtree: the store must be shared by every worker process and
//! must never evict a live nonce (evicting one reopens a replay window). A fixed array of
//! buckets needs no allocator in shared memory, cannot fragment, makes its capacity exact and
//! lets the caller fail closed when a bucket has no room.
//!
//! Each (key id, nonce) maps to a 128-bit fingerprint keyed by a per-zone random secret (so a
//! client cannot aim its nonces at one bucket), and to two candidate buckets of `BUCKET` slots;
//! an insert goes to the one with more room ("two-choice" hashing keeps buckets even, so the
//! table fills to well over 90 % before the first bucket overflows). A slot is free when its
//! entry's expiry has passed: expiry happens lazily, on insert, like limit_req's.

use sha2::{Digest, Sha256};

pub const BUCKET: usize = 16;

/// One stored nonce. `expires == 0` marks a never-used slot.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Slot {
    pub fp: [u64; 2],
    /// Unix seconds after which the nonce's timestamp is outside the window: until then a
    /// replay would pass the clock check, so the entry must stay.
    pub expires: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insert {
    /// First sighting: recorded.
    Fresh,
    /// A live entry with this fingerprint exists.
    Replay,
    /// Both candidate buckets are full of live entries: fail closed.
    Full,
}

/// Maps (key id, nonce) to a fingerprint under the zone's secret. Built once per process from
/// the secret stored in the zone, with the secret's block already absorbed.
#[derive(Clone)]
pub struct Fingerprinter {
    keyed: Sha256,
}

impl Fingerprinter {
    pub fn new(secret: &[u8; 32]) -> Self {
        let mut block = [0u8; 64];
        block[..32].copy_from_slice(secret);
        let mut keyed = Sha256::new();
        keyed.update(block);
        Fingerprinter { keyed }
    }

    pub fn fingerprint(&self, key_id: &[u8], nonce: &[u8]) -> [u64; 2] {
        let mut h = self.keyed.clone();
        // The key id cannot contain NUL (validated), so the separator keeps pairs distinct.
        h.update(key_id);
        h.update([0u8]);
        h.update(nonce);
        let d = h.finalize();
        let mut a = [0u8; 8];
        let mut b = [0u8; 8];
        a.copy_from_slice(&d[..8]);
        b.copy_from_slice(&d[8..16]);
        [u64::from_le_bytes(a), u64::from_le_bytes(b)]
    }
}

/// How many slots a table of `bytes` holds (whole buckets only).
pub fn slots_for_bytes(bytes: usize) -> usize {
    bytes / std::mem::size_of::<Slot>() / BUCKET * BUCKET
}

fn bucket(slots: &mut [Slot], index: usize) -> &mut [Slot] {
    &mut slots[index * BUCKET..(index + 1) * BUCKET]
}

/// Looks for a live entry with `fp`; if none, records it with `expires`. The caller holds the
/// zone's lock for the duration.
pub fn check_and_insert(slots: &mut [Slot], fp: [u64; 2], expires: u64, now: u64) -> Insert {
    let nbuckets = (slots.len() / BUCKET) as u64;
    if nbuckets == 0 {
        return Insert::Full;
    }
    let b1 = (fp[0] % nbuckets) as usize;
    let b2 = (fp[1] % nbuckets) as usize;
    let mut room = [(0usize, None::<usize>); 2];
    for (i, b) in [b1, b2].into_iter().enumerate() {
        if i == 1 && b2 == b1 {
            room[1] = (0, None);
            break;
        }
        for (j, s) in bucket(slots, b).iter().enumerate() {
            let live = s.expires >= now && s.expires != 0;
            if live {
                if s.fp == fp {
                    return Insert::Replay;
                }
            } else {
                room[i].0 += 1;
                room[i].1.get_or_insert(j);
            }
        }
    }
    let (b, j) = match (room[0], room[1]) {
        ((n0, Some(j0)), (n1, _)) if n0 >= n1 => (b1, j0),
        (_, (_, Some(j1))) => (b2, j1),
        ((_, Some(j0)), _) => (b1, j0),
        _ => return Insert::Full,
    };
    bucket(slots, b)[j] = Slot {
        fp,
        // 0 means "never used"; a (pathological) zero expiry must still occupy the slot.
        expires: expires.max(1),
    };
    Insert::Fresh
}

/// Live entries (O(slots); for tests and occasional statistics, not per request).
pub fn live_entries(slots: &[Slot], now: u64) -> usize {
    slots
        .iter()
        .filter(|s| s.expires != 0 && s.expires >= now)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(n: u64) -> [u64; 2] {
        let f = Fingerprinter::new(&[7; 32]);
        f.fingerprint(b"key", format!("nonce-{n:016}").as_bytes())
    }

    #[test]
    fn second_sighting_is_a_replay_until_expiry() {
        let mut t = vec![Slot::default(); 64];
        assert_eq!(check_and_insert(&mut t, fp(1), 130, 100), Insert::Fresh);
        assert_eq!(check_and_insert(&mut t, fp(1), 130, 100), Insert::Replay);
        assert_eq!(check_and_insert(&mut t, fp(1), 130, 130), Insert::Replay);
        // Once expired the timestamp is outside the window anyway; the slot is reusable.
        assert_eq!(check_and_insert(&mut t, fp(1), 161, 131), Insert::Fresh);
    }

    #[test]
    fn fingerprints_depend_on_secret_key_id_and_nonce() {
        let a = Fingerprinter::new(&[1; 32]);
        let b = Fingerprinter::new(&[2; 32]);
        assert_ne!(a.fingerprint(b"k", b"n"), b.fingerprint(b"k", b"n"));
        assert_ne!(a.fingerprint(b"k", b"n"), a.fingerprint(b"k2", b"n"));
        // The separator keeps ("ab","c") and ("a","bc") apart.
        assert_ne!(a.fingerprint(b"ab", b"c"), a.fingerprint(b"a", b"bc"));
    }

    #[test]
    fn full_table_fails_closed_and_never_evicts_a_live_entry() {
        let mut t = vec![Slot::default(); 4 * BUCKET];
        let mut stored = Vec::new();
        let mut refused = 0;
        // Far more attempts than slots: every bucket ends up full of live entries.
        for n in 0..(t.len() as u64 * 20) {
            match check_and_insert(&mut t, fp(n), 1000, 100) {
                Insert::Fresh => stored.push(n),
                Insert::Full => refused += 1,
                Insert::Replay => panic!("distinct nonces collided"),
            }
        }
        assert_eq!(stored.len(), t.len(), "every slot used before refusing");
        assert!(refused > 0);
        for &s in &stored {
            assert_eq!(
                check_and_insert(&mut t, fp(s), 1000, 100),
                Insert::Replay,
                "{s} was evicted"
            );
        }
        // After expiry the space is reused.
        assert_eq!(
            check_and_insert(&mut t, fp(u64::MAX), 2000, 1001),
            Insert::Fresh
        );
    }

    #[test]
    fn large_table_fills_past_ninety_percent() {
        let mut t = vec![Slot::default(); 1 << 14];
        let mut n = 0;
        while check_and_insert(&mut t, fp(n), 1000, 100) == Insert::Fresh {
            n += 1;
        }
        assert!(
            n as usize * 10 >= t.len() * 9,
            "first refusal at {n} of {}",
            t.len()
        );
        assert_eq!(live_entries(&t, 100), n as usize);
    }

    #[test]
    fn tiny_or_empty_tables() {
        assert_eq!(check_and_insert(&mut [], fp(1), 10, 1), Insert::Full);
        let mut one = vec![Slot::default(); BUCKET];
        assert_eq!(check_and_insert(&mut one, fp(1), 10, 1), Insert::Fresh);
        assert_eq!(check_and_insert(&mut one, fp(1), 10, 1), Insert::Replay);
        assert_eq!(slots_for_bytes(24 * BUCKET * 3 + 5), 3 * BUCKET);
    }
}

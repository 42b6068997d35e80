//! The replay store's policy, over a fixed array of slots that the nginx glue places in shared
//! memory (and that tests and benches place on the heap).
//!
//! Why not the `lru` crate or an rbtree: the store must be shared by every worker process and
//! must never evict a live nonce (evicting one reopens a replay window). A fixed array of
//! buckets needs no allocator in shared memory, cannot fragment, makes its capacity exact and
//! lets the caller fail closed when a bucket has no room.
//!
//! Each (key id, nonce) maps, through SipHash-1-3 keyed by a per-zone random secret (so a client
//! cannot aim its nonces at one bucket, nor find collisions), to a stored 64-bit fingerprint
//! and to two candidate buckets of `BUCKET` slots;
//! an insert goes to the one with more room ("two-choice" hashing keeps buckets even, so the
//! table fills to well over 90 % before the first bucket overflows). A slot is free when its
//! entry's expiry has passed: expiry happens lazily, on insert, like limit_req's.

use core::hash::Hasher;

use siphasher::sip128::{Hasher128, SipHasher13};

pub const BUCKET: usize = 16;

/// One stored nonce, 16 bytes so a bucket is four cache lines. `expires == 0` marks a
/// never-used slot. A false match of two 64-bit keyed fingerprints within the 32 slots a
/// request looks at has probability 2^-59: a legitimate request refused once in ~10^17.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Slot {
    pub fp: u64,
    /// Unix seconds after which the nonce's timestamp is outside the window: until then a
    /// replay would pass the clock check, so the entry must stay. u32 lasts until 2106.
    pub expires: u32,
    _pad: u32,
}

/// Where a (key id, nonce) pair lives: its stored fingerprint and its two candidate buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    pub fp: u64,
    pub place: u64,
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
/// the secret stored in the zone.
#[derive(Clone)]
pub struct Fingerprinter {
    keyed: SipHasher13,
}

impl Fingerprinter {
    pub fn new(secret: &[u8; 32]) -> Self {
        let mut key = [0u8; 16];
        key.copy_from_slice(&secret[..16]);
        Fingerprinter {
            keyed: SipHasher13::new_with_key(&key),
        }
    }

    pub fn fingerprint(&self, key_id: &[u8], nonce: &[u8]) -> Fingerprint {
        let mut h = self.keyed;
        // The key id cannot contain NUL (validated), so the separator keeps pairs distinct.
        h.write(key_id);
        h.write(&[0u8]);
        h.write(nonce);
        let out = h.finish128();
        Fingerprint {
            fp: out.h1,
            place: out.h2,
        }
    }
}

/// How far apart, in seconds, the clocks of two workers sharing a zone may be. Each nginx worker
/// caches its own `ngx_time()`, refreshed only when its event loop turns, so a busy worker lags
/// the others: a lagging worker still accepts a timestamp the others already see as stale, and
/// a worker running ahead would otherwise reuse the slot of a nonce the lagging one must still
/// refuse. A worker blocked for longer than this is a bug in its own right (nginx logs it).
pub const WORKER_CLOCK_MARGIN: u64 = 5;

/// The expiry to store with a nonce whose (accepted) timestamp is `timestamp`: until then some
/// worker, with a clock up to `WORKER_CLOCK_MARGIN` behind the one that frees the slot, would
/// still pass `|now - timestamp| <= clock_skew`, so the entry must stay. A worker frees a slot
/// only when `expires < its now`; with `expires = timestamp + clock_skew + margin` that `now`
/// is beyond `timestamp + clock_skew` on every worker.
pub fn nonce_expires(timestamp: u64, clock_skew: u64) -> u64 {
    timestamp
        .saturating_add(clock_skew)
        .saturating_add(WORKER_CLOCK_MARGIN)
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
pub fn check_and_insert(slots: &mut [Slot], f: Fingerprint, expires: u64, now: u64) -> Insert {
    let nbuckets = (slots.len() / BUCKET) as u64;
    if nbuckets == 0 {
        return Insert::Full;
    }
    let b1 = ((f.place & 0xffff_ffff) % nbuckets) as usize;
    let b2 = ((f.place >> 32) % nbuckets) as usize;
    let now = now.min(u64::from(u32::MAX)) as u32;
    let (o1, o2) = (b1 * BUCKET, b2 * BUCKET);
    // Both buckets are scanned in one interleaved pass so the two cache misses (the table is
    // much larger than the cache) overlap instead of following each other.
    let mut free = [(0usize, usize::MAX); 2];
    for j in 0..BUCKET {
        for (k, o) in [o1, o2].into_iter().enumerate() {
            let s = &slots[o + j];
            if s.expires != 0 && s.expires >= now {
                if s.fp == f.fp {
                    return Insert::Replay;
                }
            } else {
                free[k].0 += 1;
                free[k].1 = free[k].1.min(j);
            }
        }
    }
    if b1 == b2 {
        free[1] = (0, usize::MAX);
    }
    // The emptier bucket takes the entry; this keeps buckets level as the table fills.
    let (b, j) = if free[0].0 >= free[1].0 && free[0].0 > 0 {
        (b1, free[0].1)
    } else if free[1].0 > 0 {
        (b2, free[1].1)
    } else {
        return Insert::Full;
    };
    bucket(slots, b)[j] = Slot {
        fp: f.fp,
        // 0 means "never used"; a (pathological) zero expiry must still occupy the slot.
        expires: expires.clamp(1, u64::from(u32::MAX)) as u32,
        _pad: 0,
    };
    Insert::Fresh
}

/// Live entries (O(slots); for tests and occasional statistics, not per request).
pub fn live_entries(slots: &[Slot], now: u64) -> usize {
    slots
        .iter()
        .filter(|s| s.expires != 0 && u64::from(s.expires) >= now)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(n: u64) -> Fingerprint {
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
    fn large_table_fills_past_85_percent() {
        let mut t = vec![Slot::default(); 1 << 14];
        let mut n = 0;
        while check_and_insert(&mut t, fp(n), 1000, 100) == Insert::Fresh {
            n += 1;
        }
        assert!(
            n as usize * 100 >= t.len() * 85,
            "first refusal at {n} of {}",
            t.len()
        );
        assert_eq!(live_entries(&t, 100), n as usize);
    }

    /// Two workers whose cached clocks are 1 s apart share one bucket. The lagging worker
    /// admits a nonce; the other one, ahead, reuses its slot for a new nonce once the entry
    /// looks expired to it; the lagging worker then admits the replay, its window still open.
    /// With `expires` = timestamp + skew (the glue's old formula) the replay got through.
    fn replay_admitted_across_skewed_workers(expires: fn(u64, u64) -> u64) -> bool {
        let skew = 30;
        let (behind, ahead) = (1000, 1001);
        let ts = behind - skew;
        let mut t = vec![Slot::default(); BUCKET];
        let admit = |t: &mut [Slot], n: u64, now: u64| {
            crate::auth::verify::check_window(ts, now, skew).is_ok()
                && check_and_insert(t, fp(n), expires(ts, skew), now) == Insert::Fresh
        };
        assert!(admit(&mut t, 1, behind));
        // Other requests on the worker that is ahead; their timestamps are current for it.
        for n in 2..=BUCKET as u64 {
            check_and_insert(&mut t, fp(n), expires(ahead, skew), ahead);
        }
        admit(&mut t, 1, behind)
    }

    #[test]
    fn worker_clock_skew_never_admits_a_replay() {
        assert!(
            replay_admitted_across_skewed_workers(|ts, skew| ts + skew),
            "the scenario no longer shows the old bug"
        );
        assert!(!replay_admitted_across_skewed_workers(nonce_expires));
        assert_eq!(nonce_expires(u64::MAX - 1, 30), u64::MAX);
    }

    #[test]
    fn tiny_or_empty_tables() {
        assert_eq!(check_and_insert(&mut [], fp(1), 10, 1), Insert::Full);
        let mut one = vec![Slot::default(); BUCKET];
        assert_eq!(check_and_insert(&mut one, fp(1), 10, 1), Insert::Fresh);
        assert_eq!(check_and_insert(&mut one, fp(1), 10, 1), Insert::Replay);
        assert_eq!(slots_for_bytes(16 * BUCKET * 3 + 5), 3 * BUCKET);
        assert_eq!(std::mem::size_of::<Slot>(), 16);
    }
}

use std::collections::HashMap;

use crate::auth::nonce_table::{
    check_and_insert, nonce_expires, Fingerprinter, Insert, Slot, BUCKET,
};
use crate::auth::verify::check_window;

/// How far apart the simulated workers' clocks are: the margin the README promises, written
/// out rather than taken from `WORKER_CLOCK_MARGIN` so that lowering the constant is caught.
const CLOCK_SPREAD: u64 = 5;

/// Input: the clock skew (first byte), then requests of three bytes each: how far real time
/// advances and which worker clock (up to CLOCK_SPREAD s apart) serves it, which of
/// 32 nonces it carries, and its timestamp around that clock. Each request that passes the
/// window goes to a two-bucket table, so slots are reused all the time. Promises: a nonce is
/// never admitted while an earlier admission of it would still pass this worker's window (a
/// live duplicate), and a replay is only reported for a nonce admitted before.
pub fn check_nonce_table(data: &[u8]) {
    let Some((&first, ops)) = data.split_first() else {
        return;
    };
    let skew = 1 + u64::from(first % 60);
    let fingerprints = Fingerprinter::new(&[0x5a; 32]);
    let mut slots = vec![Slot::default(); 2 * BUCKET];
    let mut admitted: HashMap<u8, Vec<u64>> = HashMap::new();
    let mut real = 1_700_000_000u64;
    for op in ops.chunks_exact(3) {
        real += u64::from(op[0] >> 5);
        let now = real + u64::from(op[0] & 0x1f) % (CLOCK_SPREAD + 1);
        let nonce = op[1] % 32;
        let ts = (now + u64::from(op[2]) % (2 * skew + 7)).saturating_sub(skew + 3);
        if check_window(ts, now, skew).is_err() {
            continue;
        }
        let f = fingerprints.fingerprint(b"key", &[b'n', nonce]);
        let earlier = admitted.entry(nonce).or_default();
        match check_and_insert(&mut slots, f, nonce_expires(ts, skew), now) {
            Insert::Fresh => {
                let live = earlier
                    .iter()
                    .find(|&&t| check_window(t, now, skew).is_ok());
                assert!(
                    live.is_none(),
                    "nonce {nonce} admitted at {now} (ts {ts}) while its admission with ts {live:?} is live"
                );
                earlier.push(ts);
            }
            Insert::Replay => assert!(!earlier.is_empty(), "false replay of nonce {nonce}"),
            Insert::Full => {}
        }
    }
}

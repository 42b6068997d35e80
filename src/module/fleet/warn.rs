//! How often an outage of the fleet's Redis is written to the error log.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// One warning per worker per 10 s: an outage must be visible without flooding the log.
pub fn should_warn(now_s: u64) -> bool {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let last = LAST.load(Relaxed);
    now_s >= last.saturating_add(10) && LAST.compare_exchange(last, now_s, Relaxed, Relaxed).is_ok()
}

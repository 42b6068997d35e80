//! The fleet's Redis round trips, host-wide (not per key): their latency, their failures by
//! kind, and the requests relayed on local state because Redis gave no answer.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Upper bounds in µs: a loopback round trip is ~50 µs, a cross-region one tens of ms, and
/// the default timeout 50 ms.
pub const REDIS_BOUNDS_US: [u64; 11] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
];
pub(crate) const N: usize = REDIS_BOUNDS_US.len() + 1;
/// The `le` label values, in seconds.
pub(crate) const LABELS: [&str; N] = [
    "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1",
    "0.25", "+Inf",
];
/// Failure kinds, in the glue's order: connect, timeout, protocol, error_reply.
pub const REDIS_ERROR_KINDS: [&str; 4] = ["connect", "timeout", "protocol", "error_reply"];

#[repr(C)]
pub(crate) struct FleetBlock {
    buckets: [AtomicU64; N],
    sum_us: AtomicU64,
    errors: [AtomicU64; REDIS_ERROR_KINDS.len()],
    fallbacks: AtomicU64,
}

/// A plain copy for rendering.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FleetStats {
    pub buckets: [u64; N],
    pub sum_us: u64,
    pub errors: [u64; REDIS_ERROR_KINDS.len()],
    pub fallbacks: u64,
}

impl FleetBlock {
    /// One round trip of `us`; `failed` is an index into [`REDIS_ERROR_KINDS`].
    pub fn record(&self, us: u64, failed: Option<usize>) {
        let b = REDIS_BOUNDS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(N - 1);
        self.buckets[b].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
        if let Some(e) = failed.and_then(|i| self.errors.get(i)) {
            e.fetch_add(1, Relaxed);
        }
    }

    /// A failure outside a request's round trip (a settlement or a renewal was lost): counted
    /// with the others, but no round trip to time.
    pub fn count_errors(&self, kind: usize, n: u64) {
        if let Some(e) = self.errors.get(kind) {
            e.fetch_add(n, Relaxed);
        }
    }

    pub fn count_fallback(&self) {
        self.fallbacks.fetch_add(1, Relaxed);
    }

    pub fn stats(&self) -> FleetStats {
        FleetStats {
            buckets: self.buckets.each_ref().map(|a| a.load(Relaxed)),
            sum_us: self.sum_us.load(Relaxed),
            errors: self.errors.each_ref().map(|a| a.load(Relaxed)),
            fallbacks: self.fallbacks.load(Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_renders() {
        // SAFETY-free: zeroed atomics are a valid block.
        let b: FleetBlock = FleetBlock {
            buckets: Default::default(),
            sum_us: AtomicU64::new(0),
            errors: Default::default(),
            fallbacks: AtomicU64::new(0),
        };
        b.record(80, None);
        b.record(300, None);
        b.record(50_001, Some(1));
        b.record(9_999_999, Some(0));
        b.count_fallback();
        let s = b.stats();
        assert_eq!(s.errors, [1, 1, 0, 0]);
        let mut out = String::new();
        super::super::render::render_fleet(&mut out, &s);
        assert!(out.contains("relay_guard_redis_seconds_bucket{le=\"0.0001\"} 1\n"));
        assert!(out.contains("relay_guard_redis_seconds_bucket{le=\"0.0005\"} 2\n"));
        assert!(out.contains("relay_guard_redis_seconds_bucket{le=\"0.25\"} 3\n"));
        assert!(out.contains("relay_guard_redis_seconds_bucket{le=\"+Inf\"} 4\n"));
        assert!(out.contains("relay_guard_redis_seconds_sum 10.050380\n"));
        assert!(out.contains("relay_guard_redis_seconds_count 4\n"));
        assert!(out.contains("relay_guard_redis_errors_total{kind=\"timeout\"} 1\n"));
        assert!(out.contains("relay_guard_redis_fallbacks_total 1\n"));
    }
}

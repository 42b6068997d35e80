//! Fixed-bucket latency histograms. Bounds span a cache hit on a tiny prompt (~10 ms) to a
//! long extended-thinking stream (10 min); fixed so every worker and every reload agree.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::quantile::quantile;

/// Upper bounds (inclusive, like Prometheus `le`) in milliseconds; a final +Inf bucket follows.
pub const BUCKET_BOUNDS_MS: [u64; 16] = [
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 20_000, 30_000, 60_000, 120_000,
    300_000, 600_000,
];
pub const N_BUCKETS: usize = BUCKET_BOUNDS_MS.len() + 1;
/// The `le` label values, in seconds, precomputed so rendering does no float formatting.
pub const BUCKET_LABELS: [&str; N_BUCKETS] = [
    "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "20", "30", "60", "120",
    "300", "600", "+Inf",
];

pub fn bucket_index(ms: u64) -> usize {
    // 16 compares on a constant table: cheaper than a branchy binary search at this size.
    BUCKET_BOUNDS_MS
        .iter()
        .position(|&b| ms <= b)
        .unwrap_or(N_BUCKETS - 1)
}

/// No separate count: the count is the sum of the buckets, so a reader racing writers still
/// gets `+Inf == _count`, which Prometheus requires.
#[repr(C)]
pub(crate) struct AtomicHistogram {
    buckets: [AtomicU64; N_BUCKETS],
    sum_ms: AtomicU64,
}

impl AtomicHistogram {
    #[inline]
    pub fn observe(&self, ms: u64) {
        self.buckets[bucket_index(ms)].fetch_add(1, Relaxed);
        self.sum_ms.fetch_add(ms, Relaxed);
    }

    pub fn load(&self) -> Histogram {
        Histogram {
            buckets: std::array::from_fn(|i| self.buckets[i].load(Relaxed)),
            sum_ms: self.sum_ms.load(Relaxed),
        }
    }
}

/// Plain copy of one histogram; `buckets` are per-bucket (not cumulative) counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Histogram {
    pub buckets: [u64; N_BUCKETS],
    pub sum_ms: u64,
}

impl Histogram {
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Estimated q-quantile in milliseconds (see [`quantile`]).
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        quantile(&self.buckets, &BUCKET_BOUNDS_MS, q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_distribution_within_bucket_resolution() {
        let mut b = [0u64; N_BUCKETS];
        for i in 0..10_000u64 {
            b[bucket_index(i % 1000)] += 1;
        }
        let p99 = quantile(&b, &BUCKET_BOUNDS_MS, 0.99).unwrap();
        // 990 ms falls in (500, 1000].
        assert!(p99 > 500.0 && p99 <= 1000.0, "{p99}");
        let p50 = quantile(&b, &BUCKET_BOUNDS_MS, 0.5).unwrap();
        assert!(p50 > 250.0 && p50 <= 500.0, "{p50}");
        // Uniform data inside a bucket makes interpolation exact up to the sampling grid.
        assert!((p99 - 990.0).abs() < 5.0, "{p99}");
    }

    #[test]
    fn bounds_are_inclusive() {
        assert_eq!(bucket_index(0), 0);
        assert_eq!(bucket_index(10), 0);
        assert_eq!(bucket_index(11), 1);
        assert_eq!(bucket_index(600_000), 15);
        assert_eq!(bucket_index(600_001), 16);
        assert_eq!(bucket_index(u64::MAX), 16);
    }

    #[test]
    fn labels_match_bounds() {
        for (b, l) in BUCKET_BOUNDS_MS.iter().zip(BUCKET_LABELS) {
            assert_eq!(*b as f64 / 1000.0, l.parse::<f64>().unwrap());
        }
        assert_eq!(BUCKET_LABELS[N_BUCKETS - 1], "+Inf");
    }

    #[test]
    fn observe_counts_and_sums() {
        // SAFETY: all-zero bytes are a valid AtomicHistogram (atomics of 0).
        let h: AtomicHistogram = unsafe { std::mem::zeroed() };
        for ms in [5, 10, 11, 700_000] {
            h.observe(ms);
        }
        let s = h.load();
        assert_eq!(s.count(), 4);
        assert_eq!(s.sum_ms, 700_026);
        assert_eq!(s.buckets[0], 2);
        assert_eq!(s.buckets[1], 1);
        assert_eq!(s.buckets[16], 1);
    }
}

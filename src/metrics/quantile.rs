//! Quantile estimate from bucket counts, matching Prometheus `histogram_quantile` so the
//! HTML page and a Grafana panel show the same P99.

/// `buckets[i]` counts observations in `(bounds_ms[i-1], bounds_ms[i]]` (per bucket, not
/// cumulative); `buckets` has one more entry than `bounds_ms`, the +Inf bucket. Interpolates
/// linearly inside the bucket holding the rank, with 0 as the first bucket's lower bound; a
/// rank in the +Inf bucket yields the highest finite bound. `None` for no observations, `q`
/// outside `[0, 1]`, or mismatched lengths.
pub fn quantile(buckets: &[u64], bounds_ms: &[u64], q: f64) -> Option<f64> {
    if !(0.0..=1.0).contains(&q) || buckets.len() != bounds_ms.len() + 1 {
        return None;
    }
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut below = 0u64;
    for (i, &n) in buckets.iter().enumerate() {
        let cum = below + n;
        if cum as f64 >= rank && n > 0 {
            let Some(&upper) = bounds_ms.get(i) else {
                return bounds_ms.last().map(|&b| b as f64);
            };
            let lower = if i == 0 { 0.0 } else { bounds_ms[i - 1] as f64 };
            let frac = (rank - below as f64) / n as f64;
            return Some(lower + (upper as f64 - lower) * frac);
        }
        below = cum;
    }
    bounds_ms.last().map(|&b| b as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edges() {
        let bounds = [10, 100];
        assert_eq!(quantile(&[0, 0, 0], &bounds, 0.5), None);
        assert_eq!(quantile(&[1, 0, 0], &bounds, 1.5), None);
        assert_eq!(quantile(&[1, 0], &bounds, 0.5), None);
        assert_eq!(quantile(&[0, 0, 5], &bounds, 0.5), Some(100.0));
        assert_eq!(quantile(&[4, 0, 0], &bounds, 0.5), Some(5.0));
        assert_eq!(quantile(&[0, 2, 0], &bounds, 0.0), Some(10.0));
        assert_eq!(quantile(&[2, 2, 0], &bounds, 1.0), Some(100.0));
    }
}

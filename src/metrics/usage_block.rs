//! Token counters of one (key, model) pair: the atomic block in shared memory and its copy.

use std::mem::size_of;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::usage::TokenCounts;

/// Number of token types (`TokenCounts::TOKEN_TYPES`).
pub(crate) const N_TOKEN_TYPES: usize = TokenCounts::TOKEN_TYPES.len();

/// One cache line: five token counters, web-search requests, responses with usage.
#[repr(C)]
pub(crate) struct UsageBlock {
    tokens: [AtomicU64; N_TOKEN_TYPES],
    web_search: AtomicU64,
    responses: AtomicU64,
    _pad: u64,
}

const _: () = assert!(size_of::<UsageBlock>() == 64);

/// The values come from the upstream: a hostile one must pin the counter at the maximum
/// instead of wrapping it back to a small number (which would hide the spend).
fn add_saturating(a: &AtomicU64, v: u64) {
    if v != 0 {
        // The closure always returns Some, so fetch_update cannot fail.
        let _ = a.fetch_update(Relaxed, Relaxed, |x| Some(x.saturating_add(v)));
    }
}

impl UsageBlock {
    #[inline]
    pub fn apply(&self, c: &TokenCounts) {
        for (a, v) in self.tokens.iter().zip(c.tokens()) {
            add_saturating(a, v);
        }
        add_saturating(&self.web_search, c.web_search_requests);
        add_saturating(&self.responses, 1);
    }

    pub fn load(&self) -> UsageStats {
        UsageStats {
            tokens: std::array::from_fn(|i| self.tokens[i].load(Relaxed)),
            web_search_requests: self.web_search.load(Relaxed),
            responses: self.responses.load(Relaxed),
        }
    }
}

/// Plain copy of one (key, model) block; `tokens` by `TokenCounts::TOKEN_TYPES`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageStats {
    pub tokens: [u64; N_TOKEN_TYPES],
    pub web_search_requests: u64,
    /// Responses that reported a usage object.
    pub responses: u64,
}

impl UsageStats {
    pub fn token(&self, ty: &str) -> Option<u64> {
        TokenCounts::TOKEN_TYPES
            .iter()
            .position(|t| *t == ty)
            .map(|i| self.tokens[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_and_saturates() {
        // SAFETY: all-zero bytes are a valid UsageBlock (atomics and integers of 0).
        let b: Box<UsageBlock> = unsafe { Box::new(std::mem::zeroed()) };
        let c = TokenCounts {
            input: 10,
            output: 20,
            cache_write_5m: 3,
            cache_write_1h: 4,
            cache_read: 5,
            web_search_requests: 1,
        };
        b.apply(&c);
        b.apply(&c);
        let s = b.load();
        assert_eq!(s.tokens, [20, 40, 6, 8, 10]);
        assert_eq!((s.web_search_requests, s.responses), (2, 2));
        b.apply(&TokenCounts {
            output: u64::MAX,
            ..TokenCounts::default()
        });
        let s = b.load();
        assert_eq!(s.token("output"), Some(u64::MAX));
        assert_eq!(s.token("input"), Some(20));
        assert_eq!(s.responses, 3);
    }
}

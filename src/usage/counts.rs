//! The Anthropic `usage` object as the relay keeps it. The merge rule for streams lives in
//! [`Usage::set`]: the scanner sets each field as its number completes, so a field reported
//! later (`message_delta.usage` is cumulative) replaces the earlier value and an absent one
//! keeps it. Right for Anthropic (input and cache counts only in `message_start`) and for
//! upstreams that repeat them in `message_delta`.

/// One `usage` field. The scanner names the field it parsed; `Usage::set` stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// `input_tokens`
    Input,
    /// `output_tokens`
    Output,
    /// `cache_creation_input_tokens`: all cache writes, whatever their TTL.
    CacheCreation,
    /// `cache_creation.ephemeral_5m_input_tokens`
    CacheWrite5m,
    /// `cache_creation.ephemeral_1h_input_tokens`
    CacheWrite1h,
    /// `cache_read_input_tokens`
    CacheRead,
    /// `server_tool_use.web_search_requests`
    WebSearch,
}

/// What the response reported, field by field; `None` where it said nothing (which is not
/// the same as 0 when a later event fills the field in).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input: Option<u64>,
    pub output: Option<u64>,
    pub cache_creation: Option<u64>,
    pub cache_write_5m: Option<u64>,
    pub cache_write_1h: Option<u64>,
    pub cache_read: Option<u64>,
    pub web_search: Option<u64>,
}

impl Usage {
    /// Nothing reported (`Usage::default()`, usable in a `const`).
    pub const NONE: Usage = Usage {
        input: None,
        output: None,
        cache_creation: None,
        cache_write_5m: None,
        cache_write_1h: None,
        cache_read: None,
        web_search: None,
    };

    pub fn set(&mut self, f: Field, v: u64) {
        *match f {
            Field::Input => &mut self.input,
            Field::Output => &mut self.output,
            Field::CacheCreation => &mut self.cache_creation,
            Field::CacheWrite5m => &mut self.cache_write_5m,
            Field::CacheWrite1h => &mut self.cache_write_1h,
            Field::CacheRead => &mut self.cache_read,
            Field::WebSearch => &mut self.web_search,
        } = Some(v);
    }

    pub fn is_empty(&self) -> bool {
        *self == Usage::default()
    }

    /// The counts the relay adds up. Cache writes the breakdown does not cover
    /// (`cache_creation_input_tokens` alone, or more than the two TTLs add up to) count as
    /// 5-minute writes, the API's default TTL.
    pub fn counts(&self) -> TokenCounts {
        let w5 = self.cache_write_5m.unwrap_or(0);
        let w1h = self.cache_write_1h.unwrap_or(0);
        let unbroken = self
            .cache_creation
            .unwrap_or(0)
            .saturating_sub(w5.saturating_add(w1h));
        TokenCounts {
            input: self.input.unwrap_or(0),
            output: self.output.unwrap_or(0),
            cache_write_5m: w5.saturating_add(unbroken),
            cache_write_1h: w1h,
            cache_read: self.cache_read.unwrap_or(0),
            web_search_requests: self.web_search.unwrap_or(0),
        }
    }
}

/// One response's totals, ready to add to counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenCounts {
    pub input: u64,
    pub output: u64,
    pub cache_write_5m: u64,
    pub cache_write_1h: u64,
    pub cache_read: u64,
    pub web_search_requests: u64,
}

impl TokenCounts {
    /// The `type` label of `relay_guard_tokens_total`, in [`TokenCounts::tokens`] order.
    pub const TOKEN_TYPES: [&'static str; 5] = [
        "input",
        "output",
        "cache_write_5m",
        "cache_write_1h",
        "cache_read",
    ];

    pub fn tokens(&self) -> [u64; 5] {
        [
            self.input,
            self.output,
            self.cache_write_5m,
            self.cache_write_1h,
            self.cache_read,
        ]
    }

    /// All cache writes (`$relay_guard_usage_cache_write`).
    pub fn cache_write(&self) -> u64 {
        self.cache_write_5m.saturating_add(self.cache_write_1h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_writes_split_by_ttl() {
        let mut u = Usage::default();
        u.set(Field::CacheCreation, 100);
        assert_eq!(u.counts().cache_write_5m, 100);
        u.set(Field::CacheWrite1h, 60);
        u.set(Field::CacheWrite5m, 40);
        let c = u.counts();
        assert_eq!(
            (c.cache_write_5m, c.cache_write_1h, c.cache_write()),
            (40, 60, 100)
        );
        // A breakdown larger than the total is taken as is, never wrapped.
        u.set(Field::CacheCreation, 10);
        assert_eq!(u.counts().cache_write(), 100);
        u.set(Field::CacheWrite5m, u64::MAX);
        assert_eq!(u.counts().cache_write(), u64::MAX);
    }
}

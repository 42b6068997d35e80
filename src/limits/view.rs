//! What `relay_guard_usage` answers: one key's limits, where it stands and when each resets.

use serde_json::{json, Value};

use super::window::{utc_iso, Window};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateView {
    pub per_minute: u32,
    pub burst: u32,
    /// Requests admissible right now.
    pub remaining: u64,
    /// When `remaining` is back to `burst` (Unix seconds, rounded up).
    pub full_at_s: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConcurrencyView {
    pub limit: u32,
    pub in_flight: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetView {
    pub budget: u64,
    pub window: Window,
    pub used: u64,
    pub start_s: u64,
    pub end_s: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsView {
    pub rate: Option<RateView>,
    pub concurrent: Option<ConcurrencyView>,
    pub tokens: Vec<BudgetView>,
}

impl LimitsView {
    /// The JSON document; a limit the key does not have is `null` (`tokens`: `[]`).
    pub fn to_json(&self, key: &str, now_s: u64) -> Vec<u8> {
        let rate = self.rate.as_ref().map_or(Value::Null, |r| {
            json!({"limit": r.per_minute, "burst": r.burst, "remaining": r.remaining,
                   "full_at": utc_iso(r.full_at_s.max(now_s))})
        });
        let concurrent = self.concurrent.as_ref().map_or(Value::Null, |c| {
            json!({"limit": c.limit, "in_flight": c.in_flight,
                   "remaining": u64::from(c.limit).saturating_sub(c.in_flight)})
        });
        let tokens: Vec<Value> = self
            .tokens
            .iter()
            .map(|t| {
                json!({"per": t.window.label(), "budget": t.budget, "used": t.used,
                       "remaining": t.budget.saturating_sub(t.used),
                       "window_start": utc_iso(t.start_s), "resets_at": utc_iso(t.end_s)})
            })
            .collect();
        let doc = json!({"key": key, "now": utc_iso(now_s),
                         "requests_per_minute": rate, "concurrent_requests": concurrent,
                         "tokens": tokens});
        // A Value of strings and integers always serializes; an empty body beats a panic.
        let mut out = serde_json::to_vec(&doc).unwrap_or_default();
        out.push(b'\n');
        out
    }
}

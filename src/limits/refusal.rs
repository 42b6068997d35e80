//! Why a limit refused a request, and what the client is told.

/// Which limit; the order is the `limit` label's and the shared block's counter order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    Rpm,
    Concurrency,
    Tokens,
}

impl LimitKind {
    pub const ALL: [LimitKind; 3] = [LimitKind::Rpm, LimitKind::Concurrency, LimitKind::Tokens];

    pub fn index(self) -> usize {
        self as usize
    }

    /// The `limit` label of `relay_guard_limited_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::Rpm => "rpm",
            LimitKind::Concurrency => "concurrency",
            LimitKind::Tokens => "tokens",
        }
    }

    /// The keys file's name for it, which messages use.
    pub fn field(self) -> &'static str {
        match self {
            LimitKind::Rpm => "requests_per_minute",
            LimitKind::Concurrency => "concurrent_requests",
            LimitKind::Tokens => "tokens",
        }
    }

    /// `$relay_guard_status`.
    pub fn status(self, dry_run: bool) -> &'static str {
        match (self, dry_run) {
            (LimitKind::Rpm, false) => "LIMIT_RPM",
            (LimitKind::Concurrency, false) => "LIMIT_CONCURRENCY",
            (LimitKind::Tokens, false) => "LIMIT_TOKENS",
            (LimitKind::Rpm, true) => "DRY_RUN_LIMIT_RPM",
            (LimitKind::Concurrency, true) => "DRY_RUN_LIMIT_CONCURRENCY",
            (LimitKind::Tokens, true) => "DRY_RUN_LIMIT_TOKENS",
        }
    }
}

/// Longest wait a client should sit out by itself; past it, `x-should-retry: false` (an
/// exhausted daily budget is not worth an SDK's retry loop).
pub const RETRY_BUDGET_S: u64 = 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub kind: LimitKind,
    /// Whole seconds until the limit would admit this request, at least 1.
    pub retry_after_s: u64,
    /// The limit's value, for the message (requests per minute, slots, or the budget).
    pub limit: u64,
    /// Tokens: the window's length in seconds; 0 otherwise.
    pub window_s: u64,
}

impl Refusal {
    pub fn should_retry(&self) -> bool {
        self.retry_after_s <= RETRY_BUDGET_S
    }

    /// The 429's message (the key id is the caller's to add).
    pub fn message(&self) -> String {
        match self.kind {
            LimitKind::Rpm => format!(
                "over its requests_per_minute limit ({} per minute); retry in {} s",
                self.limit, self.retry_after_s
            ),
            LimitKind::Concurrency => format!(
                "over its concurrent_requests limit ({} in flight); retry when one finishes",
                self.limit
            ),
            LimitKind::Tokens => format!(
                "has used its tokens budget ({} per {}); the window resets in {} s",
                self.limit,
                super::window::Window::from_secs(self.window_s)
                    .map_or_else(|| format!("{} s", self.window_s), |w| w.label()),
                self.retry_after_s
            ),
        }
    }
}

/// Whole seconds, rounded up, at least 1.
pub(crate) fn ceil_secs_ns(ns: u64) -> u64 {
    ns.div_ceil(1_000_000_000).max(1)
}

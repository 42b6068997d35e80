//! The result of authenticating one request: a stable token for `$relay_guard_status` and logs,
//! the HTTP status a rejection gets, and a message that is safe to show the client.

/// Every way a request can end up after the access check. The `as_str` tokens are a public
/// interface (operators match on `$relay_guard_status`): never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Ok,
    Missing,
    Malformed,
    UnknownKey,
    BadSignature,
    Stale,
    Replay,
    StoreFull,
    BadToken,
    Expired,
    TtlTooLong,
    /// The fleet's Redis could not answer (`relay_guard_redis_failure closed`).
    StoreUnavailable,
}

impl Outcome {
    pub const ALL: [Outcome; 12] = [
        Outcome::Ok,
        Outcome::Missing,
        Outcome::Malformed,
        Outcome::UnknownKey,
        Outcome::BadSignature,
        Outcome::Stale,
        Outcome::Replay,
        Outcome::StoreFull,
        Outcome::BadToken,
        Outcome::Expired,
        Outcome::TtlTooLong,
        Outcome::StoreUnavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "OK",
            Outcome::Missing => "MISSING",
            Outcome::Malformed => "MALFORMED",
            Outcome::UnknownKey => "UNKNOWN_KEY",
            Outcome::BadSignature => "BAD_SIGNATURE",
            Outcome::Stale => "STALE",
            Outcome::Replay => "REPLAY",
            Outcome::StoreFull => "STORE_FULL",
            Outcome::BadToken => "BAD_TOKEN",
            Outcome::Expired => "EXPIRED",
            Outcome::TtlTooLong => "TTL_TOO_LONG",
            Outcome::StoreUnavailable => "STORE_UNAVAILABLE",
        }
    }

    /// `$relay_guard_status` under `relay_guard_dry_run on`: the would-be verdict, prefixed so
    /// that dashboards never count a dry-run pass as a real one.
    pub fn dry_run_str(self) -> &'static str {
        match self {
            Outcome::Ok => "DRY_RUN_OK",
            Outcome::Missing => "DRY_RUN_MISSING",
            Outcome::Malformed => "DRY_RUN_MALFORMED",
            Outcome::UnknownKey => "DRY_RUN_UNKNOWN_KEY",
            Outcome::BadSignature => "DRY_RUN_BAD_SIGNATURE",
            Outcome::Stale => "DRY_RUN_STALE",
            Outcome::Replay => "DRY_RUN_REPLAY",
            Outcome::StoreFull => "DRY_RUN_STORE_FULL",
            Outcome::BadToken => "DRY_RUN_BAD_TOKEN",
            Outcome::Expired => "DRY_RUN_EXPIRED",
            Outcome::TtlTooLong => "DRY_RUN_TTL_TOO_LONG",
            Outcome::StoreUnavailable => "DRY_RUN_STORE_UNAVAILABLE",
        }
    }

    /// 503 for a full or unreachable store: the client did nothing wrong and may retry later;
    /// 401 otherwise.
    pub fn http_status(self) -> u16 {
        match self {
            Outcome::Ok => 200,
            Outcome::StoreFull | Outcome::StoreUnavailable => 503,
            _ => 401,
        }
    }
}

/// A rejection: the outcome plus the client-facing message (never a secret or expected MAC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub outcome: Outcome,
    pub message: String,
}

impl Rejection {
    pub fn new(outcome: Outcome, message: impl Into<String>) -> Self {
        Rejection {
            outcome,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_distinct_and_dry_run_prefixed() {
        let mut seen = std::collections::HashSet::new();
        for o in Outcome::ALL {
            assert!(seen.insert(o.as_str()));
            assert_eq!(o.dry_run_str(), format!("DRY_RUN_{}", o.as_str()));
        }
    }

    #[test]
    fn only_a_full_store_is_retryable() {
        assert_eq!(Outcome::StoreFull.http_status(), 503);
        assert_eq!(Outcome::Replay.http_status(), 401);
        assert_eq!(Outcome::Ok.http_status(), 200);
    }
}

//! What the glue reports about one finished request.

use crate::auth::Outcome;
use crate::usage::{ErrorType, StreamOutcome, TokenCounts};

/// One request as seen at the LOG phase.
#[derive(Debug, Clone, Copy)]
pub struct Sample<'a> {
    /// Authenticated key id; empty when there is none (counted under `-`). Pass only ids the
    /// key store knows: ids taken from rejected requests let a client fill the key slots.
    pub key_id: &'a [u8],
    /// Status sent to the client.
    pub status: u16,
    /// Last upstream's status, `None` if no upstream answered. Decides who caused an error.
    pub upstream_status: Option<u16>,
    pub auth: AuthOutcome,
    pub request_ms: u64,
    pub upstream_connect_ms: Option<u64>,
    /// Upstream response header time: time to first token for streams.
    pub upstream_header_ms: Option<u64>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub stream: StreamOutcome,
    /// `error.type` of an `event: error` in the stream.
    pub stream_error: Option<ErrorType>,
    /// The model the response named: empty for none (counted under `-`), `other` for one
    /// that is not a valid model name. Token series are per key and model.
    pub model: &'a [u8],
    /// The response's usage, if it reported one.
    pub usage: Option<TokenCounts>,
}

/// Result of the auth layer for one request, or `NONE` when no check ran (`relay_guard off`).
/// The auth layer's own [`Outcome`] is the single list of outcomes; its position in
/// `Outcome::ALL` is the counter index in shared memory, `NONE` the last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AuthOutcome(pub Option<Outcome>);

impl AuthOutcome {
    pub const NONE: AuthOutcome = AuthOutcome(None);
    pub const COUNT: usize = Outcome::ALL.len() + 1;

    /// Every outcome in counter order.
    pub const ALL: [AuthOutcome; Self::COUNT] = {
        let mut all = [AuthOutcome(None); Self::COUNT];
        let mut i = 0;
        while i < Outcome::ALL.len() {
            all[i] = AuthOutcome(Some(Outcome::ALL[i]));
            i += 1;
        }
        all
    };

    pub const fn of(o: Outcome) -> AuthOutcome {
        AuthOutcome(Some(o))
    }

    /// The counter index in shared memory.
    pub fn index(self) -> usize {
        match self.0 {
            // `Outcome::ALL` lists the variants in declaration order (checked below).
            Some(o) => o as usize,
            None => Outcome::ALL.len(),
        }
    }

    /// Same spelling as `$relay_guard_status`, so logs and metrics grep alike.
    pub fn label(self) -> &'static str {
        self.0.map_or("NONE", Outcome::as_str)
    }
}

/// Statuses with their own series: the ones that tell rate limiting, overload and relay
/// trouble apart.
pub const EXACT_STATUSES: [u16; 6] = [429, 500, 502, 503, 504, 529];
pub const CLASS_LABELS: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

pub(crate) fn class_index(status: u16) -> usize {
    match status {
        100..=599 => usize::from(status / 100 - 1),
        _ => 5,
    }
}

pub(crate) fn exact_index(status: u16) -> Option<usize> {
    EXACT_STATUSES.iter().position(|&s| s == status)
}

/// Failures a client of the relay cares about: throttling and server-side errors. Other 4xx
/// are the client's own doing (auth rejections are counted by outcome instead).
pub(crate) fn is_error(status: u16) -> bool {
    status == 429 || (500..=599).contains(&status)
}

// `AuthOutcome::index` casts: `Outcome::ALL` must list the variants in declaration order.
const _: () = {
    let mut i = 0;
    while i < Outcome::ALL.len() {
        assert!(
            Outcome::ALL[i] as usize == i,
            "Outcome::ALL is out of declaration order"
        );
        i += 1;
    }
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_outcomes_index_in_order() {
        for (i, o) in AuthOutcome::ALL.iter().enumerate() {
            assert_eq!(o.index(), i);
        }
        assert_eq!(AuthOutcome::NONE.label(), "NONE");
        assert_eq!(
            AuthOutcome::of(Outcome::BadSignature).label(),
            "BAD_SIGNATURE"
        );
    }

    #[test]
    fn status_classes() {
        assert_eq!(class_index(101), 0);
        assert_eq!(class_index(200), 1);
        assert_eq!(class_index(599), 4);
        assert_eq!(class_index(0), 5);
        assert_eq!(class_index(600), 5);
        assert_eq!(exact_index(529), Some(5));
        assert!(is_error(429) && is_error(502) && !is_error(404) && !is_error(200));
    }
}

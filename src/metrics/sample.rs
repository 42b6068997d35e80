//! What the glue reports about one finished request.

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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StreamOutcome {
    #[default]
    NotStream,
    /// Saw `event: message_stop` and no `event: error`.
    Completed,
    /// Ended without `message_stop`, or carried `event: error`.
    Failed,
}

/// Result of the auth layer; the discriminant is the counter index in shared memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum AuthOutcome {
    Ok = 0,
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
    /// A token this build does not know (a newer auth layer).
    Other,
    /// Auth not evaluated (disabled for the location).
    None,
}

impl AuthOutcome {
    pub const ALL: [AuthOutcome; 13] = [
        AuthOutcome::Ok,
        AuthOutcome::Missing,
        AuthOutcome::Malformed,
        AuthOutcome::UnknownKey,
        AuthOutcome::BadSignature,
        AuthOutcome::Stale,
        AuthOutcome::Replay,
        AuthOutcome::StoreFull,
        AuthOutcome::BadToken,
        AuthOutcome::Expired,
        AuthOutcome::TtlTooLong,
        AuthOutcome::Other,
        AuthOutcome::None,
    ];

    /// Same spelling as the auth layer's tokens, so logs and metrics grep alike.
    pub fn label(self) -> &'static str {
        match self {
            AuthOutcome::Ok => "OK",
            AuthOutcome::Missing => "MISSING",
            AuthOutcome::Malformed => "MALFORMED",
            AuthOutcome::UnknownKey => "UNKNOWN_KEY",
            AuthOutcome::BadSignature => "BAD_SIGNATURE",
            AuthOutcome::Stale => "STALE",
            AuthOutcome::Replay => "REPLAY",
            AuthOutcome::StoreFull => "STORE_FULL",
            AuthOutcome::BadToken => "BAD_TOKEN",
            AuthOutcome::Expired => "EXPIRED",
            AuthOutcome::TtlTooLong => "TTL_TOO_LONG",
            AuthOutcome::Other => "OTHER",
            AuthOutcome::None => "NONE",
        }
    }

    /// Parses the auth layer's token (case-insensitive); empty means auth did not run.
    pub fn from_token(token: &[u8]) -> AuthOutcome {
        if token.is_empty() {
            return AuthOutcome::None;
        }
        AuthOutcome::ALL
            .iter()
            .copied()
            .find(|o| o.label().as_bytes().eq_ignore_ascii_case(token))
            .unwrap_or(AuthOutcome::Other)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_tokens_round_trip() {
        for o in AuthOutcome::ALL {
            assert_eq!(AuthOutcome::from_token(o.label().as_bytes()), o);
            assert_eq!(AuthOutcome::ALL[o as usize], o);
        }
        assert_eq!(
            AuthOutcome::from_token(b"bad_signature"),
            AuthOutcome::BadSignature
        );
        assert_eq!(AuthOutcome::from_token(b""), AuthOutcome::None);
        assert_eq!(AuthOutcome::from_token(b"NEW_THING"), AuthOutcome::Other);
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

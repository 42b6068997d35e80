//! How a relayed stream ended, and the error types an `event: error` can carry.

/// One relayed response as the stream counters see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StreamOutcome {
    /// Not an SSE response (or not one the relay watched).
    #[default]
    NotStream,
    /// Saw `event: message_stop` and no `event: error`.
    Completed,
    /// Carried `event: error` (Anthropic sends these after a 200, e.g. `overloaded_error`).
    ErrorEvent,
    /// The upstream ended (closed, reset, timed out) before `message_stop`.
    UpstreamCut,
    /// The client went away before `message_stop`.
    ClientAbort,
}

impl StreamOutcome {
    /// The streamed outcomes in counter order (`NotStream` has no counter).
    pub const STREAMED: [StreamOutcome; 4] = [
        StreamOutcome::Completed,
        StreamOutcome::ErrorEvent,
        StreamOutcome::UpstreamCut,
        StreamOutcome::ClientAbort,
    ];
    pub const LABELS: [&'static str; 4] =
        ["completed", "error_event", "upstream_cut", "client_abort"];

    /// What the scanner saw plus whether the client's connection failed. An error event wins
    /// over a later `message_stop` (the turn failed); a client that left after
    /// `message_stop` still got the whole turn.
    pub fn classify(saw_stop: bool, saw_error: bool, client_gone: bool) -> StreamOutcome {
        if saw_error {
            StreamOutcome::ErrorEvent
        } else if saw_stop {
            StreamOutcome::Completed
        } else if client_gone {
            StreamOutcome::ClientAbort
        } else {
            StreamOutcome::UpstreamCut
        }
    }

    /// Counter index, `None` for `NotStream`.
    pub fn index(self) -> Option<usize> {
        match self {
            StreamOutcome::NotStream => None,
            StreamOutcome::Completed => Some(0),
            StreamOutcome::ErrorEvent => Some(1),
            StreamOutcome::UpstreamCut => Some(2),
            StreamOutcome::ClientAbort => Some(3),
        }
    }

    /// `$relay_guard_stream`; `-` for a response that was not a stream.
    pub fn label(self) -> &'static str {
        self.index().map_or("-", |i| Self::LABELS[i])
    }
}

/// `error.type` of an `event: error`. A fixed list: the value comes from the upstream, so an
/// unknown spelling is `Other` and can never add a metrics series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    InvalidRequest,
    Authentication,
    Billing,
    Permission,
    NotFound,
    RequestTooLarge,
    RateLimit,
    Timeout,
    Api,
    Overloaded,
    Other,
}

impl ErrorType {
    pub const ALL: [ErrorType; 11] = [
        ErrorType::InvalidRequest,
        ErrorType::Authentication,
        ErrorType::Billing,
        ErrorType::Permission,
        ErrorType::NotFound,
        ErrorType::RequestTooLarge,
        ErrorType::RateLimit,
        ErrorType::Timeout,
        ErrorType::Api,
        ErrorType::Overloaded,
        ErrorType::Other,
    ];

    /// Anthropic's spelling, which is also the metrics label.
    pub const fn label(self) -> &'static str {
        match self {
            ErrorType::InvalidRequest => "invalid_request_error",
            ErrorType::Authentication => "authentication_error",
            ErrorType::Billing => "billing_error",
            ErrorType::Permission => "permission_error",
            ErrorType::NotFound => "not_found_error",
            ErrorType::RequestTooLarge => "request_too_large",
            ErrorType::RateLimit => "rate_limit_error",
            ErrorType::Timeout => "timeout_error",
            ErrorType::Api => "api_error",
            ErrorType::Overloaded => "overloaded_error",
            ErrorType::Other => "other",
        }
    }

    /// The raw bytes of the JSON string (no unescaping: every known spelling is plain ASCII).
    pub fn from_bytes(b: &[u8]) -> ErrorType {
        ErrorType::ALL[..ErrorType::ALL.len() - 1]
            .iter()
            .copied()
            .find(|t| t.label().as_bytes() == b)
            .unwrap_or(ErrorType::Other)
    }

    /// Counter index: position in `ALL`.
    pub fn index(self) -> usize {
        self as usize
    }
}

// `index` casts: `ALL` must list the variants in declaration order.
const _: () = {
    let mut i = 0;
    while i < ErrorType::ALL.len() {
        assert!(ErrorType::ALL[i] as usize == i);
        i += 1;
    }
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_prefers_error_then_stop() {
        use StreamOutcome::*;
        assert_eq!(StreamOutcome::classify(true, true, false), ErrorEvent);
        assert_eq!(StreamOutcome::classify(true, false, true), Completed);
        assert_eq!(StreamOutcome::classify(false, false, true), ClientAbort);
        assert_eq!(StreamOutcome::classify(false, false, false), UpstreamCut);
        for (i, o) in StreamOutcome::STREAMED.iter().enumerate() {
            assert_eq!(o.index(), Some(i));
            assert_eq!(o.label(), StreamOutcome::LABELS[i]);
        }
        assert_eq!(NotStream.label(), "-");
    }

    #[test]
    fn error_types_round_trip_and_unknown_is_other() {
        for t in ErrorType::ALL {
            if t != ErrorType::Other {
                assert_eq!(ErrorType::from_bytes(t.label().as_bytes()), t);
            }
        }
        assert_eq!(ErrorType::from_bytes(b"other"), ErrorType::Other);
        assert_eq!(ErrorType::from_bytes(b"Overloaded_error"), ErrorType::Other);
        assert_eq!(ErrorType::from_bytes(b""), ErrorType::Other);
    }
}

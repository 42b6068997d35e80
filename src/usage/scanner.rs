//! One relayed response's scanner: what the glue keeps per request and feeds every body
//! buffer to.

use super::counts::Usage;
use super::json::{Findings, Json};
use super::model::Model;
use super::outcome::{ErrorType, StreamOutcome};
use super::paths::Node;
use super::sse::{EventKind, Sink, SseScanner};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `application/json`: one document, the body.
    Json,
    /// `text/event-stream`; `usage`: read the usage events (else only error events).
    Sse { usage: bool },
}

/// Reads a response's usage, model and (for a stream) outcome from its body as the body
/// streams past, split anywhere, with no heap and no copy. Fixed size (a `Copy` value the
/// glue moves in and out of its request context per buffer).
#[derive(Debug, Clone, Copy)]
pub struct ResponseScanner {
    mode: Mode,
    sse: SseScanner,
    json: Json,
    found: Findings,
}

const _: () = assert!(core::mem::size_of::<ResponseScanner>() <= 256);
const _: () = assert!(!core::mem::needs_drop::<ResponseScanner>());

/// The SSE layer's data goes to the JSON scanner, one document per event.
struct Events<'a> {
    usage: bool,
    json: &'a mut Json,
    found: &'a mut Findings,
}

impl Sink for Events<'_> {
    #[inline(always)]
    fn wants(&self, kind: EventKind) -> bool {
        let by_kind = match kind {
            EventKind::Other => false,
            EventKind::Error => true,
            EventKind::Unnamed | EventKind::Start | EventKind::Delta => self.usage,
        };
        by_kind && !self.json.is_done()
    }

    fn data(&mut self, kind: EventKind, bytes: &[u8]) {
        let root = match kind {
            EventKind::Unnamed => Node::Unnamed,
            EventKind::Start => Node::Start,
            EventKind::Delta => Node::Delta,
            EventKind::Error => Node::ErrorRoot,
            EventKind::Other => return,
        };
        self.json.feed(bytes, root, self.found);
    }

    #[inline(always)]
    fn event_end(&mut self) {
        *self.json = Json::new();
    }

    fn give_up(&mut self) {
        self.json.give_up();
    }
}

impl ResponseScanner {
    const fn with(mode: Mode) -> Self {
        ResponseScanner {
            mode,
            sse: SseScanner::new(),
            json: Json::new(),
            found: Findings::new(),
        }
    }

    /// For `text/event-stream` responses: usage from `message_start` and every
    /// `message_delta`, the model from `message_start`, the outcome, an error's type.
    pub const fn sse() -> Self {
        Self::with(Mode::Sse { usage: true })
    }

    /// For `application/json` responses: a `"type":"message"` body's `usage` and `model`.
    pub const fn json() -> Self {
        Self::with(Mode::Json)
    }

    /// Outcome-only SSE scan (accounting off): the outcome and an error event's type, at the
    /// cost of the outcome scan alone (no usage event's data is read).
    pub const fn sse_outcome_only() -> Self {
        Self::with(Mode::Sse { usage: false })
    }

    /// The next piece of the body, split anywhere; any number of pieces.
    pub fn feed(&mut self, chunk: &[u8]) {
        match self.mode {
            Mode::Json => self.json.feed(chunk, Node::Body, &mut self.found),
            Mode::Sse { usage } => self.sse.feed_to(
                chunk,
                &mut Events {
                    usage,
                    json: &mut self.json,
                    found: &mut self.found,
                },
            ),
        }
    }

    fn counts_for_body(&self) -> bool {
        self.mode != Mode::Json || self.found.is_message
    }

    /// What the response reported so far, merged field by field (a field reported later
    /// replaces the earlier value). Empty for a body that is not a `"type":"message"`.
    pub fn usage(&self) -> &Usage {
        if self.counts_for_body() {
            &self.found.usage
        } else {
            &Usage::NONE
        }
    }

    pub fn model(&self) -> Model<'_> {
        if self.counts_for_body() {
            self.found.model.get()
        } else {
            Model::None
        }
    }

    /// `Some` exactly when the stream carried `event: error`: its `error.type`, `Other` when
    /// unknown, unreadable or missing. `None` for a JSON body.
    pub fn error_type(&self) -> Option<ErrorType> {
        match self.mode {
            Mode::Sse { .. } if self.sse.saw_error() => {
                Some(self.found.error_type.unwrap_or(ErrorType::Other))
            }
            _ => None,
        }
    }

    /// Call when the body is complete; `NotStream` for a JSON body.
    pub fn outcome(&self, client_gone: bool) -> StreamOutcome {
        match self.mode {
            Mode::Json => StreamOutcome::NotStream,
            Mode::Sse { .. } => self.sse.outcome(client_gone),
        }
    }
}

//! Reads an SSE body as it goes by: tells a completed Claude stream from one cut short, and
//! hands the `data:` payload of the events that carry usage to a [`Sink`].
//!
//! Only field lines matter, and only at the start of a line: the same words inside a `data:`
//! JSON payload (a model writing "event: error") cannot start a line, because JSON escapes
//! newlines. A per-byte state machine carries partial lines across chunks, so any chunk split
//! works with no buffer, copy or allocation. Lines no one wants (every line of a
//! `content_block_delta` event but its `event:` line, which is nearly all of a stream) are
//! skipped with a word-at-a-time newline search.
//!
//! Framing follows the SSE specification: lines end at `\r\n`, `\n` or `\r`; a blank line
//! ends an event; `event:` sets the event's name (one leading space dropped); each `data:`
//! line adds its value, the lines of one event joined with `\n` (JSON whitespace, so a
//! payload spread over several lines reads as one document).

use super::outcome::StreamOutcome;
use super::swar::find_eol;

const FIELD: &[u8] = b"event:";
const DATA: &[u8] = b"data:";
/// Longest event name we act on ("message_start", "message_delta").
const NAME_MAX: usize = 13;

/// The events whose data may be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EventKind {
    /// No `event:` line (yet).
    Unnamed,
    Start,
    Delta,
    Error,
    /// Any other name: its data is never read.
    Other,
}

/// Where an event's data goes.
pub(super) trait Sink {
    /// Whether the `data:` lines of an event of this kind are to be read (now: a sink may stop
    /// wanting the rest of an event).
    fn wants(&self, kind: EventKind) -> bool;
    /// The next bytes of the event's data (a line's value, in any number of pieces, or the
    /// `\n` that joins two lines).
    fn data(&mut self, kind: EventKind, bytes: &[u8]);
    /// A blank line: the event is over.
    fn event_end(&mut self);
    /// Read no more of this event's data.
    fn give_up(&mut self);
}

/// Reads no data: the outcome alone, at the cost of the `event:` lines.
pub(super) struct NoSink;

impl Sink for NoSink {
    #[inline(always)]
    fn wants(&self, _: EventKind) -> bool {
        false
    }
    #[inline(always)]
    fn data(&mut self, _: EventKind, _: &[u8]) {}
    #[inline(always)]
    fn event_end(&mut self) {}
    fn give_up(&mut self) {}
}

/// Where the value of `field` (with its colon) starts in `line`, when the line starts with it
/// and the one optional space is in the buffer too.
#[inline(always)]
fn field_value(line: &[u8], field: &[u8]) -> Option<usize> {
    let n = field.len();
    if line.get(..n)? != field {
        return None;
    }
    Some(n + usize::from(*line.get(n)? == b' '))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    LineStart,
    /// Right after a `\r`: a `\n` here ends the same line, not a blank one.
    LineStartCr,
    /// Matched this many bytes of `event:`.
    Field(u8),
    /// Right after `event:`; one optional space may follow.
    AfterColon,
    Name,
    /// Matched this many bytes of `data:`.
    DataField(u8),
    /// Right after `data:`; one optional space may follow.
    DataStart,
    /// A data line's value, for the sink.
    Data,
    SkipLine,
}

#[derive(Debug, Clone, Copy)]
pub struct SseScanner {
    state: State,
    name: [u8; NAME_MAX],
    name_len: u8,
    kind: EventKind,
    /// This event has had a data line (the next one is joined with `\n`).
    data_lines: bool,
    saw_stop: bool,
    saw_error: bool,
}

impl Default for SseScanner {
    fn default() -> Self {
        Self::new()
    }
}

impl SseScanner {
    pub const fn new() -> Self {
        SseScanner {
            state: State::LineStart,
            name: [0; NAME_MAX],
            name_len: 0,
            kind: EventKind::Unnamed,
            data_lines: false,
            saw_stop: false,
            saw_error: false,
        }
    }

    /// The outcome scan alone.
    pub fn feed(&mut self, chunk: &[u8]) {
        self.feed_to(chunk, &mut NoSink);
    }

    /// Also hands the data of the events `sink` wants to it.
    #[inline]
    pub(super) fn feed_to<S: Sink>(&mut self, chunk: &[u8], sink: &mut S) {
        let mut i = 0;
        while i < chunk.len() {
            match self.state {
                State::SkipLine => match find_eol(&chunk[i..]) {
                    Some(p) => i += p,
                    None => return,
                },
                State::Data => {
                    let rest = &chunk[i..];
                    match find_eol(rest) {
                        Some(p) => {
                            if p > 0 {
                                sink.data(self.kind, &rest[..p]);
                            }
                            i += p;
                        }
                        None => {
                            sink.data(self.kind, rest);
                            return;
                        }
                    }
                }
                _ => {}
            }
            let c = chunk[i];
            i += 1;
            if c == b'\n' || c == b'\r' {
                self.line_end(c, sink);
                continue;
            }
            self.state = match self.state {
                State::LineStart | State::LineStartCr => match c {
                    b'e' => {
                        // The whole `event:` line in this buffer (nearly always): read its
                        // name at once and skip to the line end.
                        let line = &chunk[i - 1..];
                        if let Some(name_at) = field_value(line, FIELD) {
                            if let Some(p) = find_eol(&line[name_at..]) {
                                let kind = self.apply_name(&line[name_at..name_at + p]);
                                self.set_kind(kind, sink);
                                i += name_at + p - 1;
                                self.state = State::SkipLine;
                                continue;
                            }
                        }
                        State::Field(1)
                    }
                    b'd' if self.kind != EventKind::Other => {
                        let line = &chunk[i - 1..];
                        match field_value(line, DATA) {
                            Some(value_at) if self.data_line(sink) => {
                                i += value_at - 1;
                                self.state = State::Data;
                                continue;
                            }
                            Some(_) => State::SkipLine,
                            None => State::DataField(1),
                        }
                    }
                    _ => State::SkipLine,
                },
                State::Field(n) => {
                    let n = n as usize;
                    if FIELD.get(n) != Some(&c) {
                        State::SkipLine
                    } else if n + 1 == FIELD.len() {
                        self.name_len = 0;
                        State::AfterColon
                    } else {
                        State::Field(n as u8 + 1)
                    }
                }
                State::AfterColon if c == b' ' => State::Name,
                State::AfterColon | State::Name => {
                    if self.push_name(c) {
                        State::Name
                    } else {
                        // A name longer than any we act on: skip the rest of the line fast.
                        self.set_kind(EventKind::Other, sink);
                        State::SkipLine
                    }
                }
                State::DataField(n) => {
                    let n = n as usize;
                    if DATA.get(n) != Some(&c) {
                        State::SkipLine
                    } else if n + 1 == DATA.len() {
                        if self.data_line(sink) {
                            State::DataStart
                        } else {
                            State::SkipLine
                        }
                    } else {
                        State::DataField(n as u8 + 1)
                    }
                }
                State::DataStart if c == b' ' => State::Data,
                State::DataStart => {
                    sink.data(self.kind, std::slice::from_ref(&c));
                    State::Data
                }
                // Handled above (they never reach here with a byte left to read).
                State::Data | State::SkipLine => self.state,
            };
        }
    }

    fn line_end<S: Sink>(&mut self, c: u8, sink: &mut S) {
        match self.state {
            State::LineStartCr if c == b'\n' => {
                self.state = State::LineStart;
                return;
            }
            State::LineStart | State::LineStartCr => {
                sink.event_end();
                self.kind = EventKind::Unnamed;
                self.data_lines = false;
            }
            State::Name | State::AfterColon => {
                let name = self.name;
                let kind = self.apply_name(&name[..self.name_len as usize]);
                self.set_kind(kind, sink);
            }
            // `event` alone is the field with an empty value.
            State::Field(5) => {
                let kind = self.apply_name(b"");
                self.set_kind(kind, sink);
            }
            // `data` alone: a data line with an empty value.
            State::DataField(4) => {
                self.data_line(sink);
            }
            _ => {}
        }
        self.state = if c == b'\r' {
            State::LineStartCr
        } else {
            State::LineStart
        };
    }

    /// A data line of an event that is not `Other` begins; true when its value goes to the
    /// sink, joined to the event's earlier lines with a newline.
    fn data_line<S: Sink>(&mut self, sink: &mut S) -> bool {
        let feed = sink.wants(self.kind);
        if feed && self.data_lines {
            sink.data(self.kind, b"\n");
        }
        self.data_lines = true;
        feed
    }

    /// An `event:` line names the event. One that comes after data lines and changes what
    /// the event is ends the reading of its data: what came before was read (or, with usage
    /// off, not read) as another kind, so both modes give the rest up alike.
    fn set_kind<S: Sink>(&mut self, kind: EventKind, sink: &mut S) {
        if self.data_lines && kind != self.kind {
            sink.give_up();
        }
        self.kind = kind;
    }

    fn push_name(&mut self, c: u8) -> bool {
        let n = self.name_len as usize;
        if n < NAME_MAX {
            self.name[n] = c;
            self.name_len += 1;
            true
        } else {
            false
        }
    }

    /// The kind an event named `name` is (longer than `NAME_MAX`: one we do not act on),
    /// noting the names the outcome depends on.
    #[inline]
    fn apply_name(&mut self, name: &[u8]) -> EventKind {
        match name {
            b"message_stop" => {
                self.saw_stop = true;
                EventKind::Other
            }
            b"error" => {
                self.saw_error = true;
                EventKind::Error
            }
            b"message_start" => EventKind::Start,
            b"message_delta" => EventKind::Delta,
            b"" => EventKind::Unnamed,
            _ => EventKind::Other,
        }
    }

    /// The flags, counting a final `event:` line left without its newline: the SSE stream
    /// simply ended there.
    fn final_flags(&self) -> (bool, bool) {
        if matches!(self.state, State::Name | State::AfterColon) {
            let mut tail = *self;
            tail.apply_name(&self.name[..self.name_len as usize]);
            (tail.saw_stop, tail.saw_error)
        } else {
            (self.saw_stop, self.saw_error)
        }
    }

    /// Call when the body is complete (last buffer seen or connection closed).
    /// `client_gone`: the glue saw the client's connection fail before the body was done.
    pub fn outcome(&self, client_gone: bool) -> StreamOutcome {
        let (stop, error) = self.final_flags();
        StreamOutcome::classify(stop, error, client_gone)
    }

    pub fn saw_message_stop(&self) -> bool {
        self.final_flags().0
    }

    pub fn saw_error(&self) -> bool {
        self.final_flags().1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &[u8] = b"event: message_start\n\
data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\"}}\n\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"event: error\\nevent: message_stop\"}}\n\n\
event: ping\n\
data: {\"type\": \"ping\"}\n\n\
event: message_delta\n\
data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"}}\n\n\
event: message_stop\n\
data: {\"type\":\"message_stop\"}\n\n";

    fn scan(parts: &[&[u8]]) -> SseScanner {
        let mut s = SseScanner::new();
        for p in parts {
            s.feed(p);
        }
        s
    }

    #[test]
    fn message_stop_across_every_split() {
        for cut in 0..=STREAM.len() {
            let s = scan(&[&STREAM[..cut], &STREAM[cut..]]);
            assert_eq!(s.outcome(false), StreamOutcome::Completed, "cut at {cut}");
        }
        for a in (0..STREAM.len()).step_by(7) {
            for b in a..=STREAM.len() {
                let s = scan(&[&STREAM[..a], &STREAM[a..b], &STREAM[b..]]);
                assert_eq!(s.outcome(false), StreamOutcome::Completed, "cuts {a} {b}");
            }
        }
        let mut s = SseScanner::new();
        for b in STREAM {
            s.feed(std::slice::from_ref(b));
        }
        assert_eq!(s.outcome(false), StreamOutcome::Completed);
    }

    #[test]
    fn truncated_stream_fails() {
        let end =
            STREAM.len() - b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n".len();
        // Text that mentions the events inside JSON must not count.
        assert_eq!(
            scan(&[&STREAM[..end]]).outcome(false),
            StreamOutcome::UpstreamCut
        );
        assert_eq!(scan(&[]).outcome(false), StreamOutcome::UpstreamCut);
    }

    #[test]
    fn error_event_fails_even_with_stop() {
        let err = b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\"}}\n\n";
        let head = &STREAM[..STREAM.windows(2).position(|w| w == b"\n\n").unwrap() + 2];
        for cut in 0..=err.len() {
            let s = scan(&[head, &err[..cut], &err[cut..]]);
            assert!(s.saw_error(), "cut at {cut}");
            assert_eq!(s.outcome(false), StreamOutcome::ErrorEvent);
        }
        let s = scan(&[STREAM, err]);
        assert!(s.saw_message_stop());
        assert_eq!(s.outcome(true), StreamOutcome::ErrorEvent);
    }

    #[test]
    fn line_endings_and_field_forms() {
        assert_eq!(
            scan(&[b"event:message_stop\r\n"]).outcome(false),
            StreamOutcome::Completed
        );
        assert_eq!(
            scan(&[b"event: message_stop\r"]).outcome(false),
            StreamOutcome::Completed
        );
        // Last line without newline: the body ended there.
        assert_eq!(
            scan(&[b"data: x\n", b"event: message_st", b"op"]).outcome(false),
            StreamOutcome::Completed
        );
        assert_eq!(
            scan(&[b"event: message_stopped\n"]).outcome(false),
            StreamOutcome::UpstreamCut
        );
        assert_eq!(
            scan(&[b"event:  message_stop\n"]).outcome(false),
            StreamOutcome::UpstreamCut
        );
        assert_eq!(
            scan(&[b" event: message_stop\n"]).outcome(false),
            StreamOutcome::UpstreamCut
        );
        assert_eq!(
            scan(&[b"xevent: error\nevent: message_stop\n"]).outcome(false),
            StreamOutcome::Completed
        );
        assert!(!scan(&[b"event: errors\n"]).saw_error());
    }
}

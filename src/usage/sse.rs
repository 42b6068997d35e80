//! Tells a completed Claude stream from one cut short, watching the SSE body go by.
//!
//! Only `event:` field lines matter, and only at the start of a line: the same words inside a
//! `data:` JSON payload (a model writing "event: error") cannot start a line, because JSON
//! escapes newlines. A per-byte state machine carries partial lines across chunks, so any
//! chunk split works with no buffer, copy or allocation; non-`event` lines are skipped with
//! a word-at-a-time newline search.

use super::outcome::StreamOutcome;

const FIELD: &[u8] = b"event:";
/// Longest event name we act on ("message_stop").
const NAME_MAX: usize = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    LineStart,
    /// Matched this many bytes of `event:`.
    Field(u8),
    /// Right after `event:`; one optional space may follow.
    AfterColon,
    Name,
    SkipLine,
}

#[derive(Debug, Clone)]
pub struct SseScanner {
    state: State,
    name: [u8; NAME_MAX],
    name_len: u8,
    saw_stop: bool,
    saw_error: bool,
}

impl Default for SseScanner {
    fn default() -> Self {
        Self::new()
    }
}

/// Index of the first `\n` or `\r`, eight bytes at a time.
fn find_eol(b: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let mut i = 0;
    while let Some(chunk) = b.get(i..i + 8) {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        let w = u64::from_le_bytes(w);
        let x = w ^ (LO * u64::from(b'\n'));
        let y = w ^ (LO * u64::from(b'\r'));
        // Nonzero iff some byte of x or y is zero (the classic has-zero-byte test).
        if (x.wrapping_sub(LO) & !x | y.wrapping_sub(LO) & !y) & HI != 0 {
            break;
        }
        i += 8;
    }
    b[i..]
        .iter()
        .position(|&c| c == b'\n' || c == b'\r')
        .map(|p| p + i)
}

impl SseScanner {
    pub const fn new() -> Self {
        SseScanner {
            state: State::LineStart,
            name: [0; NAME_MAX],
            name_len: 0,
            saw_stop: false,
            saw_error: false,
        }
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        let mut i = 0;
        while i < chunk.len() {
            if self.state == State::SkipLine {
                match find_eol(&chunk[i..]) {
                    Some(p) => {
                        i += p + 1;
                        self.state = State::LineStart;
                        continue;
                    }
                    None => return,
                }
            }
            let c = chunk[i];
            i += 1;
            if c == b'\n' || c == b'\r' {
                if matches!(self.state, State::Name | State::AfterColon) {
                    self.end_name();
                }
                self.state = State::LineStart;
                continue;
            }
            self.state = match self.state {
                State::LineStart | State::Field(_) => {
                    let n = match self.state {
                        State::Field(n) => n as usize,
                        _ => 0,
                    };
                    if c != FIELD[n] {
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
                    // A name longer than any we act on: skip the rest of the line fast.
                    if self.push_name(c) {
                        State::Name
                    } else {
                        State::SkipLine
                    }
                }
                State::SkipLine => State::SkipLine,
            };
        }
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

    fn end_name(&mut self) {
        match &self.name[..self.name_len as usize] {
            b"message_stop" => self.saw_stop = true,
            b"error" => self.saw_error = true,
            _ => {}
        }
    }

    /// Call when the body is complete (last buffer seen or connection closed). A final line
    /// without its newline still counts: the SSE stream simply ended there.
    /// `client_gone`: the glue saw the client's connection fail before the body was done.
    pub fn outcome(&self, client_gone: bool) -> StreamOutcome {
        let mut stop = self.saw_stop;
        let mut error = self.saw_error;
        if matches!(self.state, State::Name | State::AfterColon) {
            let mut tail = self.clone();
            tail.end_name();
            stop |= tail.saw_stop;
            error |= tail.saw_error;
        }
        StreamOutcome::classify(stop, error, client_gone)
    }

    pub fn saw_message_stop(&self) -> bool {
        self.saw_stop
    }

    pub fn saw_error(&self) -> bool {
        self.saw_error
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

    #[test]
    fn find_eol_matches_naive() {
        let hay = b"abcdefghijklmnopq\rrstuvwxyz0123456789\nxyz";
        for s in 0..hay.len() {
            let naive = hay[s..].iter().position(|&c| c == b'\n' || c == b'\r');
            assert_eq!(find_eol(&hay[s..]), naive, "start {s}");
        }
        assert_eq!(find_eol(b"\x8a\x8d\x0b\x0c\x0e\x09\xff\x00abcdefgh"), None);
    }
}

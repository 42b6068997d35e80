//! The scanner's promises as a check over arbitrary input, for the fuzz target
//! (src/fuzz/fuzz_targets/usage.rs) and for `cargo test`, which replays the checked-in corpus
//! through it:
//! - any split of a body into buffers gives the same usage, model, error type and outcome as
//!   the body in one buffer (two random splits, and byte by byte);
//! - on valid JSON, the result equals what serde_json reads from the same document, as a
//!   body and as the data of each kind of SSE event, under the scanner's documented rules
//!   (a later key wins, counts that are not plain non-negative integers are ignored, a model
//!   must be a plain short name).

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use super::counts::{Field, Usage};
use super::model::{model_byte, Model, MODEL_MAX};
use super::outcome::{ErrorType, StreamOutcome};
use super::scanner::ResponseScanner;
use super::sse::SseScanner;

/// A JSON value as serde_json reads it, with every key of an object in order (duplicates
/// too) and whether a string had escapes.
#[derive(Debug)]
enum J {
    Null,
    Bool,
    U(u64),
    I,
    F(f64),
    S(String, bool),
    A,
    O(Vec<(String, J)>),
}

impl<'de> Deserialize<'de> for J {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<J, D::Error> {
        d.deserialize_any(JVisitor)
    }
}

struct JVisitor;

impl<'de> Visitor<'de> for JVisitor {
    type Value = J;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("JSON")
    }
    fn visit_unit<E>(self) -> Result<J, E> {
        Ok(J::Null)
    }
    fn visit_bool<E>(self, _: bool) -> Result<J, E> {
        Ok(J::Bool)
    }
    fn visit_u64<E>(self, v: u64) -> Result<J, E> {
        Ok(J::U(v))
    }
    fn visit_i64<E>(self, _: i64) -> Result<J, E> {
        Ok(J::I)
    }
    fn visit_f64<E>(self, v: f64) -> Result<J, E> {
        Ok(J::F(v))
    }
    // serde_json lends a string straight from the input when it had no escapes.
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<J, E> {
        Ok(J::S(v.to_owned(), false))
    }
    fn visit_str<E>(self, v: &str) -> Result<J, E> {
        Ok(J::S(v.to_owned(), true))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<J, A::Error> {
        while a.next_element::<J>()?.is_some() {}
        Ok(J::A)
    }
    fn visit_map<M: MapAccess<'de>>(self, mut m: M) -> Result<J, M::Error> {
        let mut out = Vec::new();
        while let Some(k) = m.next_key::<String>()? {
            let v = m.next_value::<J>()?;
            out.push((k, v));
        }
        Ok(J::O(out))
    }
}

const FIELDS: [Field; 7] = [
    Field::Input,
    Field::Output,
    Field::CacheCreation,
    Field::CacheWrite5m,
    Field::CacheWrite1h,
    Field::CacheRead,
    Field::WebSearch,
];

fn get(u: &Usage, f: Field) -> Option<u64> {
    match f {
        Field::Input => u.input,
        Field::Output => u.output,
        Field::CacheCreation => u.cache_creation,
        Field::CacheWrite5m => u.cache_write_5m,
        Field::CacheWrite1h => u.cache_write_1h,
        Field::CacheRead => u.cache_read,
        Field::WebSearch => u.web_search,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum OwnedModel {
    None,
    Named(Vec<u8>),
    Invalid,
}

fn owned(m: Model<'_>) -> OwnedModel {
    match m {
        Model::None => OwnedModel::None,
        Model::Named(n) => OwnedModel::Named(n.to_vec()),
        Model::Invalid => OwnedModel::Invalid,
    }
}

/// What the scanner must report for a valid document, by the rules in the module docs.
#[derive(Debug, Clone)]
struct Expected {
    /// Per field (`FIELDS` order): the value, and whether `u64::MAX` is right too (serde_json
    /// reads an integer past u64 as a float, so it cannot tell `1e20`, ignored, from
    /// `100000000000000000000`, saturated).
    usage: [(Option<u64>, bool); 7],
    model: OwnedModel,
    error_type: Option<ErrorType>,
    is_message: bool,
}

impl Expected {
    fn new() -> Self {
        Expected {
            usage: [(None, false); 7],
            model: OwnedModel::None,
            error_type: None,
            is_message: false,
        }
    }

    fn count(&mut self, f: Field, v: &J) {
        let i = FIELDS.iter().position(|&g| g == f).unwrap_or(0);
        match *v {
            J::U(n) => self.usage[i] = (Some(n), false),
            J::F(x) if x >= 18_446_744_073_709_551_616.0 && x.fract() == 0.0 => {
                self.usage[i].1 = true
            }
            _ => {}
        }
    }

    fn usage(&mut self, v: &J) {
        let J::O(entries) = v else { return };
        for (k, v) in entries {
            match k.as_str() {
                "input_tokens" => self.count(Field::Input, v),
                "output_tokens" => self.count(Field::Output, v),
                "cache_creation_input_tokens" => self.count(Field::CacheCreation, v),
                "cache_read_input_tokens" => self.count(Field::CacheRead, v),
                "cache_creation" => {
                    for (k, v) in object(v) {
                        match k.as_str() {
                            "ephemeral_5m_input_tokens" => self.count(Field::CacheWrite5m, v),
                            "ephemeral_1h_input_tokens" => self.count(Field::CacheWrite1h, v),
                            _ => {}
                        }
                    }
                }
                "server_tool_use" => {
                    for (k, v) in object(v) {
                        if k == "web_search_requests" {
                            self.count(Field::WebSearch, v);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    fn model(&mut self, v: &J) {
        self.model = match v {
            J::S(s, false) if (1..=MODEL_MAX).contains(&s.len()) && s.bytes().all(model_byte) => {
                OwnedModel::Named(s.as_bytes().to_vec())
            }
            _ => OwnedModel::Invalid,
        };
    }

    fn message(&mut self, v: &J) {
        for (k, v) in object(v) {
            match k.as_str() {
                "model" => self.model(v),
                "usage" => self.usage(v),
                _ => {}
            }
        }
    }

    /// A non-streaming body.
    fn body(root: &J) -> Self {
        let mut e = Expected::new();
        for (k, v) in object(root) {
            match k.as_str() {
                "type" => e.is_message = matches!(v, J::S(s, _) if s == "message"),
                "model" => e.model(v),
                "usage" => e.usage(v),
                _ => {}
            }
        }
        if !e.is_message {
            e.usage = [(None, false); 7];
            e.model = OwnedModel::None;
        }
        e
    }

    /// The data of an SSE event named `event` (empty: no `event:` line).
    fn event(event: &str, root: &J) -> Self {
        let mut e = Expected::new();
        for (k, v) in object(root) {
            match (event, k.as_str()) {
                ("message_start" | "", "message") => e.message(v),
                ("message_delta" | "", "usage") => e.usage(v),
                ("error", "error") => {
                    for (k, v) in object(v) {
                        if k == "type" {
                            e.error_type = Some(match v {
                                J::S(s, _) => ErrorType::from_bytes(s.as_bytes()),
                                _ => ErrorType::Other,
                            });
                        }
                    }
                }
                _ => {}
            }
        }
        if event == "error" {
            e.error_type = Some(e.error_type.unwrap_or(ErrorType::Other));
        }
        e
    }

    fn check(&self, what: &str, got: &Seen) {
        for (i, &f) in FIELDS.iter().enumerate() {
            let (want, or_max) = self.usage[i];
            let v = get(&got.usage, f);
            assert!(
                v == want || or_max && v == Some(u64::MAX),
                "{what}: {f:?} is {v:?}, serde_json reads {want:?}"
            );
        }
        assert_eq!(got.model, self.model, "{what}: model");
        assert_eq!(got.error_type, self.error_type, "{what}: error type");
    }
}

fn object(v: &J) -> &[(String, J)] {
    match v {
        J::O(entries) => entries,
        _ => &[],
    }
}

/// Everything a scanner reports.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    usage: Usage,
    model: OwnedModel,
    error_type: Option<ErrorType>,
    outcome: [StreamOutcome; 2],
}

fn seen(s: &ResponseScanner) -> Seen {
    Seen {
        usage: *s.usage(),
        model: owned(s.model()),
        error_type: s.error_type(),
        outcome: [s.outcome(false), s.outcome(true)],
    }
}

/// A few cut points in `0..=len`, drawn from the input itself so a finding replays.
fn cuts(data: &[u8], salt: u64, n: usize) -> Vec<usize> {
    let mut h = data.iter().fold(0xcbf2_9ce4_8422_2325 ^ salt, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let mut out: Vec<usize> = (0..n)
        .map(|_| {
            h ^= h << 13;
            h ^= h >> 7;
            h ^= h << 17;
            (h % (data.len() as u64 + 1)) as usize
        })
        .collect();
    out.sort_unstable();
    out
}

/// Scans `data` whole, at two sets of cut points and byte by byte: all must agree.
fn scan_every_way(make: fn() -> ResponseScanner, what: &str, data: &[u8]) -> Seen {
    let mut whole = make();
    whole.feed(data);
    let want = seen(&whole);
    for salt in 0..2u64 {
        let cut = cuts(data, salt, 1 + 2 * salt as usize);
        let mut s = make();
        let mut at = 0;
        for &c in cut.iter().chain(Some(&data.len())) {
            s.feed(&data[at..c]);
            at = c;
        }
        assert_eq!(seen(&s), want, "{what}: cut at {cut:?}");
    }
    if data.len() <= 4096 {
        let mut s = make();
        for b in data.chunks(1) {
            s.feed(b);
        }
        assert_eq!(seen(&s), want, "{what}: byte by byte");
    }
    want
}

/// `doc` as the data of one SSE event named `event` (no `event:` line when empty), between a
/// text delta that quotes usage and `message_stop`.
fn as_event(event: &str, doc: &[u8]) -> Vec<u8> {
    let mut s = b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"{\\\"usage\\\":{\\\"output_tokens\\\":999}}\"}}\n\n".to_vec();
    if !event.is_empty() {
        s.extend_from_slice(format!("event: {event}\n").as_bytes());
    }
    // A valid document has \r only as whitespace; each of its lines becomes a data line.
    for line in doc.split(|&c| c == b'\n') {
        s.extend_from_slice(b"data: ");
        s.extend(line.iter().map(|&c| if c == b'\r' { b' ' } else { c }));
        s.push(b'\n');
    }
    s.extend_from_slice(b"\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
    s
}

/// The fuzz target's body: `data` is fed as a JSON body and as an SSE stream, each whole and
/// split; when it is valid JSON it is also checked against serde_json as a body and as each
/// kind of event. Panics on a broken promise.
#[doc(hidden)]
pub fn check_fuzz_input(data: &[u8]) {
    let body = scan_every_way(ResponseScanner::json, "body", data);
    assert_eq!(body.outcome, [StreamOutcome::NotStream; 2]);
    assert_eq!(body.error_type, None);

    let stream = scan_every_way(ResponseScanner::sse, "stream", data);
    let quiet = scan_every_way(ResponseScanner::sse_outcome_only, "outcome only", data);
    let mut plain = SseScanner::new();
    plain.feed(data);
    let outcomes = [plain.outcome(false), plain.outcome(true)];
    assert_eq!(stream.outcome, outcomes, "stream outcome");
    assert_eq!(quiet.outcome, outcomes, "outcome-only outcome");
    assert_eq!(
        quiet.error_type, stream.error_type,
        "outcome-only error type"
    );
    assert_eq!((quiet.usage, quiet.model), (Usage::NONE, OwnedModel::None));

    let Ok(doc) = serde_json::from_slice::<J>(data) else {
        return;
    };
    Expected::body(&doc).check("body", &body);
    for event in ["message_start", "message_delta", "error", ""] {
        let what = format!("event {event:?}");
        let got = scan_every_way(ResponseScanner::sse, &what, &as_event(event, data));
        Expected::event(event, &doc).check(&what, &got);
        let outcome = if event == "error" {
            StreamOutcome::ErrorEvent
        } else {
            StreamOutcome::Completed
        };
        assert_eq!(got.outcome, [outcome; 2], "{what}: outcome");
    }
}

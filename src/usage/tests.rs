//! The scanner against the bodies Anthropic and compatible upstreams send, split every way,
//! and against hostile ones.

use super::*;

/// A Claude stream as the API sends it (usage split across message_start and message_delta),
/// with a text delta and a tool input that both spell out a usage object.
const STREAM: &str = concat!(
    "event: message_start\n",
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01\",\"type\":\"message\",\"role\":\"assistant\",",
    "\"model\":\"claude-sonnet-4-5-20250929\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,",
    "\"usage\":{\"input_tokens\":2095,\"cache_creation_input_tokens\":2000,\"cache_read_input_tokens\":30000,",
    "\"cache_creation\":{\"ephemeral_5m_input_tokens\":1500,\"ephemeral_1h_input_tokens\":500},",
    "\"output_tokens\":1,\"service_tier\":\"standard\"}}}\n\n",
    "event: content_block_start\n",
    "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
    "event: ping\n",
    "data: {\"type\": \"ping\"}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",",
    "\"text\":\"{\\\"usage\\\":{\\\"output_tokens\\\":999}} \\\\\\\" \\u00e9\"}}\n\n",
    "event: content_block_stop\n",
    "data: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
    "event: content_block_start\n",
    "data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",",
    "\"name\":\"report\",\"input\":{}}}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",",
    "\"partial_json\":\"{\\\"usage\\\": {\\\"input_tokens\\\": 7\"}}\n\n",
    "event: content_block_stop\n",
    "data: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
    "event: message_delta\n",
    "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},",
    "\"usage\":{\"output_tokens\":503,\"server_tool_use\":{\"web_search_requests\":2}}}\n\n",
    "event: message_stop\n",
    "data: {\"type\":\"message_stop\"}\n\n",
);

fn stream_usage() -> Usage {
    Usage {
        input: Some(2095),
        output: Some(503),
        cache_creation: Some(2000),
        cache_write_5m: Some(1500),
        cache_write_1h: Some(500),
        cache_read: Some(30000),
        web_search: Some(2),
    }
}

const BODY: &str = concat!(
    "{\"id\":\"msg_01\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-opus-4-1\",",
    "\"content\":[{\"type\":\"text\",\"text\":\"Here is {\\\"usage\\\":{\\\"input_tokens\\\":1}}\"},",
    "{\"type\":\"tool_use\",\"id\":\"t\",\"name\":\"n\",\"input\":{\"usage\":{\"input_tokens\":5},\"model\":\"x\"}}],",
    "\"stop_reason\":\"end_turn\",\"stop_sequence\":null,",
    "\"usage\":{\"input_tokens\":12,\"cache_creation_input_tokens\":100,\"cache_read_input_tokens\":7,",
    "\"cache_creation\":{\"ephemeral_5m_input_tokens\":40,\"ephemeral_1h_input_tokens\":60},",
    "\"output_tokens\":6,\"server_tool_use\":{\"web_search_requests\":3},\"service_tier\":\"standard\"}}",
);

fn body_usage() -> Usage {
    Usage {
        input: Some(12),
        output: Some(6),
        cache_creation: Some(100),
        cache_write_5m: Some(40),
        cache_write_1h: Some(60),
        cache_read: Some(7),
        web_search: Some(3),
    }
}

fn feed(mut s: ResponseScanner, parts: &[&[u8]]) -> ResponseScanner {
    for p in parts {
        s.feed(p);
    }
    s
}

fn sse(body: &str) -> ResponseScanner {
    feed(ResponseScanner::sse(), &[body.as_bytes()])
}

fn json(body: &str) -> ResponseScanner {
    feed(ResponseScanner::json(), &[body.as_bytes()])
}

/// `event: NAME` + one data line per event, each ended by a blank line.
fn events(evs: &[(&str, &str)]) -> String {
    evs.iter()
        .map(|(e, d)| format!("event: {e}\ndata: {d}\n\n"))
        .collect()
}

fn delta(usage: &str) -> String {
    format!(
        "{{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"end_turn\"}},\"usage\":{usage}}}"
    )
}

fn start(usage: &str) -> String {
    format!(
        "{{\"type\":\"message_start\",\"message\":{{\"model\":\"claude-haiku-4-5\",\"usage\":{usage}}}}}"
    )
}

/// A stream whose message_start reports input 10, output 1, then a message_delta whose
/// usage is `usage`.
fn with_delta(usage: &str) -> ResponseScanner {
    sse(&events(&[
        (
            "message_start",
            &start("{\"input_tokens\":10,\"output_tokens\":1}"),
        ),
        ("message_delta", &delta(usage)),
    ]))
}

#[test]
fn stream_counts_every_field_and_ignores_usage_written_in_strings() {
    let s = sse(STREAM);
    assert_eq!(*s.usage(), stream_usage());
    assert_eq!(s.model(), Model::Named(b"claude-sonnet-4-5-20250929"));
    assert_eq!(s.outcome(false), StreamOutcome::Completed);
    assert_eq!(s.error_type(), None);
    let c = s.usage().counts();
    assert_eq!(
        (
            c.input,
            c.output,
            c.cache_write_5m,
            c.cache_write_1h,
            c.cache_read
        ),
        (2095, 503, 1500, 500, 30000)
    );
    assert_eq!(c.web_search_requests, 2);
}

#[test]
fn body_counts_every_field_and_ignores_usage_in_content() {
    let s = json(BODY);
    assert_eq!(*s.usage(), body_usage());
    assert_eq!(s.model(), Model::Named(b"claude-opus-4-1"));
    assert_eq!(s.outcome(true), StreamOutcome::NotStream);
    assert_eq!(s.error_type(), None);
}

#[test]
fn every_split_of_a_stream_or_body_gives_the_same_result() {
    for (make, text, want) in [
        (
            ResponseScanner::sse as fn() -> ResponseScanner,
            STREAM,
            stream_usage(),
        ),
        (ResponseScanner::json, BODY, body_usage()),
    ] {
        let b = text.as_bytes();
        let whole = feed(make(), &[b]);
        assert_eq!(*whole.usage(), want);
        for cut in 0..=b.len() {
            let s = feed(make(), &[&b[..cut], &b[cut..]]);
            assert_eq!(s.usage(), whole.usage(), "cut at {cut}");
            assert_eq!(s.model(), whole.model(), "cut at {cut}");
            assert_eq!(s.outcome(false), whole.outcome(false), "cut at {cut}");
        }
        for a in (0..b.len()).step_by(13) {
            for c in (a..=b.len()).step_by(3) {
                let s = feed(make(), &[&b[..a], &b[a..c], &b[c..]]);
                assert_eq!(s.usage(), whole.usage(), "cuts {a} {c}");
                assert_eq!(s.model(), whole.model(), "cuts {a} {c}");
            }
        }
        let mut s = make();
        for byte in b.chunks(1) {
            s.feed(byte);
        }
        assert_eq!(s.usage(), whole.usage(), "byte by byte");
        assert_eq!(s.model(), whole.model(), "byte by byte");
        assert_eq!(s.outcome(false), whole.outcome(false), "byte by byte");
    }
}

#[test]
fn anthropic_shape_message_delta_only_updates_output() {
    let s = with_delta("{\"output_tokens\":42}");
    let u = s.usage();
    assert_eq!((u.input, u.output), (Some(10), Some(42)));
    assert_eq!(s.model(), Model::Named(b"claude-haiku-4-5"));
}

#[test]
fn usage_only_in_message_delta() {
    let s = sse(&events(&[
        (
            "message_start",
            "{\"type\":\"message_start\",\"message\":{\"model\":\"m\",\"content\":[]}}",
        ),
        ("content_block_delta", "{\"type\":\"content_block_delta\",\"delta\":{\"text\":\"x\"}}"),
        (
            "message_delta",
            &delta("{\"input_tokens\":30,\"cache_read_input_tokens\":4,\"cache_creation_input_tokens\":8,\"output_tokens\":9}"),
        ),
        ("message_stop", "{\"type\":\"message_stop\"}"),
    ]));
    let u = s.usage();
    assert_eq!(
        (u.input, u.output, u.cache_read, u.cache_creation),
        (Some(30), Some(9), Some(4), Some(8))
    );
    // cache_creation_input_tokens alone counts as 5-minute writes.
    assert_eq!(u.counts().cache_write_5m, 8);
    assert_eq!(s.outcome(false), StreamOutcome::Completed);
}

#[test]
fn later_events_replace_fields_they_carry() {
    let s = with_delta("{\"input_tokens\":11,\"output_tokens\":5}");
    assert_eq!((s.usage().input, s.usage().output), (Some(11), Some(5)));
    let s = sse(&events(&[
        ("message_delta", &delta("{\"output_tokens\":5}")),
        ("message_delta", &delta("{\"output_tokens\":9}")),
    ]));
    assert_eq!(s.usage().output, Some(9));
}

#[test]
fn cache_ttls_and_web_search() {
    let s = with_delta(
        "{\"cache_creation\":{\"ephemeral_1h_input_tokens\":70,\"ephemeral_5m_input_tokens\":30},\"cache_read_input_tokens\":900,\"server_tool_use\":{\"web_search_requests\":4}}",
    );
    let c = s.usage().counts();
    assert_eq!(
        (
            c.cache_write_5m,
            c.cache_write_1h,
            c.cache_read,
            c.web_search_requests
        ),
        (30, 70, 900, 4)
    );
}

#[test]
fn body_type_must_be_message_in_any_key_order() {
    // A Go relay writes keys in alphabetical order: model and usage before type.
    let s = json(
        "{\"content\":[],\"model\":\"m-1\",\"usage\":{\"input_tokens\":3},\"type\":\"message\"}",
    );
    assert_eq!(s.usage().input, Some(3));
    assert_eq!(s.model(), Model::Named(b"m-1"));
    // Until the type is known, nothing counts (the body may be cut there).
    let s = json("{\"model\":\"m-1\",\"usage\":{\"input_tokens\":3},\"ty");
    assert!(s.usage().is_empty());
    assert_eq!(s.model(), Model::None);
    // Error bodies carry no usage; another type does not count what it carries.
    for body in [
        "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}",
        "{\"type\":\"message_batch\",\"usage\":{\"input_tokens\":3},\"model\":\"m\"}",
        "{\"type\":\"message\",\"usage\":{\"input_tokens\":3},\"type\":\"other\"}",
        "{\"type\":\"messages\",\"usage\":{\"input_tokens\":3}}",
        "{\"type\":[\"message\"],\"usage\":{\"input_tokens\":3}}",
        "{\"type\":null,\"usage\":{\"input_tokens\":3}}",
        "{\"message\":{\"type\":\"message\",\"usage\":{\"input_tokens\":3}}}",
        "[{\"type\":\"message\",\"usage\":{\"input_tokens\":3}}]",
        "\"type\"",
    ] {
        let s = json(body);
        assert!(s.usage().is_empty(), "{body}");
        assert_eq!(s.model(), Model::None, "{body}");
    }
    // The later type wins, and an escaped spelling is the same string.
    let s = json("{\"type\":\"error\",\"usage\":{\"input_tokens\":3},\"type\":\"m\\u0065ssage\"}");
    assert_eq!(s.usage().input, Some(3));
}

#[test]
fn stream_paths_are_per_event() {
    // Root usage in message_start, message.usage in message_delta, and any usage in another
    // event are off the paths.
    let s = sse(&events(&[
        (
            "message_start",
            "{\"usage\":{\"input_tokens\":1},\"message\":{\"content\":[]}}",
        ),
        (
            "message_delta",
            "{\"message\":{\"usage\":{\"input_tokens\":2},\"model\":\"x\"}}",
        ),
        ("content_block_delta", "{\"usage\":{\"input_tokens\":3}}"),
        ("ping", "{\"message\":{\"usage\":{\"input_tokens\":4}}}"),
        ("message_stopped", "{\"usage\":{\"input_tokens\":5}}"),
    ]));
    assert!(s.usage().is_empty(), "{:?}", s.usage());
    assert_eq!(s.model(), Model::None);
    // An event without an event: line is read as message_start and message_delta would be.
    let s = sse(concat!(
        "data: {\"type\":\"message_start\",\"message\":{\"model\":\"m\",\"usage\":{\"input_tokens\":8,\"output_tokens\":1}}}\n\n",
        "data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":20}}\n\n",
    ));
    assert_eq!((s.usage().input, s.usage().output), (Some(8), Some(20)));
    assert_eq!(s.model(), Model::Named(b"m"));
}

#[test]
fn sse_framing_crlf_multiline_data_and_field_order() {
    let s = sse(concat!(
        "event: message_start\r\n",
        "data:{\"message\":\r\n",
        "data:  {\"usage\":\r\n",
        "data\r\n",
        "data: {\"input_tokens\": 5}}}\r\n",
        "\r\n",
        // The event: line after the data: a compatible order; until it the event is unnamed.
        "data: {\"usage\":{\"output_tokens\":6}}\r",
        "event: message_delta\r",
        "\r",
        "event: message_stop\r\n\r\n",
    ));
    assert_eq!((s.usage().input, s.usage().output), (Some(5), Some(6)));
    assert_eq!(s.outcome(false), StreamOutcome::Completed);
    // A \r\n is one line end, not a blank line: the event goes on.
    let s =
        sse("event: message_delta\r\ndata: {\"usage\":\r\ndata: {\"output_tokens\":7}}\r\n\r\n");
    assert_eq!(s.usage().output, Some(7));
    // A blank line between two data lines ends the event: the rest is a new, unnamed one.
    let s = sse("event: message_delta\ndata: {\"usage\":\n\ndata: {\"output_tokens\":7}}\n\n");
    assert_eq!(s.usage().output, None);
    // Comments, ids and other fields are skipped.
    let s = sse(": hi\nid: 1\nretry: 5\nevent: message_delta\n: c\ndata: {\"usage\":{\"output_tokens\":3}}\n\n");
    assert_eq!(s.usage().output, Some(3));
}

#[test]
fn hostile_numbers_saturate_or_are_ignored() {
    let s = with_delta("{\"output_tokens\":99999999999999999999999999999999,\"input_tokens\":18446744073709551615}");
    assert_eq!(
        (s.usage().input, s.usage().output),
        (Some(u64::MAX), Some(u64::MAX))
    );
    assert_eq!(s.usage().counts().output, u64::MAX);
    let s = with_delta("{\"input_tokens\":18446744073709551616}");
    assert_eq!(s.usage().input, Some(u64::MAX));
    // Not a plain non-negative integer: the earlier value (10, 1) stays.
    for v in [
        "-5",
        "-0",
        "1.5",
        "10.0",
        "1e3",
        "1E3",
        "2e-1",
        "01",
        "00",
        "+1",
        "-",
        "\"12\"",
        "null",
        "true",
        "false",
        "{\"value\":12}",
        "[12]",
        "{}",
        "[]",
    ] {
        let s = with_delta(&format!("{{\"input_tokens\":{v},\"output_tokens\":{v}}}"));
        assert_eq!(
            (s.usage().input, s.usage().output),
            (Some(10), Some(1)),
            "{v}"
        );
        assert_eq!(s.outcome(false), StreamOutcome::UpstreamCut);
    }
    let s = with_delta("{\"input_tokens\":0}");
    assert_eq!(s.usage().input, Some(0));
}

#[test]
fn duplicate_keys_the_later_valid_one_wins() {
    let s = with_delta("{\"output_tokens\":5,\"output_tokens\":7}");
    assert_eq!(s.usage().output, Some(7));
    let s = with_delta("{\"output_tokens\":5,\"output_tokens\":\"7\"}");
    assert_eq!(s.usage().output, Some(5));
    // Two usage objects in one body merge like two events.
    let s = json("{\"type\":\"message\",\"usage\":{\"input_tokens\":1},\"usage\":{\"output_tokens\":2},\"usage\":null}");
    assert_eq!((s.usage().input, s.usage().output), (Some(1), Some(2)));
    // An escaped key is the same key.
    let s = with_delta(
        "{\"\\u006futput_tokens\":8,\"output_tok\\u0065ns\":9,\"out\\u00fft_tokens\":1}",
    );
    assert_eq!(s.usage().output, Some(9));
}

#[test]
fn deep_nesting_costs_a_counter() {
    let deep = format!("{}{}", "[{\"a\":".repeat(50_000), "1}]".repeat(50_000));
    let body =
        format!("{{\"type\":\"message\",\"content\":{deep},\"usage\":{{\"input_tokens\":4}}}}");
    assert_eq!(json(&body).usage().input, Some(4));
    // Nesting inside usage is off the paths too.
    let s = with_delta(&format!("{{\"extra\":{deep},\"output_tokens\":3,\"cache_creation\":{{\"x\":{deep},\"ephemeral_1h_input_tokens\":2}}}}"));
    assert_eq!(
        (s.usage().output, s.usage().cache_write_1h),
        (Some(3), Some(2))
    );
    // Unclosed: the document never ends, nothing after it is mistaken for a path.
    let body = format!(
        "{{\"type\":\"message\",\"content\":{}\"usage\":{{\"input_tokens\":4}}}}",
        "[".repeat(100_000)
    );
    assert!(json(&body).usage().is_empty());
}

#[test]
fn truncated_or_invalid_json_keeps_what_was_committed() {
    // Cut mid-number: only that field is lost.
    let body = "{\"type\":\"message\",\"usage\":{\"input_tokens\":12,\"output_tokens\":345";
    let s = json(body);
    assert_eq!((s.usage().input, s.usage().output), (Some(12), None));
    let s = json(&body[..body.len() - 1]);
    assert_eq!(s.usage().output, None);
    // Invalid: reading stops there, what came before stays.
    for bad in [
        "{\"type\":\"message\",\"usage\":{\"input_tokens\":12,,\"output_tokens\":3}}",
        "{\"type\":\"message\",\"usage\":{\"input_tokens\":12 \"output_tokens\":3}}",
        "{\"type\":\"message\",\"usage\":{\"input_tokens\":12,\"output_tokens\" 3}}",
        "{\"type\":\"message\",\"usage\":{\"input_tokens\":12 ]\"output_tokens\":3}}",
        "{\"type\":\"message\",\"usage\":{\"input_tokens\":12,\"output_tokens\":3x}}",
        "{\"type\":\"message\",\"usage\":{\"input_tokens\":12,output_tokens:3}}",
        "{\"type\":\"message\",\"usage\":{\"input_tokens\":12}}{\"usage\":{\"output_tokens\":3}}",
    ] {
        let s = json(bad);
        assert_eq!(
            (s.usage().input, s.usage().output),
            (Some(12), None),
            "{bad}"
        );
    }
    // A number is complete only when what follows may follow a value.
    for bad in ["12]", "12x", "12\"", "12:"] {
        let s = json(&format!(
            "{{\"type\":\"message\",\"usage\":{{\"input_tokens\":{bad}}}}}"
        ));
        assert_eq!(s.usage().input, None, "{bad}");
    }
    // In a stream an invalid event spoils only itself.
    let s = sse(&events(&[
        (
            "message_start",
            "{\"message\":{\"usage\":{\"input_tokens\":12,\"output_tokens\":1",
        ),
        ("message_delta", "{\"usage\":{\"output_tokens\":}}"),
        (
            "message_delta",
            "{\"usage\":{\"cache_read_input_tokens\":3}} garbage {\"usage\":{\"output_tokens\":4}}",
        ),
        ("message_delta", "{\"usage\":{\"output_tokens\":9}}"),
    ]));
    let u = s.usage();
    assert_eq!(
        (u.input, u.output, u.cache_read),
        (Some(12), Some(9), Some(3))
    );
}

#[test]
fn strings_hide_keys_and_escapes_are_followed() {
    let s = json(concat!(
        "{\"type\":\"message\",\"content\":[{\"type\":\"text\",\"text\":\"\\\"},",
        "\\\"usage\\\":{\\\"input_tokens\\\":1}, \\\\\\\"\\\\\"},\"usage\":{\"input_tokens\":2}]",
        ",\"x\\\"usage\":{\"input_tokens\":3},\"usage\\\"\":{\"input_tokens\":4},\"usage\":{\"output_tokens\":5}}",
    ));
    assert_eq!((s.usage().input, s.usage().output), (None, Some(5)));
    // A text delta is a skipped event; even as an unnamed event its text is a string.
    let s = sse(concat!(
        "event: content_block_delta\ndata: {\"delta\":{\"text\":\"\\n\\nevent: message_delta\\ndata: {\\\"usage\\\":{\\\"output_tokens\\\":999}}\"}}\n\n",
        "data: {\"delta\":{\"text\":\"{\\\"usage\\\":{\\\"output_tokens\\\":999}}\"},\"x\":\"usage\"}\n\n",
        "data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":3}}\n\n",
    ));
    assert_eq!(s.usage().output, Some(3));
}

#[test]
fn invalid_utf8_is_just_bytes() {
    let mut b = Vec::new();
    b.extend_from_slice(b"{\"type\":\"message\",\"content\":[{\"text\":\"\xff\xfe\xc3\x28\xed\xa0\x80\x00\"}],\"\xff\":\xc3,");
    let s = feed(ResponseScanner::json(), &[&b]);
    assert!(s.usage().is_empty());
    let mut b = b"{\"type\":\"message\",\"content\":[{\"text\":\"\xff\xfe\xc3\x28\x00\"}],\"model\":\"m\xc3\xa9\",\"usage\":{\"input_tokens\":6}}".to_vec();
    let s = feed(ResponseScanner::json(), &[&b]);
    assert_eq!((s.usage().input, s.model()), (Some(6), Model::Invalid));
    b.clear();
    b.extend_from_slice(
        b"event: message_delta\ndata: {\"d\":\"\xff\xff\",\"usage\":{\"output_tokens\":6}}\n\n",
    );
    let s = feed(ResponseScanner::sse(), &[&b]);
    assert_eq!(s.usage().output, Some(6));
}

#[test]
fn model_must_be_a_short_plain_name() {
    let model = |v: &str| {
        let s = json(&format!("{{\"type\":\"message\",\"model\":{v}}}"));
        let m = match s.model() {
            Model::None => None,
            Model::Named(n) => Some(Ok(n.to_vec())),
            Model::Invalid => Some(Err(())),
        };
        m
    };
    let named = |n: &str| Some(Ok(n.as_bytes().to_vec()));
    assert_eq!(
        model("\"claude-3-5-sonnet@20241022\""),
        named("claude-3-5-sonnet@20241022")
    );
    assert_eq!(
        model("\"us.anthropic.claude:0/x+y_z\""),
        named("us.anthropic.claude:0/x+y_z")
    );
    let max = "a".repeat(MODEL_MAX);
    assert_eq!(model(&format!("\"{max}\"")), named(&max));
    for bad in [
        format!("\"{max}a\""),
        "\"\"".into(),
        "\"claude\\/x\"".into(),
        "\"claude\\u0041\"".into(),
        "\"claude 3\"".into(),
        "\"claude\\\"\"".into(),
        "\"cl{aude}\"".into(),
        "null".into(),
        "42".into(),
        "{\"name\":\"claude\"}".into(),
        "[\"claude\"]".into(),
    ] {
        assert_eq!(model(&bad), Some(Err(())), "{bad}");
    }
    assert_eq!(json("{\"type\":\"message\"}").model(), Model::None);
    // The later model wins; a stream's model comes from message_start only.
    let s = json("{\"model\":\"a\",\"type\":\"message\",\"model\":\"b\"}");
    assert_eq!(s.model(), Model::Named(b"b"));
    // Cut inside the model string: the name never ended.
    assert_eq!(
        json("{\"type\":\"message\",\"model\":\"claude").model(),
        Model::Invalid
    );
}

#[test]
fn error_events_carry_their_type() {
    let err = |t: &str| {
        sse(&format!(
            "event: message_start\ndata: {}\n\nevent: error\ndata: {{\"type\":\"error\",\"error\":{{\"message\":\"x\",\"type\":{t}}}}}\n\n",
            start("{\"input_tokens\":3}")
        ))
    };
    for t in ErrorType::ALL {
        if t != ErrorType::Other {
            let s = err(&format!("\"{}\"", t.label()));
            assert_eq!(s.error_type(), Some(t));
            assert_eq!(s.outcome(false), StreamOutcome::ErrorEvent);
            assert_eq!(s.usage().input, Some(3), "usage before the error stays");
        }
    }
    assert_eq!(
        err("\"overloaded\\u005ferror\"").error_type(),
        Some(ErrorType::Overloaded)
    );
    for t in [
        "\"overloaded_errors\"",
        "\"Overloaded_error\"",
        "\"\"",
        "null",
        "7",
        "{\"type\":\"api_error\"}",
    ] {
        assert_eq!(err(t).error_type(), Some(ErrorType::Other), "{t}");
    }
    let s = sse("event: error\ndata: {\"type\":\"error\"}\n\n");
    assert_eq!(s.error_type(), Some(ErrorType::Other));
    let s = sse("event: error\n");
    assert_eq!(s.error_type(), Some(ErrorType::Other));
    // error.type outside an error event is nothing.
    let s = sse("event: message_delta\ndata: {\"error\":{\"type\":\"api_error\"}}\n\ndata: {\"error\":{\"type\":\"api_error\"}}\n\n");
    assert_eq!(
        (s.error_type(), s.outcome(false)),
        (None, StreamOutcome::UpstreamCut)
    );
}

#[test]
fn outcome_only_reads_no_usage_but_still_the_error_type() {
    let mut s = ResponseScanner::sse_outcome_only();
    s.feed(STREAM.as_bytes());
    assert!(s.usage().is_empty());
    assert_eq!(s.model(), Model::None);
    assert_eq!(s.outcome(false), StreamOutcome::Completed);
    s.feed(
        b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"rate_limit_error\"}}\n\n",
    );
    assert_eq!(s.error_type(), Some(ErrorType::RateLimit));
    assert_eq!(s.outcome(false), StreamOutcome::ErrorEvent);
    // A JSON body on an SSE scanner, and SSE on a JSON one: nothing to count.
    assert!(sse(BODY).usage().is_empty());
    assert!(json(STREAM).usage().is_empty());
}

#[test]
fn cut_streams_keep_what_they_saw() {
    let b = STREAM.as_bytes();
    let start_end = STREAM.find("event: content_block_start").unwrap();
    let s = feed(ResponseScanner::sse(), &[&b[..start_end]]);
    assert_eq!((s.usage().input, s.usage().output), (Some(2095), Some(1)));
    assert_eq!(s.outcome(false), StreamOutcome::UpstreamCut);
    assert_eq!(s.outcome(true), StreamOutcome::ClientAbort);
    // Cut mid-number in message_start: fields before it stay.
    let at = STREAM.find("30000").unwrap() + 2;
    let s = feed(ResponseScanner::sse(), &[&b[..at]]);
    let u = s.usage();
    assert_eq!(
        (u.input, u.cache_creation, u.cache_read),
        (Some(2095), Some(2000), None)
    );
}

#[test]
fn fuzz_check_holds_for_real_and_hostile_bodies() {
    check_fuzz_input(STREAM.as_bytes());
    check_fuzz_input(BODY.as_bytes());
    check_fuzz_input(
        delta("{\"output_tokens\":5,\"output_tokens\":1e30,\"input_tokens\":18446744073709551616}")
            .as_bytes(),
    );
}

/// Fuzz finding: an event's data lines came before its `event: error` line. With usage off
/// the first line was not read (an unnamed event), with usage on it was, so the two modes
/// read different documents for the error. The event's data is all its lines joined, here
/// not JSON: both modes now give up on it alike.
#[test]
fn event_line_after_data_gives_the_event_up_in_both_modes() {
    let body = "data: {\"type\":\"co\nevent: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\"}}\n\n";
    let quiet = feed(ResponseScanner::sse_outcome_only(), &[body.as_bytes()]);
    let usage = sse(body);
    assert_eq!(quiet.error_type(), Some(ErrorType::Other));
    assert_eq!(usage.error_type(), Some(ErrorType::Other));
    // Named first, as servers write them: read.
    let body =
        "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\"}}\n\n";
    assert_eq!(sse(body).error_type(), Some(ErrorType::Overloaded));
    // Counts committed before the event changed name stay.
    let s = sse("event: message_delta\ndata: {\"usage\":{\"output_tokens\":5}}\nevent: error\ndata: {\"error\":{\"type\":\"api_error\"}}\n\n");
    assert_eq!(
        (s.usage().output, s.error_type()),
        (Some(5), Some(ErrorType::Other))
    );
}

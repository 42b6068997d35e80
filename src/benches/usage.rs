//! Usage extraction hot paths: per SSE event of a realistic Claude Code stream (with usage on
//! and in outcome-only mode), per non-streaming response (a typical one and a 1 MB one), and
//! the bare outcome scan the module ran before usage accounting.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ngx_http_relay_guard_module::usage::{ResponseScanner, SseScanner, StreamOutcome};

/// nginx hands the body over in buffers of about this size (proxy_buffer_size 8k).
const BUF: usize = 8 * 1024;

fn event(out: &mut String, name: &str, data: &str) {
    out.push_str("event: ");
    out.push_str(name);
    out.push_str("\ndata: ");
    out.push_str(data);
    out.push_str("\n\n");
}

/// A Claude Code turn: thinking, text, a tool call, with usage in message_start and
/// message_delta as the API sends them. Returns the stream and its number of events.
fn claude_code_stream() -> (Vec<u8>, u64) {
    let mut s = String::new();
    let mut n = 0u64;
    let mut ev = |s: &mut String, name: &str, data: &str| {
        event(s, name, data);
        n += 1;
    };
    ev(&mut s, "message_start", "{\"type\":\"message_start\",\"message\":{\"id\":\"msg_01XFDUDYJgAACzvnptvVoYEL\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5-20250929\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":3,\"cache_creation_input_tokens\":2194,\"cache_read_input_tokens\":41830,\"cache_creation\":{\"ephemeral_5m_input_tokens\":2194,\"ephemeral_1h_input_tokens\":0},\"output_tokens\":1,\"service_tier\":\"standard\"}}}");
    ev(&mut s, "content_block_start", "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\",\"signature\":\"\"}}");
    ev(&mut s, "ping", "{\"type\": \"ping\"}");
    for i in 0..60 {
        ev(&mut s, "content_block_delta", &format!("{{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"thinking_delta\",\"thinking\":\" the user wants the failing test {i} fixed, so first\"}}}}"));
    }
    ev(&mut s, "content_block_delta", "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"signature_delta\",\"signature\":\"EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds2Y0QTHmUJ8oFfrw5Y2nbKJl9mPKnrLxUoHQ2e3a\"}}");
    ev(
        &mut s,
        "content_block_stop",
        "{\"type\":\"content_block_stop\",\"index\":0}",
    );
    ev(&mut s, "content_block_start", "{\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}");
    for i in 0..120 {
        ev(&mut s, "content_block_delta", &format!("{{\"type\":\"content_block_delta\",\"index\":1,\"delta\":{{\"type\":\"text_delta\",\"text\":\"I'll look at `src/lib.rs` line {i} and\"}}}}"));
    }
    ev(
        &mut s,
        "content_block_stop",
        "{\"type\":\"content_block_stop\",\"index\":1}",
    );
    ev(&mut s, "content_block_start", "{\"type\":\"content_block_start\",\"index\":2,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_01A09q90qw90lq917835lq9\",\"name\":\"Edit\",\"input\":{}}}");
    for i in 0..40 {
        ev(&mut s, "content_block_delta", &format!("{{\"type\":\"content_block_delta\",\"index\":2,\"delta\":{{\"type\":\"input_json_delta\",\"partial_json\":\"    let x{i} = parse(&buf[..n])?;\\\\n\"}}}}"));
    }
    ev(
        &mut s,
        "content_block_stop",
        "{\"type\":\"content_block_stop\",\"index\":2}",
    );
    ev(&mut s, "message_delta", "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":1187}}");
    ev(&mut s, "message_stop", "{\"type\":\"message_stop\"}");
    (s.into_bytes(), n)
}

fn scan(mut s: ResponseScanner, body: &[u8]) -> ResponseScanner {
    for b in body.chunks(BUF) {
        s.feed(b);
    }
    s
}

fn per_event(c: &mut Criterion) {
    let (stream, n) = claude_code_stream();
    let done = scan(ResponseScanner::sse(), &stream);
    assert_eq!(done.usage().output, Some(1187));
    assert_eq!(done.outcome(false), StreamOutcome::Completed);
    println!(
        "sse stream: {} events, {} bytes ({} per event)",
        n,
        stream.len(),
        stream.len() as u64 / n
    );
    let mut g = c.benchmark_group("sse_event");
    g.throughput(Throughput::Elements(n));
    g.bench_function("usage", |b| {
        b.iter(|| {
            black_box(
                scan(ResponseScanner::sse(), black_box(&stream))
                    .usage()
                    .output,
            )
        })
    });
    g.bench_function("outcome_only", |b| {
        b.iter(|| {
            black_box(scan(ResponseScanner::sse_outcome_only(), black_box(&stream)).outcome(false))
        })
    });
    g.bench_function("before_usage_accounting", |b| {
        b.iter(|| {
            let mut s = SseScanner::new();
            for piece in black_box(&stream).chunks(BUF) {
                s.feed(piece);
            }
            black_box(s.outcome(false))
        })
    });
    g.finish();
}

fn typical_body() -> Vec<u8> {
    concat!(
        "{\"id\":\"msg_01XFDUDYJgAACzvnptvVoYEL\",\"type\":\"message\",\"role\":\"assistant\",",
        "\"model\":\"claude-sonnet-4-5-20250929\",\"content\":[{\"type\":\"text\",\"text\":",
        "\"The failing test is `parses_split_frames`: the parser assumes a frame header never ",
        "straddles two reads, so when the socket returns 3 bytes of a 5-byte header it reads the ",
        "length from uninitialised memory.\\n\\nThe fix is to keep the partial header in the ",
        "decoder state and resume from it:\\n\\n```rust\\nif self.pending.len() + buf.len() < HEADER ",
        "{\\n    self.pending.extend_from_slice(buf);\\n    return Ok(None);\\n}\\n```\\n\\n",
        "I also added a test that feeds the frame one byte at a time.\"},{\"type\":\"tool_use\",",
        "\"id\":\"toolu_01A09q90qw90lq917835lq9\",\"name\":\"Edit\",\"input\":{\"file_path\":",
        "\"/work/src/decoder.rs\",\"old_string\":\"let len = u32::from_be_bytes(hdr);\",",
        "\"new_string\":\"let len = u32::from_be_bytes(self.header()?);\"}}],",
        "\"stop_reason\":\"tool_use\",\"stop_sequence\":null,\"usage\":{\"input_tokens\":2095,",
        "\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":48213,\"cache_creation\":",
        "{\"ephemeral_5m_input_tokens\":0,\"ephemeral_1h_input_tokens\":0},\"output_tokens\":503,",
        "\"service_tier\":\"standard\",\"server_tool_use\":{\"web_search_requests\":0}}}",
    )
    .as_bytes()
    .to_vec()
}

/// A 1 MB response: a long answer of code (escaped newlines and quotes) and a tool call
/// whose input is a large file.
fn big_body() -> Vec<u8> {
    let line = "    let value = map.get(\\\"key\\\").ok_or(Error::Missing)?;\\n";
    let mut s = String::from("{\"id\":\"msg_01\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-opus-4-1\",\"content\":[{\"type\":\"text\",\"text\":\"");
    while s.len() < 512 * 1024 {
        s.push_str(line);
    }
    s.push_str("\"},{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"Write\",\"input\":{\"file_path\":\"/a.rs\",\"content\":\"");
    while s.len() < 1024 * 1024 - 300 {
        s.push_str(line);
    }
    s.push_str("\"}}],\"stop_reason\":\"tool_use\",\"usage\":{\"input_tokens\":12,\"output_tokens\":250000}}");
    s.into_bytes()
}

fn per_body(c: &mut Criterion) {
    let typical = typical_body();
    let big = big_body();
    assert_eq!(
        scan(ResponseScanner::json(), &typical).usage().cache_read,
        Some(48213)
    );
    assert_eq!(
        scan(ResponseScanner::json(), &big).usage().output,
        Some(250000)
    );
    println!(
        "bodies: typical {} bytes, big {} bytes",
        typical.len(),
        big.len()
    );
    let mut g = c.benchmark_group("json_body");
    g.throughput(Throughput::Elements(1));
    g.bench_function("typical", |b| {
        b.iter(|| {
            black_box(
                scan(ResponseScanner::json(), black_box(&typical))
                    .usage()
                    .input,
            )
        })
    });
    g.throughput(Throughput::Bytes(big.len() as u64));
    g.sample_size(20);
    g.bench_function("1MB", |b| {
        b.iter(|| black_box(scan(ResponseScanner::json(), black_box(&big)).usage().input))
    });
    g.finish();
}

fn sse_chunk() -> Vec<u8> {
    let mut s = Vec::with_capacity(16 * 1024 + 512);
    s.extend_from_slice(b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01XFDUDYJgAACzvnptvVoYEL\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-sonnet-4-5\",\"stop_reason\":null,\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n");
    let mut n = 0;
    while s.len() < 16 * 1024 {
        let piece = format!(
            "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"token {n} of a fairly ordinary streamed answer\"}}}}\n\n"
        );
        s.extend_from_slice(piece.as_bytes());
        n += 1;
        if n % 20 == 0 {
            s.extend_from_slice(b"event: ping\ndata: {\"type\": \"ping\"}\n\n");
        }
    }
    s.truncate(16 * 1024);
    s
}

/// The bench metrics.rs had: one 16 KiB buffer of a stream, by throughput.
fn sse_buffer(c: &mut Criterion) {
    let chunk = sse_chunk();
    let mut g = c.benchmark_group("sse");
    g.throughput(Throughput::Bytes(chunk.len() as u64));
    g.bench_function("feed_16KiB", |b| {
        b.iter(|| {
            let mut s = SseScanner::new();
            s.feed(black_box(&chunk));
            black_box(s.outcome(false))
        })
    });
    g.bench_function("feed_16KiB_usage", |b| {
        b.iter(|| {
            let mut s = ResponseScanner::sse();
            s.feed(black_box(&chunk));
            black_box(s.usage().input)
        })
    });
    g.finish();
}

criterion_group!(benches, per_event, per_body, sse_buffer);
criterion_main!(benches);

//! Cost of log redaction per request: `cargo bench --bench redact`.
//!
//! The budget is 0.5 µs for the 20 headers of a typical Claude Code request when nothing
//! matches, which is what almost every request looks like once the glue has swapped the
//! client's credentials out. Each iteration prepares the request's masker once (the presented
//! credentials), then masks every header, as the LOG handler does.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use ngx_http_relay_guard_module::redact::{RedactConfig, Redactor};

const UPSTREAM_KEY: &[u8] =
    b"sk-ant-api03-Zq8xW3vT9mK2pL5nR7sY1uB4cD6eF0gH_iJ-kLmNoPqRsTuVwXyZ0123456789abcdefAA";
const CLIENT_TOKEN: &[u8] =
    b"rgt1.client-7.1767225600.0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const OPAQUE: &[u8] = b"opaque-client-token-0123456789ABCDEF";

/// Headers as Claude Code sends them to a relay.
const CLEAN: [(&str, &str); 20] = [
    ("host", "claude-relay.example.com"),
    ("user-agent", "claude-cli/1.0.83 (external, cli)"),
    ("accept", "application/json"),
    ("accept-encoding", "gzip, deflate, br"),
    ("accept-language", "*"),
    ("content-type", "application/json"),
    ("content-length", "184213"),
    ("anthropic-version", "2023-06-01"),
    (
        "anthropic-beta",
        "claude-code-20250219,oauth-2025-04-20,interleaved-thinking-2025-05-14,fine-grained-tool-streaming-2025-05-14",
    ),
    ("anthropic-dangerous-direct-browser-access", "true"),
    ("x-app", "cli"),
    ("x-stainless-arch", "x64"),
    ("x-stainless-lang", "js"),
    ("x-stainless-os", "Linux"),
    ("x-stainless-package-version", "0.55.1"),
    ("x-stainless-retry-count", "0"),
    ("x-stainless-runtime", "node"),
    ("x-stainless-runtime-version", "v22.17.0"),
    ("x-stainless-timeout", "600"),
    ("connection", "keep-alive"),
];

fn redactor() -> Redactor {
    let mut cfg = RedactConfig::with_defaults();
    cfg.add_literal(UPSTREAM_KEY);
    Redactor::new(&cfg, [0x42; 32])
}

fn mask_all(
    r: &Redactor,
    headers: &[(Vec<u8>, Vec<u8>)],
    extra: &[&[u8]],
    out: &mut Vec<u8>,
) -> usize {
    // Once per request, as the nginx glue does: the presented credentials are prepared here.
    let m = r.for_request(black_box(extra));
    let mut masked = 0;
    for (n, v) in headers {
        if m.mask_header(black_box(n), black_box(v), out) {
            masked += out.len();
        }
    }
    masked
}

fn owned(list: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
    list.iter()
        .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
}

fn benches(c: &mut Criterion) {
    let r = redactor();
    let mut out = Vec::with_capacity(1 << 17);

    let clean = owned(&CLEAN);
    let mut g = c.benchmark_group("redact");
    g.bench_function("20 clean headers", |b| {
        b.iter(|| mask_all(&r, &clean, &[CLIENT_TOKEN], &mut out))
    });
    g.bench_function("20 clean headers, no extra literal", |b| {
        b.iter(|| mask_all(&r, &clean, &[], &mut out))
    });
    g.bench_function("20 clean headers, opaque extra literal", |b| {
        b.iter(|| mask_all(&r, &clean, &[OPAQUE], &mut out))
    });

    let mut secret = CLEAN.to_vec();
    let bearer = format!("Bearer {}", String::from_utf8_lossy(CLIENT_TOKEN));
    let key = String::from_utf8_lossy(UPSTREAM_KEY).into_owned();
    secret[18] = ("authorization", &bearer);
    secret[19] = ("x-api-key", &key);
    let secret = owned(&secret);
    g.bench_function("20 headers, Bearer + x-api-key masked", |b| {
        b.iter(|| mask_all(&r, &secret, &[CLIENT_TOKEN], &mut out))
    });

    let mut long = Vec::with_capacity(64 * 1024);
    while long.len() < 64 * 1024 {
        long.extend_from_slice(b"claude-code-20250219,oauth-2025-04-20,interleaved-thinking; ");
    }
    g.throughput(Throughput::Bytes(long.len() as u64));
    g.bench_function("64 KiB clean header", |b| {
        b.iter(|| r.mask_header(b"x-long", black_box(&long), &[CLIENT_TOKEN], &mut out))
    });
    let mut long_secret = long.clone();
    long_secret.extend_from_slice(b" Bearer ");
    long_secret.extend_from_slice(CLIENT_TOKEN);
    g.bench_function("64 KiB header with a token at the end", |b| {
        b.iter(|| {
            r.mask_header(
                b"x-long",
                black_box(&long_secret),
                &[CLIENT_TOKEN],
                &mut out,
            )
        })
    });

    let query = format!("beta=true&key={key}&x=1&token=abc%2Fdef%3D&sig=0123456789abcdef&page=2");
    g.throughput(Throughput::Bytes(query.len() as u64));
    g.bench_function("query string with secrets", |b| {
        b.iter(|| r.mask_args(black_box(query.as_bytes()), &[], &mut out))
    });
    let line = format!("POST /v1/messages?{query} HTTP/1.1");
    g.bench_function("request line with secrets", |b| {
        b.iter(|| r.mask_target(black_box(line.as_bytes()), &[], &mut out))
    });
    g.bench_function("clean request line", |b| {
        b.iter(|| {
            r.mask_target(
                black_box(b"POST /v1/messages?beta=true HTTP/1.1"),
                &[CLIENT_TOKEN],
                &mut out,
            )
        })
    });
    g.finish();
}

criterion_group!(redact, benches);
criterion_main!(redact);

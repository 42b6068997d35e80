//! Metrics hot paths: record() at the LOG phase, a 1,000-key scrape, the SSE scanner.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ngx_http_relay_guard_module::metrics::{AuthOutcome, Metrics, MetricsLayout, Sample};
use ngx_http_relay_guard_module::usage::{SseScanner, StreamOutcome};

/// Heap region standing in for the nginx zone; leaked so handles may outlive the bench fn.
fn region(layout: MetricsLayout) -> Metrics {
    let len = layout.bytes_needed().unwrap();
    let mem: &'static mut [u64] = Box::leak(vec![0u64; len.div_ceil(8)].into_boxed_slice());
    // SAFETY: leaked, 8-aligned, large enough, used only through Metrics handles.
    unsafe { Metrics::init(mem.as_mut_ptr().cast(), len, layout) }.unwrap()
}

fn sample(key: &[u8], i: u64) -> Sample<'_> {
    Sample {
        key_id: key,
        status: if i % 50 == 0 { 529 } else { 200 },
        upstream_status: Some(if i % 50 == 0 { 529 } else { 200 }),
        auth: AuthOutcome::of(ngx_http_relay_guard_module::auth::Outcome::Ok),
        request_ms: (i * 37) % 40_000,
        upstream_connect_ms: Some(i % 20),
        upstream_header_ms: Some((i * 13) % 3_000),
        bytes_in: 2_000,
        bytes_out: 9_000,
        stream: StreamOutcome::Completed,
    }
}

fn record(c: &mut Criterion) {
    let m = region(MetricsLayout::default());
    let key = b"team-research.key-0123456789";
    let mut i = 0u64;
    c.bench_function("record/existing_key", |b| {
        b.iter(|| {
            i += 1;
            m.record(black_box(&sample(key, i)));
        })
    });

    let keys: Vec<String> = (0..100)
        .map(|k| format!("tenant-{k:03}.prod-key"))
        .collect();
    let mut i = 0u64;
    c.bench_function("record/100_keys", |b| {
        b.iter(|| {
            i += 1;
            let key = keys[(i % 100) as usize].as_bytes();
            m.record(black_box(&sample(key, i)));
        })
    });
}

fn render(c: &mut Criterion) {
    let m = region(MetricsLayout { max_keys: 1024 });
    for k in 0..1000 {
        let key = format!("tenant-{k:04}.prod-key");
        for i in 0..20 {
            m.record(&Sample {
                status: [200, 200, 200, 429, 529, 502][i % 6],
                upstream_status: if i % 6 == 5 {
                    None
                } else {
                    Some([200, 200, 200, 429, 529][i % 6])
                },
                stream: if i % 3 == 0 {
                    StreamOutcome::NotStream
                } else {
                    StreamOutcome::Completed
                },
                ..sample(key.as_bytes(), (k * 20 + i) as u64)
            });
        }
    }
    let mut out = String::new();
    m.render_prometheus(&mut out);
    println!(
        "render_prometheus/1000_keys: {} bytes, {} lines",
        out.len(),
        out.lines().count()
    );
    c.bench_function("render_prometheus/1000_keys", |b| {
        b.iter(|| {
            let mut out = String::new();
            m.render_prometheus(&mut out);
            black_box(out.len())
        })
    });
    c.bench_function("snapshot/1000_keys", |b| {
        b.iter(|| black_box(m.snapshot().keys.len()))
    });
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

fn sse(c: &mut Criterion) {
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
    g.finish();
}

criterion_group!(benches, record, render, sse);
criterion_main!(benches);

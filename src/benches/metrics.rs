//! Metrics hot paths: record() at the LOG phase, a 1,000-key scrape. (The SSE scanner's bench
//! is in usage.rs.)

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use ngx_http_relay_guard_module::metrics::{AuthOutcome, Metrics, MetricsLayout, Sample};
use ngx_http_relay_guard_module::usage::{StreamOutcome, TokenCounts};

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
        stream_error: None,
        // Every response carries usage: the LOG phase adds its tokens too.
        model: if i % 4 == 0 {
            b"claude-haiku-4-5"
        } else {
            b"claude-sonnet-4-5"
        },
        usage: Some(TokenCounts {
            input: 1200 + i % 7,
            output: 300,
            cache_write_5m: 0,
            cache_write_1h: 0,
            cache_read: 20_000,
            web_search_requests: 0,
        }),
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
    let m = region(MetricsLayout::keys(1024));
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

criterion_group!(benches, record, render);
criterion_main!(benches);

//! The access-phase cost of per-key limits: key lookup plus `admit` (with every limit a key
//! can have, and with only a rate), the slot release, and the LOG-phase charge.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use ngx_http_relay_guard_module::limits::{Limits, StrictValue};
use ngx_http_relay_guard_module::metrics::{Metrics, MetricsLayout};
use serde::de::DeserializeSeed;

fn region(layout: MetricsLayout) -> Metrics {
    let len = layout.bytes_needed().unwrap();
    let mem: &'static mut [u64] = Box::leak(vec![0u64; len.div_ceil(8)].into_boxed_slice());
    // SAFETY: leaked, 8-aligned, large enough, used only through Metrics handles.
    unsafe { Metrics::init(mem.as_mut_ptr().cast(), len, layout) }.unwrap()
}

fn limits(json: &str) -> Limits {
    let mut de = serde_json::Deserializer::from_str(json);
    Limits::from_json(&StrictValue::default().deserialize(&mut de).unwrap()).unwrap()
}

fn bench(c: &mut Criterion) {
    let m = region(MetricsLayout::keys(1000));
    let keys: Vec<String> = (0..1000).map(|i| format!("key-{i}")).collect();
    for k in &keys {
        m.key_limits(k.as_bytes());
    }
    // Generous limits: the bench measures the admitted path, the one every request takes.
    let all = limits(
        r#"{"requests_per_minute":1000000,"burst":1000000,"concurrent_requests":100000,
            "tokens":[{"budget":1099511627775,"per":"1d"},{"budget":1099511627775,"per":"5h"}]}"#,
    );
    let rate = limits(r#"{"requests_per_minute":1000000,"burst":1000000}"#);
    let mut now = 1_796_000_000_000u64;
    let mut i = 0usize;
    c.bench_function(
        "limits: lookup + admit + release, every limit (1,000 keys)",
        |b| {
            b.iter(|| {
                i = (i + 1) % keys.len();
                now += 1;
                let k = m.key_limits(black_box(keys[i].as_bytes()));
                if let Ok(a) = k.admit(&all, now) {
                    if let Some(s) = a.slot {
                        s.release();
                    }
                }
            })
        },
    );
    c.bench_function("limits: lookup + admit, rate only", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            now += 1;
            let k = m.key_limits(black_box(keys[i].as_bytes()));
            black_box(k.admit(&rate, now).is_ok())
        })
    });
    c.bench_function("limits: charge two budgets", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            let k = m.key_limits(black_box(keys[i].as_bytes()));
            k.charge(&all, black_box(1234), 1_796_000_000);
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);

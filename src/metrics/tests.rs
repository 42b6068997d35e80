//! Whole-region tests: several handles on one region, cardinality bound, attach checks, and
//! a strict reader for the Prometheus output.

use std::collections::{HashMap, HashSet};
use std::mem::offset_of;

use super::layout::Header;
use super::*;
use crate::usage::StreamOutcome;

/// Stand-in for the nginx zone: 8-aligned, zero-initialised bytes.
struct Region(Vec<u64>);

impl Region {
    fn new(layout: MetricsLayout) -> Region {
        Region(vec![0; layout.bytes_needed().unwrap().div_ceil(8)])
    }
    fn ptr(&mut self) -> *mut u8 {
        self.0.as_mut_ptr().cast()
    }
    fn len(&self) -> usize {
        self.0.len() * 8
    }
    fn init(&mut self, layout: MetricsLayout) -> Metrics {
        // SAFETY: owned, aligned, large enough, not shared during the call; outlives the
        // handle in every test.
        unsafe { Metrics::init(self.ptr(), self.len(), layout) }.unwrap()
    }
    fn attach(&mut self) -> Result<Metrics, MetricsError> {
        // SAFETY: as in `init`; the region only ever holds Metrics data.
        unsafe { Metrics::attach(self.ptr(), self.len()) }
    }
    fn poke_u32(&mut self, offset: usize, v: u32) {
        let mut bytes: Vec<u8> = self.0.iter().flat_map(|w| w.to_ne_bytes()).collect();
        bytes[offset..offset + 4].copy_from_slice(&v.to_ne_bytes());
        for (w, c) in self.0.iter_mut().zip(bytes.chunks(8)) {
            *w = u64::from_ne_bytes(c.try_into().unwrap());
        }
    }
}

fn sample(key: &[u8], status: u16) -> Sample<'_> {
    Sample {
        key_id: key,
        status,
        upstream_status: Some(status),
        auth: AuthOutcome::of(crate::auth::Outcome::Ok),
        request_ms: 120,
        upstream_connect_ms: Some(4),
        upstream_header_ms: Some(80),
        bytes_in: 1000,
        bytes_out: 5000,
        stream: StreamOutcome::NotStream,
        stream_error: None,
        model: b"",
        usage: None,
    }
}

#[test]
fn counts_and_buckets_after_known_samples() {
    let layout = MetricsLayout::keys(16);
    let mut r = Region::new(layout);
    let m = r.init(layout);
    m.record(&sample(b"alice", 200));
    m.record(&Sample {
        request_ms: 45_000,
        upstream_header_ms: Some(1_500),
        stream: StreamOutcome::Completed,
        ..sample(b"alice", 200)
    });
    m.record(&Sample {
        upstream_status: None,
        upstream_connect_ms: None,
        upstream_header_ms: None,
        stream: StreamOutcome::UpstreamCut,
        ..sample(b"alice", 504)
    });
    m.record(&Sample {
        auth: AuthOutcome::of(crate::auth::Outcome::Missing),
        upstream_status: None,
        ..sample(b"", 401)
    });
    let snap = m.snapshot();
    assert_eq!(snap.keys_tracked, 1);
    let a = snap.get("alice").unwrap();
    assert_eq!(a.requests(), 3);
    assert_eq!(a.class, [0, 2, 0, 0, 1, 0]);
    assert_eq!(a.status(504), Some(1));
    assert_eq!(a.errors, [0, 1]);
    assert_eq!(a.streams, [1, 0, 1, 0]);
    assert_eq!(a.bytes_in, 3000);
    assert_eq!(a.bytes_out, 15_000);
    let req = &a.hist[HIST_REQUEST];
    assert_eq!((req.count(), req.sum_ms), (3, 45_240));
    assert_eq!(req.buckets[bucket_index(120)], 2);
    assert_eq!(req.buckets[12], 1); // 45 s falls in (30 s, 60 s]
    assert_eq!(a.hist[HIST_CONNECT].count(), 2);
    assert_eq!(a.hist[HIST_HEADER].buckets[7], 1);
    let anon = snap.get("-").unwrap();
    assert_eq!(anon.auth(AuthOutcome::of(crate::auth::Outcome::Missing)), 1);
    assert_eq!(anon.class[3], 1);
    assert!(snap.get("other").is_none(), "empty slots are left out");
}

#[test]
fn two_handles_share_series_across_threads() {
    let layout = MetricsLayout::keys(64);
    let mut r = Region::new(layout);
    let w1 = r.init(layout);
    let w2 = r.attach().unwrap();
    const THREADS: usize = 4;
    const PER: u64 = 5_000;
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let m = if t % 2 == 0 { w1 } else { w2 };
            s.spawn(move || {
                for i in 0..PER {
                    // Every thread races to insert the same 40 keys.
                    let key = format!("key-{}", i % 40);
                    m.record(&sample(key.as_bytes(), if i % 10 == 0 { 529 } else { 200 }));
                }
            });
        }
    });
    for snap in [w1.snapshot(), w2.snapshot()] {
        assert_eq!(snap.keys_tracked, 40, "no key inserted twice");
        assert_eq!(snap.keys.len(), 40);
        let total: u64 = snap.keys.iter().map(|k| k.stats.requests()).sum();
        assert_eq!(total, THREADS as u64 * PER);
        let k0 = snap.get("key-0").unwrap();
        assert_eq!(k0.requests(), THREADS as u64 * PER / 40);
        assert_eq!(k0.status(529), Some(k0.requests()));
        assert_eq!(k0.hist[HIST_REQUEST].count(), k0.requests());
    }
}

#[test]
fn cardinality_bound_goes_to_other() {
    let layout = MetricsLayout::keys(4);
    let mut r = Region::new(layout);
    let m = r.init(layout);
    for i in 0..50 {
        m.record(&sample(format!("k{i}").as_bytes(), 200));
    }
    m.record(&sample(&[b'x'; 65], 200));
    let snap = m.snapshot();
    assert_eq!(snap.keys_tracked, 4);
    assert_eq!(snap.get("other").unwrap().requests(), 47);
    assert_eq!(snap.keys.len(), 5);
    for i in 0..4 {
        assert_eq!(snap.get(&format!("k{i}")).unwrap().requests(), 1);
    }
}

#[test]
fn attach_verifies_header() {
    let layout = MetricsLayout::keys(8);
    let mut r = Region::new(layout);
    // Zeroed region: never initialised.
    assert_eq!(r.attach().err(), Some(MetricsError::BadMagic(0)));
    let m = r.init(layout);
    m.record(&sample(b"kept", 200));
    let again = r.attach().unwrap();
    assert_eq!(again.snapshot().get("kept").unwrap().requests(), 1);
    assert_eq!(again.layout(), layout);

    // Region shorter than the header claims.
    let len = r.len();
    // SAFETY: a prefix of a valid region.
    let short = unsafe { Metrics::attach(r.ptr(), len - 8) };
    assert!(matches!(short, Err(MetricsError::RegionTooSmall { .. })));

    r.poke_u32(offset_of!(Header, max_keys), 9);
    assert!(matches!(r.attach(), Err(MetricsError::LayoutMismatch(_))));
    r.poke_u32(offset_of!(Header, max_keys), 8);
    assert!(r.attach().is_ok());
    r.poke_u32(offset_of!(Header, version), 99);
    assert_eq!(
        r.attach().err(),
        Some(MetricsError::VersionMismatch {
            found: 99,
            expected: super::layout::VERSION
        })
    );
    r.poke_u32(offset_of!(Header, version), super::layout::VERSION);
    r.poke_u32(offset_of!(Header, fingerprint), 0);
    assert_eq!(
        r.attach().err(),
        Some(MetricsError::LayoutMismatch("fingerprint"))
    );
    r.poke_u32(offset_of!(Header, magic), 0x1234);
    assert!(matches!(r.attach(), Err(MetricsError::BadMagic(_))));
}

#[test]
fn init_rejects_bad_regions() {
    let layout = MetricsLayout::keys(8);
    let mut r = Region::new(layout);
    let (p, len) = (r.ptr(), r.len());
    // SAFETY: every call gets null, a pointer into the owned buffer, or a misaligned one
    // into it; init rejects each before writing.
    unsafe {
        assert_eq!(
            Metrics::init(std::ptr::null_mut(), len, layout).err(),
            Some(MetricsError::NullRegion)
        );
        assert_eq!(
            Metrics::init(p.add(4), len - 8, layout).err(),
            Some(MetricsError::Misaligned)
        );
        assert!(matches!(
            Metrics::init(p, len - 8, layout),
            Err(MetricsError::RegionTooSmall { .. })
        ));
        assert_eq!(
            Metrics::init(p, len, MetricsLayout::keys(0)).err(),
            Some(MetricsError::InvalidMaxKeys(0))
        );
    }
}

#[test]
fn attach_or_init_keeps_or_resets() {
    let layout = MetricsLayout::keys(8);
    let mut r = Region::new(MetricsLayout::keys(16));
    let (p, len) = (r.ptr(), r.len());
    // SAFETY: owned aligned buffer, single-threaded.
    let (m, kept) = unsafe { Metrics::attach_or_init(p, len, layout) }.unwrap();
    assert!(!kept);
    m.record(&sample(b"a", 200));
    // SAFETY: as above.
    let (m2, kept) = unsafe { Metrics::attach_or_init(p, len, layout) }.unwrap();
    assert!(kept);
    assert_eq!(m2.snapshot().get("a").unwrap().requests(), 1);
    // SAFETY: as above.
    let (m3, kept) = unsafe { Metrics::attach_or_init(p, len, MetricsLayout::keys(16)) }.unwrap();
    assert!(!kept);
    assert!(m3.snapshot().keys.is_empty());
}

/// One histogram series as read back: `le` bounds, cumulative counts, `_count`.
type HistSeries = (Vec<f64>, Vec<f64>, Option<f64>);

/// Strict enough reader of the text format: line syntax, one HELP/TYPE per family before its
/// samples, contiguous families, `_total` counters, unique series, cumulative buckets with
/// `+Inf == _count`.
fn check_exposition(text: &str) -> HashMap<String, f64> {
    fn family_of<'a>(name: &'a str, types: &HashMap<String, String>) -> &'a str {
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = name.strip_suffix(suffix) {
                if types.get(base).map(String::as_str) == Some("histogram") {
                    return base;
                }
            }
        }
        name
    }
    fn parse_labels(s: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let b = s.as_bytes();
        let mut i = 0;
        while i < b.len() {
            let eq = s[i..].find('=').unwrap() + i;
            let name = &s[i..eq];
            assert!(
                name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "{name}"
            );
            assert_eq!(b[eq + 1], b'"');
            let mut v = String::new();
            let mut j = eq + 2;
            loop {
                match b[j] {
                    b'\\' => {
                        v.push(match b[j + 1] {
                            b'\\' => '\\',
                            b'"' => '"',
                            b'n' => '\n',
                            c => panic!("bad escape {c}"),
                        });
                        j += 2;
                    }
                    b'"' => break,
                    b'\n' => panic!("raw newline in label"),
                    _ => {
                        let c = s[j..].chars().next().unwrap();
                        v.push(c);
                        j += c.len_utf8();
                    }
                }
            }
            out.push((name.to_string(), v));
            i = j + 1;
            if i < b.len() {
                assert_eq!(b[i], b',');
                i += 1;
            }
        }
        out
    }

    let mut types: HashMap<String, String> = HashMap::new();
    let mut helps = HashSet::new();
    let mut done_families = HashSet::new();
    let mut current = String::new();
    let mut series = HashMap::new();
    let mut hists: HashMap<String, HistSeries> = HashMap::new();
    assert!(text.ends_with('\n'));
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kw, name, arg) = (
                parts.next().unwrap(),
                parts.next().unwrap(),
                parts.next().unwrap(),
            );
            match kw {
                "HELP" => assert!(helps.insert(name.to_string()), "dup HELP {name}"),
                "TYPE" => {
                    assert!(["counter", "gauge", "histogram"].contains(&arg));
                    assert!(
                        types.insert(name.to_string(), arg.to_string()).is_none(),
                        "dup TYPE {name}"
                    );
                    if arg == "counter" {
                        assert!(name.ends_with("_total"), "{name}");
                    }
                }
                _ => panic!("bad comment {line}"),
            }
            assert!(name.starts_with("relay_guard_"));
            continue;
        }
        let (head, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = if value == "+Inf" {
            f64::INFINITY
        } else {
            value.parse().unwrap()
        };
        let (name, labels) = match head.split_once('{') {
            Some((n, l)) => (n, parse_labels(l.strip_suffix('}').unwrap())),
            None => (head, Vec::new()),
        };
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{name}"
        );
        let fam = family_of(name, &types).to_string();
        assert!(types.contains_key(&fam), "sample before TYPE: {line}");
        if fam != current {
            assert!(
                done_families.insert(fam.clone()),
                "family {fam} not contiguous"
            );
            current = fam.clone();
        }
        assert!(
            series.insert(head.to_string(), value).is_none(),
            "duplicate series {head}"
        );
        if types[&fam] == "histogram" {
            let base: Vec<_> = labels.iter().filter(|(n, _)| n != "le").collect();
            let entry = hists.entry(format!("{fam}{base:?}")).or_default();
            if name.ends_with("_bucket") {
                let le = &labels.iter().find(|(n, _)| n == "le").unwrap().1;
                let le: f64 = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap()
                };
                entry.0.push(le);
                entry.1.push(value);
            } else if name.ends_with("_count") {
                entry.2 = Some(value);
            }
        }
    }
    assert!(!hists.is_empty());
    for (k, (les, counts, count)) in &hists {
        assert!(les.windows(2).all(|w| w[0] < w[1]), "{k} le order");
        assert!(
            counts.windows(2).all(|w| w[0] <= w[1]),
            "{k} not cumulative"
        );
        assert_eq!(*les.last().unwrap(), f64::INFINITY, "{k}");
        assert_eq!(Some(*counts.last().unwrap()), *count, "{k} +Inf != _count");
    }
    series
}

#[test]
fn prometheus_output_parses_back() {
    let layout = MetricsLayout::keys(4);
    let mut r = Region::new(layout);
    let m = r.init(layout);
    for i in 0..6 {
        m.record(&Sample {
            request_ms: 10 * i * i * i,
            stream: StreamOutcome::UpstreamCut,
            ..sample(
                format!("key.{i}").as_bytes(),
                [200, 529, 502][i as usize % 3],
            )
        });
    }
    m.record(&Sample {
        auth: AuthOutcome::of(crate::auth::Outcome::BadSignature),
        upstream_status: None,
        upstream_connect_ms: None,
        upstream_header_ms: None,
        ..sample(b"", 401)
    });
    let mut out = String::new();
    m.render_prometheus(&mut out);
    let series = check_exposition(&out);
    assert_eq!(series["relay_guard_key_slots_max"], 4.0);
    assert_eq!(series["relay_guard_keys_tracked"], 4.0);
    assert_eq!(
        series["relay_guard_requests_total{key=\"key.1\",class=\"5xx\"}"],
        1.0
    );
    assert_eq!(
        series["relay_guard_responses_total{key=\"key.1\",status=\"529\"}"],
        1.0
    );
    assert_eq!(
        series["relay_guard_errors_total{key=\"other\",source=\"upstream\"}"],
        2.0
    );
    assert_eq!(
        series["relay_guard_auth_total{key=\"-\",outcome=\"BAD_SIGNATURE\"}"],
        1.0
    );
    assert_eq!(
        series["relay_guard_streams_total{key=\"key.0\",outcome=\"upstream_cut\"}"],
        1.0
    );
    assert_eq!(
        series["relay_guard_request_duration_seconds_bucket{key=\"key.2\",le=\"0.05\"}"],
        0.0
    );
    assert_eq!(
        series["relay_guard_request_duration_seconds_bucket{key=\"key.2\",le=\"0.1\"}"],
        1.0
    );
    assert_eq!(
        series["relay_guard_request_duration_seconds_sum{key=\"other\"}"],
        1.89
    );
    assert_eq!(
        series["relay_guard_upstream_header_seconds_count{key=\"-\"}"],
        0.0
    );
    assert!(!series.contains_key("relay_guard_requests_total{key=\"key.1\",class=\"2xx\"}"));
}

#[test]
fn prometheus_escapes_odd_key_ids() {
    let layout = MetricsLayout::keys(4);
    let mut r = Region::new(layout);
    let m = r.init(layout);
    m.record(&sample(b"we\"ird\\key\nx", 200));
    let mut out = String::new();
    m.render_prometheus(&mut out);
    let series = check_exposition(&out);
    assert!(series
        .contains_key("relay_guard_requests_total{key=\"we\\\"ird\\\\key\\nx\",class=\"2xx\"}"));
}

#[test]
fn quantile_of_uniform_samples_via_region() {
    let layout = MetricsLayout::keys(4);
    let mut r = Region::new(layout);
    let m = r.init(layout);
    for i in 0..10_000u64 {
        m.record(&Sample {
            request_ms: i % 1000,
            ..sample(b"u", 200)
        });
    }
    let h = m.snapshot().get("u").unwrap().hist[HIST_REQUEST];
    let p99 = h.quantile_ms(0.99).unwrap();
    assert!(p99 > 500.0 && p99 <= 1000.0, "{p99}");
    let html = render_html(&m.snapshot());
    assert!(
        html.contains("<td>u</td><td>10000</td><td>0.00</td>"),
        "{html}"
    );
}

fn tokens(input: u64, output: u64) -> crate::usage::TokenCounts {
    crate::usage::TokenCounts {
        input,
        output,
        cache_write_5m: 3,
        cache_write_1h: 4,
        cache_read: 5,
        web_search_requests: 1,
    }
}

#[test]
fn usage_counts_per_key_and_model_with_bounds() {
    let layout = MetricsLayout {
        max_keys: 2,
        max_models: 2,
    };
    let mut r = Region::new(layout);
    let m = r.init(layout);
    let with = |key: &'static [u8], model: &'static [u8], t| Sample {
        model,
        usage: Some(t),
        ..sample(key, 200)
    };
    m.record(&with(b"alice", b"claude-a", tokens(10, 20)));
    m.record(&with(b"alice", b"claude-a", tokens(1, 2)));
    m.record(&with(b"alice", b"claude-b", tokens(100, 200)));
    // Past the model bound: `other`; no model named: `-`.
    m.record(&with(b"alice", b"claude-c", tokens(7, 7)));
    m.record(&with(b"alice", b"", tokens(9, 9)));
    // Another key's counters stay apart, and a request without usage adds no tokens.
    m.record(&with(b"bob", b"claude-a", tokens(1000, 0)));
    m.record(&sample(b"bob", 200));
    // A hostile upstream's huge number pins the counter instead of wrapping it.
    m.record(&with(b"carol", b"claude-a", tokens(u64::MAX, 0)));
    m.record(&with(b"carol", b"claude-a", tokens(u64::MAX, 0)));

    let snap = m.snapshot();
    let a = snap.usage("alice", "claude-a").unwrap();
    assert_eq!(a.tokens, [11, 22, 6, 8, 10]);
    assert_eq!((a.web_search_requests, a.responses), (2, 2));
    assert_eq!(snap.usage("alice", "claude-b").unwrap().tokens[0], 100);
    assert_eq!(snap.usage("alice", "other").unwrap().tokens[0], 7);
    assert_eq!(snap.usage("alice", "-").unwrap().tokens[0], 9);
    assert!(snap.usage("alice", "claude-c").is_none());
    let b = snap.usage("bob", "claude-a").unwrap();
    assert_eq!((b.tokens[0], b.responses), (1000, 1));
    assert_eq!(snap.get("bob").unwrap().requests(), 2);
    // carol is past keys=2: `other` key, and its input saturated.
    assert_eq!(snap.usage("other", "claude-a").unwrap().tokens[0], u64::MAX);
    assert_eq!(snap.models_tracked, 2);

    let mut out = String::new();
    m.render_prometheus(&mut out);
    let series = check_exposition(&out);
    let tok = |k: &str, model: &str, ty: &str| {
        series.get(&format!(
            "relay_guard_tokens_total{{key=\"{k}\",model=\"{model}\",type=\"{ty}\"}}"
        ))
    };
    assert_eq!(tok("alice", "claude-a", "input"), Some(&11.0));
    assert_eq!(tok("alice", "claude-a", "cache_write_1h"), Some(&8.0));
    assert_eq!(tok("alice", "other", "output"), Some(&7.0));
    assert_eq!(
        tok("bob", "claude-a", "output"),
        None,
        "zero series skipped"
    );
    assert_eq!(
        series["relay_guard_usage_responses_total{key=\"alice\",model=\"claude-a\"}"],
        2.0
    );
    assert_eq!(
        series["relay_guard_web_search_requests_total{key=\"bob\",model=\"claude-a\"}"],
        1.0
    );
    assert_eq!(series["relay_guard_model_slots_max"], 2.0);
    assert_eq!(series["relay_guard_models_tracked"], 2.0);
}

#[test]
fn stream_errors_by_type() {
    let layout = MetricsLayout::keys(4);
    let mut r = Region::new(layout);
    let m = r.init(layout);
    let err = |t| Sample {
        stream: StreamOutcome::ErrorEvent,
        stream_error: Some(t),
        ..sample(b"k", 200)
    };
    m.record(&err(crate::usage::ErrorType::Overloaded));
    m.record(&err(crate::usage::ErrorType::Overloaded));
    m.record(&err(crate::usage::ErrorType::Other));
    let mut out = String::new();
    m.render_prometheus(&mut out);
    let series = check_exposition(&out);
    assert_eq!(
        series["relay_guard_stream_errors_total{key=\"k\",type=\"overloaded_error\"}"],
        2.0
    );
    assert_eq!(
        series["relay_guard_stream_errors_total{key=\"k\",type=\"other\"}"],
        1.0
    );
    assert_eq!(
        series["relay_guard_streams_total{key=\"k\",outcome=\"error_event\"}"],
        3.0
    );
}

//! Prometheus text exposition format 0.0.4.
//!
//! Family-major order (the format requires each family's samples to be contiguous). Each
//! key's `key="…"` label is escaped once and reused; numbers are formatted by hand because
//! `write!` dominates the cost at ~60k lines for 1,000 keys.

use super::fleet_block::{FleetStats, LABELS as FLEET_LABELS, REDIS_ERROR_KINDS};
use super::histogram::{Histogram, BUCKET_LABELS};
use super::sample::{AuthOutcome, CLASS_LABELS, EXACT_STATUSES};
use super::snapshot::Snapshot;
use super::stats::{
    SlotStats, ERROR_SOURCES, HIST_CONNECT, HIST_HEADER, HIST_REQUEST, STREAM_OUTCOMES,
};
use super::usage_block::UsageStats;
use crate::limits::LimitKind;
use crate::usage::{ErrorType, TokenCounts};

/// `v` in decimal, written at the end of `buf`: no allocation, no `fmt` machinery.
pub fn u64_digits(mut v: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    &buf[i..]
}

pub fn push_u64(out: &mut String, v: u64) {
    let mut buf = [0u8; 20];
    // Only ASCII digits were written.
    out.push_str(std::str::from_utf8(u64_digits(v, &mut buf)).unwrap_or("0"));
}

/// Milliseconds as seconds with exactly three decimals, no float rounding.
fn push_seconds(out: &mut String, ms: u64) {
    push_u64(out, ms / 1000);
    let frac = ms % 1000;
    out.push('.');
    out.push(char::from(b'0' + (frac / 100) as u8));
    out.push(char::from(b'0' + (frac / 10 % 10) as u8));
    out.push(char::from(b'0' + (frac % 10) as u8));
}

/// Escapes a label value per the exposition format: backslash, double quote, newline.
pub fn escape_label_value(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    out.push_str("# HELP ");
    out.push_str(name);
    out.push(' ');
    out.push_str(help);
    out.push_str("\n# TYPE ");
    out.push_str(name);
    out.push(' ');
    out.push_str(kind);
    out.push('\n');
}

/// `name{key="k",extra_name="extra"} value`; `extra` is a trusted constant.
fn line(out: &mut String, name: &str, key_label: &str, extra: Option<(&str, &str)>, v: u64) {
    out.push_str(name);
    out.push('{');
    out.push_str(key_label);
    if let Some((n, val)) = extra {
        out.push(',');
        out.push_str(n);
        out.push_str("=\"");
        out.push_str(val);
        out.push('"');
    }
    out.push_str("} ");
    push_u64(out, v);
    out.push('\n');
}

fn histogram(out: &mut String, name: &str, key_label: &str, h: &Histogram) {
    let mut cum = 0u64;
    for (n, le) in h.buckets.iter().zip(BUCKET_LABELS) {
        cum += n;
        out.push_str(name);
        out.push_str("_bucket{");
        out.push_str(key_label);
        out.push_str(",le=\"");
        out.push_str(le);
        out.push_str("\"} ");
        push_u64(out, cum);
        out.push('\n');
    }
    out.push_str(name);
    out.push_str("_sum{");
    out.push_str(key_label);
    out.push_str("} ");
    push_seconds(out, h.sum_ms);
    out.push('\n');
    out.push_str(name);
    out.push_str("_count{");
    out.push_str(key_label);
    out.push_str("} ");
    push_u64(out, cum);
    out.push('\n');
}

/// A counter family with one label besides `key`.
struct Labelled<'a> {
    name: &'a str,
    help: &'a str,
    label: &'a str,
    values: &'a [&'a str],
    get: fn(&SlotStats, usize) -> u64,
}

/// Zero series are skipped to keep 1,000-key scrapes small.
fn counter_family(out: &mut String, snap: &Snapshot, labels: &[String], f: &Labelled<'_>) {
    family(out, f.name, "counter", f.help);
    for (k, key_label) in snap.keys.iter().zip(labels) {
        for (i, val) in f.values.iter().enumerate() {
            let v = (f.get)(&k.stats, i);
            if v != 0 {
                line(out, f.name, key_label, Some((f.label, val)), v);
            }
        }
    }
}

fn plain_counter(
    out: &mut String,
    snap: &Snapshot,
    labels: &[String],
    name: &str,
    help: &str,
    get: impl Fn(&SlotStats) -> u64,
) {
    family(out, name, "counter", help);
    for (k, key_label) in snap.keys.iter().zip(labels) {
        let v = get(&k.stats);
        if v != 0 {
            line(out, name, key_label, None, v);
        }
    }
}

/// Appends the exposition of `snap` to `out`.
pub fn render_prometheus(snap: &Snapshot, out: &mut String) {
    let labels: Vec<String> = snap
        .keys
        .iter()
        .map(|k| {
            let mut s = String::with_capacity(k.key.len() + 8);
            s.push_str("key=\"");
            escape_label_value(&mut s, &k.key);
            s.push('"');
            s
        })
        .collect();
    // ~3 KB per key with traffic, measured; avoids regrowing a multi-MB string.
    out.reserve(512 + snap.keys.len() * 3072);

    family(
        out,
        "relay_guard_key_slots_max",
        "gauge",
        "Distinct key ids tracked individually; more are counted as key=\"other\".",
    );
    out.push_str("relay_guard_key_slots_max ");
    push_u64(out, u64::from(snap.max_keys));
    out.push('\n');
    family(
        out,
        "relay_guard_keys_tracked",
        "gauge",
        "Key ids holding their own slot.",
    );
    out.push_str("relay_guard_keys_tracked ");
    push_u64(out, u64::from(snap.keys_tracked));
    out.push('\n');

    let statuses: Vec<String> = EXACT_STATUSES.iter().map(u16::to_string).collect();
    let statuses: Vec<&str> = statuses.iter().map(String::as_str).collect();
    let outcomes: Vec<&str> = AuthOutcome::ALL.iter().map(|o| o.label()).collect();
    let error_types: Vec<&str> = ErrorType::ALL.iter().map(|t| t.label()).collect();
    let limit_kinds: Vec<&str> = LimitKind::ALL.iter().map(|k| k.as_str()).collect();
    let fams = [
        Labelled {
            name: "relay_guard_requests_total",
            help: "Requests by response status class.",
            label: "class",
            values: &CLASS_LABELS,
            get: |s, i| s.class[i],
        },
        Labelled {
            name: "relay_guard_responses_total",
            help: "Responses with statuses that signal throttling, overload or relay failure.",
            label: "status",
            values: &statuses,
            get: |s, i| s.exact[i],
        },
        Labelled {
            name: "relay_guard_errors_total",
            help: "429 and 5xx responses by origin: passed through from upstream, or generated by the relay.",
            label: "source",
            values: &ERROR_SOURCES,
            get: |s, i| s.errors[i],
        },
        Labelled {
            name: "relay_guard_auth_total",
            help: "Requests by authentication outcome.",
            label: "outcome",
            values: &outcomes,
            get: |s, i| s.auth[i],
        },
        Labelled {
            name: "relay_guard_streams_total",
            help: "Streamed responses by how they ended: completed (message_stop), error_event (event: error), upstream_cut (upstream ended first), client_abort (client left first).",
            label: "outcome",
            values: &STREAM_OUTCOMES,
            get: |s, i| s.streams[i],
        },
        Labelled {
            name: "relay_guard_stream_errors_total",
            help: "Streams that carried an error event, by the event's error.type.",
            label: "type",
            values: &error_types,
            get: |s, i| s.stream_errors[i],
        },
        Labelled {
            name: "relay_guard_limited_total",
            help: "Requests a per-key limit refused (or, in dry run, would have): rpm, concurrency or tokens.",
            label: "limit",
            values: &limit_kinds,
            get: |s, i| s.limited[i],
        },
    ];
    for f in &fams {
        counter_family(out, snap, &labels, f);
    }
    plain_counter(
        out,
        snap,
        &labels,
        "relay_guard_bytes_received_total",
        "Bytes received from clients.",
        |s| s.bytes_in,
    );
    plain_counter(
        out,
        snap,
        &labels,
        "relay_guard_bytes_sent_total",
        "Bytes sent to clients.",
        |s| s.bytes_out,
    );

    usage_families(out, snap, &labels);

    // Every key with traffic appears in all three histogram families, empty or not, so
    // dashboards never see a family with a different key set.
    for (h, name, help) in [
        (
            HIST_REQUEST,
            "relay_guard_request_duration_seconds",
            "Total request time.",
        ),
        (
            HIST_CONNECT,
            "relay_guard_upstream_connect_seconds",
            "Time to connect to the upstream.",
        ),
        (
            HIST_HEADER,
            "relay_guard_upstream_header_seconds",
            "Time to the upstream response header (time to first token for streams).",
        ),
    ] {
        family(out, name, "histogram", help);
        for (k, key_label) in snap.keys.iter().zip(&labels) {
            histogram(out, name, key_label, &k.stats.hist[h]);
        }
    }
    render_fleet(out, &snap.fleet);
}

/// The fleet's Redis round trips (host-wide, not per key).
pub(crate) fn render_fleet(out: &mut String, s: &FleetStats) {
    let name = "relay_guard_redis_seconds";
    family(
        out,
        name,
        "histogram",
        "Round trips to the fleet's Redis (relay_guard_redis), answered or not.",
    );
    let mut cum = 0;
    for (n, le) in s.buckets.iter().zip(FLEET_LABELS) {
        cum += n;
        out.push_str(name);
        out.push_str("_bucket{le=\"");
        out.push_str(le);
        out.push_str("\"} ");
        push_u64(out, cum);
        out.push('\n');
    }
    out.push_str(name);
    out.push_str("_sum ");
    // µs as seconds with six decimals, without float formatting.
    push_u64(out, s.sum_us / 1_000_000);
    out.push_str(&format!(".{:06}\n", s.sum_us % 1_000_000));
    out.push_str(name);
    out.push_str("_count ");
    push_u64(out, cum);
    out.push('\n');
    family(
        out,
        "relay_guard_redis_errors_total",
        "counter",
        "Round trips to the fleet's Redis that gave no answer, by kind.",
    );
    for (kind, v) in REDIS_ERROR_KINDS.iter().zip(s.errors) {
        out.push_str("relay_guard_redis_errors_total{kind=\"");
        out.push_str(kind);
        out.push_str("\"} ");
        push_u64(out, v);
        out.push('\n');
    }
    family(
        out,
        "relay_guard_redis_fallbacks_total",
        "counter",
        "Requests relayed on this host's own state because Redis gave no answer (relay_guard_redis_failure local).",
    );
    out.push_str("relay_guard_redis_fallbacks_total ");
    push_u64(out, s.fallbacks);
    out.push('\n');
}

/// `key="k",model="m"` for every (key, model) pair with usage, in snapshot order.
fn model_labels(snap: &Snapshot, key_labels: &[String]) -> Vec<(String, UsageStats)> {
    let mut pairs = Vec::new();
    for (k, key_label) in snap.keys.iter().zip(key_labels) {
        for m in &k.models {
            let mut l = String::with_capacity(key_label.len() + m.model.len() + 10);
            l.push_str(key_label);
            l.push_str(",model=\"");
            escape_label_value(&mut l, &m.model);
            l.push('"');
            pairs.push((l, m.stats));
        }
    }
    pairs
}

fn usage_families(out: &mut String, snap: &Snapshot, key_labels: &[String]) {
    family(
        out,
        "relay_guard_model_slots_max",
        "gauge",
        "Distinct model names tracked individually; more are counted as model=\"other\".",
    );
    out.push_str("relay_guard_model_slots_max ");
    push_u64(out, u64::from(snap.max_models));
    out.push('\n');
    family(
        out,
        "relay_guard_models_tracked",
        "gauge",
        "Model names holding their own slot.",
    );
    out.push_str("relay_guard_models_tracked ");
    push_u64(out, u64::from(snap.models_tracked));
    out.push('\n');

    let pairs = model_labels(snap, key_labels);
    let name = "relay_guard_tokens_total";
    family(
        out,
        name,
        "counter",
        "Tokens the upstream reported per key and model (a lower bound for cut or aborted streams).",
    );
    for (label, u) in &pairs {
        for (ty, v) in TokenCounts::TOKEN_TYPES.iter().zip(u.tokens) {
            if v != 0 {
                line(out, name, label, Some(("type", ty)), v);
            }
        }
    }
    for (name, help, get) in [
        (
            "relay_guard_web_search_requests_total",
            "Server-side web search requests the upstream reported.",
            (|u: &UsageStats| u.web_search_requests) as fn(&UsageStats) -> u64,
        ),
        (
            "relay_guard_usage_responses_total",
            "Responses that reported a usage object.",
            |u: &UsageStats| u.responses,
        ),
    ] {
        family(out, name, "counter", help);
        for (label, u) in &pairs {
            let v = get(u);
            if v != 0 {
                line(out, name, label, None, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_escapes() {
        let mut s = String::new();
        push_u64(&mut s, 0);
        s.push(' ');
        push_u64(&mut s, u64::MAX);
        s.push(' ');
        push_seconds(&mut s, 1234);
        s.push(' ');
        push_seconds(&mut s, 5);
        assert_eq!(s, "0 18446744073709551615 1.234 0.005");
        let mut e = String::new();
        escape_label_value(&mut e, "a\\b\"c\nd");
        assert_eq!(e, "a\\\\b\\\"c\\nd");
    }
}

//! A one-table status page for humans; Prometheus is the real interface.

use std::fmt::Write;

use super::snapshot::Snapshot;
use super::stats::{HIST_HEADER, HIST_REQUEST};

fn escape_html(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

fn cell_ms(out: &mut String, v: Option<f64>) {
    match v {
        Some(ms) => _ = write!(out, "<td>{ms:.0}</td>"),
        None => out.push_str("<td>-</td>"),
    }
}

/// Per key: requests, error rate (429 + 5xx, as `relay_guard_errors_total`), and estimated
/// P50/P90/P99 of request time and of upstream header time (TTFB / TTFT), in ms.
pub fn render_html(snap: &Snapshot) -> String {
    let mut out = String::with_capacity(512 + snap.keys.len() * 160);
    out.push_str(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>relay-guard metrics</title>\
<style>td,th{padding:2px 8px;text-align:right}td:first-child{text-align:left}</style></head><body>",
    );
    let _ = write!(
        out,
        "<p>{} of {} key slots in use</p><table><tr><th>key</th><th>requests</th><th>error %</th>\
<th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>TTFB p50</th><th>TTFB p90</th><th>TTFB p99</th></tr>",
        snap.keys_tracked, snap.max_keys
    );
    for k in &snap.keys {
        let s = &k.stats;
        let req = s.requests();
        out.push_str("<tr><td>");
        escape_html(&mut out, &k.key);
        let rate = if req == 0 {
            0.0
        } else {
            100.0 * s.errors_total() as f64 / req as f64
        };
        let _ = write!(out, "</td><td>{req}</td><td>{rate:.2}</td>");
        for h in [HIST_REQUEST, HIST_HEADER] {
            for q in [0.5, 0.9, 0.99] {
                cell_ms(&mut out, s.hist[h].quantile_ms(q));
            }
        }
        out.push_str("</tr>");
    }
    out.push_str("</table></body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::snapshot::{KeyKind, KeySnapshot};
    use crate::metrics::stats::SlotStats;

    #[test]
    fn escapes_and_shows_rates() {
        let mut stats = SlotStats::default();
        stats.class[1] = 3;
        stats.class[4] = 1;
        stats.errors[0] = 1;
        stats.hist[HIST_REQUEST].buckets[6] = 4;
        let snap = Snapshot {
            max_keys: 8,
            keys_tracked: 1,
            max_models: 4,
            models_tracked: 0,
            keys: vec![KeySnapshot {
                kind: KeyKind::Key,
                key: "<b>&".into(),
                stats,
                models: Vec::new(),
            }],
            fleet: Default::default(),
        };
        let html = render_html(&snap);
        assert!(html.contains("&lt;b&gt;&amp;"));
        assert!(!html.contains("<b>"));
        assert!(
            html.contains("<td>4</td><td>25.00</td><td>750</td>"),
            "{html}"
        );
        assert!(html.contains("<td>-</td>"));
    }
}

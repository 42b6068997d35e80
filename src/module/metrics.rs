//! Metrics glue: the LOG-phase recorder and the `relay_guard_metrics` content handler. The
//! counting itself is `crate::metrics`, in the shared zone; what the response said about
//! itself comes from the response filters (`watch.rs`).

use ngx::core::Status;
use ngx::ffi::{
    ngx_http_request_t, ngx_http_upstream_state_t, ngx_int_t, ngx_msec_t, NGX_HTTP_GET,
    NGX_HTTP_HEAD,
};
use ngx::http::HTTPStatus;

use super::ctx;
use super::req::Req;
use super::watch::{is_relay_traffic, Report};
use super::zone;
use crate::auth::Outcome;
use crate::metrics::{AuthOutcome, Metrics, Sample};
use crate::usage::StreamOutcome;

fn metrics_of(req: Req<'_>) -> Option<&'static Metrics> {
    zone::of_request(req).ok()?.metrics.as_ref()
}

fn ms(v: ngx_msec_t) -> Option<u64> {
    // nginx stores (ngx_msec_t) -1 for "did not happen".
    (v != ngx_msec_t::MAX).then_some(v as u64)
}

/// The last upstream attempt: its status and timings.
fn last_upstream<'r>(req: Req<'r>) -> Option<&'r ngx_http_upstream_state_t> {
    // SAFETY: upstream_states is null or an array of ngx_http_upstream_state_t in the request
    // pool; by the LOG phase nothing appends to it.
    unsafe {
        let states = (*req.as_ptr()).upstream_states.as_ref()?;
        if states.nelts == 0 {
            return None;
        }
        (states.elts as *const ngx_http_upstream_state_t)
            .add(states.nelts - 1)
            .as_ref()
    }
}

pub unsafe extern "C" fn log_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls phase handlers with a live request, for the length of the call.
    let Some(req) = (unsafe { Req::from_raw(r) }) else {
        return Status::NGX_DECLINED.into();
    };
    super::limits::charge_at_log(req);
    let recorded = record(req);
    if recorded {
        Status::NGX_OK.into()
    } else {
        Status::NGX_DECLINED.into()
    }
}

/// Records the request in the zone's metrics; false when it is not the relay's to count.
fn record(req: Req<'_>) -> bool {
    if !is_relay_traffic(req) {
        return false;
    }
    let Some(m) = metrics_of(req) else {
        return false;
    };
    let ctx = ctx::get(req);
    let (key_id, auth) = match ctx.and_then(|c| Some((c, c.outcome()?))) {
        // Only verified key ids get a series: ids from rejected requests would let any client
        // fill the key slots.
        Some((c, Outcome::Ok)) => (c.key_id(), AuthOutcome::of(Outcome::Ok)),
        Some((_, o)) => (&[][..], AuthOutcome::of(o)),
        None => (&[][..], AuthOutcome::NONE),
    };
    let report = Report::of(req);
    // SAFETY: the live request and its connection, read by value.
    let (start, bytes_in, bytes_out) = unsafe {
        let r = &*req.as_ptr();
        (
            r.start_sec as u64 * 1000 + r.start_msec as u64,
            r.request_length.max(0) as u64,
            (*r.connection).sent.max(0) as u64,
        )
    };
    // SAFETY: ngx_cached_time is nginx's current time, updated by this worker's event loop.
    let now = unsafe {
        (*ngx::ffi::ngx_cached_time).sec as u64 * 1000 + (*ngx::ffi::ngx_cached_time).msec as u64
    };
    let up = last_upstream(req);
    m.record(&Sample {
        key_id,
        status: req.final_status().min(999) as u16,
        // nginx records 502/504 as the upstream status of a failed connect or a timeout; only
        // a response header actually received makes the status the upstream's own.
        upstream_status: up
            .filter(|u| ms(u.header_time).is_some())
            .map(|u| u.status as u16)
            .filter(|&s| s > 0),
        auth,
        request_ms: now.saturating_sub(start),
        upstream_connect_ms: up.and_then(|u| ms(u.connect_time)),
        upstream_header_ms: up.and_then(|u| ms(u.header_time)),
        bytes_in,
        bytes_out,
        stream: report
            .as_ref()
            .map_or(StreamOutcome::NotStream, |r| r.stream),
        stream_error: report.as_ref().and_then(|r| r.stream_error),
        model: report.as_ref().map_or(&[][..], Report::model),
        // Tokens are counted for verified keys only (what each person spent); a dry-run
        // location's rejected requests reach the upstream too, and count nowhere.
        usage: report
            .as_ref()
            .and_then(|r| r.usage)
            .filter(|_| auth == AuthOutcome::of(Outcome::Ok)),
    });
    true
}

/// `relay_guard_metrics;`: Prometheus text, or an HTML summary with `?format=html`.
pub unsafe extern "C" fn metrics_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls content handlers with a live request, for the length of the call.
    match unsafe { Req::from_raw(r) } {
        Some(req) => serve_metrics(req).into(),
        None => Status::NGX_ERROR.into(),
    }
}

fn serve_metrics(req: Req<'_>) -> Status {
    let method = req.method();
    if method != NGX_HTTP_GET && method != NGX_HTTP_HEAD {
        return HTTPStatus::NOT_ALLOWED.into();
    }
    let Some(m) = metrics_of(req) else {
        return Status::NGX_ERROR;
    };
    let html = req
        .args()
        .split(|&c| c == b'&')
        .any(|a| a == b"format=html");
    let (body, ctype): (Vec<u8>, &'static str) = if html {
        (
            crate::metrics::render_html(&m.snapshot()).into_bytes(),
            "text/html; charset=utf-8",
        )
    } else {
        let mut out = String::with_capacity(64 * 1024);
        m.render_prometheus(&mut out);
        (out.into_bytes(), "text/plain; version=0.0.4; charset=utf-8")
    };
    super::respond::send_body(req, 200, ctype, &body, &[])
}

//! Metrics glue: SSE completeness filters, the LOG-phase recorder and the `relay_guard_metrics`
//! content handler. The counting itself is `crate::metrics`, in the shared zone.

use ngx::core::Status;
use ngx::ffi::{
    ngx_chain_t, ngx_http_output_body_filter_pt, ngx_http_output_header_filter_pt,
    ngx_http_request_t, ngx_http_top_body_filter, ngx_http_top_header_filter,
    ngx_http_upstream_state_t, ngx_int_t, ngx_msec_t, NGX_HTTP_GET, NGX_HTTP_HEAD,
};
use ngx::http::HTTPStatus;

use super::ctx;
use super::ffi_util::{bytes, for_each_chain_bytes};
use super::req::Req;
use super::zone;
use crate::auth::Outcome;
use crate::metrics::{AuthOutcome, Metrics, Sample};
use crate::usage::StreamOutcome;

static mut NEXT_HEADER_FILTER: ngx_http_output_header_filter_pt = None;
static mut NEXT_BODY_FILTER: ngx_http_output_body_filter_pt = None;

/// Chains our filters in front of the current top ones.
///
/// # Safety
/// Call once, from postconfiguration (single-threaded, before any request).
pub unsafe fn install_filters() {
    // SAFETY: the caller's promise; nginx's filter chain is built exactly so.
    unsafe {
        NEXT_HEADER_FILTER = ngx_http_top_header_filter;
        ngx_http_top_header_filter = Some(header_filter);
        NEXT_BODY_FILTER = ngx_http_top_body_filter;
        ngx_http_top_body_filter = Some(body_filter);
    }
}

fn metrics_of(req: Req<'_>) -> Option<&'static Metrics> {
    zone::of_request(req).ok()?.metrics.as_ref()
}

/// Requests in locations that set `relay_guard` (any mode, `off` included) are the relay's
/// traffic; everything else in this nginx is none of our business.
fn is_relay_traffic(req: Req<'_>) -> bool {
    req.is_main()
        && req
            .loc_conf()
            .is_some_and(|c| c.mode.is_some() && !c.metrics_endpoint)
}

unsafe extern "C" fn header_filter(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls filters with a live request, for the length of the call.
    if let Some(req) = unsafe { Req::from_raw(r) } {
        watch_stream(req);
    }
    // SAFETY: the next filter was set by install_filters before any request.
    match unsafe { NEXT_HEADER_FILTER } {
        // SAFETY: nginx's next header filter, with the request it gave us.
        Some(next) => unsafe { next(r) },
        None => Status::NGX_ERROR.into(),
    }
}

/// A relayed `200 text/event-stream` gets a scanner that tells a completed stream from a cut.
fn watch_stream(req: Req<'_>) {
    if !is_relay_traffic(req) || metrics_of(req).is_none() {
        return;
    }
    // SAFETY: the live request; the response headers are read by value, and content_type
    // points into them (alive for the request).
    let (status, ctype) = unsafe {
        let out = &(*req.as_ptr()).headers_out;
        (out.status, bytes(&out.content_type))
    };
    let is_sse = ctype.len() >= 17 && ctype[..17].eq_ignore_ascii_case(b"text/event-stream");
    if status == 200 && is_sse {
        if let Some(ctx) = ctx::get_or_create(req) {
            ctx.start_stream();
        }
    }
}

unsafe extern "C" fn body_filter(r: *mut ngx_http_request_t, cl: *mut ngx_chain_t) -> ngx_int_t {
    // SAFETY: nginx calls filters with a live request, for the length of the call.
    if let Some(req) = unsafe { Req::from_raw(r) } {
        // SAFETY: the chain and its buffers are live for this call.
        unsafe { scan_stream(req, cl) };
    }
    // SAFETY: the next filter was set by install_filters before any request.
    match unsafe { NEXT_BODY_FILTER } {
        // SAFETY: nginx's next body filter, with the request and chain it gave us.
        Some(next) => unsafe { next(r, cl) },
        None => Status::NGX_ERROR.into(),
    }
}

/// # Safety
/// `cl` is null or a live chain whose buffers stay valid during the call.
unsafe fn scan_stream(req: Req<'_>, cl: *mut ngx_chain_t) {
    // Only the main request's own response is the stream: a subrequest (mirror, SSI) shares
    // the main request's pool, so the context lookup would find the main request's scanner.
    if !req.is_main() {
        return;
    }
    let Some(ctx) = ctx::get(req) else {
        return;
    };
    ctx.with_stream(|scanner| {
        // With proxy_buffering on and a slow client nginx spools the stream to a temp file
        // and passes file-backed buffers: those are read back to be scanned. A read error
        // leaves the stream unscanned past that point (it then counts as failed, never as
        // completed).
        let mut scratch = [0u8; 8192];
        // SAFETY: the caller's promise.
        let _ = unsafe { for_each_chain_bytes(cl, &mut scratch, |piece| scanner.feed(piece)) };
    });
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
    let recorded = unsafe { Req::from_raw(r) }.is_some_and(record);
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
    let stream = ctx
        .and_then(|c| c.with_stream(|s| s.outcome(false)))
        .unwrap_or(StreamOutcome::NotStream);
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
        stream,
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

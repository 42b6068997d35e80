//! Metrics glue: SSE completeness filters, the LOG-phase recorder and the `relay_guard_metrics`
//! content handler. The counting itself is `crate::metrics`, in the shared zone.

use ngx::ffi::{
    ngx_chain_t, ngx_http_request_t, ngx_http_top_body_filter, ngx_http_top_header_filter,
    ngx_http_upstream_state_t, ngx_int_t, ngx_msec_t, NGX_DECLINED, NGX_ERROR, NGX_HTTP_GET,
    NGX_HTTP_HEAD, NGX_HTTP_NOT_ALLOWED, NGX_OK,
};
use ngx::http::{HttpModuleLocationConf, HttpModuleMainConf};

use super::access::{ensure_ctx, request_ctx};
use super::ffi_util::{bytes, for_each_chain_bytes};
use super::{zone, Module};
use crate::metrics::{AuthOutcome, Metrics, Sample, SseScanner, StreamOutcome};

static mut NEXT_HEADER_FILTER: ngx::ffi::ngx_http_output_header_filter_pt = None;
static mut NEXT_BODY_FILTER: ngx::ffi::ngx_http_output_body_filter_pt = None;

/// Chains our filters in front of the current top ones.
///
/// # Safety
/// Call once, from postconfiguration.
pub unsafe fn install_filters() {
    // SAFETY: configuration is single-threaded; nginx's filter chain is built exactly so.
    unsafe {
        NEXT_HEADER_FILTER = ngx_http_top_header_filter;
        ngx_http_top_header_filter = Some(header_filter);
        NEXT_BODY_FILTER = ngx_http_top_body_filter;
        ngx_http_top_body_filter = Some(body_filter);
    }
}

/// # Safety
/// `r` must be a live request.
unsafe fn metrics_of(r: *mut ngx_http_request_t) -> Option<&'static Metrics> {
    // SAFETY: r is live (the caller's promise); the main conf and the zone outlive it.
    let mcf = Module::main_conf(unsafe { &*r })?;
    unsafe { zone::ctx_of(mcf.zone) }?.metrics.as_ref()
}

/// Requests in locations that set `relay_guard` (any mode, `off` included) are the relay's
/// traffic; everything else in this nginx is none of our business.
///
/// # Safety
/// `r` must be a live request.
unsafe fn is_relay_traffic(r: *mut ngx_http_request_t) -> bool {
    // SAFETY: r is live (the caller's promise).
    let main = unsafe { (*r).main } == r;
    main && Module::location_conf(unsafe { &*r })
        .is_some_and(|c| c.mode.is_some() && !c.metrics_endpoint)
}

unsafe extern "C" fn header_filter(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls filters with a live request.
    if unsafe { is_relay_traffic(r) && metrics_of(r).is_some() } {
        // SAFETY: r is live; content_type points into the response headers.
        let (status, ctype) = unsafe {
            (
                (*r).headers_out.status,
                bytes(&(*r).headers_out.content_type),
            )
        };
        let is_sse = ctype.len() >= 17 && ctype[..17].eq_ignore_ascii_case(b"text/event-stream");
        if status == 200 && is_sse {
            // SAFETY: r is the live request nginx passed to this handler.
            if let Some(ctx) = unsafe { ensure_ctx(r) } {
                ctx.sse = Some(SseScanner::new());
            }
        }
    }
    // SAFETY: the next filter was set by install_filters before any request.
    match unsafe { NEXT_HEADER_FILTER } {
        Some(next) => unsafe { next(r) },
        None => NGX_ERROR as ngx_int_t,
    }
}

unsafe extern "C" fn body_filter(r: *mut ngx_http_request_t, cl: *mut ngx_chain_t) -> ngx_int_t {
    // Only the main request's own response is the stream: a subrequest (mirror, SSI) shares
    // the main request's pool, so the context lookup would find the main request's scanner.
    // SAFETY: r is the live request nginx passed to this handler.
    let main = unsafe { (*r).main } == r;
    // SAFETY: as above.
    if let Some(scanner) = main.then(|| unsafe { request_ctx_mut_sse(r) }).flatten() {
        // With proxy_buffering on and a slow client nginx spools the stream to a temp file
        // and passes file-backed buffers: those are read back to be scanned. A read error
        // leaves the stream unscanned past that point (it then counts as failed, never as
        // completed).
        let mut scratch = [0u8; 8192];
        // SAFETY: the chain and its buffers are live for this call.
        let _ = unsafe { for_each_chain_bytes(cl, &mut scratch, |piece| scanner.feed(piece)) };
    }
    // SAFETY: the next filter was set by install_filters before any request.
    match unsafe { NEXT_BODY_FILTER } {
        Some(next) => unsafe { next(r, cl) },
        None => NGX_ERROR as ngx_int_t,
    }
}

unsafe fn request_ctx_mut_sse<'a>(r: *mut ngx_http_request_t) -> Option<&'a mut SseScanner> {
    // SAFETY: r is live; the ctx is ours.
    unsafe { super::access::ctx_mut(r) }.and_then(|c| c.sse.as_mut())
}

fn ms(v: ngx_msec_t) -> Option<u64> {
    // nginx stores (ngx_msec_t) -1 for "did not happen".
    (v != ngx_msec_t::MAX).then_some(v as u64)
}

/// The last upstream attempt: its status and timings.
unsafe fn last_upstream(r: *mut ngx_http_request_t) -> Option<&'static ngx_http_upstream_state_t> {
    // SAFETY: upstream_states is null or an array of ngx_http_upstream_state_t.
    let states = unsafe { (*r).upstream_states.as_ref() }?;
    if states.nelts == 0 {
        return None;
    }
    // SAFETY: r is the live request nginx passed to this handler.
    unsafe {
        (states.elts as *const ngx_http_upstream_state_t)
            .add(states.nelts - 1)
            .as_ref()
    }
}

pub unsafe extern "C" fn log_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls phase handlers with a live request.
    if !unsafe { is_relay_traffic(r) } {
        return NGX_DECLINED as ngx_int_t;
    }
    // SAFETY: as above.
    let Some(m) = (unsafe { metrics_of(r) }) else {
        return NGX_DECLINED as ngx_int_t;
    };
    // SAFETY: r is the live request nginx passed to this handler.
    let ctx = unsafe { request_ctx(r) };
    let (key_id, auth) = match ctx.and_then(|c| c.outcome.map(|o| (c, o))) {
        // Only verified key ids get a series: ids from rejected requests would let any client
        // fill the key slots.
        Some((c, crate::auth::Outcome::Ok)) => (
            // SAFETY: r is the live request nginx passed to this handler.
            unsafe { bytes(&c.key_id) },
            AuthOutcome::of(crate::auth::Outcome::Ok),
        ),
        Some((_, o)) => (&[][..], AuthOutcome::of(o)),
        None => (&[][..], AuthOutcome::NONE),
    };
    let stream = match ctx.and_then(|c| c.sse.as_ref()) {
        Some(s) => s.outcome(),
        None => StreamOutcome::NotStream,
    };
    // SAFETY: r and its connection are live until the request is freed, after the LOG phase.
    let (status, start, bytes_in, bytes_out) = unsafe {
        let status = if (*r).err_status != 0 {
            (*r).err_status
        } else {
            (*r).headers_out.status
        };
        let start = (*r).start_sec as u64 * 1000 + (*r).start_msec as u64;
        (
            status,
            start,
            (*r).request_length.max(0) as u64,
            (*(*r).connection).sent.max(0) as u64,
        )
    };
    // SAFETY: ngx_cached_time is nginx's current time, updated by the event loop.
    let now = unsafe {
        (*ngx::ffi::ngx_cached_time).sec as u64 * 1000 + (*ngx::ffi::ngx_cached_time).msec as u64
    };
    // SAFETY: r is the live request nginx passed to this handler.
    let up = unsafe { last_upstream(r) };
    m.record(&Sample {
        key_id,
        status: status.min(999) as u16,
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
    NGX_OK as ngx_int_t
}

/// `relay_guard_metrics;`: Prometheus text, or an HTML summary with `?format=html`.
pub unsafe extern "C" fn metrics_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: r is live.
    let method = unsafe { (*r).method } as u32;
    if method != NGX_HTTP_GET && method != NGX_HTTP_HEAD {
        return NGX_HTTP_NOT_ALLOWED as ngx_int_t;
    }
    // SAFETY: nginx calls content handlers with a live request.
    let Some(m) = (unsafe { metrics_of(r) }) else {
        return NGX_ERROR as ngx_int_t;
    };
    // SAFETY: r is the live request nginx passed to this handler.
    let args = unsafe { bytes(&(*r).args) };
    let html = args.split(|&c| c == b'&').any(|a| a == b"format=html");
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
    // SAFETY: r is live and nothing has been sent yet.
    unsafe { super::respond::send_body(r, 200, ctype, &body, &[]) }
}

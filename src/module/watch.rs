//! The response filters: a relayed response the relay accounts for gets a scanner in the
//! header filter (SSE streams for their outcome and usage, JSON bodies for their usage), and
//! the body filter feeds it every buffer. What it found is read back at the LOG phase
//! ([`Report::of`]) by the metrics recorder and the `$relay_guard_usage_*` variables.

use core::sync::atomic::{AtomicBool, Ordering};

use ngx::core::Status;
use ngx::ffi::{
    ngx_chain_t, ngx_http_output_body_filter_pt, ngx_http_output_header_filter_pt,
    ngx_http_request_t, ngx_http_top_body_filter, ngx_http_top_header_filter, ngx_int_t,
    NGX_LOG_WARN,
};

use super::conf::Mode;
use super::ctx;
use super::ffi_util::{bytes, for_each_chain_bytes};
use super::log::rg_log;
use super::req::Req;
use super::zone;
use crate::usage::{ErrorType, Model, ResponseScanner, StreamOutcome, TokenCounts};

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

/// Requests in locations that set `relay_guard` (any mode, `off` included) are the relay's
/// traffic; everything else in this nginx is none of our business.
pub fn is_relay_traffic(req: Req<'_>) -> bool {
    req.is_main()
        && req
            .loc_conf()
            .is_some_and(|c| c.mode.is_some() && !c.metrics_endpoint)
}

unsafe extern "C" fn header_filter(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls filters with a live request, for the length of the call.
    if let Some(req) = unsafe { Req::from_raw(r) } {
        watch_response(req);
    }
    // SAFETY: the next filter was set by install_filters before any request.
    match unsafe { NEXT_HEADER_FILTER } {
        // SAFETY: nginx's next header filter, with the request it gave us.
        Some(next) => unsafe { next(r) },
        None => Status::NGX_ERROR.into(),
    }
}

fn starts_with_ignore_case(v: &[u8], prefix: &[u8]) -> bool {
    v.len() >= prefix.len() && v[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// Picks the scanner for this response: a `200 text/event-stream` is watched for how it ends
/// (and, with `relay_guard_accounting on`, its usage); a JSON body of any status for its usage.
fn watch_response(req: Req<'_>) {
    let Some(lcf) = req.loc_conf() else {
        return;
    };
    if !is_relay_traffic(req) {
        return;
    }
    // Usage is read for the keys it is counted for: a `relay_guard off` location verifies
    // nobody (its streams' outcomes are still watched, for the metrics).
    let usage = lcf.accounting() && lcf.mode() != Mode::Off;
    let metrics = zone::of_request(req).is_ok_and(|z| z.metrics.is_some());
    if !usage && !metrics {
        return;
    }
    // SAFETY: the live request; the response headers are read by value, and content_type
    // and the Content-Encoding value point into them (alive for the request).
    let (status, ctype, encoding) = unsafe {
        let out = &(*req.as_ptr()).headers_out;
        let encoding = out
            .content_encoding
            .as_ref()
            .map_or(&[][..], |h| bytes(&h.value));
        (out.status, bytes(&out.content_type), encoding)
    };
    if !encoding.is_empty() && !encoding.eq_ignore_ascii_case(b"identity") {
        warn_encoded_once(req, encoding);
        return;
    }
    let scanner = if status == 200 && starts_with_ignore_case(ctype, b"text/event-stream") {
        if usage {
            ResponseScanner::sse()
        } else {
            ResponseScanner::sse_outcome_only()
        }
    } else if usage && starts_with_ignore_case(ctype, b"application/json") {
        ResponseScanner::json()
    } else {
        return;
    };
    if let Some(ctx) = ctx::get_or_create(req) {
        ctx.start_scan(scanner);
    }
}

/// A compressed body cannot be scanned (and a stream's end not seen): said once per worker,
/// with the fix, because every later response of that location goes uncounted the same way.
fn warn_encoded_once(req: Req<'_>, encoding: &[u8]) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !WARNED.swap(true, Ordering::Relaxed) {
        rg_log!(NGX_LOG_WARN, req.log(),
            "the upstream sent a response with Content-Encoding \"{}\": its usage is not counted and a stream's outcome is not seen; add 'proxy_set_header Accept-Encoding \"\";' to the location (the shipped locations.conf does)",
            String::from_utf8_lossy(&encoding[..encoding.len().min(32)]));
    }
}

unsafe extern "C" fn body_filter(r: *mut ngx_http_request_t, cl: *mut ngx_chain_t) -> ngx_int_t {
    // SAFETY: nginx calls filters with a live request, for the length of the call.
    if let Some(req) = unsafe { Req::from_raw(r) } {
        // SAFETY: the chain and its buffers are live for this call.
        unsafe { scan_response(req, cl) };
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
unsafe fn scan_response(req: Req<'_>, cl: *mut ngx_chain_t) {
    // Only the main request's own response is watched: a subrequest (mirror, SSI) shares
    // the main request's pool, so the context lookup would find the main request's scanner.
    if !req.is_main() {
        return;
    }
    // A buffer with no bytes (the last one of nearly every response is) changes nothing;
    // skipping it saves moving the scanner out of the context and back.
    // SAFETY: the caller's promise.
    if !unsafe { has_bytes(cl) } {
        return;
    }
    let Some(ctx) = ctx::get(req) else {
        return;
    };
    ctx.with_scanner(|scanner| {
        // With proxy_buffering on and a slow client nginx spools the response to a temp file
        // and passes file-backed buffers: those are read back to be scanned. A read error
        // leaves the rest unscanned (a stream then never counts as completed, and usage is
        // what was seen: a lower bound).
        // SAFETY: the caller's promise.
        let _ = unsafe { for_each_chain_bytes(cl, |piece| scanner.feed(piece)) };
    });
}

/// Whether `cl` holds a byte `for_each_chain_bytes` would hand over (in memory or in a
/// file); true when in doubt.
///
/// # Safety
/// `cl` is null or a live chain whose buffers stay valid during the call.
unsafe fn has_bytes(mut cl: *const ngx_chain_t) -> bool {
    while !cl.is_null() {
        // SAFETY: cl is a live chain link and its buf is valid (the caller's promise).
        let b = unsafe { &*(*cl).buf };
        if b.temporary() != 0 || b.memory() != 0 || b.mmap() != 0 {
            if b.last > b.pos {
                return true;
            }
        } else if b.in_file() != 0 && b.file_last > b.file_pos {
            return true;
        }
        // SAFETY: next is null or the next link of the same chain.
        cl = unsafe { (*cl).next };
    }
    false
}

/// What the response scanner found, read once at the LOG phase.
pub struct Report {
    pub stream: StreamOutcome,
    pub stream_error: Option<ErrorType>,
    /// `None` when the response reported no usage object.
    pub usage: Option<TokenCounts>,
    model: [u8; 64],
    model_len: usize,
}

impl Report {
    /// The request's report; `None` when its response was not watched.
    pub fn of(req: Req<'_>) -> Option<Report> {
        let client_gone = req.client_gone();
        ctx::get(req)?.with_scanner(|s| {
            let stream = s.outcome(client_gone);
            let mut model = [0u8; 64];
            let name: &[u8] = match s.model() {
                Model::None => b"",
                Model::Named(n) => n,
                // Whatever the upstream wrote, it is not a name to make a series of.
                Model::Invalid => b"other",
            };
            let model_len = name.len().min(model.len());
            model[..model_len].copy_from_slice(&name[..model_len]);
            let usage = s.usage();
            Report {
                stream,
                stream_error: (stream == StreamOutcome::ErrorEvent)
                    .then(|| s.error_type().unwrap_or(ErrorType::Other)),
                usage: (!usage.is_empty()).then(|| usage.counts()),
                model,
                model_len,
            }
        })
    }

    /// The model the response named (empty for none, `other` for an invalid one).
    pub fn model(&self) -> &[u8] {
        &self.model[..self.model_len]
    }
}

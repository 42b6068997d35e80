//! Redaction glue: masks secrets in the request's loggable fields before any log line is
//! written. The masking itself is `crate::redact`.
//!
//! Two moments: every error-log line of the request goes through a wrapper of nginx's context
//! handler that prints masked copies of the request line, Referer and upstream URI (installed
//! at POST_READ); and the first LOG-phase handler masks, for good, every header value, the
//! args, the URIs, the upstream URI and every variable value nginx already cached, before the
//! access log formats anything. By the LOG phase the upstream request (and any
//! proxy_next_upstream retry) is long built, so nothing proxied changes.

use core::cell::RefCell;
use core::sync::atomic::{AtomicUsize, Ordering};

use ngx::core::Status;
use ngx::ffi::{
    ngx_http_request_t, ngx_http_variable_t, ngx_http_variable_value_t, ngx_int_t, ngx_pool_t,
    ngx_str_t,
};
use ngx::http::{HttpModuleMainConf, NgxHttpCoreModule};

use super::ctx;
use super::ffi_util::{bytes, for_each_header_mut, pool_copy};
use super::req::Req;
use crate::auth::token;
use crate::redact::{Redactor, RequestMasker};

/// nginx's own error-log context handler (`ngx_http_log_error_handler`, static in nginx, the
/// same for every request). Kept here rather than per request: an internal redirect zeroes
/// module contexts, and the wrapper must still reach it then.
static ORIG_LOG_HANDLER: AtomicUsize = AtomicUsize::new(0);

type LogHandler = unsafe extern "C" fn(
    *mut ngx_http_request_t,
    *mut ngx_http_request_t,
    *mut u8,
    usize,
) -> *mut u8;

thread_local! {
    /// Scratch space for masked values, reused across requests: a worker handles requests one
    /// at a time, so a per-request allocation would buy nothing.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with the reusable scratch buffer. Re-entry (an error-log line written while the
/// LOG handler runs, e.g. on pool exhaustion) gets a fresh buffer instead of a borrow panic.
fn with_scratch<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            let r = f(&mut buf);
            // A hostile megabyte header should not stay resident in every worker.
            if buf.capacity() > 64 * 1024 {
                *buf = Vec::new();
            }
            r
        }
        Err(_) => f(&mut Vec::new()),
    })
}

fn redactor_for<'r>(req: Req<'r>) -> Option<&'r Redactor> {
    req.loc_conf().and_then(|c| c.redactor.as_deref())
}

/// The credentials the request presented (Bearer and x-api-key), to be masked wherever else
/// they were pasted. Borrowed from the original header values, which are never freed or
/// overwritten (masking repoints, it does not write in place). The access handler has usually
/// found them already; otherwise the header list is walked.
fn presented<'r>(req: Req<'r>) -> [Option<&'r [u8]>; 2] {
    if let Some(found) = ctx::get(req).and_then(|c| c.presented()) {
        return found.map(|b| Some(b).filter(|b| !b.is_empty()));
    }
    // nginx keeps the (unique) Authorization header in its own field; x-api-key needs the
    // walk, where one length compare rejects almost every header.
    let mut api_key = None;
    req.for_each_header_in(
        |n| n == b"x-api-key".len(),
        |name, value| {
            if api_key.is_none() && name.eq_ignore_ascii_case(b"x-api-key") {
                api_key = Some(value);
            }
        },
    );
    token::credentials(req.authorization(), api_key)
}

/// Up to two extra literals as a slice, without allocating.
fn extras<'a>(p: &'a [Option<&'a [u8]>; 2], buf: &'a mut [&'a [u8]; 2]) -> &'a [&'a [u8]] {
    let mut n = 0;
    for v in p.iter().flatten() {
        if !buf[..n].contains(v) {
            buf[n] = v;
            n += 1;
        }
    }
    &buf[..n]
}

/// Points `field` at a masked copy when anything in it is secret.
///
/// The value is handed over for `'a`: request memory, neither freed nor rewritten while the
/// LOG handler runs (masking repoints fields at fresh pool copies), which is what the
/// masker's memory of clean text relies on.
unsafe fn mask_field<'a>(
    pool: *mut ngx_pool_t,
    field: &mut ngx_str_t,
    out: &mut Vec<u8>,
    mask: impl FnOnce(&'a [u8], &mut Vec<u8>) -> bool,
) {
    // SAFETY: field points at request memory (or a previous pool copy).
    let value = unsafe { bytes(field) };
    if mask(value, out) {
        // SAFETY: forwarded pool.
        *field = unsafe { pool_copy(pool, out) };
    }
}

/// POST_READ: puts our wrapper in front of nginx's error-log context handler, which quotes
/// the request line, the Referer and the upstream URI in every error-log line of the request.
/// Installed whenever redaction is on anywhere: at POST_READ the location is not known yet,
/// and the wrapper looks up the request's location at the moment of each log line.
pub unsafe extern "C" fn early_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls phase handlers with a live request, for the length of the call.
    if let Some(req) = unsafe { Req::from_raw(r) } {
        wrap_error_log(req);
    }
    Status::NGX_DECLINED.into()
}

fn wrap_error_log(req: Req<'_>) {
    let redaction_used = req.main_conf().is_some_and(|m| m.redact_used);
    if !redaction_used || !req.is_main() {
        return;
    }
    // SAFETY: the live request; log_handler is nginx's per-request error-log context hook,
    // read and replaced by value.
    unsafe {
        let r = req.as_ptr();
        let current = (*r).log_handler.map_or(0, |f| f as usize);
        let ours = error_log_context as LogHandler as usize;
        // Remember nginx's handler once; wrap only that one, never another module's.
        let orig = match ORIG_LOG_HANDLER.compare_exchange(
            0,
            current,
            Ordering::Relaxed,
            Ordering::Relaxed,
        ) {
            Ok(_) => current,
            Err(seen) => seen,
        };
        if current != 0 && current == orig && current != ours {
            (*r).log_handler = Some(error_log_context);
        }
    }
}

/// Runs nginx's own context handler with masked copies of the fields it prints swapped in,
/// then swaps the originals back: the proxy keeps using the real values (retries included).
unsafe extern "C" fn error_log_context(
    r: *mut ngx_http_request_t,
    sr: *mut ngx_http_request_t,
    buf: *mut u8,
    len: usize,
) -> *mut u8 {
    let orig = ORIG_LOG_HANDLER.load(Ordering::Relaxed);
    if orig == 0 {
        return buf;
    }
    // SAFETY: ORIG_LOG_HANDLER only ever holds nginx's context handler (see early_handler).
    let orig: LogHandler = unsafe { core::mem::transmute::<usize, LogHandler>(orig) };
    // SAFETY: nginx calls the context handler with a live request, for the length of the call.
    let Some((req, red)) = unsafe { Req::from_raw(r) }.and_then(|q| Some((q, redactor_for(q)?)))
    else {
        // SAFETY: forwarding to nginx's handler with its own arguments.
        return unsafe { orig(r, sr, buf, len) };
    };
    let creds = presented(req);
    // SAFETY: r (and its upstream, if any) are live; every swapped field is restored before
    // returning, and masked copies live in the request pool.
    with_scratch(|out| unsafe {
        let pool = req.pool();
        let mut slots: [&[u8]; 2] = [&[]; 2];
        let masker = red.for_request(extras(&creds, &mut slots));
        let line = (*r).request_line;
        let referer = (*r).headers_in.referer;
        let referer_value = referer.as_ref().map(|h| h.value);
        let upstream = (*r).upstream;
        let upstream_uri = upstream.as_ref().map(|u| u.uri);
        mask_error_log_fields(r, pool, &masker, out);
        let p = orig(r, sr, buf, len);
        (*r).request_line = line;
        if let (Some(h), Some(v)) = (referer.as_mut(), referer_value) {
            h.value = v;
        }
        if let (Some(u), Some(v)) = (upstream.as_mut(), upstream_uri) {
            u.uri = v;
        }
        p
    })
}

/// LOG phase, first handler: everything a log_format or an error-log line can print.
pub unsafe extern "C" fn log_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls phase handlers with a live request, for the length of the call.
    let Some((req, red)) = unsafe { Req::from_raw(r) }.and_then(|q| Some((q, redactor_for(q)?)))
    else {
        return Status::NGX_DECLINED.into();
    };
    let creds = presented(req);
    // SAFETY: r is live until after the LOG phase; every field is repointed at a pool copy,
    // never written through, and nothing here calls into nginx but the pool allocator.
    with_scratch(|out| unsafe {
        let pool = req.pool();
        let mut slots: [&[u8]; 2] = [&[]; 2];
        let masker = red.for_request(extras(&creds, &mut slots));
        // Header elements are mutated in place: nginx's shortcut pointers (user_agent,
        // authorization, cookies) point at the same elements, so their variables see it too.
        // Request line first: the unparsed URI and the args lie inside it, and the masker
        // remembers the longest clean text; a long header value checked earlier would take
        // that place.
        let unparsed = (*r).unparsed_uri;
        mask_field(pool, &mut (*r).request_line, out, |v, o| {
            masker.mask_target(v, o)
        });
        mask_field(pool, &mut (*r).unparsed_uri, out, |v, o| {
            masker.mask_target(v, o)
        });
        mask_field(pool, &mut (*r).uri, out, |v, o| masker.mask_target(v, o));
        mask_field(pool, &mut (*r).args, out, |v, o| masker.mask_args(v, o));
        if let Some(u) = (*r).upstream.as_mut() {
            // `proxy_pass` without a URI part sends a copy of the unparsed URI: that copy gets
            // the unparsed URI's own (masked or checked) value instead of a scan of its own.
            if bytes(&u.uri) == bytes(&unparsed) {
                u.uri = (*r).unparsed_uri;
            } else {
                mask_field(pool, &mut u.uri, out, |v, o| masker.mask_target(v, o));
            }
        }
        // The Referer is one of them: its error-log copy needs no second pass.
        let part = &mut (*r).headers_in.headers.part as *mut ngx::ffi::ngx_list_part_t;
        mask_headers(part, pool, &masker, out);
        mask_cached_variables(r, pool, &masker, out);
    });
    Status::NGX_DECLINED.into()
}

/// The fields nginx's error-log context prints: request line, Referer, upstream URI.
///
/// # Safety
/// `r` must be a live request; `pool` its pool.
unsafe fn mask_error_log_fields<'a>(
    r: *mut ngx_http_request_t,
    pool: *mut ngx_pool_t,
    masker: &RequestMasker<'a>,
    out: &mut Vec<u8>,
) {
    // SAFETY: r is live; fields are repointed at pool copies, never written through.
    unsafe {
        mask_field(pool, &mut (*r).request_line, out, |v, o| {
            masker.mask_target(v, o)
        });
        if let Some(h) = (*r).headers_in.referer.as_mut() {
            mask_field(pool, &mut h.value, out, |v, o| {
                masker.mask_header(b"referer", v, o)
            });
        }
        if let Some(u) = (*r).upstream.as_mut() {
            mask_field(pool, &mut u.uri, out, |v, o| masker.mask_target(v, o));
        }
    }
}

/// Variables derived from the fields masked above; their cached values are dropped so the
/// log recomputes them from the masked fields.
fn derived_from_request(name: &[u8]) -> bool {
    const PREFIXES: [&[u8]; 3] = [b"http_", b"cookie_", b"arg_"];
    const NAMES: [&[u8]; 6] = [
        b"request",
        b"request_uri",
        b"args",
        b"query_string",
        b"uri",
        b"document_uri",
    ];
    PREFIXES.iter().any(|p| name.starts_with(p)) || NAMES.contains(&name)
}

/// nginx caches a variable's value the first time a request evaluates it (proxy_set_header
/// $request_uri, a map, a `set` copy...), and the access log then prints that cached value.
/// Request-derived ones are invalidated; any other cached value is scanned for key formats,
/// bearer tokens and the presented credentials, which catches copies made by `set` or `map`.
/// `valid && !not_found` of a variable value, read as one word. bindgen's bitfield accessors
/// loop bit by bit, which for every variable of every request adds up; the flags share the
/// first 32-bit unit with `len` (`len:28, valid:1, no_cacheable:1, not_found:1, escape:1`,
/// allocated from the low bit on the little-endian ABIs nginx builds for).
#[inline]
fn cached_and_found(v: &ngx_http_variable_value_t) -> bool {
    const VALID: u32 = 1 << 28;
    const NOT_FOUND: u32 = 1 << 30;
    // SAFETY: the bitfield unit is the struct's first field: 4 bytes at offset 0.
    let word = unsafe { core::ptr::read(v as *const ngx_http_variable_value_t as *const u32) };
    let fast = word & (VALID | NOT_FOUND) == VALID;
    debug_assert_eq!(fast, v.valid() != 0 && v.not_found() == 0);
    fast
}

unsafe fn mask_cached_variables<'a>(
    r: *mut ngx_http_request_t,
    pool: *mut ngx_pool_t,
    masker: &RequestMasker<'a>,
    out: &mut Vec<u8>,
) {
    // SAFETY: r is live; r->variables has one value per entry of the core module's
    // variables array, and both live as long as the request.
    unsafe {
        let Some(cmcf) = NgxHttpCoreModule::main_conf(&*r) else {
            return;
        };
        let values = (*r).variables;
        if values.is_null() {
            return;
        }
        let defs = core::slice::from_raw_parts(
            cmcf.variables.elts as *const ngx_http_variable_t,
            cmcf.variables.nelts,
        );
        let values =
            core::slice::from_raw_parts_mut(values as *mut ngx_http_variable_value_t, defs.len());
        for (def, v) in defs.iter().zip(values.iter_mut()) {
            if !cached_and_found(v) {
                continue;
            }
            if derived_from_request(bytes(&def.name)) {
                v.set_valid(0);
                v.set_not_found(0);
                continue;
            }
            let mut s = ngx_str_t {
                len: v.len() as usize,
                data: v.data,
            };
            mask_field(pool, &mut s, out, |val, o| masker.mask_target(val, o));
            if s.data != v.data {
                v.data = s.data;
                v.set_len(s.len as u32);
            }
        }
    }
}

unsafe fn mask_headers<'a>(
    part: *mut ngx::ffi::ngx_list_part_t,
    pool: *mut ngx_pool_t,
    masker: &RequestMasker<'a>,
    out: &mut Vec<u8>,
) {
    // SAFETY: the request's header list; the LOG handler is its only user meanwhile.
    unsafe {
        for_each_header_mut(part, |h| {
            // Most headers are settled by their lengths alone, before any slice is made.
            if !masker.header_may_hold_secret(h.key.len, h.value.len) {
                return;
            }
            // SAFETY: the key lives in request memory.
            let name = bytes(&h.key);
            mask_field(pool, &mut h.value, out, |v, o| {
                masker.mask_header(name, v, o)
            });
        });
    }
}

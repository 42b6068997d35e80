//! Redaction glue: masks secrets in the request's loggable fields before any log line is
//! written. The masking itself is `crate::redact`.
//!
//! Two moments: every error-log line of the request goes through a wrapper of nginx's context
//! handler that prints masked copies of the request line, Referer, Host and upstream URI
//! (installed at POST_READ) and then masks the whole line, message included; and the first
//! LOG-phase handler masks, for good, every header value, the args, the URIs, the upstream URI,
//! `$host`, `$remote_user`, `$relay_guard_upstream_key` and every variable value nginx already
//! cached, before the access log formats anything. By the LOG phase the upstream request (and
//! any proxy_next_upstream retry) is long built, so nothing proxied changes.

use core::cell::RefCell;
use core::sync::atomic::{AtomicUsize, Ordering};

use ngx::core::Status;
use ngx::ffi::{
    ngx_http_auth_basic_user, ngx_http_request_t, ngx_http_variable_t, ngx_http_variable_value_t,
    ngx_int_t, ngx_pool_t, ngx_str_t, NGX_MAX_ERROR_STR,
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
    // returning, and masked copies live in the request pool. The line is rewritten only inside
    // nginx's own line buffer (see `line_start`).
    with_scratch(|out| unsafe {
        let pool = req.pool();
        let mut slots: [&[u8]; 2] = [&[]; 2];
        let masker = red.for_request(extras(&creds, &mut slots));
        let start = line_start(buf, len);
        let line = (*r).request_line;
        let referer = (*r).headers_in.referer;
        let referer_value = referer.as_ref().map(|h| h.value);
        let host = (*r).headers_in.host;
        let host_value = host.as_ref().map(|h| h.value);
        let upstream = (*r).upstream;
        let upstream_uri = upstream.as_ref().map(|u| u.uri);
        mask_error_log_fields(r, pool, &masker, out);
        let p = orig(r, sr, buf, len);
        (*r).request_line = line;
        if let (Some(h), Some(v)) = (referer.as_mut(), referer_value) {
            h.value = v;
        }
        if let (Some(h), Some(v)) = (host.as_mut(), host_value) {
            h.value = v;
        }
        if let (Some(u), Some(v)) = (upstream.as_mut(), upstream_uri) {
            u.uri = v;
        }
        match start {
            Some(start) => mask_line(start, p, buf.add(len), &masker, out),
            None => p,
        }
    })
}

/// Where the error-log line being written starts, if `buf` is inside it.
///
/// nginx formats each line in `errstr[NGX_MAX_ERROR_STR]` on the stack of
/// `ngx_log_error_core` (the time, the level, the pid, the message, then the context its
/// handler adds) and hands the handler the rest of that array: `buf + len` is its end, so
/// `buf + len - NGX_MAX_ERROR_STR` its start. That is the only caller of a request's context
/// handler in nginx (1.22 to 1.28). The start is taken only if it reads as one: the cached
/// error-log time (`1970/09/28 12:00:00`) and ` [`.
///
/// # Safety
/// `buf` and `len` are what `ngx_http_log_error` passed on.
unsafe fn line_start(buf: *mut u8, len: usize) -> Option<*mut u8> {
    let max = NGX_MAX_ERROR_STR as usize;
    const SHAPE: &[u8; 21] = b"dddd/dd/dd dd:dd:dd [";
    let written = max.checked_sub(len)?;
    if written < SHAPE.len() {
        return None;
    }
    // SAFETY: per the above, the `written` bytes before buf are the start of the line.
    let start = unsafe { buf.sub(written) };
    // SAFETY: the same bytes; `written` >= SHAPE.len() of them precede buf.
    let head = unsafe { core::slice::from_raw_parts(start, SHAPE.len()) };
    let fits = head.iter().zip(SHAPE).all(|(&b, &s)| {
        if s == b'd' {
            b.is_ascii_digit()
        } else {
            b == s
        }
    });
    fits.then_some(start)
}

/// Masks the whole line `[start, end)` in place (the message too, which quotes paths,
/// variables and upstream bytes that no field swap reaches), within the buffer that ends at
/// `last`. Returns the new end of the line.
///
/// # Safety
/// `[start, last)` is nginx's line buffer (see `line_start`) and `end` lies within it.
unsafe fn mask_line<'a>(
    start: *mut u8,
    end: *mut u8,
    last: *mut u8,
    masker: &RequestMasker<'a>,
    out: &mut Vec<u8>,
) -> *mut u8 {
    // SAFETY: per the caller, the line's bytes. Masking writes into `out` only; the buffer
    // is written after the last read of `line`.
    let line = unsafe { core::slice::from_raw_parts(start, end.offset_from(start) as usize) };
    // Where nginx cut the line, a literal may stand incomplete: at the buffer's end, and where
    // ngx_log_errno cut the message to leave room for the error code, marking it `...`.
    let max = NGX_MAX_ERROR_STR as usize;
    let errno_cut = max - 50;
    let mut cuts = [0usize; 2];
    let mut n = 0;
    if line.get(errno_cut..errno_cut + 3) == Some(b"...") {
        cuts[n] = errno_cut;
        n += 1;
    }
    if end >= last {
        cuts[n] = line.len();
        n += 1;
    }
    let masked = if n > 0 {
        masker.mask_text_cut(line, &cuts[..n], out)
    } else {
        masker.mask_text(line, out)
    };
    if !masked {
        return end;
    }
    // A masked line may be longer: it is cut at the buffer's end, as nginx cuts long lines.
    // SAFETY: [start, last) is the buffer.
    unsafe {
        let room = last.offset_from(start) as usize;
        let n = out.len().min(room);
        core::ptr::copy_nonoverlapping(out.as_ptr(), start, n);
        start.add(n)
    }
}

/// LOG phase, first handler: everything a log_format or an error-log line can print.
pub unsafe extern "C" fn log_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls phase handlers with a live request, for the length of the call.
    let Some((req, red)) = unsafe { Req::from_raw(r) }.and_then(|q| Some((q, redactor_for(q)?)))
    else {
        return Status::NGX_DECLINED.into();
    };
    let creds = presented(req);
    let upstream_key = req
        .loc_conf()
        .and_then(|c| c.upstream_key.as_deref())
        .map(Vec::as_slice);
    // SAFETY: r is live until after the LOG phase; every field is repointed at a pool copy,
    // never written through, and nothing here calls into nginx but the pool allocator and
    // nginx's own Basic credentials decoder.
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
        let line = (*r).request_line;
        let host = (*r).headers_in.host.as_ref().map(|h| h.value);
        let authorization = (*r).headers_in.authorization.as_ref().map(|h| h.value);
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
        mask_host(r, pool, &masker, out, host, line);
        let originals = Originals {
            authorization,
            upstream_key,
        };
        mask_cached_variables(r, pool, &masker, out, originals);
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
        if let Some(h) = (*r).headers_in.host.as_mut() {
            mask_field(pool, &mut h.value, out, |v, o| {
                masker.mask_header(b"host", v, o)
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
    const NAMES: [&[u8]; 7] = [
        b"request",
        b"request_uri",
        b"args",
        b"query_string",
        b"uri",
        b"document_uri",
        b"host",
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

/// What the LOG handler read before masking, for the variables computed from it.
struct Originals<'r> {
    /// The Authorization header as received (`$remote_user` decodes it).
    authorization: Option<ngx_str_t>,
    /// The location's upstream key (`$relay_guard_upstream_key`).
    upstream_key: Option<&'r [u8]>,
}

const UPSTREAM_KEY_VARIABLE: &[u8] = b"relay_guard_upstream_key";
const REMOTE_USER_VARIABLE: &[u8] = b"remote_user";

/// Stores `value` as the request's cached value of a variable: the log module (and anything
/// else in the LOG phase) then prints it instead of computing the variable anew.
fn cache_value(v: &mut ngx_http_variable_value_t, value: ngx_str_t) {
    v.data = value.data;
    v.set_len(value.len as u32);
    v.set_valid(1);
    v.set_no_cacheable(0);
    v.set_not_found(0);
}

unsafe fn mask_cached_variables<'a>(
    r: *mut ngx_http_request_t,
    pool: *mut ngx_pool_t,
    masker: &RequestMasker<'a>,
    out: &mut Vec<u8>,
    originals: Originals<'_>,
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
            // The upstream key is masked whole in a log_format, whatever its shape: a key
            // too short or too plain for the scanners is still the key.
            if def.name.len == UPSTREAM_KEY_VARIABLE.len()
                && bytes(&def.name) == UPSTREAM_KEY_VARIABLE
            {
                if let Some(key) = originals.upstream_key.filter(|k| !k.is_empty()) {
                    let mut s = ngx_str_t {
                        len: key.len(),
                        data: key.as_ptr() as *mut u8,
                    };
                    mask_field(pool, &mut s, out, |val, o| masker.mask_whole(val, o));
                    cache_value(v, s);
                }
                continue;
            }
            if !cached_and_found(v) {
                if def.name.len == REMOTE_USER_VARIABLE.len()
                    && bytes(&def.name) == REMOTE_USER_VARIABLE
                {
                    cache_remote_user(r, pool, masker, out, originals.authorization, v);
                }
                continue;
            }
            if derived_from_request(bytes(&def.name)) {
                v.set_valid(0);
                v.set_not_found(0);
                continue;
            }
            // Any letter case: the value may be a copy of the lower-cased `$host`.
            let mut s = ngx_str_t {
                len: v.len() as usize,
                data: v.data,
            };
            mask_field(pool, &mut s, out, |val, o| {
                masker.mask_target_folded(val, o)
            });
            if s.data != v.data {
                v.data = s.data;
                v.set_len(s.len as u32);
            }
        }
    }
}

/// `$remote_user` decodes the Authorization header whenever it is computed, and that header
/// is masked by now (it would decode to nothing): the user name is decoded from the original
/// header instead, masked like any text, and cached.
///
/// # Safety
/// `r` is live; `authorization` is the original value of its Authorization header.
unsafe fn cache_remote_user<'a>(
    r: *mut ngx_http_request_t,
    pool: *mut ngx_pool_t,
    masker: &RequestMasker<'a>,
    out: &mut Vec<u8>,
    authorization: Option<ngx_str_t>,
    v: &mut ngx_http_variable_value_t,
) {
    // SAFETY: r is live; the Authorization element is swapped back to its original value
    // for the decoder and restored at once.
    unsafe {
        let (Some(original), Some(h)) = (authorization, (*r).headers_in.authorization.as_mut())
        else {
            return;
        };
        let masked = h.value;
        h.value = original;
        let rc = ngx_http_auth_basic_user(r);
        h.value = masked;
        if rc != ngx::ffi::NGX_OK as ngx_int_t {
            return;
        }
        let mut user = (*r).headers_in.user;
        mask_field(pool, &mut user, out, |val, o| masker.mask_text(val, o));
        (*r).headers_in.user = user;
        cache_value(v, user);
    }
}

/// `$host` is nginx's own lower-cased copy of the Host header (up to a port), or of the
/// request line's host, or a slice of either: masked as an image of the Host header as
/// received, unless it is a slice of a field found clean.
///
/// # Safety
/// `r` is live; `host` and `line` are the original Host value and request line.
unsafe fn mask_host<'a>(
    r: *mut ngx_http_request_t,
    pool: *mut ngx_pool_t,
    masker: &RequestMasker<'a>,
    out: &mut Vec<u8>,
    host: Option<ngx_str_t>,
    line: ngx_str_t,
) {
    // SAFETY: r is live; the originals are request memory, never freed while it lives.
    unsafe {
        let server = (*r).headers_in.server;
        if server.len == 0 || server.data.is_null() {
            return;
        }
        let inside = |field: &ngx_str_t| {
            let (a, z) = (field.data as usize, field.data as usize + field.len);
            a <= server.data as usize && server.data as usize + server.len <= z
        };
        let host_now = (*r).headers_in.host.as_ref().map(|h| h.value.data);
        let host_clean = host.is_some_and(|h| Some(h.data) == host_now && inside(&h));
        let line_clean = (*r).request_line.data == line.data && inside(&line);
        if host_clean || line_clean {
            return;
        }
        let image = bytes(&server);
        let source = host.map(|h| bytes(&h)).filter(|s| {
            s.get(..image.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(image))
        });
        mask_field(
            pool,
            &mut (*r).headers_in.server,
            out,
            |v, o| match source {
                Some(src) => masker.mask_host(src, v, o),
                None => masker.mask_target_folded(v, o),
            },
        );
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

//! The access-phase handler: chooses signature or token checking, reads and hashes the body
//! when a signature covers it, records the nonce, and rejects or lets the request through.

use core::ptr;

use ngx::ffi::{
    ngx_http_core_run_phases, ngx_http_finalize_request, ngx_http_read_client_request_body,
    ngx_http_request_t, ngx_int_t, ngx_pool_cleanup_add, ngx_str_t, ngx_time, NGX_DECLINED,
    NGX_DONE, NGX_ERROR, NGX_HTTP_BAD_REQUEST, NGX_HTTP_SPECIAL_RESPONSE, NGX_HTTP_UNAUTHORIZED,
    NGX_LOG_INFO, NGX_LOG_WARN, NGX_OK,
};
use ngx::http::{HttpModule, HttpModuleLocationConf, HttpModuleMainConf};

use super::conf::{LocConf, Mode};
use super::ffi_util::{bytes, for_each_header, pool_copy, request};
use super::{body, respond, zone, Module};
use crate::auth::canonical::RequestParts;
use crate::auth::headers::{RawSignatureHeaders, SignatureHeaders};
use crate::auth::keys::Key;
use crate::auth::nonce_table::Insert;
use crate::auth::outcome::{Outcome, Rejection};
use crate::auth::{token, verify};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Checking,
    ReadingBody,
    Done,
}

/// Per-request state, in the request pool (plain data: nothing to drop).
pub struct ReqCtx {
    state: State,
    /// What the access handler returns when the phase engine runs it again.
    rc: ngx_int_t,
    pub outcome: Option<Outcome>,
    pub dry_run: bool,
    /// The authenticated key id, copied into the request pool.
    pub key_id: ngx_str_t,
    /// Set by the header filter for `text/event-stream` responses; fed by the body filter.
    pub sse: Option<crate::metrics::SseScanner>,
    /// The Bearer token and x-api-key the request presented (borrowed from its header values),
    /// once the access handler has looked: redaction masks them wherever else they appear.
    pub presented: Option<[ngx_str_t; 2]>,
    /// The signature headers as parsed before the body was read, for body_read: the header
    /// values they point at live as long as the request.
    sig: Option<ParsedSignature>,
}

/// `SignatureHeaders` without its lifetime, to wait in the context while the body is read.
#[derive(Clone, Copy)]
struct ParsedSignature {
    key_id: ngx_str_t,
    timestamp_raw: ngx_str_t,
    timestamp: u64,
    nonce: ngx_str_t,
    signature: [u8; 32],
}

fn raw_str(v: &[u8]) -> ngx_str_t {
    ngx_str_t {
        len: v.len(),
        data: v.as_ptr() as *mut u8,
    }
}

impl ParsedSignature {
    fn keep(h: &SignatureHeaders<'_>) -> ParsedSignature {
        ParsedSignature {
            key_id: raw_str(h.key_id),
            timestamp_raw: raw_str(h.timestamp_raw),
            timestamp: h.timestamp,
            nonce: raw_str(h.nonce),
            signature: h.signature,
        }
    }

    /// # Safety
    /// The header values `keep` saw must still be alive (they live as long as the request).
    unsafe fn get<'a>(&self) -> SignatureHeaders<'a> {
        // SAFETY: the caller's promise; each ngx_str_t came from a live slice.
        unsafe {
            SignatureHeaders {
                key_id: bytes(&self.key_id),
                timestamp_raw: bytes(&self.timestamp_raw),
                timestamp: self.timestamp,
                nonce: bytes(&self.nonce),
                signature: self.signature,
            }
        }
    }
}

/// The credentials a request carries, taken from its headers in one pass.
#[derive(Default)]
struct Credentials<'a> {
    sig: RawSignatureHeaders<'a>,
    authorization: Option<&'a [u8]>,
    x_api_key: Option<&'a [u8]>,
    duplicate: Option<&'static str>,
}

unsafe fn credentials<'a>(r: *mut ngx_http_request_t) -> Credentials<'a> {
    let mut c = Credentials::default();
    // SAFETY: r is live; its header list and the strings in it live as long as the request.
    unsafe {
        for_each_header(&(*r).headers_in.headers.part, |h| {
            // All six names differ from most headers' in length: one compare rejects those.
            if !matches!(h.key.len, 7 | 8 | 9 | 11 | 13) {
                return;
            }
            let name = bytes(&h.key);
            let value = bytes(&h.value);
            let (slot, label): (&mut Option<&'a [u8]>, &'static str) =
                if name.eq_ignore_ascii_case(b"x-key-id") {
                    (&mut c.sig.key_id, "X-Key-Id")
                } else if name.eq_ignore_ascii_case(b"x-timestamp") {
                    (&mut c.sig.timestamp, "X-Timestamp")
                } else if name.eq_ignore_ascii_case(b"x-nonce") {
                    (&mut c.sig.nonce, "X-Nonce")
                } else if name.eq_ignore_ascii_case(b"x-signature") {
                    (&mut c.sig.signature, "X-Signature")
                } else if name.eq_ignore_ascii_case(b"authorization") {
                    (&mut c.authorization, "Authorization")
                } else if name.eq_ignore_ascii_case(b"x-api-key") {
                    (&mut c.x_api_key, "x-api-key")
                } else {
                    return;
                };
            if slot.is_some() {
                // Two values invite "verified one, used the other" confusion: refuse both.
                c.duplicate.get_or_insert(label);
            }
            slot.get_or_insert(value);
        });
    }
    c
}

pub unsafe fn ctx_mut<'a>(r: *mut ngx_http_request_t) -> Option<&'a mut ReqCtx> {
    // SAFETY: forwarded from the caller.
    unsafe { ctx_of(r) }
}

/// The request's ReqCtx, created if the access handler did not run (e.g. `relay_guard off`).
pub unsafe fn ensure_ctx<'a>(r: *mut ngx_http_request_t) -> Option<&'a mut ReqCtx> {
    // SAFETY: forwarded from the caller.
    unsafe { ctx_of(r).or_else(|| create_ctx(r)) }
}

unsafe fn ctx_of<'a>(r: *mut ngx_http_request_t) -> Option<&'a mut ReqCtx> {
    // SAFETY: r->ctx has one slot per module; ours holds null or a ReqCtx.
    unsafe {
        let slot = (*r).ctx.add(Module::module().ctx_index);
        // Only after an internal redirect or a filter finalization, as realip does: the body
        // filter asks on every call, and most requests simply have no context.
        let redirected = (*r).internal() != 0 || (*r).filter_finalize() != 0;
        if (*slot).is_null() && redirected {
            // An internal redirect (error_page, try_files, a named location) zeroes every
            // module's context; the request pool's cleanup list still holds ours (the
            // technique ngx_http_realip_module uses). Without this a signed request redirected
            // to an error_page would be checked again and refused as a replay.
            let mut cln = (*(*r).pool).cleanup;
            while !cln.is_null() {
                let ours: unsafe extern "C" fn(*mut core::ffi::c_void) = ctx_marker;
                if (*cln)
                    .handler
                    .is_some_and(|h| core::ptr::fn_addr_eq(h, ours))
                {
                    *slot = (*cln).data;
                    break;
                }
                cln = (*cln).next;
            }
        }
        ((*slot) as *mut ReqCtx).as_mut()
    }
}

/// Marks our ReqCtx in the request pool's cleanup list; there is nothing to free. The body
/// touches a static of its own so the linker can never fold it with another empty function.
unsafe extern "C" fn ctx_marker(_: *mut core::ffi::c_void) {
    static TAG: u8 = 0;
    core::hint::black_box(&TAG);
}

/// The request's ReqCtx, if the access handler ran for it (variables use this).
pub unsafe fn request_ctx<'a>(r: *mut ngx_http_request_t) -> Option<&'a ReqCtx> {
    // SAFETY: forwarded from the caller.
    unsafe { ctx_of(r).map(|c| &*c) }
}

// The context lives in memory from ngx_palloc, aligned to NGX_ALIGNMENT (an unsigned long).
const _: () = assert!(core::mem::align_of::<ReqCtx>() <= core::mem::align_of::<libc::c_ulong>());

unsafe fn create_ctx<'a>(r: *mut ngx_http_request_t) -> Option<&'a mut ReqCtx> {
    // SAFETY: r->pool is the request pool. The cleanup entry's data is allocated there with
    // ngx_palloc, aligned for ReqCtx (checked above; ngx_pnalloc would not align it); the new
    // ReqCtx is written before use and stored in our ctx slot, where it lives as long as the
    // request. The entry marks it for recovery after an internal redirect.
    unsafe {
        let cln = ngx_pool_cleanup_add((*r).pool, core::mem::size_of::<ReqCtx>());
        if cln.is_null() {
            return None;
        }
        let p = (*cln).data as *mut ReqCtx;
        ptr::write(
            p,
            ReqCtx {
                state: State::Checking,
                rc: NGX_DECLINED as ngx_int_t,
                outcome: None,
                dry_run: false,
                key_id: ngx_str_t {
                    len: 0,
                    data: ptr::null_mut(),
                },
                sse: None,
                presented: None,
                sig: None,
            },
        );
        (*cln).handler = Some(ctx_marker);
        *(*r).ctx.add(Module::module().ctx_index) = p as *mut core::ffi::c_void;
        Some(&mut *p)
    }
}

/// # Safety
/// `r` must be a live request.
unsafe fn loc_conf<'a>(r: *mut ngx_http_request_t) -> Option<&'a LocConf> {
    // SAFETY: r is live (the caller's promise); the location configuration outlives it.
    Module::location_conf(unsafe { &*r })
}

pub unsafe extern "C" fn access_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls phase handlers with a live request.
    if unsafe { (*r).main } != r {
        return NGX_DECLINED as ngx_int_t;
    }
    // SAFETY: as above.
    let Some(lcf) = (unsafe { loc_conf(r) }) else {
        return NGX_DECLINED as ngx_int_t;
    };
    let mode = lcf.mode();
    if mode == Mode::Off {
        return NGX_DECLINED as ngx_int_t;
    }
    // SAFETY: r is the live request nginx passed to this handler; ctx lives in its pool.
    let ctx = match unsafe { ctx_of(r) } {
        Some(ctx) if ctx.state == State::Done => {
            // A refusal let through by dry run elsewhere (before an internal redirect) does
            // not pass a location that enforces.
            let refused = ctx.outcome.is_some_and(|o| o != Outcome::Ok);
            if refused && ctx.rc == NGX_DECLINED as ngx_int_t && !lcf.dry_run() {
                return NGX_HTTP_UNAUTHORIZED as ngx_int_t;
            }
            return ctx.rc;
        }
        Some(ctx) if ctx.state == State::ReadingBody => {
            // SAFETY: r is the live request nginx passed to this handler.
            if unsafe { (*r).internal() } == 0 {
                return NGX_DONE as ngx_int_t;
            }
            // Redirected while the body was read: nginx gave up reading it (413, 400, 408)
            // and an error_page sent the request here; body_read will never run. Waiting would
            // hang the connection and passing would let the request through unchecked, so the
            // reading error stands.
            // SAFETY: as above.
            let status = unsafe { (*r).err_status } as ngx_int_t;
            ctx.state = State::Done;
            ctx.rc = if status >= NGX_HTTP_SPECIAL_RESPONSE as ngx_int_t {
                status
            } else {
                NGX_HTTP_BAD_REQUEST as ngx_int_t
            };
            return ctx.rc;
        }
        Some(ctx) => ctx,
        // SAFETY: r is the live request nginx passed to this handler; ctx lives in its pool.
        None => match unsafe { create_ctx(r) } {
            Some(ctx) => ctx,
            None => return NGX_ERROR as ngx_int_t,
        },
    };
    ctx.dry_run = lcf.dry_run();
    // SAFETY: r is the live request nginx passed to this handler; ctx lives in its pool.
    let creds = unsafe { credentials(r) };
    ctx.presented = Some(
        token::credentials(creds.authorization, creds.x_api_key)
            .map(|c| raw_str(c.unwrap_or_default())),
    );
    if let Some(h) = creds.duplicate {
        let rej = Rejection::new(
            Outcome::Malformed,
            format!("request header {h} appears more than once"),
        );
        // SAFETY: r is the live request nginx passed to this handler; ctx lives in its pool.
        return unsafe { reject(r, ctx, None, rej) };
    }
    let use_signature = match mode {
        Mode::Signature => true,
        Mode::Token => false,
        // A client that sent any signature header meant to sign: judge it as such.
        _ => creds.sig.any_present(),
    };
    ngx::ngx_log_debug_http!(
        // SAFETY (inside the macro's unsafe block): r is the live request.
        request(r),
        "relay_guard: mode {mode:?}, checking {}",
        if use_signature {
            "the signature"
        } else {
            "a token"
        }
    );
    if use_signature {
        // SAFETY: r is the live request nginx passed to this handler; ctx lives in its pool.
        unsafe { start_signature(r, lcf, ctx, &creds) }
    } else {
        unsafe { check_token(r, lcf, ctx, &creds) }
    }
}

unsafe fn check_token(
    r: *mut ngx_http_request_t,
    lcf: &LocConf,
    ctx: &mut ReqCtx,
    creds: &Credentials<'_>,
) -> ngx_int_t {
    let Some(keys) = lcf.keys.as_deref() else {
        return NGX_ERROR as ngx_int_t;
    };
    let Some(cred) = token::credential(creds.authorization, creds.x_api_key) else {
        let rej = Rejection::new(
            Outcome::Missing,
            "missing credential: send Authorization: Bearer <token> or x-api-key: <token>",
        );
        // SAFETY: r is the live request nginx passed to this handler; ctx lives in its pool.
        return unsafe { reject(r, ctx, None, rej) };
    };
    let now = ngx_time() as u64;
    match token::verify(keys, cred, now, lcf.token_max_ttl()) {
        // SAFETY: r is the live request nginx passed to this handler; ctx lives in its pool.
        Ok(key) => unsafe { accept(r, ctx, key.id.as_bytes()) },
        Err(rej) => unsafe { reject(r, ctx, None, rej) },
    }
}

/// Cheap checks first (syntax, key, clock); the body is read only for a plausible request.
unsafe fn start_signature(
    r: *mut ngx_http_request_t,
    lcf: &LocConf,
    ctx: &mut ReqCtx,
    creds: &Credentials<'_>,
) -> ngx_int_t {
    let Some(keys) = lcf.keys.as_deref() else {
        return NGX_ERROR as ngx_int_t;
    };
    let h = match creds.sig.parse() {
        Ok(h) => h,
        // SAFETY: r is the live request nginx passed to this handler; ctx lives in its pool.
        Err(rej) => return unsafe { reject(r, ctx, creds.sig.key_id, rej) },
    };
    let key = match verify::lookup(keys, h.key_id) {
        Ok(k) => k,
        // SAFETY: r is the live request nginx passed to this handler; ctx lives in its pool.
        Err(rej) => return unsafe { reject(r, ctx, Some(h.key_id), rej) },
    };
    let now = ngx_time() as u64;
    if let Err(rej) = verify::check_window(h.timestamp, now, lcf.clock_skew()) {
        // SAFETY: r is the live request nginx passed to this handler; ctx lives in its pool.
        return unsafe { reject(r, ctx, Some(h.key_id), rej) };
    }
    if !unsafe { has_body(r) } {
        // SAFETY: r is the live request nginx passed to this handler; ctx lives in its pool.
        return unsafe { finish_signature(r, lcf, ctx, &h, key) };
    }
    ctx.sig = Some(ParsedSignature::keep(&h));
    ngx::ngx_log_debug_http!(
        // SAFETY (inside the macro's unsafe block): r is the live request.
        request(r),
        "relay_guard: headers and clock ok, reading the body"
    );
    ctx.state = State::ReadingBody;
    // SAFETY: r is live; nginx calls body_read once the whole body is in memory or on disk.
    let rc = unsafe { ngx_http_read_client_request_body(r, Some(body_read)) };
    if rc >= NGX_HTTP_SPECIAL_RESPONSE as ngx_int_t {
        // An error_page redirect of this error meets the same verdict, not a wait.
        ctx.state = State::Done;
        ctx.rc = rc;
        return rc;
    }
    // Reading took a reference on the request; this drops ours so it completes later.
    // SAFETY: r is the live request nginx passed to this handler; ctx lives in its pool.
    unsafe { ngx_http_finalize_request(r, NGX_DONE as ngx_int_t) };
    NGX_DONE as ngx_int_t
}

unsafe fn has_body(r: *mut ngx_http_request_t) -> bool {
    // SAFETY: r is live.
    let hi = unsafe { &(*r).headers_in };
    // HTTP/2 and HTTP/3 frame bodies without length headers: always read there.
    hi.content_length_n > 0 || hi.chunked() != 0 || unsafe { (*r).http_version } >= 2000
}

/// Runs when the body has been read (possibly synchronously, from inside start_signature).
unsafe extern "C" fn body_read(r: *mut ngx_http_request_t) {
    // SAFETY: r is the live request nginx passed to this handler; ctx lives in its pool.
    let (Some(lcf), Some(ctx)) = (unsafe { loc_conf(r) }, unsafe { ctx_of(r) }) else {
        // SAFETY: r is the live request nginx passed to this callback.
        unsafe { ngx_http_finalize_request(r, NGX_ERROR as ngx_int_t) };
        return;
    };
    // Parsed and looked up before the body was read; the key ring is the location's, which
    // has not changed since.
    let key = ctx.sig.and_then(|sig| {
        // SAFETY: the header values live as long as the request.
        let h = unsafe { sig.get() };
        let key = lcf.keys.as_deref()?.get(h.key_id)?;
        Some((h, key))
    });
    let Some((h, key)) = key else {
        // SAFETY: r is the live request nginx passed to this callback.
        unsafe { ngx_http_finalize_request(r, NGX_ERROR as ngx_int_t) };
        return;
    };
    // SAFETY: r is the live request nginx passed to this handler; ctx lives in its pool.
    let rc = unsafe { finish_signature(r, lcf, ctx, &h, key) };
    if rc == NGX_DONE as ngx_int_t {
        // A rejection was sent and the request finalized.
        return;
    }
    ctx.state = State::Done;
    ctx.rc = rc;
    // SAFETY: resume the phase engine where the access handler paused it.
    unsafe {
        (*r).write_event_handler = Some(ngx_http_core_run_phases);
        ngx_http_core_run_phases(r);
    }
}

/// The MAC over the string to sign, then the nonce. Returns NGX_OK / NGX_DECLINED to go on, or
/// NGX_DONE after a rejection was sent.
unsafe fn finish_signature(
    r: *mut ngx_http_request_t,
    lcf: &LocConf,
    ctx: &mut ReqCtx,
    h: &SignatureHeaders<'_>,
    key: &Key,
) -> ngx_int_t {
    let body_hex = match unsafe { body::body_sha256_hex(r) } {
        Ok(hex) => hex,
        Err(msg) => {
            // SAFETY: r->connection->log is the request's log.
            ngx::ngx_log_error!(
                ngx::ffi::NGX_LOG_ERR,
                unsafe { (*(*r).connection).log },
                "relay_guard: {msg}"
            );
            return NGX_ERROR as ngx_int_t;
        }
    };
    // SAFETY: method_name and unparsed_uri point into the request line, alive with r.
    let parts = unsafe {
        RequestParts {
            method: bytes(&(*r).method_name),
            target: bytes(&(*r).unparsed_uri),
            body_sha256_hex: &body_hex,
        }
    };
    ngx::ngx_log_debug_http!(
        // SAFETY (inside the macro's unsafe block): r is the live request.
        request(r),
        "relay_guard: body sha256 {}",
        String::from_utf8_lossy(&body_hex)
    );
    if let Err(rej) = verify::verify_signature(key, h, &parts) {
        // SAFETY: r is the live request nginx passed to this handler; ctx lives in its pool.
        return unsafe { reject(r, ctx, Some(h.key_id), rej) };
    }
    let now = ngx_time() as u64;
    let expires = h.timestamp.saturating_add(lcf.clock_skew());
    // SAFETY: r is the live request nginx passed to this handler; ctx lives in its pool.
    let Some(mcf) = Module::main_conf(unsafe { &*r }) else {
        return NGX_ERROR as ngx_int_t;
    };
    // SAFETY: r is the live request nginx passed to this handler; ctx lives in its pool.
    let verdict = unsafe {
        zone::ctx_of(mcf.zone)
            .and_then(|z| zone::check_and_insert(z, h.key_id, h.nonce, expires, now))
    };
    let Some(verdict) = verdict else {
        return NGX_ERROR as ngx_int_t;
    };
    match verdict.insert {
        // SAFETY: r is the live request nginx passed to this handler; ctx lives in its pool.
        Insert::Fresh => unsafe { accept(r, ctx, h.key_id) },
        Insert::Replay => unsafe {
            reject(
                r,
                ctx,
                Some(h.key_id),
                Rejection::new(
                    Outcome::Replay,
                    "nonce already used: send a fresh X-Nonce with every request",
                ),
            )
        },
        Insert::Full => {
            if verdict.warn_full {
                // SAFETY: the request's log.
                ngx::ngx_log_error!(NGX_LOG_WARN, unsafe { (*(*r).connection).log },
                    "relay_guard: the nonce store is full ({} live nonces): signed requests get 503 until nonces expire; enlarge relay_guard_zone (slots needed ≈ peak requests/s × 2 × relay_guard_clock_skew)",
                    verdict.capacity);
            }
            // SAFETY: r is the live request nginx passed to this handler; ctx lives in its pool.
            unsafe {
                reject(
                    r,
                    ctx,
                    Some(h.key_id),
                    Rejection::new(
                        Outcome::StoreFull,
                        "the relay is overloaded (nonce store full); retry shortly",
                    ),
                )
            }
        }
    }
}

unsafe fn accept(r: *mut ngx_http_request_t, ctx: &mut ReqCtx, key_id: &[u8]) -> ngx_int_t {
    ctx.outcome = Some(Outcome::Ok);
    // SAFETY: r is the live request nginx passed to this handler; ctx lives in its pool.
    ctx.key_id = unsafe { pool_copy((*r).pool, key_id) };
    ngx::ngx_log_debug_http!(
        // SAFETY (inside the macro's unsafe block): r is the live request.
        request(r),
        "relay_guard: accepted key id \"{}\"",
        String::from_utf8_lossy(key_id)
    );
    ctx.rc = if ctx.dry_run {
        NGX_DECLINED as ngx_int_t
    } else {
        NGX_OK as ngx_int_t
    };
    ctx.state = State::Done;
    ctx.rc
}

/// Logs the reason at info and answers 401/503 — or, in dry-run mode, only logs and lets go.
unsafe fn reject(
    r: *mut ngx_http_request_t,
    ctx: &mut ReqCtx,
    key_id: Option<&[u8]>,
    rej: Rejection,
) -> ngx_int_t {
    ctx.outcome = Some(rej.outcome);
    let shown = key_id.filter(|k| crate::auth::headers::is_key_id(k));
    if let Some(k) = shown {
        // SAFETY: r is the live request nginx passed to this handler; ctx lives in its pool.
        ctx.key_id = unsafe { pool_copy((*r).pool, k) };
    }
    // SAFETY: the request's log.
    let log = unsafe { (*(*r).connection).log };
    ngx::ngx_log_error!(
        NGX_LOG_INFO,
        log,
        "relay_guard: {}{} key id \"{}\": {}",
        if ctx.dry_run {
            "dry run, would reject "
        } else {
            "rejected "
        },
        rej.outcome.as_str(),
        shown.map(String::from_utf8_lossy).unwrap_or_default(),
        rej.message
    );
    ctx.state = State::Done;
    if ctx.dry_run {
        ctx.rc = NGX_DECLINED as ngx_int_t;
        return ctx.rc;
    }
    ctx.rc = NGX_DONE as ngx_int_t;
    // SAFETY: r is the live request nginx passed to this handler; ctx lives in its pool.
    let rc = unsafe { respond::send_error(r, rej.outcome.http_status(), &rej.message) };
    unsafe { ngx_http_finalize_request(r, rc) };
    NGX_DONE as ngx_int_t
}

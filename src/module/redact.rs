//! Redaction glue: masks secrets in the request's loggable fields before any log line is
//! written. The masking itself is `crate::redact`.
//!
//! Two moments: every error-log line of the request goes through a wrapper of nginx's context
//! handler that prints masked copies of the request line, Referer and upstream URI (installed
//! at POST_READ); and the first LOG-phase handler masks, for good, every header value, the
//! args and the URIs, before the access log formats anything. By the LOG phase the upstream
//! request (and any proxy_next_upstream retry) is long built, so nothing proxied changes.

use std::sync::{Arc, OnceLock};

use ngx::ffi::{
    ngx_http_request_t, ngx_int_t, ngx_pool_t, ngx_str_t, ngx_table_elt_t, NGX_DECLINED,
};
use ngx::http::HttpModuleLocationConf;

use super::access::{ctx_mut, ensure_ctx};
use super::ffi_util::{bytes, for_each_header, pool_copy};
use super::Module;
use crate::auth::token;
use crate::redact::{RedactConfig, Redactor};

/// Keys the fingerprints in masked values. Random per nginx start (kept across reloads: the
/// module stays loaded), so fingerprints correlate within a run and reveal nothing offline.
fn fingerprint_key() -> [u8; 32] {
    *FINGERPRINT_KEY.get_or_init(|| {
        let mut k = [0u8; 32];
        // SAFETY: getrandom writes at most k.len() bytes into k.
        let n = unsafe { libc::getrandom(k.as_mut_ptr() as *mut core::ffi::c_void, k.len(), 0) };
        if n != k.len() as isize {
            // Without randomness fall back to a per-process value: still no offline guessing
            // of the secret, since the fingerprint is truncated and the key is not in the logs.
            k[..8].copy_from_slice(&(std::process::id() as u64).to_le_bytes());
        }
        k
    })
}
static FINGERPRINT_KEY: OnceLock<[u8; 32]> = OnceLock::new();

/// Builds the redactor for a location: defaults, the operator's additions, and the upstream
/// key as a literal wherever it appears.
pub fn build(headers: &[Vec<u8>], args: &[Vec<u8>], upstream_key: Option<&[u8]>) -> Arc<Redactor> {
    let mut cfg = RedactConfig::with_defaults();
    headers.iter().for_each(|h| cfg.add_header(h));
    args.iter().for_each(|a| cfg.add_arg(a));
    if let Some(k) = upstream_key {
        cfg.add_literal(k);
    }
    Arc::new(Redactor::new(&cfg, fingerprint_key()))
}

fn redactor_for<'a>(r: *mut ngx_http_request_t) -> Option<&'a Redactor> {
    // SAFETY: r is live; the location configuration outlives it.
    Module::location_conf(unsafe { &*r }).and_then(|c| c.redactor.as_deref())
}

/// Points `field` at a masked copy when anything in it is secret.
unsafe fn mask_field(
    pool: *mut ngx_pool_t,
    field: &mut ngx_str_t,
    out: &mut Vec<u8>,
    mask: impl FnOnce(&[u8], &mut Vec<u8>) -> bool,
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
pub unsafe extern "C" fn early_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls phase handlers with a live request.
    if unsafe { (*r).main } != r || redactor_for(r).is_none() {
        return NGX_DECLINED as ngx_int_t;
    }
    if let Some(ctx) = unsafe { ensure_ctx(r) } {
        if ctx.orig_log_handler.is_none() {
            // SAFETY: r is live; log_handler is nginx's per-request error-log context hook.
            unsafe {
                ctx.orig_log_handler = (*r).log_handler;
                (*r).log_handler = Some(error_log_context);
            }
        }
    }
    NGX_DECLINED as ngx_int_t
}

/// Runs nginx's own context handler with masked copies of the fields it prints swapped in,
/// then swaps the originals back: the proxy keeps using the real values (retries included).
unsafe extern "C" fn error_log_context(
    r: *mut ngx_http_request_t,
    sr: *mut ngx_http_request_t,
    buf: *mut u8,
    len: usize,
) -> *mut u8 {
    let Some(orig) = (unsafe { ctx_mut(r) }).and_then(|c| c.orig_log_handler) else {
        return buf;
    };
    let Some(red) = redactor_for(r) else {
        // SAFETY: forwarding to nginx's handler with its own arguments.
        return unsafe { orig(r, sr, buf, len) };
    };
    let mut out = Vec::new();
    // SAFETY: r (and its upstream, if any) are live; every swapped field is restored before
    // returning, and masked copies live in the request pool.
    unsafe {
        let pool = (*r).pool;
        let line = (*r).request_line;
        mask_field(pool, &mut (*r).request_line, &mut out, |v, o| {
            red.mask_target(v, &[], o)
        });
        let referer = (*r).headers_in.referer;
        let referer_value = referer.as_ref().map(|h| h.value);
        if let Some(h) = referer.as_mut() {
            mask_field(pool, &mut h.value, &mut out, |v, o| {
                red.mask_header(b"referer", v, &[], o)
            });
        }
        let upstream = (*r).upstream;
        let upstream_uri = upstream.as_ref().map(|u| u.uri);
        if let Some(u) = upstream.as_mut() {
            mask_field(pool, &mut u.uri, &mut out, |v, o| {
                red.mask_target(v, &[], o)
            });
        }
        let p = orig(r, sr, buf, len);
        (*r).request_line = line;
        if let (Some(h), Some(v)) = (referer.as_mut(), referer_value) {
            h.value = v;
        }
        if let (Some(u), Some(v)) = (upstream.as_mut(), upstream_uri) {
            u.uri = v;
        }
        p
    }
}

/// LOG phase, first handler: everything a log_format or an error-log line can print.
pub unsafe extern "C" fn log_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    let Some(red) = redactor_for(r) else {
        return NGX_DECLINED as ngx_int_t;
    };
    let mut out = Vec::new();
    // SAFETY: r is live until after the LOG phase; every field is repointed at a pool copy.
    unsafe {
        let pool = (*r).pool;
        // The credential this request presented is masked wherever else it was pasted.
        let (mut authz, mut api_key) = (None, None);
        for_each_header(&(*r).headers_in.headers.part, |h| {
            let name = bytes(&h.key);
            if name.eq_ignore_ascii_case(b"authorization") {
                authz.get_or_insert(bytes(&h.value));
            } else if name.eq_ignore_ascii_case(b"x-api-key") {
                api_key.get_or_insert(bytes(&h.value));
            }
        });
        let presented = token::credential(authz, api_key);
        let extra: &[&[u8]] = presented.as_slice();
        // Header elements are mutated in place: nginx's shortcut pointers (user_agent,
        // authorization, cookies) point at the same elements, so their variables see it too.
        let part = &mut (*r).headers_in.headers.part as *mut ngx::ffi::ngx_list_part_t;
        mask_headers(part, pool, red, extra, &mut out);
        mask_field(pool, &mut (*r).request_line, &mut out, |v, o| {
            red.mask_target(v, extra, o)
        });
        mask_field(pool, &mut (*r).unparsed_uri, &mut out, |v, o| {
            red.mask_target(v, extra, o)
        });
        mask_field(pool, &mut (*r).uri, &mut out, |v, o| {
            red.mask_target(v, extra, o)
        });
        mask_field(pool, &mut (*r).args, &mut out, |v, o| {
            red.mask_args(v, extra, o)
        });
        let referer = (*r).headers_in.referer;
        if !referer.is_null() {
            mask_field(pool, &mut (*referer).value, &mut out, |v, o| {
                red.mask_header(b"referer", v, extra, o)
            });
        }
    }
    NGX_DECLINED as ngx_int_t
}

unsafe fn mask_headers(
    mut part: *mut ngx::ffi::ngx_list_part_t,
    pool: *mut ngx_pool_t,
    red: &Redactor,
    extra: &[&[u8]],
    out: &mut Vec<u8>,
) {
    while !part.is_null() {
        // SAFETY: each part holds `nelts` ngx_table_elt_t elements at `elts`.
        let elts = unsafe {
            core::slice::from_raw_parts_mut((*part).elts as *mut ngx_table_elt_t, (*part).nelts)
        };
        for h in elts {
            // SAFETY: the key lives in request memory.
            let name = unsafe { bytes(&h.key) };
            unsafe {
                mask_field(pool, &mut h.value, out, |v, o| {
                    red.mask_header(name, v, extra, o)
                })
            };
        }
        // SAFETY: next is null or another part of the same list.
        part = unsafe { (*part).next };
    }
}

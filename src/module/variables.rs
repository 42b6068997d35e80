//! `$relay_guard_key_id`, `$relay_guard_status` and `$relay_guard_upstream_key`.

use core::ptr;

use ngx::ffi::{
    ngx_conf_t, ngx_http_add_variable, ngx_http_request_t, ngx_http_variable_t,
    ngx_http_variable_value_t, ngx_int_t, ngx_str_t, NGX_ERROR, NGX_HTTP_VAR_NOCACHEABLE, NGX_OK,
};
use ngx::ngx_string;

use ngx::http::HttpModuleLocationConf;

use super::access::request_ctx;
use super::Module;

type Getter = unsafe extern "C" fn(
    *mut ngx_http_request_t,
    *mut ngx_http_variable_value_t,
    usize,
) -> ngx_int_t;

pub unsafe fn register(cf: *mut ngx_conf_t) -> ngx_int_t {
    let vars: [(ngx_str_t, Getter); 3] = [
        (ngx_string!("relay_guard_key_id"), get_key_id),
        (ngx_string!("relay_guard_status"), get_status),
        (ngx_string!("relay_guard_upstream_key"), get_upstream_key),
    ];
    for (mut name, get) in vars {
        // SAFETY: cf is valid in preconfiguration; nginx copies the name.
        let v: *mut ngx_http_variable_t =
            unsafe { ngx_http_add_variable(cf, &mut name, NGX_HTTP_VAR_NOCACHEABLE as usize) };
        if v.is_null() {
            return NGX_ERROR as ngx_int_t;
        }
        // SAFETY: v is the variable nginx just registered.
        unsafe {
            (*v).get_handler = Some(get);
            (*v).data = 0;
        }
    }
    NGX_OK as ngx_int_t
}

/// Fills `v` with `data`, or marks it not found when empty.
unsafe fn set(v: *mut ngx_http_variable_value_t, data: *const u8, len: usize) -> ngx_int_t {
    // SAFETY: v is nginx's output slot; data lives at least as long as the request.
    unsafe {
        if len == 0 || data.is_null() {
            (*v).set_not_found(1);
            return NGX_OK as ngx_int_t;
        }
        (*v).data = data as *mut u8;
        (*v).set_len(len as u32);
        (*v).set_valid(1);
        (*v).set_no_cacheable(1);
        (*v).set_not_found(0);
    }
    NGX_OK as ngx_int_t
}

unsafe extern "C" fn get_key_id(
    r: *mut ngx_http_request_t,
    v: *mut ngx_http_variable_value_t,
    _: usize,
) -> ngx_int_t {
    // SAFETY: r is live; the key id copy lives in its pool.
    match unsafe { request_ctx(r) } {
        Some(ctx) if ctx.outcome.is_some() => unsafe { set(v, ctx.key_id.data, ctx.key_id.len) },
        _ => unsafe { set(v, ptr::null(), 0) },
    }
}

unsafe extern "C" fn get_status(
    r: *mut ngx_http_request_t,
    v: *mut ngx_http_variable_value_t,
    _: usize,
) -> ngx_int_t {
    // SAFETY: r is live; status tokens are static strings.
    match unsafe { request_ctx(r) }.and_then(|c| Some((c.outcome?, c.dry_run))) {
        Some((o, dry)) => {
            let s = if dry { o.dry_run_str() } else { o.as_str() };
            // SAFETY: v is the output slot nginx passed; the data is static or lives in the pool.
            unsafe { set(v, s.as_ptr(), s.len()) }
        }
        None => unsafe { set(v, ptr::null(), 0) },
    }
}

unsafe extern "C" fn get_upstream_key(
    r: *mut ngx_http_request_t,
    v: *mut ngx_http_variable_value_t,
    _: usize,
) -> ngx_int_t {
    // SAFETY: r is live; the key lives in the location configuration, which outlives it.
    let key = Module::location_conf(unsafe { &*r }).and_then(|c| c.upstream_key.as_deref());
    match key {
        Some(k) => unsafe { set(v, k.as_ptr(), k.len()) },
        // SAFETY: v is the output slot nginx passed; the data is static or lives in the pool.
        None => unsafe { set(v, ptr::null(), 0) },
    }
}

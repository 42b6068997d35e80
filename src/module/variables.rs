//! `$relay_guard_key_id`, `$relay_guard_status`, `$relay_guard_upstream_key`, and what the
//! response reported about itself: `$relay_guard_usage_*`, `$relay_guard_model`,
//! `$relay_guard_stream` (meaningful from the LOG phase on, when the body has gone by).

use ngx::core::Status;
use ngx::ffi::{
    ngx_conf_t, ngx_http_add_variable, ngx_http_request_t, ngx_http_variable_t,
    ngx_http_variable_value_t, ngx_int_t, ngx_str_t, NGX_HTTP_VAR_NOCACHEABLE,
};
use ngx::ngx_string;

use super::ctx;
use super::req::Req;
use super::watch::Report;
use crate::usage::{StreamOutcome, TokenCounts};

/// What a getter computes: bytes that live as long as the request (or `None`: not found).
type Value = for<'r> fn(Req<'r>) -> Option<&'r [u8]>;

const VARIABLES: [(ngx_str_t, Getter); 9] = [
    (ngx_string!("relay_guard_key_id"), getter::<0>),
    (ngx_string!("relay_guard_status"), getter::<1>),
    (ngx_string!("relay_guard_upstream_key"), getter::<2>),
    (ngx_string!("relay_guard_usage_input"), getter::<3>),
    (ngx_string!("relay_guard_usage_output"), getter::<4>),
    (ngx_string!("relay_guard_usage_cache_read"), getter::<5>),
    (ngx_string!("relay_guard_usage_cache_write"), getter::<6>),
    (ngx_string!("relay_guard_model"), getter::<7>),
    (ngx_string!("relay_guard_stream"), getter::<8>),
];
const VALUES: [Value; 9] = [
    key_id,
    status,
    upstream_key,
    |r| usage_number(r, |c| c.input),
    |r| usage_number(r, |c| c.output),
    |r| usage_number(r, |c| c.cache_read),
    |r| usage_number(r, TokenCounts::cache_write),
    model,
    stream,
];

type Getter = unsafe extern "C" fn(
    *mut ngx_http_request_t,
    *mut ngx_http_variable_value_t,
    usize,
) -> ngx_int_t;

/// # Safety
/// `cf` is the configuration, in preconfiguration.
pub unsafe fn register(cf: *mut ngx_conf_t) -> Status {
    for (name, get) in VARIABLES {
        let mut name = name;
        // SAFETY: cf is valid in preconfiguration; nginx copies the name.
        let v: *mut ngx_http_variable_t =
            unsafe { ngx_http_add_variable(cf, &mut name, NGX_HTTP_VAR_NOCACHEABLE as usize) };
        // SAFETY: null or the variable nginx just registered, ours to fill in.
        let Some(v) = (unsafe { v.as_mut() }) else {
            return Status::NGX_ERROR;
        };
        v.get_handler = Some(get);
        v.data = 0;
    }
    Status::NGX_OK
}

/// The one getter nginx calls, for variable `I` of VALUES: converts the request once and
/// fills nginx's output slot.
unsafe extern "C" fn getter<const I: usize>(
    r: *mut ngx_http_request_t,
    v: *mut ngx_http_variable_value_t,
    _: usize,
) -> ngx_int_t {
    // SAFETY: nginx calls variable getters with a live request, for the length of the call.
    let value = unsafe { Req::from_raw(r) }.and_then(VALUES[I]);
    // SAFETY: v is nginx's output slot for this evaluation, ours to fill in.
    let Some(v) = (unsafe { v.as_mut() }) else {
        return Status::NGX_ERROR.into();
    };
    match value.filter(|b| !b.is_empty()) {
        Some(b) => {
            // The bytes live as long as the request (static, pool or configuration memory).
            v.data = b.as_ptr() as *mut u8;
            v.set_len(b.len() as u32);
            v.set_valid(1);
            v.set_no_cacheable(1);
            v.set_not_found(0);
        }
        None => v.set_not_found(1),
    }
    Status::NGX_OK.into()
}

fn key_id<'r>(req: Req<'r>) -> Option<&'r [u8]> {
    let c = ctx::get(req)?;
    c.outcome()?;
    Some(c.key_id())
}

fn status<'r>(req: Req<'r>) -> Option<&'r [u8]> {
    let c = ctx::get(req)?;
    let o = c.outcome()?;
    if let Some(k) = c.limited() {
        return Some(k.status(c.dry_run()).as_bytes());
    }
    let s = if c.dry_run() {
        o.dry_run_str()
    } else {
        o.as_str()
    };
    Some(s.as_bytes())
}

fn upstream_key<'r>(req: Req<'r>) -> Option<&'r [u8]> {
    req.loc_conf()?.upstream_key.as_deref().map(Vec::as_slice)
}

/// One count of the response's usage, in decimal, in the request pool.
fn usage_number<'r>(req: Req<'r>, pick: fn(&TokenCounts) -> u64) -> Option<&'r [u8]> {
    let n = pick(&Report::of(req)?.usage?);
    req.pool_copy(crate::metrics::u64_digits(n, &mut [0u8; 20]))
}

fn model<'r>(req: Req<'r>) -> Option<&'r [u8]> {
    let report = Report::of(req)?;
    req.pool_copy(report.model())
}

fn stream<'r>(req: Req<'r>) -> Option<&'r [u8]> {
    match Report::of(req)?.stream {
        StreamOutcome::NotStream => None,
        s => Some(s.label().as_bytes()),
    }
}

//! `relay_guard_redis` and `relay_guard_redis_failure` as the configuration holds them, and
//! the nginx upstream configuration the Redis round trips use.

use core::ptr;

use ngx::ffi::{
    ngx_conf_t, ngx_http_upstream_add, ngx_http_upstream_conf_t, ngx_pcalloc, ngx_str_t, ngx_url_t,
    NGX_CONF_BITMASK_SET, NGX_HTTP_UPSTREAM_FT_OFF,
};

/// `relay_guard_redis_failure closed | local;`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailurePolicy {
    /// 503 `overloaded_error`: a replay must never pass because Redis is down.
    Closed,
    /// This host's own nonce store and limits, counted and warned about.
    Local,
}

impl FailurePolicy {
    pub fn parse(v: &[u8]) -> Option<FailurePolicy> {
        match v {
            b"closed" => Some(FailurePolicy::Closed),
            b"local" => Some(FailurePolicy::Local),
            _ => None,
        }
    }
}

pub const DEFAULT_PREFIX: &str = "relay-guard:";
pub const DEFAULT_TIMEOUT_MS: u64 = 50;
pub const MAX_TIMEOUT_MS: u64 = 10_000;
/// A fleet-wide slot's lease: renewed each third of it while its request runs, so it only
/// matters when a host dies holding slots (they come back after at most this long).
pub const DEFAULT_LEASE_MS: u64 = 30_000;
pub const MAX_LEASE_MS: u64 = 3_600_000;
/// The replies are a few dozen bytes (an error line at most `resp::MAX_LINE`, 512); one that
/// does not fit is a protocol failure (upstream.rs). Below the request pool's largest small
/// allocation (4 KiB less the pool header), so nginx carves it from the pool: at 4 KiB it was a
/// malloc and free of its own per round trip, and with 16 requests in flight that churned
/// the heap's top (brk and page faults: ~2 µs of the front's CPU per request, `--perf`).
pub const BUFFER_SIZE: usize = 1024;

pub struct FleetConf {
    /// nginx's upstream settings for the round trips, in the configuration pool.
    pub upstream: *mut ngx_http_upstream_conf_t,
    pub prefix: String,
    /// Sent with `AUTH` (read from `password_file=` at configuration time).
    pub password: Option<Vec<u8>>,
    /// `timeout=`: also the settlements' and renewals' on the worker's own connection.
    pub timeout_ms: u64,
    /// `lease=`.
    pub lease_ms: u64,
}

/// The upstream configuration for `relay_guard_redis NAME`: NAME is an `upstream {}` block
/// (or host:port), every timeout is `timeout_ms`, and a failed server is never retried on
/// the next one: with several independent Redis servers, a nonce stored on one is unknown to
/// the others, so trying "the next" would turn an outage into accepted replays.
///
/// # Safety
/// `cf` is the configuration being parsed (a directive handler's).
pub unsafe fn upstream_conf(
    cf: *mut ngx_conf_t,
    name: &[u8],
    timeout_ms: u64,
) -> Option<*mut ngx_http_upstream_conf_t> {
    // SAFETY: cf is live; the pool outlives the configuration; zero is each field's "off".
    let u = unsafe {
        ngx_pcalloc((*cf).pool, core::mem::size_of::<ngx_http_upstream_conf_t>())
            as *mut ngx_http_upstream_conf_t
    };
    // SAFETY: u is null or fresh, zeroed, exclusively ours.
    let uc = unsafe { u.as_mut() }?;
    // SAFETY: as above, for the URL nginx parses (it copies what it keeps).
    let url =
        unsafe { ngx_pcalloc((*cf).pool, core::mem::size_of::<ngx_url_t>()) as *mut ngx_url_t };
    // SAFETY: url is null or fresh, zeroed memory.
    let url_ref = unsafe { url.as_mut() }?;
    url_ref.url = ngx_str_t {
        len: name.len(),
        data: name.as_ptr() as *mut u8,
    };
    url_ref.set_no_resolve(1);
    // SAFETY: cf is live; nginx finds or creates the upstream by name, logging any error
    // with the directive's file and line.
    uc.upstream = unsafe { ngx_http_upstream_add(cf, url, 0) };
    if uc.upstream.is_null() {
        return None;
    }
    uc.connect_timeout = timeout_ms as _;
    uc.send_timeout = timeout_ms as _;
    uc.read_timeout = timeout_ms as _;
    uc.next_upstream_timeout = 0;
    uc.next_upstream_tries = 1;
    uc.next_upstream = (NGX_CONF_BITMASK_SET | NGX_HTTP_UPSTREAM_FT_OFF) as _;
    uc.buffer_size = BUFFER_SIZE;
    uc.local = ptr::null_mut();
    Some(u)
}

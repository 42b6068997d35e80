//! `relay_guard_redis` and `relay_guard_redis_failure` as the configuration holds them, and
//! the nginx upstream block whose balancer picks each round trip's server.

use ngx::ffi::{
    ngx_conf_t, ngx_http_upstream_add, ngx_http_upstream_srv_conf_t, ngx_pcalloc, ngx_str_t,
    ngx_url_t,
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
pub struct FleetConf {
    /// The `upstream {}` block (nginx's, or the one it makes for host:port).
    pub upstream: *mut ngx_http_upstream_srv_conf_t,
    pub prefix: String,
    /// Sent with `AUTH` (read from `password_file=` at configuration time).
    pub password: Option<Vec<u8>>,
    /// `timeout=`: also the settlements' and renewals' on the worker's own connection.
    pub timeout_ms: u64,
    /// `lease=`.
    pub lease_ms: u64,
}

/// The upstream block for `relay_guard_redis NAME`: NAME is an `upstream {}` block (or
/// host:port, for which nginx makes one), found or made as `proxy_pass` does.
///
/// # Safety
/// `cf` is the configuration being parsed (a directive handler's).
pub unsafe fn upstream_servers(
    cf: *mut ngx_conf_t,
    name: &[u8],
) -> Option<*mut ngx_http_upstream_srv_conf_t> {
    // SAFETY: cf is live; the pool outlives the configuration; zero is each field's "unset"
    // for the URL nginx parses (it copies what it keeps).
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
    let us = unsafe { ngx_http_upstream_add(cf, url, 0) };
    (!us.is_null()).then_some(us)
}

//! Which Redis server a request's admission goes to: nginx's own balancer of the
//! `upstream {}` block (`hash … consistent` over the key id included, `down` servers
//! skipped), asked for one address without starting an upstream request. The commands go on
//! the worker's link to that address (`link.rs`).
//!
//! A balancer's per-request state hangs off `r->upstream`, which the main request does not
//! have in its access phase (proxy_pass makes it later): a zeroed one stands in while the
//! balancer picks, and the request's own is put back before anything else runs.

use core::ptr;

use ngx::ffi::{
    ngx_close_connection, ngx_destroy_pool, ngx_http_upstream_srv_conf_t, ngx_http_upstream_t,
    NGX_DONE,
};

use super::peer::PeerAddr;
use crate::module::req::Req;

/// The address the balancer picks for `req`; `None` when it has none (every server
/// down, or a balancer error), which the request takes as a failed round trip.
///
/// `max_fails` is never counted here: a failed round trip does not move a key to another
/// server, whose store does not hold the key's nonces (see the README's sharding notes).
pub fn choose(req: Req<'_>, uscf: *mut ngx_http_upstream_srv_conf_t) -> Option<PeerAddr> {
    if uscf.is_null() {
        return None;
    }
    let r = req.as_ptr();
    // On the stack, not in the request's pool: the struct is about a kilobyte, every request
    // would carry it to its end, and the balancers keep no pointer to it past `free` (their
    // state is in the pool, pointed at from `u.peer.data`).
    // SAFETY: all-zero is an upstream nothing has started; the balancers read only `peer`,
    // which they set up themselves.
    let mut u: ngx_http_upstream_t = unsafe { core::mem::zeroed() };
    // SAFETY: the live request, in its access handler: nothing else reads r->upstream while
    // this runs, and its own value is restored before returning (so the stack address never
    // outlives this call).
    let own = unsafe { core::mem::replace(&mut (*r).upstream, &mut u) };
    // SAFETY: as above; uscf is the configuration's upstream block, initialised by nginx.
    let picked = unsafe { pick(r, &mut u, uscf) };
    // SAFETY: as above.
    unsafe { (*r).upstream = own };
    picked
}

/// # Safety
/// `r` is the live request with `r->upstream == u`, a zeroed upstream; `uscf` an
/// initialised upstream block.
unsafe fn pick(
    r: *mut ngx::ffi::ngx_http_request_t,
    u: *mut ngx_http_upstream_t,
    uscf: *mut ngx_http_upstream_srv_conf_t,
) -> Option<PeerAddr> {
    // SAFETY: the caller's promise; init fills u->peer (get, free, data, tries) as for an
    // upstream request, allocating what it needs in the request's pool.
    unsafe {
        let init = (*uscf).peer.init?;
        if init(r, uscf) != 0 {
            return None;
        }
        let pc = &mut (*u).peer;
        // The balancers log through it (debug lines, "no live upstreams").
        pc.log = (*(*r).connection).log;
        pc.set_log_error(ngx::ffi::ngx_connection_log_error_e_NGX_ERROR_ERR as _);
        let get = pc.get?;
        let rc = get(pc, pc.data);
        if rc != 0 && rc != NGX_DONE as isize {
            return None;
        }
        let addr = PeerAddr::copy_of(pc.sockaddr, pc.socklen as usize);
        if rc == NGX_DONE as isize && !pc.connection.is_null() {
            // A keepalive pool's cached connection (the link has its own), closed as the
            // keepalive module closes one: its pool first. (A block of Redis servers carries no
            // TLS connection: nothing but RESP speaks to it.)
            let c = pc.connection;
            if !(*c).pool.is_null() {
                ngx_destroy_pool((*c).pool);
            }
            ngx_close_connection(c);
            pc.connection = ptr::null_mut();
        }
        if let Some(free) = pc.free {
            free(pc, pc.data, 0);
        }
        addr
    }
}

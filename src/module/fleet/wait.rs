//! Handing a request its admission's answer: the state goes into its context, and its phase
//! engine runs again at the access handler, which reads it (as nginx runs a request from one
//! of its connection's events).

use ngx::ffi::{ngx_http_log_ctx_t, ngx_http_request_t, ngx_http_run_posted_requests};

use super::peer::PeerAddr;
use crate::module::ctx::{self, FleetState};
use crate::module::req::Req;

/// # Safety
/// `r` is a live main request waiting for its admission (its access handler returned
/// `NGX_AGAIN` with the call pending), and no handler of it is running.
pub unsafe fn deliver(r: *mut ngx_http_request_t, state: FleetState, peer: PeerAddr) {
    // SAFETY: the caller's promise: a live request.
    let Some(req) = (unsafe { Req::from_raw(r) }) else {
        return;
    };
    if let Some(c) = ctx::get(req) {
        c.settle_fleet_from(state, Some(peer));
    }
    // SAFETY: the live request, as nginx's request handler runs it: its write handler is the
    // phase engine (set when it began waiting); running it may end the request and free it,
    // after which only its connection is used, which nginx never frees (run_posted_requests
    // checks `destroyed` first).
    unsafe {
        let c = (*r).connection;
        // ngx_http_set_log_request: error lines name this request, not the last one its
        // connection ran.
        if let Some(ctx) = (*c)
            .log
            .as_ref()
            .and_then(|l| l.data.cast::<ngx_http_log_ctx_t>().as_mut())
        {
            ctx.current_request = r;
        }
        if let Some(run) = (*r).write_event_handler {
            run(r);
        }
        ngx_http_run_posted_requests(c);
    }
}

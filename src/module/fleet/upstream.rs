//! The Redis round trip as nginx sees it: a waited subrequest of the main request, started
//! straight into an nginx upstream with this module's RESP callbacks (no location is looked
//! up, so no operator's rewrite, access or error_page rule can touch it).
//!
//! Life of one call: `start` makes the subrequest (nginx posts it and runs `run` from its
//! posted-requests loop); `create_request` hands nginx the bytes `begin` encoded;
//! `process_header` reads replies as they arrive and settles the main request's context;
//! nginx finalizes the subrequest and calls `done`, which turns an unanswered call into a
//! failure and records the metrics; nginx then wakes the main request, whose access handler
//! reads the settled state. A client that leaves ends the subrequest with the request
//! (nginx's check for broken connections runs on it), and the pool frees everything.

use core::ffi::c_void;
use core::ptr;

use ngx::core::Status;
use ngx::ffi::{
    ngx_alloc_chain_link, ngx_buf_t, ngx_http_post_subrequest_t, ngx_http_request_body_t,
    ngx_http_request_empty_handler, ngx_http_request_t, ngx_http_subrequest,
    ngx_http_upstream_create, ngx_http_upstream_init, ngx_int_t, ngx_pcalloc, ngx_str_t,
    NGX_HTTP_SUBREQUEST_WAITED, NGX_HTTP_UPSTREAM_INVALID_HEADER, NGX_LOG_ERR,
};

use super::conf::BUFFER_SIZE;
use super::peer::PeerAddr;
use super::FleetFailure;
use crate::fleet::{read_verdict, FleetReplyError};
use crate::metrics::REDIS_ERROR_KINDS;
use crate::module::ctx::{self, FleetState};
use crate::module::error::GlueError;
use crate::module::log::{rg_debug, rg_log};
use crate::module::req::Req;
use crate::module::zone;

/// nginx wants a URI for every subrequest; this one is never looked up.
const URI: &[u8] = b"/.relay-guard/redis";

pub fn start(req: Req<'_>) -> Result<(), GlueError> {
    let pool = req.pool();
    // SAFETY: the request pool is live; the handler struct must outlive the subrequest,
    // and the pool outlives both.
    let ps = unsafe {
        ngx_pcalloc(pool, core::mem::size_of::<ngx_http_post_subrequest_t>())
            as *mut ngx_http_post_subrequest_t
    };
    // SAFETY: ps is null or fresh pool memory.
    let ps_ref = unsafe { ps.as_mut() }.ok_or(GlueError::NoMemory)?;
    ps_ref.handler = Some(done);
    ps_ref.data = ptr::null_mut();
    let mut uri = ngx_str_t {
        len: URI.len(),
        data: URI.as_ptr() as *mut u8,
    };
    let mut sr: *mut ngx_http_request_t = ptr::null_mut();
    // SAFETY: the live main request in its access phase (or its body handler, which runs
    // inside an event handler that runs posted requests after it); nginx keeps `uri`'s
    // data pointer, which is static.
    let rc = unsafe {
        ngx_http_subrequest(
            req.as_ptr(),
            &mut uri,
            ptr::null_mut(),
            &mut sr,
            ps,
            NGX_HTTP_SUBREQUEST_WAITED as _,
        )
    };
    if rc != 0 {
        return Err(GlueError::Subrequest);
    }
    // SAFETY: on NGX_OK sr is the new subrequest, in the main request's pool.
    let s = unsafe { sr.as_mut() }.ok_or(GlueError::Subrequest)?;
    // SAFETY: fresh pool memory: an empty body, so the upstream neither reads the client's
    // body nor closes a body file the main request still owns (as auth_request does).
    let body = unsafe {
        ngx_pcalloc(pool, core::mem::size_of::<ngx_http_request_body_t>())
            as *mut ngx_http_request_body_t
    };
    if body.is_null() {
        return Err(GlueError::NoMemory);
    }
    s.request_body = body;
    s.set_header_only(1);
    // Straight into the upstream instead of the phase engine (ngx_http_handler).
    s.write_event_handler = Some(run);
    Ok(())
}

/// The subrequest's first (and only) run, from nginx's posted-requests loop.
unsafe extern "C" fn run(sr: *mut ngx_http_request_t) {
    // SAFETY: nginx calls write_event_handler with the live subrequest.
    let s = unsafe { &mut *sr };
    s.write_event_handler = Some(ngx_http_request_empty_handler);
    // The upstream settings live in the configuration, which outlives every request.
    let conf = main_ctx(sr)
        .and_then(|(main, _)| main.main_conf())
        .and_then(|m| m.fleet.as_ref())
        .map_or(ptr::null_mut(), |f| f.upstream);
    // SAFETY: the live subrequest; ngx_http_upstream_create allocates sr->upstream.
    if conf.is_null() || unsafe { ngx_http_upstream_create(sr) } != 0 {
        // SAFETY: the live subrequest; finalizing with an error runs `done` (a failure).
        unsafe { ngx::ffi::ngx_http_finalize_request(sr, Status::NGX_ERROR.into()) };
        return;
    }
    // SAFETY: just created.
    let u = unsafe { &mut *s.upstream };
    u.conf = conf;
    u.create_request = Some(create_request);
    u.reinit_request = Some(reinit_request);
    u.process_header = Some(process_header);
    u.abort_request = Some(abort_request);
    u.finalize_request = Some(finalize_request);
    u.schema = ngx_str_t {
        len: b"redis://".len(),
        data: b"redis://".as_ptr() as *mut u8,
    };
    // SAFETY: the live subrequest with its upstream set up; nginx connects, sends, reads
    // and finalizes it, calling `done` at the end (possibly before this returns).
    unsafe { ngx_http_upstream_init(sr) };
}

/// The main request's context, from its subrequest.
fn main_ctx<'r>(sr: *mut ngx_http_request_t) -> Option<(Req<'r>, &'r ctx::ReqCtx<'r>)> {
    // SAFETY: sr is the live subrequest nginx passed to the running callback; its main
    // request outlives it.
    let main = unsafe { Req::from_raw((*sr).main) }?;
    ctx::get(main).map(|c| (main, c))
}

unsafe extern "C" fn create_request(sr: *mut ngx_http_request_t) -> ngx_int_t {
    let Some((main, c)) = main_ctx(sr) else {
        return Status::NGX_ERROR.into();
    };
    let Some(call) = c.fleet() else {
        return Status::NGX_ERROR.into();
    };
    // SAFETY: pool memory for a buffer header and a chain link; the bytes they point at are
    // the call's, in the same pool, never written through `memory` buffers.
    unsafe {
        let b = ngx_pcalloc(main.pool(), core::mem::size_of::<ngx_buf_t>()) as *mut ngx_buf_t;
        let cl = ngx_alloc_chain_link(main.pool());
        let (Some(b_ref), Some(cl_ref)) = (b.as_mut(), cl.as_mut()) else {
            return Status::NGX_ERROR.into();
        };
        let p = call.bytes.as_ptr() as *mut u8;
        b_ref.start = p;
        b_ref.pos = p;
        b_ref.last = p.add(call.bytes.len());
        b_ref.end = b_ref.last;
        b_ref.set_memory(1);
        cl_ref.buf = b;
        cl_ref.next = ptr::null_mut();
        (*(*sr).upstream).request_bufs = cl;
    }
    Status::NGX_OK.into()
}

unsafe extern "C" fn reinit_request(_: *mut ngx_http_request_t) -> ngx_int_t {
    // Never retried on another server (see conf.rs); nothing to reset.
    Status::NGX_OK.into()
}

unsafe extern "C" fn process_header(sr: *mut ngx_http_request_t) -> ngx_int_t {
    let Some((main, c)) = main_ctx(sr) else {
        return Status::NGX_ERROR.into();
    };
    let Some(call) = c.fleet() else {
        return Status::NGX_ERROR.into();
    };
    // SAFETY: nginx calls process_header with the subrequest's live upstream, whose buffer
    // holds what was received so far between pos and last.
    let u = unsafe { &mut *(*sr).upstream };
    // SAFETY: as above: pos..last are initialised bytes of the buffer.
    let got = unsafe {
        core::slice::from_raw_parts(
            u.buffer.pos,
            u.buffer.last.offset_from(u.buffer.pos) as usize,
        )
    };
    match read_verdict(got, call.password, call.asked) {
        Ok(None) if u.buffer.last == u.buffer.end => {
            // nginx would call this "too big header", a 502 that `done` counts as connect.
            rg_log!(
                NGX_LOG_ERR,
                main.log(),
                "the fleet's Redis: a reply longer than {BUFFER_SIZE} bytes"
            );
            c.settle_fleet(FleetState::Failed(FleetFailure::Protocol));
            NGX_HTTP_UPSTREAM_INVALID_HEADER as ngx_int_t
        }
        Ok(None) => Status::NGX_AGAIN.into(),
        Ok(Some(v)) => {
            rg_debug!(main, "the fleet's Redis answered {v:?}");
            // SAFETY: the upstream's peer is the connected server; its address lives in the
            // upstream configuration, copied here by value.
            let peer = unsafe { PeerAddr::copy_of(u.peer.sockaddr, u.peer.socklen as usize) };
            c.settle_fleet_from(FleetState::Answered(v), peer);
            u.buffer.pos = u.buffer.last;
            u.headers_in.status_n = 204;
            u.headers_in.content_length_n = 0;
            // The whole reply was read: the connection can serve the next request.
            u.set_keepalive(1);
            Status::NGX_OK.into()
        }
        Err(e) => {
            let why = match e {
                FleetReplyError::ErrorReply(_) => FleetFailure::ErrorReply,
                _ => FleetFailure::Protocol,
            };
            rg_log!(NGX_LOG_ERR, main.log(), "the fleet's Redis: {e}");
            c.settle_fleet(FleetState::Failed(why));
            NGX_HTTP_UPSTREAM_INVALID_HEADER as ngx_int_t
        }
    }
}

unsafe extern "C" fn abort_request(_: *mut ngx_http_request_t) {}

unsafe extern "C" fn finalize_request(_: *mut ngx_http_request_t, _: ngx_int_t) {}

/// The subrequest is finished: whatever was not answered failed. Returns NGX_OK for nginx's
/// own failures (502, 504, errors) so that nginx makes no error page for the subrequest (an
/// error_page could send it to a location); a client that left (499) ends the request.
unsafe extern "C" fn done(sr: *mut ngx_http_request_t, _: *mut c_void, rc: ngx_int_t) -> ngx_int_t {
    const CLIENT_CLOSED: ngx_int_t = 499;
    const GATEWAY_TIMEOUT: ngx_int_t = 504;
    let Some((main, c)) = main_ctx(sr) else {
        return rc;
    };
    let why = if rc == GATEWAY_TIMEOUT {
        FleetFailure::Timeout
    } else {
        FleetFailure::Connect
    };
    // The server it tried, if it got that far: the script may have run there (a timeout),
    // so the LOG phase still gives back the slot it may hold.
    // SAFETY: the live subrequest; its upstream, when set, names the peer it connected to
    // (an address in the upstream configuration, copied by value).
    let peer = unsafe {
        (*sr)
            .upstream
            .as_ref()
            .and_then(|u| PeerAddr::copy_of(u.peer.sockaddr, u.peer.socklen as usize))
    };
    c.settle_fleet_from(FleetState::Failed(why), peer);
    // The upstream left "sending to client" as the connection's log action; the main
    // request's next lines (a refusal, a fallback warning) are from its access phase.
    // SAFETY: the live subrequest's connection and its log, shared with the main request.
    unsafe {
        if let Some(log) = (*sr).connection.as_ref().and_then(|c| c.log.as_mut()) {
            log.action = ptr::null_mut();
        }
    }
    if let Some(call) = c.fleet() {
        let us = call.started.elapsed().as_micros() as u64;
        let failed = match call.state {
            FleetState::Failed(w) => Some(w),
            _ => None,
        };
        if let Some(m) = zone::of_request(main).ok().and_then(|z| z.metrics.as_ref()) {
            m.record_redis(
                us,
                failed.and_then(|w| REDIS_ERROR_KINDS.iter().position(|k| *k == w.as_str())),
            );
        }
    }
    if rc == CLIENT_CLOSED {
        return rc;
    }
    Status::NGX_OK.into()
}

/// A request relayed on local state because Redis gave no answer.
pub fn count_fallback(req: Req<'_>) {
    if let Some(m) = zone::of_request(req).ok().and_then(|z| z.metrics.as_ref()) {
        m.count_redis_fallback();
    }
}

//! `relay_guard_usage;`: a content handler that tells the caller about its own key only (its
//! limits, what is left and when each resets). The location's `relay_guard` mode has already
//! verified the caller in the access phase; this handler only reads who that was.

use ngx::core::Status;
use ngx::ffi::{ngx_http_request_t, ngx_int_t, NGX_HTTP_GET, NGX_HTTP_HEAD};
use ngx::http::HTTPStatus;

use super::ctx;
use super::ffi_util::now_ms;
use super::req::Req;
use super::{respond, zone};
use crate::auth::outcome::Outcome;
use crate::limits::{Limits, LimitsView};

pub unsafe extern "C" fn usage_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls content handlers with a live request, for the length of the call.
    match unsafe { Req::from_raw(r) } {
        Some(req) => serve(req).into(),
        None => Status::NGX_ERROR.into(),
    }
}

fn serve(req: Req<'_>) -> Status {
    let method = req.method();
    if method != NGX_HTTP_GET && method != NGX_HTTP_HEAD {
        return HTTPStatus::NOT_ALLOWED.into();
    }
    // Only a verified caller: in dry run the access phase lets anyone through, not here.
    let verified = ctx::get(req).filter(|c| c.outcome() == Some(Outcome::Ok));
    let (Some(c), Some(lcf)) = (verified, req.loc_conf()) else {
        return respond::send_error(
            req,
            401,
            "relay_guard_usage answers only a verified client: send your usual credential",
        );
    };
    let Some(ring) = lcf.keys.as_deref() else {
        return Status::NGX_ERROR;
    };
    let Some(key) = ring.get(c.key_id()) else {
        return Status::NGX_ERROR;
    };
    let now = now_ms();
    let none = Limits::default();
    let limits = ring.limits(key).unwrap_or(&none);
    let view = match zone::of_request(req).ok().and_then(|z| z.metrics.as_ref()) {
        Some(m) => m.key_limits(key.id.as_bytes()).view(limits, now),
        // Without a zone no key has limits (the configuration requires one for them).
        None => LimitsView {
            rate: None,
            concurrent: None,
            tokens: Vec::new(),
        },
    };
    let body = view.to_json(&key.id, now / 1000);
    respond::send_body(
        req,
        200,
        "application/json",
        &body,
        &[("cache-control", "no-store")],
    )
}

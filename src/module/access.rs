//! The access-phase handler: chooses signature or token checking, reads and hashes the body
//! when a signature covers it, records the nonce, and rejects or lets the request through.
//!
//! Every function below the two entry points (`access_handler`, `body_read`) is safe: they
//! take the request as a [`Req`] and its context as a shared [`ReqCtx`] (see ctx.rs for why
//! that cannot alias).

use ngx::core::Status;
use ngx::ffi::{
    ngx_http_core_run_phases, ngx_http_finalize_request, ngx_http_read_client_request_body,
    ngx_http_request_t, ngx_int_t, ngx_time, NGX_LOG_ERR, NGX_LOG_INFO, NGX_LOG_WARN,
};
use ngx::http::HTTPStatus;

use super::conf::{LocConf, Mode};
use super::ctx::{self, Access, ReqCtx};
use super::error::GlueError;
use super::fleet::{self, Resumed};
use super::limits::{self, Admit};
use super::log::{rg_debug, rg_log};
use super::req::Req;
use super::{body, respond, zone};
use crate::auth::canonical::RequestParts;
use crate::auth::headers::{RawSignatureHeaders, SignatureHeaders};
use crate::auth::keys::Key;
use crate::auth::nonce_table::{nonce_expires, Insert};
use crate::auth::outcome::{Outcome, Rejection};
use crate::auth::{token, verify};

/// The credentials a request carries, taken from its headers in one pass.
#[derive(Default)]
struct Credentials<'r> {
    sig: RawSignatureHeaders<'r>,
    authorization: Option<&'r [u8]>,
    x_api_key: Option<&'r [u8]>,
    duplicate: Option<&'static str>,
}

fn credentials(req: Req<'_>) -> Credentials<'_> {
    let mut c = Credentials::default();
    // All six names differ from most headers' in length: one compare rejects those.
    let len_ok = |n| matches!(n, 7 | 8 | 9 | 11 | 13);
    req.for_each_header_in(len_ok, |name, value| {
        let (slot, label) = if name.eq_ignore_ascii_case(b"x-key-id") {
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
    c
}

/// Return codes from here up are HTTP statuses nginx answers with (`NGX_HTTP_SPECIAL_RESPONSE`).
const SPECIAL_RESPONSE: ngx_int_t = HTTPStatus::SPECIAL_RESPONSE.0 as ngx_int_t;

/// What the access phase does next with a request.
enum Verdict {
    /// Return this to the phase engine (`NGX_OK`, `NGX_DECLINED`, an error status).
    Return(Status),
    /// The body is being read; `body_read` takes over.
    Reading,
    /// A rejection was sent and the request finalised.
    Sent,
    /// Waiting for the fleet's Redis; the worker's link to it runs the request again.
    Waiting,
}

pub unsafe extern "C" fn access_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls phase handlers with a live request, for the length of the call.
    let Some(req) = (unsafe { Req::from_raw(r) }) else {
        return Status::NGX_ERROR.into();
    };
    match access(req) {
        Verdict::Return(rc) => rc.into(),
        Verdict::Reading | Verdict::Sent => Status::NGX_DONE.into(),
        // The phase engine stops here; the link runs it again when the answer is in.
        Verdict::Waiting => Status::NGX_AGAIN.into(),
    }
}

fn access(req: Req<'_>) -> Verdict {
    if !req.is_main() {
        return Verdict::Return(Status::NGX_DECLINED);
    }
    let Some(lcf) = req.loc_conf() else {
        return Verdict::Return(Status::NGX_DECLINED);
    };
    let mode = lcf.mode();
    if mode == Mode::Off {
        return Verdict::Return(Status::NGX_DECLINED);
    }
    let ctx = match ctx::get(req) {
        Some(ctx) => match ctx.access() {
            Access::Checking => ctx,
            Access::Done(rc) => return Verdict::Return(again(ctx, lcf, rc)),
            Access::ReadingBody => return redirected_while_reading(req, ctx),
            Access::Fleet => return fleet_answered(req, ctx),
        },
        None => match ctx::get_or_create(req) {
            Some(ctx) => ctx,
            None => return Verdict::Return(Status::NGX_ERROR),
        },
    };
    ctx.set_dry_run(lcf.dry_run());
    let creds = credentials(req);
    ctx.set_presented(
        token::credentials(creds.authorization, creds.x_api_key).map(Option::unwrap_or_default),
    );
    if let Some(h) = creds.duplicate {
        let rej = Rejection::new(
            Outcome::Malformed,
            format!("request header {h} appears more than once"),
        );
        return reject(req, ctx, None, rej);
    }
    let Some(keys) = lcf.keys.as_deref() else {
        return Verdict::Return(Status::NGX_ERROR);
    };
    let use_signature = match mode {
        Mode::Signature => true,
        Mode::Token => false,
        // A client that sent any signature header meant to sign: judge it as such.
        _ => creds.sig.any_present(),
    };
    rg_debug!(
        req,
        "mode {mode:?}, checking {}",
        if use_signature {
            "the signature"
        } else {
            "a token"
        }
    );
    if use_signature {
        start_signature(req, lcf, ctx, keys, &creds.sig)
    } else {
        check_token(req, lcf, ctx, keys, &creds)
    }
}

/// The phase engine runs the access handler again after an internal redirect, or after the
/// body was read: the verdict stands.
fn again(ctx: &ReqCtx<'_>, lcf: &LocConf, rc: ngx_int_t) -> Status {
    // A refusal let through by dry run elsewhere (before an internal redirect) does not pass
    // a location that enforces.
    let refused = ctx.outcome().is_some_and(|o| o != Outcome::Ok);
    if refused && Status(rc) == Status::NGX_DECLINED && !lcf.dry_run() {
        return HTTPStatus::UNAUTHORIZED.into();
    }
    Status(rc)
}

fn redirected_while_reading(req: Req<'_>, ctx: &ReqCtx<'_>) -> Verdict {
    if !req.internal() {
        return Verdict::Reading;
    }
    // Redirected while the body was read: nginx gave up reading it (413, 400, 408) and an
    // error_page sent the request here; body_read will never run. Waiting would hang the
    // connection and passing would let the request through unchecked, so the reading error
    // stands.
    let status = req.err_status() as ngx_int_t;
    let rc = if status >= SPECIAL_RESPONSE {
        status
    } else {
        Status::from(HTTPStatus::BAD_REQUEST).0
    };
    ctx.set_access(Access::Done(rc));
    Verdict::Return(Status(rc))
}

fn check_token<'r>(
    req: Req<'r>,
    lcf: &LocConf,
    ctx: &ReqCtx<'r>,
    keys: &'r crate::auth::keys::KeyRing,
    creds: &Credentials<'_>,
) -> Verdict {
    let Some(cred) = token::credential(creds.authorization, creds.x_api_key) else {
        let rej = Rejection::new(
            Outcome::Missing,
            "missing credential: send Authorization: Bearer <token> or x-api-key: <token>",
        );
        return reject(req, ctx, None, rej);
    };
    match token::verify(keys, cred, now(), lcf.token_max_ttl()) {
        Ok(key) => accept(req, ctx, keys, key, None),
        Err(rej) => reject(req, ctx, None, rej),
    }
}

/// Cheap checks first (syntax, key, clock); the body is read only for a plausible request.
fn start_signature<'r>(
    req: Req<'r>,
    lcf: &'r LocConf,
    ctx: &ReqCtx<'r>,
    keys: &'r crate::auth::keys::KeyRing,
    sig: &RawSignatureHeaders<'r>,
) -> Verdict {
    let h = match sig.parse() {
        Ok(h) => h,
        Err(rej) => return reject(req, ctx, sig.key_id, rej),
    };
    let key = match verify::lookup(keys, h.key_id) {
        Ok(k) => k,
        Err(rej) => return reject(req, ctx, Some(h.key_id), rej),
    };
    if let Err(rej) = verify::check_window(h.timestamp, now(), lcf.clock_skew()) {
        return reject(req, ctx, Some(h.key_id), rej);
    }
    if !req.may_have_body() {
        return finish_signature(req, lcf, ctx, keys, &h, key);
    }
    ctx.park_signature(h);
    rg_debug!(req, "headers and clock ok, reading the body");
    ctx.set_access(Access::ReadingBody);
    // SAFETY: the request is live; nginx calls body_read once the whole body is in memory or
    // on disk, possibly before this call returns. Nothing here holds a reference into the
    // request or a mutable one to the context across the call.
    let rc = unsafe { ngx_http_read_client_request_body(req.as_ptr(), Some(body_read)) };
    if rc >= SPECIAL_RESPONSE {
        // An error_page redirect of this error meets the same verdict, not a wait.
        ctx.set_access(Access::Done(rc));
        return Verdict::Return(Status(rc));
    }
    // Reading took a reference on the request; this drops ours so it completes later.
    // SAFETY: the request is live; NGX_DONE only decrements its count.
    unsafe { ngx_http_finalize_request(req.as_ptr(), Status::NGX_DONE.into()) };
    Verdict::Reading
}

/// Runs when the body has been read (possibly synchronously, from inside start_signature).
unsafe extern "C" fn body_read(r: *mut ngx_http_request_t) {
    // SAFETY: nginx calls the body handler with a live request, for the length of the call.
    let Some(req) = (unsafe { Req::from_raw(r) }) else {
        return;
    };
    match body_read_verdict(req) {
        Some(Verdict::Return(_)) => {
            // SAFETY: resume the phase engine where the access handler paused it; it runs the
            // access handler again, which returns the verdict just stored.
            unsafe {
                (*r).write_event_handler = Some(ngx_http_core_run_phases);
                ngx_http_core_run_phases(r);
            }
        }
        Some(Verdict::Waiting) => {
            // SAFETY: the live request; when its answer is in, the link runs this handler,
            // which resumes the phase engine at the access handler.
            unsafe { (*r).write_event_handler = Some(ngx_http_core_run_phases) };
        }
        Some(Verdict::Sent | Verdict::Reading) => {}
        // SAFETY: the live request; finalizing with an error ends it.
        None => unsafe { ngx_http_finalize_request(r, Status::NGX_ERROR.into()) },
    }
}

/// `None` when the state the access handler left is gone (it never is, short of a bug).
fn body_read_verdict(req: Req<'_>) -> Option<Verdict> {
    let lcf = req.loc_conf()?;
    let ctx = ctx::get(req)?;
    // Parsed and looked up before the body was read; the key ring is the location's, which
    // has not changed since.
    let h = ctx.take_signature()?;
    let keys = lcf.keys.as_deref()?;
    let key = keys.get(h.key_id)?;
    let verdict = finish_signature(req, lcf, ctx, keys, &h, key);
    if let Verdict::Return(Status(rc)) = verdict {
        ctx.set_access(Access::Done(rc));
    }
    Some(verdict)
}

/// The MAC over the string to sign, then the nonce.
fn finish_signature<'r>(
    req: Req<'r>,
    lcf: &LocConf,
    ctx: &ReqCtx<'r>,
    keys: &'r crate::auth::keys::KeyRing,
    h: &SignatureHeaders<'_>,
    key: &'r Key,
) -> Verdict {
    let body_hex = match body::body_sha256_hex(req) {
        Ok(hex) => hex,
        Err(e) => return fail(req, e),
    };
    let parts = RequestParts {
        method: req.method_name(),
        target: req.unparsed_uri(),
        body_sha256_hex: &body_hex,
    };
    rg_debug!(req, "body sha256 {}", String::from_utf8_lossy(&body_hex));
    if let Err(rej) = verify::verify_signature(key, h, &parts) {
        return reject(req, ctx, Some(h.key_id), rej);
    }
    let expires = nonce_expires(h.timestamp, lcf.clock_skew());
    let verdict = match zone::of_request(req)
        .and_then(|z| z.check_and_insert(h.key_id, h.nonce, expires, now()))
    {
        Ok(v) => v,
        Err(e) => return fail(req, e),
    };
    match verdict.insert {
        Insert::Fresh => accept(req, ctx, keys, key, Some((h.nonce, expires))),
        Insert::Replay => reject(req, ctx, Some(h.key_id), replay()),
        Insert::Full => {
            if verdict.warn_full {
                rg_log!(NGX_LOG_WARN, req.log(),
                    "the nonce store is full ({} live nonces): signed requests get 503 until nonces expire; enlarge relay_guard_zone (slots needed ≈ peak requests/s × (2 × relay_guard_clock_skew + 5 s))",
                    verdict.capacity);
            }
            let rej = Rejection::new(
                Outcome::StoreFull,
                "the relay is overloaded (nonce store full); retry shortly",
            );
            reject(req, ctx, Some(h.key_id), rej)
        }
    }
}

fn now() -> u64 {
    ngx_time().max(0) as u64
}

/// An internal failure: logged once here, answered with 500 by nginx.
fn fail(req: Req<'_>, e: GlueError) -> Verdict {
    rg_log!(NGX_LOG_ERR, req.log(), "{e}");
    Verdict::Return(Status::NGX_ERROR)
}

fn replay() -> Rejection {
    Rejection::new(
        Outcome::Replay,
        "nonce already used: send a fresh X-Nonce with every request",
    )
}

/// The key verified: its limits, then the fleet's Redis (for a signature's nonce, or a
/// rate it counts), decide whether the request goes on.
fn accept<'r>(
    req: Req<'r>,
    ctx: &ReqCtx<'r>,
    keys: &'r crate::auth::keys::KeyRing,
    key: &'r Key,
    nonce: Option<(&[u8], u64)>,
) -> Verdict {
    ctx.set_outcome(Outcome::Ok);
    // For metrics and $relay_guard_key_id; losing it to an exhausted pool beats failing.
    ctx.set_key_id(req.pool_copy(key.id.as_bytes()).unwrap_or_default());
    rg_debug!(req, "accepted key id \"{}\"", key.id);
    let fleet_limits = match limits::admit(req, ctx, keys, key) {
        Ok(Admit::Pass(l)) => l,
        Ok(Admit::Refused(rc)) => return sent(req, ctx, rc),
        Err(e) => return fail(req, e),
    };
    let ask = fleet::Ask {
        nonce,
        limits: fleet_limits,
    };
    match fleet::begin(req, ctx, key, ask) {
        Ok(false) => passed(ctx),
        Ok(true) => {
            ctx.set_access(Access::Fleet);
            // Usually still waiting; answered already when there was no server to ask.
            fleet_answered(req, ctx)
        }
        Err(e) => fail(req, e),
    }
}

/// Run again once the fleet's Redis answered (or could not).
fn fleet_answered<'r>(req: Req<'r>, ctx: &ReqCtx<'r>) -> Verdict {
    let key_id = ctx.key_id();
    match fleet::resume(req, ctx) {
        Resumed::Waiting => Verdict::Waiting,
        Resumed::Admit => passed(ctx),
        Resumed::Replay => reject(req, ctx, Some(key_id), replay()),
        Resumed::Limited(refusal, handle) => {
            let id = String::from_utf8_lossy(key_id);
            match limits::refuse_fleet(req, ctx, &id, handle, refusal) {
                Admit::Pass(_) => passed(ctx),
                Admit::Refused(rc) => sent(req, ctx, rc),
            }
        }
        Resumed::Unavailable => {
            let rej = Rejection::new(
                Outcome::StoreUnavailable,
                "the relay cannot reach the store its hosts share; retry shortly",
            );
            reject(req, ctx, Some(key_id), rej)
        }
    }
}

/// Admitted: relay it (through in dry run).
fn passed(ctx: &ReqCtx<'_>) -> Verdict {
    let rc = if ctx.dry_run() {
        Status::NGX_DECLINED
    } else {
        Status::NGX_OK
    };
    ctx.set_access(Access::Done(rc.0));
    Verdict::Return(rc)
}

/// A complete response (the 429) was sent: finalize with its status.
fn sent(req: Req<'_>, ctx: &ReqCtx<'_>, rc: Status) -> Verdict {
    ctx.set_access(Access::Done(Status::NGX_DONE.0));
    // SAFETY: the live request; the response is complete, so finalizing ends it.
    unsafe { ngx_http_finalize_request(req.as_ptr(), rc.into()) };
    Verdict::Sent
}

/// Logs the reason at info and answers 401/503 — or, in dry-run mode, only logs and lets go.
fn reject<'r>(req: Req<'r>, ctx: &ReqCtx<'r>, key_id: Option<&[u8]>, rej: Rejection) -> Verdict {
    ctx.set_outcome(rej.outcome);
    let shown = key_id.filter(|k| crate::auth::headers::is_key_id(k));
    if let Some(k) = shown {
        ctx.set_key_id(req.pool_copy(k).unwrap_or_default());
    }
    rg_log!(
        NGX_LOG_INFO,
        req.log(),
        "{}{} key id \"{}\": {}",
        if ctx.dry_run() {
            "dry run, would reject "
        } else {
            "rejected "
        },
        rej.outcome.as_str(),
        shown.map(String::from_utf8_lossy).unwrap_or_default(),
        rej.message
    );
    if ctx.dry_run() {
        ctx.set_access(Access::Done(Status::NGX_DECLINED.0));
        return Verdict::Return(Status::NGX_DECLINED);
    }
    ctx.set_access(Access::Done(Status::NGX_DONE.0));
    let rc = respond::send_error(req, rej.outcome.http_status(), &rej.message);
    // SAFETY: the live request; the response is complete, so finalizing ends it.
    unsafe { ngx_http_finalize_request(req.as_ptr(), rc.into()) };
    Verdict::Sent
}

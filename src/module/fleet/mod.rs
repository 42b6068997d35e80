//! A fleet of relays on one Redis: after a request verified and its key's local limits
//! admitted it, one Redis round trip makes its nonce unique fleet-wide and counts its key's
//! rate fleet-wide; the request waits for it without blocking the worker.
//!
//! The round trip is the `auth_request` pattern: a waited subrequest whose "content" is an
//! nginx upstream speaking RESP (`upstream.rs`), so the connections, keepalive, timeouts and
//! balancing are nginx's own `upstream {}` block. The answer is written into the main
//! request's context; the phase engine then runs the access handler again, which calls
//! [`resume`].

pub mod conf;
mod upstream;

pub use conf::{
    upstream_conf, FailurePolicy, FleetConf, DEFAULT_PREFIX, DEFAULT_TIMEOUT_MS, MAX_TIMEOUT_MS,
};

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use ngx::ffi::NGX_LOG_WARN;

use super::ctx::{FleetCall, FleetState, ReqCtx};
use super::error::GlueError;
use super::ffi_util::now_ms;
use super::log::{rg_debug, rg_log};
use super::req::Req;
use crate::auth::keys::Key;
pub use crate::fleet::FleetFailure;
use crate::fleet::{nonce_key, rate_key, FleetCheck, FleetVerdict};
use crate::limits::{KeyLimits, Rate};

/// What the fleet adds for a verified request.
pub struct Ask<'a> {
    /// The signature's nonce and the second its local entry expires, for a signed request.
    pub nonce: Option<(&'a [u8], u64)>,
    /// The key's rate, when it has one (its local block counts the fallback and refusals).
    pub rate: Option<(Rate, KeyLimits)>,
}

/// Whether Redis will count this location's rates: the local admission then leaves them out.
pub fn counts_rates(req: Req<'_>) -> bool {
    req.main_conf().is_some_and(|m| m.fleet.is_some())
}

/// Starts the round trip, or returns `Ok(false)` when there is nothing to ask (no Redis
/// configured, or a token request of a key without a rate).
pub fn begin<'r>(
    req: Req<'r>,
    ctx: &ReqCtx<'r>,
    key: &Key,
    ask: Ask<'_>,
) -> Result<bool, GlueError> {
    let Some(fc) = req.main_conf().and_then(|m| m.fleet.as_ref()) else {
        return Ok(false);
    };
    let check = FleetCheck {
        nonce: ask.nonce.map(|(n, expires_s)| {
            // Until the local entry would expire, plus a second for Redis's clock against
            // this host's.
            let now_s = now_ms() / 1000;
            let ttl_ms = expires_s.saturating_sub(now_s).max(1).saturating_add(1) * 1000;
            (nonce_key(&fc.prefix, &key.id, n), ttl_ms)
        }),
        rate: ask.rate.map(|(r, _)| (rate_key(&fc.prefix, &key.id), r)),
    };
    if check.is_empty() {
        return Ok(false);
    }
    let bytes = check.encode(fc.password.as_deref());
    let bytes = req.pool_copy(&bytes).ok_or(GlueError::NoMemory)?;
    ctx.set_fleet(FleetCall {
        bytes,
        password: fc.password.is_some(),
        asked: check.asked(),
        started: std::time::Instant::now(),
        rate: ask.rate,
        state: FleetState::Pending,
    });
    rg_debug!(req, "asking the fleet's Redis ({} bytes)", bytes.len());
    upstream::start(req)?;
    Ok(true)
}

/// Redis's answer, as the access handler acts on it.
pub enum Resumed {
    /// Still waiting (the phase engine ran early).
    Waiting,
    Admit,
    Replay,
    /// Over the fleet's rate: this long to wait, the rate and the key's local block.
    OverRate {
        wait_us: u64,
        rate: (Rate, KeyLimits),
    },
    /// No answer, and the location's policy is `closed`.
    Unavailable,
}

pub fn resume(req: Req<'_>, ctx: &ReqCtx<'_>) -> Resumed {
    let Some(call) = ctx.fleet() else {
        return Resumed::Unavailable;
    };
    match call.state {
        FleetState::Pending => Resumed::Waiting,
        FleetState::Answered(FleetVerdict::Admit) => Resumed::Admit,
        FleetState::Answered(FleetVerdict::Replay) => Resumed::Replay,
        FleetState::Answered(FleetVerdict::OverRate { wait_us }) => match call.rate {
            Some(rate) => {
                rate.1.count_refusal(crate::limits::LimitKind::Rpm);
                Resumed::OverRate { wait_us, rate }
            }
            // Redis reported a rate this request did not send: not an answer to trust.
            None => Resumed::Unavailable,
        },
        FleetState::Failed(why) => fall_back(req, call, why),
    }
}

fn fall_back(req: Req<'_>, call: FleetCall<'_>, why: FleetFailure) -> Resumed {
    let policy = req
        .loc_conf()
        .map_or(FailurePolicy::Closed, |l| l.redis_failure());
    if policy == FailurePolicy::Closed {
        return Resumed::Unavailable;
    }
    upstream::count_fallback(req);
    if should_warn(now_ms() / 1000) {
        rg_log!(
            NGX_LOG_WARN,
            req.log(),
            "the fleet's Redis gave no answer ({}): relaying on this host's own nonces and limits (relay_guard_redis_failure local); replays across hosts are not caught until it answers again",
            why.as_str()
        );
    }
    match call.rate {
        Some((rate, key)) => match key.admit_rate(rate, now_ms()) {
            Ok(()) => Resumed::Admit,
            Err(refusal) => Resumed::OverRate {
                wait_us: refusal.retry_after_s.saturating_mul(1_000_000),
                rate: (rate, key),
            },
        },
        None => Resumed::Admit,
    }
}

/// One warning per worker per 10 s: an outage must be visible without flooding the log.
fn should_warn(now_s: u64) -> bool {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let last = LAST.load(Relaxed);
    now_s >= last.saturating_add(10) && LAST.compare_exchange(last, now_s, Relaxed, Relaxed).is_ok()
}

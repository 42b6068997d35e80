//! A fleet of relays on one Redis: after a request verified and its key's local limits
//! admitted it, one Redis round trip makes its nonce unique fleet-wide and counts its key's
//! rate fleet-wide; the request waits for it without blocking the worker.
//!
//! The round trip goes on the worker's own pipelined connection to the server nginx's
//! balancer picks from the `upstream {}` block (`select.rs`, `link.rs`): the admissions of
//! all the requests of one turn of the event loop leave in one write. The answer is written
//! into the request's context; the phase engine then runs the access handler again, which
//! calls [`resume`].

pub mod conf;
mod held;
mod link;
pub mod peer;
mod select;
mod wait;
mod warn;

pub use conf::{
    upstream_servers, FailurePolicy, FleetConf, DEFAULT_LEASE_MS, DEFAULT_PREFIX,
    DEFAULT_TIMEOUT_MS, MAX_LEASE_MS, MAX_TIMEOUT_MS,
};

use ngx::ffi::NGX_LOG_WARN;

use super::ctx::{FleetCall, FleetState, ReqCtx};
use super::error::GlueError;
use super::ffi_util::now_ms;
use super::log::{rg_debug, rg_log};
use super::req::Req;
use super::zone;
use crate::auth::keys::Key;
pub use crate::fleet::FleetFailure;
use crate::fleet::{
    budget_stem, nonce_key, rate_key, slot_set, BudgetAsk, FleetCheck, FleetVerdict, Settle,
    SlotAsk,
};
use crate::limits::{KeyLimits, LimitKind, Limits, Refusal};
use crate::metrics::REDIS_ERROR_KINDS;
use warn::should_warn;

/// What the fleet adds for a verified request.
pub struct Ask<'a, 'r> {
    /// The signature's nonce and the second its local entry expires, for a signed request.
    pub nonce: Option<(&'a [u8], u64)>,
    /// The key's limits and its local block, when it has limits (the block counts the
    /// fallback and the refusals).
    pub limits: Option<(&'r Limits, KeyLimits)>,
}

/// Whether Redis will count this location's limits: the local admission then leaves the rate
/// out (it is the fleet's alone; concurrency and budgets are checked on both, since a host's
/// own count never exceeds the fleet's).
pub fn counts_limits(req: Req<'_>) -> bool {
    req.main_conf().is_some_and(|m| m.fleet.is_some())
}

/// Starts the round trip, or returns `Ok(false)` when there is nothing to ask (no Redis
/// configured, or a token request of a key without limits).
pub fn begin<'r>(
    req: Req<'r>,
    ctx: &ReqCtx<'r>,
    key: &Key,
    ask: Ask<'_, 'r>,
) -> Result<bool, GlueError> {
    let Some(fc) = req.main_conf().and_then(|m| m.fleet.as_ref()) else {
        return Ok(false);
    };
    let limits = ask.limits.map(|(l, _)| l);
    let member = limits
        .and_then(|l| l.concurrent)
        .map(|_| new_member())
        .transpose()?;
    let check = FleetCheck {
        nonce: ask.nonce.map(|(n, expires_s)| {
            // Until the local entry would expire, plus a second for Redis's clock against
            // this host's.
            let now_s = now_ms() / 1000;
            let ttl_ms = expires_s.saturating_sub(now_s).max(1).saturating_add(1) * 1000;
            (nonce_key(&fc.prefix, &key.id, n), ttl_ms)
        }),
        rate: limits
            .and_then(|l| l.rate)
            .map(|r| (rate_key(&fc.prefix, &key.id), r)),
        slot: limits
            .and_then(|l| l.concurrent)
            .zip(member)
            .map(|(limit, m)| SlotAsk {
                set: slot_set(&fc.prefix, &key.id),
                limit,
                member: hex::encode(m),
                lease_ms: fc.lease_ms,
            }),
        budgets: limits.map_or_else(Vec::new, |l| {
            l.tokens
                .iter()
                .map(|b| BudgetAsk {
                    stem: budget_stem(&fc.prefix, &key.id, b.window.secs()),
                    window_s: b.window.secs(),
                    budget: b.budget,
                })
                .collect()
        }),
    };
    if check.is_empty() {
        return Ok(false);
    }
    let peer = select::choose(req, fc.upstream);
    let mut call = FleetCall {
        asked: check.asked(),
        started: std::time::Instant::now(),
        rate: ask.limits.and_then(|(l, k)| l.rate.map(|r| (r, k))),
        limits: ask.limits,
        member: member.map(hex_member),
        peer,
        held: None,
        state: FleetState::Pending,
    };
    // No server to ask, or its link full: answered now, with the failure policy.
    let failed = match peer {
        Some(p) => {
            rg_debug!(req, "asking the fleet's Redis {p}");
            match link::ask(&p, || link_conf(req, fc), &check.encode(), call.asked, req)? {
                link::Queued::Yes => None,
                link::Queued::Full => Some(FleetFailure::Timeout),
            }
        }
        None => Some(FleetFailure::Connect),
    };
    if let Some(why) = failed {
        call.state = FleetState::Failed(why);
    }
    ctx.set_fleet(call);
    Ok(true)
}

/// nginx's `exit_process` hook of a worker: its links to Redis go (see link::release_all).
pub unsafe extern "C" fn exit_process(_: *mut ngx::ffi::ngx_cycle_t) {
    link::release_all();
}

/// 64 random bits: a slot's member, unique among the key's in-flight requests fleet-wide.
fn new_member() -> Result<[u8; 8], GlueError> {
    let r = super::ffi_util::random_32().map_err(GlueError::Random)?;
    let mut m = [0u8; 8];
    m.copy_from_slice(&r[..8]);
    Ok(m)
}

fn hex_member(m: [u8; 8]) -> [u8; 16] {
    let mut out = [0u8; 16];
    // hex of 8 bytes is exactly 16 ASCII bytes.
    out.copy_from_slice(hex::encode(m).as_bytes());
    out
}

/// Redis's answer, as the access handler acts on it.
pub enum Resumed {
    /// Still waiting (the phase engine ran early).
    Waiting,
    Admit,
    Replay,
    /// Over one of the key's fleet-wide limits: the refusal and the key's local block.
    Limited(Refusal, KeyLimits),
    /// No answer, and the location's policy is `closed`.
    Unavailable,
}

pub fn resume<'r>(req: Req<'r>, ctx: &ReqCtx<'r>) -> Resumed {
    let Some(call) = ctx.fleet() else {
        return Resumed::Unavailable;
    };
    let verdict = match call.state {
        FleetState::Pending => return Resumed::Waiting,
        FleetState::Failed(why) => {
            record(req, &call);
            return fall_back(req, call, why);
        }
        FleetState::Answered(v) => {
            record(req, &call);
            v
        }
    };
    let limited = |kind: LimitKind, wait_us: u64, limit: u64, window_s: u64| {
        let refusal = Refusal {
            kind,
            retry_after_s: wait_us.div_ceil(1_000_000).max(1),
            limit,
            window_s,
        };
        match call.limits {
            Some((_, key)) => {
                key.count_refusal(kind);
                Resumed::Limited(refusal, key)
            }
            // Redis reported a limit this request did not send: not an answer to trust.
            None => Resumed::Unavailable,
        }
    };
    let limits = call.limits.map(|(l, _)| l);
    match verdict {
        FleetVerdict::Admit => {
            hold_slot(req, ctx, call);
            Resumed::Admit
        }
        FleetVerdict::Replay => Resumed::Replay,
        FleetVerdict::OverRate { wait_us } => match limits.and_then(|l| l.rate) {
            Some(r) => limited(LimitKind::Rpm, wait_us, u64::from(r.per_minute), 0),
            None => Resumed::Unavailable,
        },
        FleetVerdict::AtConcurrency => match limits.and_then(|l| l.concurrent) {
            Some(n) => limited(LimitKind::Concurrency, 1_000_000, u64::from(n), 0),
            None => Resumed::Unavailable,
        },
        FleetVerdict::OverBudget { index, wait_us } => {
            match limits.and_then(|l| l.tokens.get(usize::from(index))) {
                Some(b) => limited(LimitKind::Tokens, wait_us, b.budget, b.window.secs()),
                None => Resumed::Unavailable,
            }
        }
    }
}

/// The round trip's time and, if it failed, why: once per request, when its access handler
/// reads the answer.
fn record(req: Req<'_>, call: &FleetCall<'_>) {
    let Some(m) = zone::of_request(req).ok().and_then(|z| z.metrics) else {
        return;
    };
    let failed = match call.state {
        FleetState::Failed(w) => REDIS_ERROR_KINDS.iter().position(|k| *k == w.as_str()),
        _ => None,
    };
    m.record_redis(call.started.elapsed().as_micros() as u64, failed);
}

/// Admitted with a slot: this worker renews it until the LOG phase gives it back.
fn hold_slot<'r>(req: Req<'r>, ctx: &ReqCtx<'r>, call: FleetCall<'r>) {
    let (Some(member), Some(peer), Some(fc)) = (
        call.member,
        call.peer,
        req.main_conf().and_then(|m| m.fleet.as_ref()),
    ) else {
        return;
    };
    let key_id = String::from_utf8_lossy(ctx.key_id());
    let set = slot_set(&fc.prefix, &key_id);
    let member = String::from_utf8_lossy(&member).into_owned();
    let id = held::hold(peer, set, member, fc.lease_ms);
    link::prepare(&peer, || link_conf(req, fc));
    ctx.set_fleet(FleetCall {
        held: Some(id),
        ..call
    });
}

fn link_conf(req: Req<'_>, fc: &FleetConf) -> link::LinkConf {
    link::LinkConf {
        password: fc.password.clone(),
        timeout_ms: fc.timeout_ms,
        metrics: zone::of_request(req).ok().and_then(|z| z.metrics),
    }
}

/// LOG phase: gives back the request's fleet-wide slot and charges `tokens` (the response's
/// counted tokens, when the key has budgets) to the fleet's counters, on the server the
/// admission asked. Runs once per request (the call is taken).
pub fn settle(req: Req<'_>, ctx: &ReqCtx<'_>, tokens: u64) {
    let Some(call) = ctx.take_fleet() else {
        return;
    };
    let (Some(peer), Some(fc)) = (call.peer, req.main_conf().and_then(|m| m.fleet.as_ref())) else {
        return;
    };
    let key_id = String::from_utf8_lossy(ctx.key_id());
    // Charged to the server the admission asked, also when its answer did not come in time
    // (the tokens were spent all the same).
    let budgets = call.limits.map_or_else(Vec::new, |(l, _)| {
        l.tokens
            .iter()
            .map(|b| {
                (
                    budget_stem(&fc.prefix, &key_id, b.window.secs()),
                    b.window.secs(),
                )
            })
            .collect()
    });
    if let Some(id) = call.held {
        held::release(id);
    }
    // The slot was taken if the script admitted, and may have been if no answer came (a
    // timeout after it ran, or a request that ended while it was owed: the release follows
    // the admission on the same connection, so Redis runs it after).
    let slot = match call.state {
        FleetState::Answered(FleetVerdict::Admit) | FleetState::Failed(_) | FleetState::Pending => {
            call.member
        }
        _ => None,
    }
    .map(|m| {
        (
            slot_set(&fc.prefix, &key_id),
            String::from_utf8_lossy(&m).into_owned(),
        )
    });
    let settle = Settle {
        slot,
        tokens,
        budgets,
    };
    if settle.is_empty() {
        return;
    }
    rg_debug!(
        req,
        "settling with the fleet's Redis {peer}: slot {}, {tokens} tokens",
        if settle.slot.is_some() {
            "back"
        } else {
            "none"
        }
    );
    let mut bytes = Vec::new();
    settle.encode(&mut bytes);
    link::send(&peer, || link_conf(req, fc), &bytes, 1);
}

fn fall_back(req: Req<'_>, call: FleetCall<'_>, why: FleetFailure) -> Resumed {
    let policy = req
        .loc_conf()
        .map_or(FailurePolicy::Closed, |l| l.redis_failure());
    if policy == FailurePolicy::Closed {
        return Resumed::Unavailable;
    }
    if let Some(m) = zone::of_request(req).ok().and_then(|z| z.metrics) {
        m.count_redis_fallback();
    }
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
            Err(refusal) => Resumed::Limited(refusal, key),
        },
        None => Resumed::Admit,
    }
}

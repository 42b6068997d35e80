//! Per-key limits in the request's life: admission right after the key verified (ACCESS),
//! the concurrency slot's release when the request's pool goes (however the request ended),
//! and the token charge when the response's usage is known (LOG). The decisions are
//! `crate::limits`; this file only connects them to nginx.

use core::ffi::c_void;
use core::ptr;

use ngx::ffi::{ngx_pool_cleanup_add, NGX_LOG_INFO};

use super::ctx::{Charge, ReqCtx};
use super::error::GlueError;
use super::ffi_util::now_ms;
use super::log::{rg_debug, rg_log};
use super::req::Req;
use super::{respond, zone};
use crate::auth::keys::{Key, KeyRing};
use crate::limits::{HeldSlot, KeyLimits, Limits, Refusal};

/// What admission decided for a verified request.
pub enum Admit<'r> {
    /// Relay it (no limits here, admitted, or refused in dry run); with the key's limits when
    /// the fleet's Redis is to check them too.
    Pass(Option<(&'r Limits, KeyLimits)>),
    /// Refused: the 429 was sent; the access handler finalizes with this status.
    Refused(ngx::core::Status),
}

/// Checks the key's limits. Requests in `relay_guard_limits off` locations, in the usage
/// endpoint, and of keys without limits pass untouched.
pub fn admit<'r>(
    req: Req<'r>,
    ctx: &ReqCtx<'r>,
    ring: &'r KeyRing,
    key: &'r Key,
) -> Result<Admit<'r>, GlueError> {
    let Some(lcf) = req.loc_conf() else {
        return Ok(Admit::Pass(None));
    };
    if !lcf.limits() || lcf.usage_endpoint.is_some() {
        return Ok(Admit::Pass(None));
    }
    let Some(limits) = ring.limits(key) else {
        return Ok(Admit::Pass(None));
    };
    let metrics = zone::of_request(req)?
        .metrics
        .as_ref()
        .ok_or(GlueError::NoZone)?;
    let handle = metrics.key_limits(key.id.as_bytes());
    let now = now_ms();
    // In a fleet the rate is the fleet's: Redis counts it once the local limits admit.
    let fleet = super::fleet::counts_limits(req);
    let admitted = if fleet {
        handle.admit_except_rate(limits, now)
    } else {
        handle.admit(limits, now)
    };
    match admitted {
        Ok(admission) => {
            if let Some(slot) = admission.slot {
                hold_until_pool_ends(req, slot)?;
            }
            ctx.set_charge(Charge {
                limits,
                key: handle,
            });
            rg_debug!(req, "limits of key \"{}\" admit the request", key.id);
            Ok(Admit::Pass(fleet.then_some((limits, handle))))
        }
        Err(refusal) => {
            ctx.set_limited(refusal.kind);
            let message = format!("relay-guard: key \"{}\" {}", key.id, refusal.message());
            if handle.should_log(now / 1000) {
                rg_log!(
                    NGX_LOG_INFO,
                    req.log(),
                    "{} key \"{}\": {}",
                    if ctx.dry_run() {
                        "dry run, would have refused"
                    } else {
                        "refused"
                    },
                    key.id,
                    refusal.message()
                );
            }
            if ctx.dry_run() {
                // Relayed all the same, so what it spends is spent.
                ctx.set_charge(Charge {
                    limits,
                    key: handle,
                });
                return Ok(Admit::Pass(None));
            }
            Ok(Admit::Refused(send(req, &refusal, &message)))
        }
    }
}

fn send(req: Req<'_>, refusal: &Refusal, message: &str) -> ngx::core::Status {
    respond::send_limited(req, refusal, message)
}

/// The fleet's Redis (or, in a fallback, this host) found the key over one of its limits:
/// the same 429 and log line as a local refusal. `Pass` in dry run.
pub fn refuse_fleet<'r>(
    req: Req<'r>,
    ctx: &ReqCtx<'r>,
    key_id: &str,
    handle: KeyLimits,
    refusal: Refusal,
) -> Admit<'r> {
    ctx.set_limited(refusal.kind);
    if handle.should_log(now_ms() / 1000) {
        rg_log!(
            NGX_LOG_INFO,
            req.log(),
            "{} key \"{key_id}\": {} (fleet-wide)",
            if ctx.dry_run() {
                "dry run, would have refused"
            } else {
                "refused"
            },
            refusal.message()
        );
    }
    if ctx.dry_run() {
        return Admit::Pass(None);
    }
    let message = format!("relay-guard: key \"{key_id}\" {}", refusal.message());
    Admit::Refused(send(req, &refusal, &message))
}

/// The slot goes back when the main request's pool is destroyed: that happens exactly once,
/// after the response ended for any reason (done, client gone, upstream failed, internal
/// redirects included, since those keep the pool), and also in a worker shutting down
/// gracefully after a reload, which finishes its requests first.
fn hold_until_pool_ends(req: Req<'_>, slot: HeldSlot) -> Result<(), GlueError> {
    // SAFETY: the request pool is live; the entry's data is ngx_palloc'd, aligned to
    // NGX_ALIGNMENT, which covers a HeldSlot (a pointer).
    let cln =
        unsafe { ngx_pool_cleanup_add(req.pool(), core::mem::size_of::<HeldSlot>()).as_mut() };
    let Some(cln) = cln else {
        slot.release();
        return Err(GlueError::NoMemory);
    };
    // SAFETY: cln.data is fresh pool memory of HeldSlot's size; the handler below reads it
    // once, when nginx runs the pool's cleanups.
    unsafe { ptr::write(cln.data as *mut HeldSlot, slot) };
    cln.handler = Some(release_slot);
    Ok(())
}

const _: () = assert!(core::mem::align_of::<HeldSlot>() <= core::mem::align_of::<libc::c_ulong>());

unsafe extern "C" fn release_slot(data: *mut c_void) {
    // SAFETY: data is the HeldSlot hold_until_pool_ends wrote; nginx runs each cleanup entry
    // once, so it is moved out exactly once.
    let slot = unsafe { ptr::read(data as *const HeldSlot) };
    slot.release();
}

/// LOG phase: charges the response's counted tokens to the key's budgets, here and (in a
/// fleet) on Redis, where the request's fleet-wide slot goes back too.
pub fn charge_at_log(req: Req<'_>) {
    let Some(ctx) = super::ctx::get(req) else {
        return;
    };
    let charge = ctx.take_charge();
    let tokens = charge
        .filter(|c| !c.limits.tokens.is_empty())
        .and_then(|_| {
            ctx.with_scanner(|s| (!s.usage().is_empty()).then(|| s.usage().counts()))
                .flatten()
        })
        .map_or(0, |counts| crate::limits::counted_tokens(&counts));
    if let Some(charge) = charge.filter(|_| tokens > 0) {
        rg_debug!(req, "charging {tokens} tokens to the key's budgets");
        charge.key.charge(charge.limits, tokens, now_ms() / 1000);
    }
    super::fleet::settle(req, ctx, tokens);
}

//! One key's limit state in the shared zone, and every operation on it. Lock-free: each
//! decision is one compare-and-swap on one word, so a check and its update are one step and
//! concurrent workers cannot both take the last unit (the overshoot other relays have when
//! they read, decide and then write).

use std::mem::size_of;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::refusal::{ceil_secs_ns, LimitKind, Refusal};
use super::spec::{Limits, Rate, MAX_BUDGET, MAX_BUDGETS};
use super::view::{BudgetView, ConcurrencyView, LimitsView, RateView};
use super::window::Window;

/// Budget words: the window index (mod 2^24) above 40 bits of tokens used in it. A word whose
/// generation is not the current window's counts as empty, so windows roll over without a
/// timer. (An unused slot looks current again only after 2^24 windows: 194 days of 1 s
/// windows, 1,900 years of hourly ones.)
const USED_BITS: u32 = 40;
const USED_MASK: u64 = MAX_BUDGET;
const GEN_MASK: u64 = (1 << 24) - 1;

fn pack(window: u64, used: u64) -> u64 {
    (window & GEN_MASK) << USED_BITS | used.min(USED_MASK)
}

/// Tokens used in `window`, from a budget word.
fn used_in(word: u64, window: u64) -> u64 {
    if word >> USED_BITS == window & GEN_MASK {
        word & USED_MASK
    } else {
        0
    }
}

#[repr(C)]
pub(crate) struct LimitsBlock {
    /// GCRA theoretical arrival time, ns since the epoch.
    tat_ns: AtomicU64,
    in_flight: AtomicU64,
    /// Window length each budget word counts for (0: unused). Slots follow the windows, not
    /// the order in the keys file, so a reload that reorders or changes budgets keeps usage.
    budget_per_s: [AtomicU64; MAX_BUDGETS],
    budget_word: [AtomicU64; MAX_BUDGETS],
    limited: [AtomicU64; 3],
    last_log_s: AtomicU64,
    _pad: [u64; 4],
}

const _: () = assert!(size_of::<LimitsBlock>() == 128);

/// Handle on one key's block. Copy, like [`crate::metrics::Metrics`]: the region outlives it.
#[derive(Clone, Copy)]
pub struct KeyLimits {
    block: NonNull<LimitsBlock>,
}

// SAFETY: the block is only touched through atomics, and the region outlives every handle
// (Metrics' init/attach contract), so moving or sharing the handle across threads is sound.
unsafe impl Send for KeyLimits {}
// SAFETY: as above.
unsafe impl Sync for KeyLimits {}

/// A concurrency slot taken by [`KeyLimits::admit`]. Not Clone: releasing consumes it, so one
/// admission releases once.
#[must_use = "a held slot must be released when the request ends"]
pub struct HeldSlot {
    block: NonNull<LimitsBlock>,
}

// SAFETY: as for KeyLimits.
unsafe impl Send for HeldSlot {}

impl HeldSlot {
    pub fn release(self) {
        // SAFETY: the block outlives the handle (see KeyLimits).
        let b = unsafe { self.block.as_ref() };
        // Saturating: a zone that was re-created under a held slot must not wrap to 2^64.
        let _ = b
            .in_flight
            .fetch_update(Relaxed, Relaxed, |n| Some(n.saturating_sub(1)));
    }
}

/// Where a key's rate is counted.
#[derive(Clone, Copy)]
enum RateAt {
    Here,
    Fleet,
}

/// What an admitted request holds.
pub struct Admission {
    pub slot: Option<HeldSlot>,
}

impl KeyLimits {
    pub(crate) fn new(block: NonNull<LimitsBlock>) -> KeyLimits {
        KeyLimits { block }
    }

    fn b(&self) -> &LimitsBlock {
        // SAFETY: the block outlives the handle (see the Send impl).
        unsafe { self.block.as_ref() }
    }

    /// Checks every limit and takes what the request uses, as one decision: tokens (read
    /// only: the charge comes when the usage is known), then a concurrency slot, then the
    /// rate; a request the rate refuses gives its slot back. The refusal is counted.
    pub fn admit(&self, limits: &Limits, now_ms: u64) -> Result<Admission, Refusal> {
        self.counted(self.try_admit(limits, now_ms, RateAt::Here))
    }

    /// As [`admit`](Self::admit) without the rate, which a fleet's Redis checks instead (a
    /// request the fleet then refuses gives its slot back when it ends, as any request does).
    pub fn admit_except_rate(&self, limits: &Limits, now_ms: u64) -> Result<Admission, Refusal> {
        self.counted(self.try_admit(limits, now_ms, RateAt::Fleet))
    }

    /// Only the rate, here: the fallback when the fleet's Redis cannot answer.
    pub fn admit_rate(&self, rate: Rate, now_ms: u64) -> Result<(), Refusal> {
        self.counted(self.take_rate(rate, now_ms.saturating_mul(1_000_000)))
    }

    /// Counts a refusal decided elsewhere (the fleet's rate).
    pub fn count_refusal(&self, kind: LimitKind) {
        self.b().limited[kind.index()].fetch_add(1, Relaxed);
    }

    fn counted<T>(&self, r: Result<T, Refusal>) -> Result<T, Refusal> {
        if let Err(refusal) = &r {
            self.count_refusal(refusal.kind);
        }
        r
    }

    fn try_admit(&self, limits: &Limits, now_ms: u64, at: RateAt) -> Result<Admission, Refusal> {
        self.check_tokens(limits, now_ms)?;
        let slot = match limits.concurrent {
            Some(max) => Some(self.take_slot(max)?),
            None => None,
        };
        if let (Some(rate), RateAt::Here) = (limits.rate, at) {
            if let Err(r) = self.take_rate(rate, now_ms.saturating_mul(1_000_000)) {
                if let Some(s) = slot {
                    s.release();
                }
                return Err(r);
            }
        }
        Ok(Admission { slot })
    }

    fn check_tokens(&self, limits: &Limits, now_ms: u64) -> Result<(), Refusal> {
        let now_s = now_ms / 1000;
        let mut worst: Option<Refusal> = None;
        for t in &limits.tokens {
            let used = self.used(t.window, now_s);
            if used >= t.budget {
                let end_ms = t.window.end(t.window.index(now_s)).saturating_mul(1000);
                let r = Refusal {
                    kind: LimitKind::Tokens,
                    retry_after_s: ceil_secs_ns(end_ms.saturating_sub(now_ms) * 1_000_000),
                    limit: t.budget,
                    window_s: t.window.secs(),
                };
                if worst.is_none_or(|w| w.retry_after_s < r.retry_after_s) {
                    worst = Some(r);
                }
            }
        }
        worst.map_or(Ok(()), Err)
    }

    fn take_slot(&self, max: u32) -> Result<HeldSlot, Refusal> {
        let max = u64::from(max);
        self.b()
            .in_flight
            .fetch_update(Relaxed, Relaxed, |n| (n < max).then_some(n + 1))
            .map(|_| HeldSlot { block: self.block })
            .map_err(|_| Refusal {
                kind: LimitKind::Concurrency,
                // Slots free when requests end, which the relay cannot predict: the shortest
                // honest wait.
                retry_after_s: 1,
                limit: max,
                window_s: 0,
            })
    }

    /// GCRA: the request is admitted if, after it, the theoretical arrival time is at most
    /// `burst` intervals ahead of now.
    fn take_rate(&self, rate: Rate, now_ns: u64) -> Result<(), Refusal> {
        let t = rate.interval_ns();
        let tolerance = t.saturating_mul(u64::from(rate.burst));
        let mut wait = 0;
        let r = self.b().tat_ns.fetch_update(Relaxed, Relaxed, |tat| {
            let next = tat.max(now_ns).saturating_add(t);
            let ahead = next - now_ns;
            if ahead > tolerance {
                wait = ahead - tolerance;
                None
            } else {
                Some(next)
            }
        });
        r.map(drop).map_err(|_| Refusal {
            kind: LimitKind::Rpm,
            retry_after_s: ceil_secs_ns(wait),
            limit: u64::from(rate.per_minute),
            window_s: 0,
        })
    }

    /// Counts `tokens` against every budget's current window. Saturates at the 40-bit field.
    pub fn charge(&self, limits: &Limits, tokens: u64, now_s: u64) {
        if tokens == 0 {
            return;
        }
        for t in &limits.tokens {
            let in_use = |s| limits.tokens.iter().any(|t| t.window.secs() == s);
            let Some(i) = self.slot_for(t.window.secs(), in_use) else {
                continue;
            };
            let w = t.window.index(now_s);
            let _ = self.b().budget_word[i].fetch_update(Relaxed, Relaxed, |word| {
                Some(pack(w, used_in(word, w).saturating_add(tokens)))
            });
        }
    }

    /// Tokens used in the window of `window` holding `now_s`.
    fn used(&self, window: Window, now_s: u64) -> u64 {
        let b = self.b();
        (0..MAX_BUDGETS)
            .find(|&i| b.budget_per_s[i].load(Relaxed) == window.secs())
            .map_or(0, |i| {
                used_in(b.budget_word[i].load(Relaxed), window.index(now_s))
            })
    }

    /// The budget slot counting windows of `per_s`, claimed if none does yet: a free one, or
    /// one counting a window length `in_use` says the key no longer has.
    fn slot_for(&self, per_s: u64, in_use: impl Fn(u64) -> bool) -> Option<usize> {
        let b = self.b();
        let find = || (0..MAX_BUDGETS).find(|&i| b.budget_per_s[i].load(Relaxed) == per_s);
        if let Some(i) = find() {
            return Some(i);
        }
        for i in 0..MAX_BUDGETS {
            let cur = b.budget_per_s[i].load(Relaxed);
            let stale = cur == 0 || !in_use(cur);
            if stale
                && b.budget_per_s[i]
                    .compare_exchange(cur, per_s, Relaxed, Relaxed)
                    .is_ok()
            {
                b.budget_word[i].store(0, Relaxed);
                return Some(i);
            }
        }
        // Another worker claimed it for the same window meanwhile.
        find()
    }

    /// True at most once per second per key: whether to log this refusal.
    pub fn should_log(&self, now_s: u64) -> bool {
        self.b().last_log_s.swap(now_s, Relaxed) != now_s
    }

    pub fn limited(&self) -> [u64; 3] {
        std::array::from_fn(|i| self.b().limited[i].load(Relaxed))
    }

    pub fn in_flight(&self) -> u64 {
        self.b().in_flight.load(Relaxed)
    }

    /// What the usage endpoint shows: each limit of `limits` and where the key stands.
    pub fn view(&self, limits: &Limits, now_ms: u64) -> LimitsView {
        let now_s = now_ms / 1000;
        let now_ns = now_ms.saturating_mul(1_000_000);
        let rate = limits.rate.map(|r| {
            let t = r.interval_ns();
            let tat = self.b().tat_ns.load(Relaxed);
            let ahead = tat.saturating_sub(now_ns);
            let tolerance = t.saturating_mul(u64::from(r.burst));
            RateView {
                per_minute: r.per_minute,
                burst: r.burst,
                remaining: (tolerance.saturating_sub(ahead) / t).min(u64::from(r.burst)),
                full_at_s: if ahead == 0 {
                    now_s
                } else {
                    tat.div_ceil(1_000_000_000)
                },
            }
        });
        let concurrent = limits.concurrent.map(|max| ConcurrencyView {
            limit: max,
            in_flight: self.in_flight(),
        });
        let tokens = limits
            .tokens
            .iter()
            .map(|t| {
                let i = t.window.index(now_s);
                BudgetView {
                    budget: t.budget,
                    window: t.window,
                    used: self.used(t.window, now_s),
                    start_s: t.window.start(i),
                    end_s: t.window.end(i),
                }
            })
            .collect();
        LimitsView {
            rate,
            concurrent,
            tokens,
        }
    }

    /// The budgets' current windows with tokens used, for the state file.
    pub fn windows_in_use(&self, now_s: u64) -> Vec<WindowUse> {
        let b = self.b();
        (0..MAX_BUDGETS)
            .filter_map(|i| {
                let w = Window::from_secs(b.budget_per_s[i].load(Relaxed))?;
                let window = w.index(now_s);
                let used = used_in(b.budget_word[i].load(Relaxed), window);
                (used > 0).then_some(WindowUse {
                    per_s: w.secs(),
                    window,
                    used,
                })
            })
            .collect()
    }

    /// Puts back a saved window if it is still the current one, in a free budget slot. For a
    /// zone no request uses yet (the master, at start).
    pub fn restore(&self, u: &WindowUse, now_s: u64) -> bool {
        let Some(w) = Window::from_secs(u.per_s) else {
            return false;
        };
        if w.index(now_s) != u.window || u.used == 0 {
            return false;
        }
        let Some(i) = self.slot_for(u.per_s, |_| true) else {
            return false;
        };
        self.b().budget_word[i].store(pack(u.window, u.used), Relaxed);
        true
    }
}

/// One budget window's usage, as the state file keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowUse {
    pub per_s: u64,
    pub window: u64,
    pub used: u64,
}

#[cfg(test)]
mod tests;

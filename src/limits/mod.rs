//! Per-key limits (pure; no nginx): requests per minute (GCRA), concurrent requests and token
//! budgets per window, decided on one key's block of atomics in the shared zone.
//!
//! The keys file states a key's [`Limits`] (`spec.rs`); the metrics region holds one
//! [`KeyLimits`] block per key slot (`block.rs`); the access phase calls
//! [`KeyLimits::admit`], the LOG phase [`KeyLimits::charge`], and `relay_guard_usage` shows
//! [`KeyLimits::view`]. `state.rs` is the file that carries budget windows across restarts.

mod block;
mod fuzz_check;
mod refusal;
mod spec;
pub mod state;
mod state_path;
mod strict_json;
mod view;
mod window;

pub(crate) use block::LimitsBlock;
pub use block::{Admission, HeldSlot, KeyLimits, WindowUse};
pub use fuzz_check::check_state_file;
pub use refusal::{LimitKind, Refusal, RETRY_BUDGET_S};
pub use spec::{
    counted_tokens, Limits, Rate, TokenBudget, MAX_BUDGET, MAX_BUDGETS, MAX_CONCURRENT, MAX_RPM,
};
pub use state_path::{check_state_path, StatePathProblem};
pub use strict_json::StrictValue;
pub use view::{BudgetView, ConcurrencyView, LimitsView, RateView};
pub use window::{utc_iso, Window, MAX_WINDOW_S};

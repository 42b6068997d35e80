//! relay-guard: an nginx module that guards a Claude API relay.
//!
//! Everything outside `module` is pure Rust with no nginx dependency, so `cargo test` and
//! `cargo bench` run it without an nginx tree. `module` (feature `nginx`) is the thin FFI glue.

pub mod auth;
pub mod conf_text;
pub mod fleet;
pub mod limits;
pub mod metrics;
pub mod redact;
mod swar;
pub mod usage;

#[cfg(feature = "nginx")]
mod module;

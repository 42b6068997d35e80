//! Usage accounting (pure; no nginx): what each relayed response says it cost, read from the
//! response body as it streams past, and how a stream ended.
//!
//! The glue feeds every body buffer of a watched response to a scanner; at the LOG phase it
//! reads the merged [`Usage`], the model and the [`StreamOutcome`] and hands them to the
//! metrics zone and the `$relay_guard_usage_*` variables.

mod counts;
mod outcome;
mod sse;

pub use counts::{Field, TokenCounts, Usage};
pub use outcome::{ErrorType, StreamOutcome};
pub use sse::SseScanner;

//! Usage accounting (pure; no nginx): what each relayed response says it cost, read from the
//! response body as it streams past, and how a stream ended.
//!
//! The glue keeps one [`ResponseScanner`] per watched response and feeds it every body
//! buffer; at the LOG phase it reads the merged [`Usage`], the [`Model`] and the
//! [`StreamOutcome`] and hands them to the metrics zone and the `$relay_guard_usage_*`
//! variables.
//!
//! How it works: two layers of byte-at-a-time state machines, each a few words of state, so
//! buffers may split the body at any byte and nothing is copied or allocated.
//! - `sse.rs` frames an event stream: it reads each `event:` line (the stream's outcome
//!   comes from those alone), skips every line of uninteresting events with a
//!   word-at-a-time newline search (`content_block_delta`, nearly all of a stream, costs what
//!   the outcome scan alone cost), and hands the `data:` payload of `message_start`,
//!   `message_delta`, `error` and unnamed events to the JSON scanner, one document per
//!   event.
//! - `json.rs` tokenizes one JSON document and follows only the paths in `paths.rs`
//!   (`usage.*`, `model`, `type`, `error.type` under the right roots), skipping everything
//!   else by counting brackets outside strings. A count is committed the moment its number
//!   ends, so a cut body keeps what it had sent; an invalid or truncated document stops
//!   being read (a stream's next event starts afresh).
//!
//! Why hand-written rather than serde_json: a parser wants the whole document in memory,
//! and a non-streaming body can be megabytes that nginx hands over in pieces (or spools to
//! a temp file); buffering it would be a copy of every response, and a parse of all of it
//! would build (or at least validate) a tree of text nobody reads. The scanner reads just
//! the few paths that matter and is checked against serde_json instead: `properties.rs`
//! holds the fuzz target's promises (any split gives the same result; on valid JSON the
//! result equals what serde_json reads).
//!
//! Hostile values (every byte comes from the upstream): counts saturate at `u64::MAX`;
//! negative, fractional, exponent, string, null, object and array values are ignored (the
//! previous value stays); a later duplicate key wins; nesting past the paths costs one
//! counter; `"usage"` inside any string is text, not a key; invalid UTF-8 is just bytes.

mod counts;
mod json;
mod model;
mod outcome;
mod paths;
mod properties;
mod scanner;
mod sse;
mod swar;

#[cfg(test)]
mod tests;

pub use counts::{Field, TokenCounts, Usage};
pub use model::{Model, MODEL_MAX};
pub use outcome::{ErrorType, StreamOutcome};
#[doc(hidden)]
pub use properties::check_fuzz_input;
pub use scanner::ResponseScanner;
pub use sse::SseScanner;

//! Per-key request metrics kept in shared memory (pure; no nginx).
//!
//! The glue hands [`Metrics::init`] / [`Metrics::attach`] a region of an nginx shared zone;
//! every worker records into it at the LOG phase with [`Metrics::record`], and a content
//! handler serves [`Metrics::render_prometheus`] or [`render_html`]. Region layout, in order:
//! a 128-byte header (magic, version, layout fingerprint, max_keys, offsets, key allocator),
//! the key index (open addressing, 2×max_keys rounded to a power of two, 80-byte entries with
//! the key id inline), then `max_keys + 2` stats blocks of 832 bytes (`-`, `other`, keys), the
//! model index (as the key index, 2×max_models), and `(max_keys + 2) × (max_models + 2)` usage
//! blocks of 64 bytes (tokens per key and model).

mod fleet_block;
mod histogram;
mod html;
mod layout;
mod quantile;
mod region;
mod render;
mod sample;
mod slots;
mod snapshot;
mod stats;
#[cfg(test)]
mod tests;
mod usage_block;

pub use fleet_block::{FleetStats, REDIS_BOUNDS_US, REDIS_ERROR_KINDS};
pub use histogram::{bucket_index, Histogram, BUCKET_BOUNDS_MS, BUCKET_LABELS, N_BUCKETS};
pub use html::render_html;
pub use layout::{
    MetricsError, MetricsLayout, DEFAULT_MAX_KEYS, DEFAULT_MAX_MODELS, MAX_MAX_KEYS, MAX_MAX_MODELS,
};
pub use quantile::quantile;
pub use region::Metrics;
pub use render::{escape_label_value, render_prometheus, u64_digits};
pub use sample::{AuthOutcome, Sample, CLASS_LABELS, EXACT_STATUSES};
pub use slots::KEY_MAX_LEN;
pub use snapshot::{KeyKind, KeySnapshot, ModelSnapshot, Snapshot};
pub use stats::{
    SlotStats, ERROR_SOURCES, HIST_CONNECT, HIST_HEADER, HIST_REQUEST, STREAM_OUTCOMES,
};
pub use usage_block::UsageStats;

//! Plain-data copy of the whole region, for rendering and quantiles off the hot path.

use super::stats::SlotStats;
use super::usage_block::UsageStats;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum KeyKind {
    /// Requests without a key id; label `-`.
    Unauthenticated,
    /// Keys that found no slot (bound reached, id too long); label `other`.
    Other,
    Key,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySnapshot {
    pub kind: KeyKind,
    /// The `key` label: the key id (lossy UTF-8), `-` or `other`.
    pub key: String,
    pub stats: SlotStats,
    /// Token counts by model, sorted by model label; only models with responses.
    pub models: Vec<ModelSnapshot>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSnapshot {
    /// The `model` label: the model name, `-` (none reported) or `other`.
    pub model: String,
    pub stats: UsageStats,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub max_keys: u32,
    /// Keys holding their own slot.
    pub keys_tracked: u32,
    pub max_models: u32,
    /// Model names holding their own slot.
    pub models_tracked: u32,
    /// Slots with at least one request, sorted by label (stable output for scrapes/diffs).
    pub keys: Vec<KeySnapshot>,
    /// The fleet's Redis round trips (host-wide).
    pub fleet: super::fleet_block::FleetStats,
}

impl Snapshot {
    pub fn get(&self, key: &str) -> Option<&SlotStats> {
        self.keys.iter().find(|k| k.key == key).map(|k| &k.stats)
    }

    pub fn usage(&self, key: &str, model: &str) -> Option<&UsageStats> {
        self.keys
            .iter()
            .find(|k| k.key == key)?
            .models
            .iter()
            .find(|m| m.model == model)
            .map(|m| &m.stats)
    }
}

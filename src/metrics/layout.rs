//! Where everything sits in the shared region, and the header that lets a later attach (after a
//! reload, or from another worker) prove the bytes were laid out by this same code.

use std::mem::{offset_of, size_of};
use std::sync::atomic::{AtomicU32, AtomicU64};

use super::fleet_block::FleetBlock;
use super::histogram::{BUCKET_BOUNDS_MS, N_BUCKETS};
use super::sample::AuthOutcome;
use super::slots::{IndexEntry, FIRST_KEY_SLOT, KEY_MAX_LEN};
use super::stats::StatsBlock;
use super::usage_block::{UsageBlock, N_TOKEN_TYPES};
use crate::limits::LimitsBlock;
use crate::usage::ErrorType;

/// "RGMETRIC" little-endian: recognisable in a hex dump of the zone.
pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"RGMETRIC");
/// Bump whenever the meaning of any byte changes; the fingerprint catches the rest.
pub(crate) const VERSION: u32 = 4;
pub const DEFAULT_MAX_KEYS: u32 = 256;
/// Keeps `bytes_needed` and the u32 slot numbers far from overflow.
pub const MAX_MAX_KEYS: u32 = 1 << 20;
pub const DEFAULT_MAX_MODELS: u32 = 16;
/// Token blocks are dense (keys × models): this keeps a zone's size in the operator's reach.
pub const MAX_MAX_MODELS: u32 = 1024;
pub(crate) const HEADER_SIZE: usize = 128;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum MetricsError {
    #[error("metrics region pointer is null")]
    NullRegion,
    #[error("metrics region is not 8-byte aligned")]
    Misaligned,
    #[error("metrics region too small: need {needed} bytes, have {len}")]
    RegionTooSmall { needed: usize, len: usize },
    #[error("metrics max_keys {0} out of range 1..={MAX_MAX_KEYS}")]
    InvalidMaxKeys(u32),
    #[error("metrics max_models {0} out of range 1..={MAX_MAX_MODELS}")]
    InvalidMaxModels(u32),
    #[error("metrics for {keys} keys and {models} models do not fit in memory")]
    TooLarge { keys: u32, models: u32 },
    #[error("metrics region has no valid header (magic {0:#018x})")]
    BadMagic(u64),
    #[error("metrics region version {found}, this module writes version {expected}")]
    VersionMismatch { found: u32, expected: u32 },
    #[error("metrics region layout differs from this module: {0}")]
    LayoutMismatch(&'static str),
}

/// Parameters fixed at `init` time and recorded in the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsLayout {
    /// Distinct key ids tracked individually; further keys are counted under `other`.
    pub max_keys: u32,
    /// Distinct model names with their own token series; further models count as `other`.
    pub max_models: u32,
}

impl Default for MetricsLayout {
    fn default() -> Self {
        MetricsLayout {
            max_keys: DEFAULT_MAX_KEYS,
            max_models: DEFAULT_MAX_MODELS,
        }
    }
}

impl MetricsLayout {
    /// `max_keys` keys, the default number of models.
    pub const fn keys(max_keys: u32) -> Self {
        MetricsLayout {
            max_keys,
            max_models: DEFAULT_MAX_MODELS,
        }
    }

    /// Region size `init` needs; errors if `max_keys` is 0 or above [`MAX_MAX_KEYS`], so the
    /// glue can reject a bad directive at config time instead of panicking inside nginx.
    pub fn bytes_needed(&self) -> Result<usize, MetricsError> {
        Geometry::new(*self).map(|g| g.total_len)
    }
}

/// Offsets derived from `max_keys`; recomputed on attach and compared with the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub max_keys: u32,
    /// Power of two, twice `max_keys` or more, so linear probing stays short.
    pub index_capacity: u32,
    pub index_offset: usize,
    pub blocks_offset: usize,
    pub block_count: u32,
    pub max_models: u32,
    pub model_index_capacity: u32,
    pub model_index_offset: usize,
    /// `block_count × model_slots` usage blocks, key-major.
    pub usage_offset: usize,
    /// Model slots per key: `-`, `other`, then `max_models` names.
    pub model_slots: u32,
    /// `block_count` limit blocks, one per key slot.
    pub limits_offset: usize,
    /// The host-wide fleet (Redis) counters.
    pub fleet_offset: usize,
    pub total_len: usize,
}

const fn round_up(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

impl Geometry {
    pub fn new(layout: MetricsLayout) -> Result<Self, MetricsError> {
        let MetricsLayout {
            max_keys,
            max_models,
        } = layout;
        if max_keys == 0 || max_keys > MAX_MAX_KEYS {
            return Err(MetricsError::InvalidMaxKeys(max_keys));
        }
        if max_models == 0 || max_models > MAX_MAX_MODELS {
            return Err(MetricsError::InvalidMaxModels(max_models));
        }
        let index_capacity = (max_keys * 2).next_power_of_two().max(8);
        let index_offset = HEADER_SIZE;
        let index_end = index_offset + index_capacity as usize * size_of::<IndexEntry>();
        let blocks_offset = round_up(index_end, 64);
        let block_count = max_keys + FIRST_KEY_SLOT;
        let blocks_end = blocks_offset + block_count as usize * size_of::<StatsBlock>();
        let model_index_capacity = (max_models * 2).next_power_of_two().max(8);
        let model_index_offset = blocks_end;
        let model_index_end =
            model_index_offset + model_index_capacity as usize * size_of::<IndexEntry>();
        let usage_offset = round_up(model_index_end, 64);
        let model_slots = max_models + FIRST_KEY_SLOT;
        let too_large = MetricsError::TooLarge {
            keys: max_keys,
            models: max_models,
        };
        let limits_offset = (block_count as usize)
            .checked_mul(model_slots as usize)
            .and_then(|n| n.checked_mul(size_of::<UsageBlock>()))
            .and_then(|n| n.checked_add(usage_offset))
            .ok_or(too_large.clone())?;
        let fleet_offset = (block_count as usize)
            .checked_mul(size_of::<LimitsBlock>())
            .and_then(|n| n.checked_add(limits_offset))
            .map(|n| round_up(n, 64))
            .ok_or(too_large.clone())?;
        let total_len = fleet_offset
            .checked_add(size_of::<FleetBlock>())
            .ok_or(too_large)?;
        Ok(Geometry {
            max_keys,
            index_capacity,
            index_offset,
            blocks_offset,
            block_count,
            max_models,
            model_index_capacity,
            model_index_offset,
            usage_offset,
            model_slots,
            limits_offset,
            fleet_offset,
            total_len,
        })
    }
}

/// First bytes of the region. Plain fields are written once by `init` before `magic` is
/// published with Release, so an attach that reads `magic` with Acquire sees them complete.
#[repr(C)]
pub(crate) struct Header {
    pub magic: AtomicU64,
    pub version: u32,
    pub header_size: u32,
    pub fingerprint: u64,
    pub max_keys: u32,
    pub index_capacity: u32,
    pub index_offset: u64,
    pub blocks_offset: u64,
    pub total_len: u64,
    /// Stats blocks handed out to keys so far (never exceeds `max_keys`; never reused).
    pub next_key: AtomicU32,
    pub max_models: u32,
    pub model_index_capacity: u32,
    /// Model slots handed out so far, as `next_key`.
    pub next_model: AtomicU32,
    pub model_index_offset: u64,
    pub usage_offset: u64,
    pub limits_offset: u64,
    pub fleet_offset: u64,
    _reserved: [u32; 6],
}

const _: () = assert!(size_of::<Header>() == HEADER_SIZE);
const _: () = assert!(offset_of!(Header, magic) == 0);

/// FNV-1a over every compile-time shape the region depends on: a build that changes bucket
/// bounds, counter sets or struct sizes without bumping VERSION still refuses a stale zone.
pub(crate) fn fingerprint() -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |v: u64| {
        for b in v.to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    eat(u64::from(VERSION));
    eat(HEADER_SIZE as u64);
    eat(size_of::<IndexEntry>() as u64);
    eat(size_of::<StatsBlock>() as u64);
    eat(KEY_MAX_LEN as u64);
    eat(N_BUCKETS as u64);
    for b in BUCKET_BOUNDS_MS {
        eat(b);
    }
    eat(AuthOutcome::ALL.len() as u64);
    eat(size_of::<UsageBlock>() as u64);
    eat(N_TOKEN_TYPES as u64);
    eat(ErrorType::ALL.len() as u64);
    eat(size_of::<LimitsBlock>() as u64);
    eat(size_of::<FleetBlock>() as u64);
    h
}

impl Header {
    pub fn new(g: &Geometry) -> Header {
        Header {
            magic: AtomicU64::new(0),
            version: VERSION,
            header_size: HEADER_SIZE as u32,
            fingerprint: fingerprint(),
            max_keys: g.max_keys,
            index_capacity: g.index_capacity,
            index_offset: g.index_offset as u64,
            blocks_offset: g.blocks_offset as u64,
            total_len: g.total_len as u64,
            next_key: AtomicU32::new(0),
            max_models: g.max_models,
            model_index_capacity: g.model_index_capacity,
            next_model: AtomicU32::new(0),
            model_index_offset: g.model_index_offset as u64,
            usage_offset: g.usage_offset as u64,
            limits_offset: g.limits_offset as u64,
            fleet_offset: g.fleet_offset as u64,
            _reserved: [0; 6],
        }
    }

    /// Checks everything but `magic` (the caller already has) against this build and `len`.
    pub fn verify(&self, len: usize) -> Result<Geometry, MetricsError> {
        if self.version != VERSION {
            return Err(MetricsError::VersionMismatch {
                found: self.version,
                expected: VERSION,
            });
        }
        if self.header_size as usize != HEADER_SIZE {
            return Err(MetricsError::LayoutMismatch("header size"));
        }
        if self.fingerprint != fingerprint() {
            return Err(MetricsError::LayoutMismatch("fingerprint"));
        }
        let g = Geometry::new(MetricsLayout {
            max_keys: self.max_keys,
            max_models: self.max_models,
        })
        .map_err(|_| MetricsError::LayoutMismatch("max_keys or max_models"))?;
        if self.index_capacity != g.index_capacity
            || self.index_offset != g.index_offset as u64
            || self.blocks_offset != g.blocks_offset as u64
            || self.model_index_capacity != g.model_index_capacity
            || self.model_index_offset != g.model_index_offset as u64
            || self.usage_offset != g.usage_offset as u64
            || self.limits_offset != g.limits_offset as u64
            || self.fleet_offset != g.fleet_offset as u64
            || self.total_len != g.total_len as u64
        {
            return Err(MetricsError::LayoutMismatch("offsets"));
        }
        if len < g.total_len {
            return Err(MetricsError::RegionTooSmall {
                needed: g.total_len,
                len,
            });
        }
        Ok(g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(max_keys: u32) -> MetricsLayout {
        MetricsLayout {
            max_keys,
            ..MetricsLayout::default()
        }
    }

    #[test]
    fn geometry_is_aligned_and_grows_with_keys() {
        let g = Geometry::new(keys(256)).unwrap();
        assert_eq!(g.index_capacity, 512);
        assert_eq!(g.blocks_offset % 64, 0);
        assert_eq!(g.usage_offset % 64, 0);
        assert_eq!(g.limits_offset % 64, 0);
        assert_eq!(g.fleet_offset - g.limits_offset, 258 * 128);
        assert_eq!(g.fleet_offset % 64, 0);
        assert_eq!(size_of::<StatsBlock>() % 64, 0);
        assert!(Geometry::new(keys(1000)).unwrap().total_len > g.total_len);
        assert_eq!(Geometry::new(keys(1)).unwrap().index_capacity, 8);
        let more_models = Geometry::new(MetricsLayout {
            max_keys: 256,
            max_models: 17,
        })
        .unwrap();
        // One more model slot for each of the 258 key blocks, and the model index doubles
        // from 32 to 64 entries (kept at twice the bound or more); limit blocks stay one per
        // key slot.
        assert_eq!(
            more_models.total_len - g.total_len,
            258 * 64 + 32 * size_of::<IndexEntry>()
        );
    }

    #[test]
    fn max_keys_out_of_range() {
        assert_eq!(Geometry::new(keys(0)), Err(MetricsError::InvalidMaxKeys(0)));
        assert!(Geometry::new(keys(MAX_MAX_KEYS + 1)).is_err());
        assert!(Geometry::new(keys(MAX_MAX_KEYS)).is_ok());
        let models = |n| MetricsLayout {
            max_keys: 1,
            max_models: n,
        };
        assert_eq!(
            Geometry::new(models(0)),
            Err(MetricsError::InvalidMaxModels(0))
        );
        assert!(Geometry::new(models(MAX_MAX_MODELS + 1)).is_err());
        assert!(Geometry::new(models(MAX_MAX_MODELS)).is_ok());
    }
}

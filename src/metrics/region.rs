//! The handle over the shared region: init, attach, record, snapshot.

use std::ptr::NonNull;
use std::sync::atomic::Ordering;

use super::fleet_block::FleetBlock;
use super::layout::{Geometry, Header, MetricsError, MetricsLayout, HEADER_SIZE, MAGIC};
use super::sample::Sample;
use super::slots::{lookup, IndexEntry, OTHER_LABEL, OTHER_SLOT, UNAUTH_LABEL, UNAUTH_SLOT};
use super::snapshot::{KeyKind, KeySnapshot, ModelSnapshot, Snapshot};
use super::stats::StatsBlock;
use super::usage_block::UsageBlock;
use crate::limits::{KeyLimits, LimitsBlock, WindowUse};

/// Handle over an initialised region. Cheap to copy; one per worker (or per thread) is fine,
/// they all add to the same counters.
#[derive(Clone, Copy)]
pub struct Metrics {
    header: NonNull<Header>,
    index: NonNull<IndexEntry>,
    index_len: usize,
    blocks: NonNull<StatsBlock>,
    block_count: usize,
    max_keys: u32,
    model_index: NonNull<IndexEntry>,
    model_index_len: usize,
    usage: NonNull<UsageBlock>,
    model_slots: usize,
    max_models: u32,
    limits: NonNull<LimitsBlock>,
    fleet: NonNull<FleetBlock>,
}

// SAFETY: the handle only reads plain header fields fixed before `magic` was published, and
// otherwise touches the region through atomics; the region outlives the handle (init/attach
// contract), so sharing or moving it across threads is sound.
unsafe impl Send for Metrics {}
// SAFETY: as above; every `&self` method is safe under concurrent use.
unsafe impl Sync for Metrics {}

fn check_region(region: *mut u8, len: usize) -> Result<NonNull<u8>, MetricsError> {
    let base = NonNull::new(region).ok_or(MetricsError::NullRegion)?;
    if region as usize % 8 != 0 {
        return Err(MetricsError::Misaligned);
    }
    if len < HEADER_SIZE {
        return Err(MetricsError::RegionTooSmall {
            needed: HEADER_SIZE,
            len,
        });
    }
    Ok(base)
}

impl Metrics {
    /// Initialises a fresh region: zeroes it and writes the header.
    ///
    /// # Safety
    /// `region` is valid for reads and writes of `len` bytes, 8-aligned, not used by anyone
    /// else during the call, and outlives every handle made from it.
    pub unsafe fn init(
        region: *mut u8,
        len: usize,
        layout: MetricsLayout,
    ) -> Result<Metrics, MetricsError> {
        let base = check_region(region, len)?;
        let g = Geometry::new(layout)?;
        if len < g.total_len {
            return Err(MetricsError::RegionTooSmall {
                needed: g.total_len,
                len,
            });
        }
        let header = base.cast::<Header>();
        // SAFETY: caller guarantees exclusive, writable, 8-aligned `len >= total_len` bytes;
        // zero is a valid value for every atomic and integer in the layout.
        unsafe {
            std::ptr::write_bytes(region, 0, g.total_len);
            header.as_ptr().write(Header::new(&g));
        }
        // SAFETY: header was just written; publishing magic last makes a half-written region
        // unattachable.
        unsafe { header.as_ref() }
            .magic
            .store(MAGIC, Ordering::Release);
        // SAFETY: geometry checked against `len` above.
        Ok(unsafe { Self::from_geometry(base, &g) })
    }

    /// Attaches to a region `init` prepared (after a reload, or in another process),
    /// verifying magic, version, layout fingerprint and that `len` covers the layout.
    ///
    /// # Safety
    /// `region` is valid for reads and writes of `len` bytes, 8-aligned, only ever used
    /// through `Metrics` handles, and outlives every handle made from it.
    pub unsafe fn attach(region: *mut u8, len: usize) -> Result<Metrics, MetricsError> {
        let base = check_region(region, len)?;
        // SAFETY: at least HEADER_SIZE valid, aligned bytes; any bit pattern is a valid Header.
        let header = unsafe { base.cast::<Header>().as_ref() };
        let magic = header.magic.load(Ordering::Acquire);
        if magic != MAGIC {
            return Err(MetricsError::BadMagic(magic));
        }
        let g = header.verify(len)?;
        // SAFETY: verify() checked the geometry against this build and `len`.
        Ok(unsafe { Self::from_geometry(base, &g) })
    }

    /// Attaches if the region already holds metrics with the same layout, else initialises
    /// it. Returns whether existing counters were kept. For nginx's zone init, which runs in
    /// the master before workers exist.
    ///
    /// # Safety
    /// As for [`Metrics::init`].
    pub unsafe fn attach_or_init(
        region: *mut u8,
        len: usize,
        layout: MetricsLayout,
    ) -> Result<(Metrics, bool), MetricsError> {
        // SAFETY: forwarded caller contract.
        match unsafe { Self::attach(region, len) } {
            Ok(m) if m.layout() == layout => Ok((m, true)),
            // SAFETY: forwarded caller contract.
            _ => unsafe { Self::init(region, len, layout) }.map(|m| (m, false)),
        }
    }

    /// # Safety
    /// `base` starts a region of at least `g.total_len` valid bytes laid out per `g`.
    unsafe fn from_geometry(base: NonNull<u8>, g: &Geometry) -> Metrics {
        // SAFETY: offsets lie within total_len per Geometry::new.
        let (index, blocks, model_index, usage, limits, fleet) = unsafe {
            (
                base.add(g.index_offset).cast::<IndexEntry>(),
                base.add(g.blocks_offset).cast::<StatsBlock>(),
                base.add(g.model_index_offset).cast::<IndexEntry>(),
                base.add(g.usage_offset).cast::<UsageBlock>(),
                base.add(g.limits_offset).cast::<LimitsBlock>(),
                base.add(g.fleet_offset).cast::<FleetBlock>(),
            )
        };
        Metrics {
            header: base.cast(),
            index,
            index_len: g.index_capacity as usize,
            blocks,
            block_count: g.block_count as usize,
            max_keys: g.max_keys,
            model_index,
            model_index_len: g.model_index_capacity as usize,
            usage,
            model_slots: g.model_slots as usize,
            max_models: g.max_models,
            limits,
            fleet,
        }
    }

    fn header(&self) -> &Header {
        // SAFETY: valid for the handle's life (init/attach contract).
        unsafe { self.header.as_ref() }
    }

    fn index(&self) -> &[IndexEntry] {
        // SAFETY: index_len entries at this offset lie inside the region.
        unsafe { std::slice::from_raw_parts(self.index.as_ptr(), self.index_len) }
    }

    fn blocks(&self) -> &[StatsBlock] {
        // SAFETY: block_count blocks at this offset lie inside the region.
        unsafe { std::slice::from_raw_parts(self.blocks.as_ptr(), self.block_count) }
    }

    fn model_index(&self) -> &[IndexEntry] {
        // SAFETY: model_index_len entries at this offset lie inside the region.
        unsafe { std::slice::from_raw_parts(self.model_index.as_ptr(), self.model_index_len) }
    }

    /// Usage blocks, key-major: key slot `k`, model slot `m` is `k * model_slots + m`.
    fn usage(&self) -> &[UsageBlock] {
        // SAFETY: block_count × model_slots blocks at this offset lie inside the region.
        unsafe {
            std::slice::from_raw_parts(self.usage.as_ptr(), self.block_count * self.model_slots)
        }
    }

    /// One limit block per key slot, as the stats blocks.
    fn limits_block(&self, slot: u32) -> NonNull<LimitsBlock> {
        let slot = (slot as usize).min(self.block_count - 1);
        // SAFETY: block_count limit blocks at this offset lie inside the region.
        unsafe { self.limits.add(slot) }
    }

    /// The limit state of a verified key, giving it a slot if it has none yet. Keys past
    /// `keys=` share the `other` block: their limits then bind together, never loosen.
    pub fn key_limits(&self, key_id: &[u8]) -> KeyLimits {
        let slot = lookup(self.index(), &self.header().next_key, self.max_keys, key_id);
        KeyLimits::new(self.limits_block(slot))
    }

    /// Every tracked key's budget windows still in use at `now_s`, for the state file.
    pub fn limits_state(&self, now_s: u64) -> Vec<(String, Vec<WindowUse>)> {
        let mut out = Vec::new();
        for e in self.index() {
            let Some((bytes, len, slot)) = e.read() else {
                continue;
            };
            if slot == OTHER_SLOT || slot as usize >= self.block_count {
                continue;
            }
            let windows = KeyLimits::new(self.limits_block(slot)).windows_in_use(now_s);
            if !windows.is_empty() {
                out.push((String::from_utf8_lossy(&bytes[..len]).into_owned(), windows));
            }
        }
        out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Puts saved windows back (those still current at `now_s`); returns how many.
    pub fn restore_limits(&self, saved: &[(String, Vec<WindowUse>)], now_s: u64) -> usize {
        let mut n = 0;
        for (id, windows) in saved {
            let k = self.key_limits(id.as_bytes());
            n += windows.iter().filter(|w| k.restore(w, now_s)).count();
        }
        n
    }

    pub fn layout(&self) -> MetricsLayout {
        MetricsLayout {
            max_keys: self.max_keys,
            max_models: self.max_models,
        }
    }

    /// Adds one finished request. Lock-free, allocation-free.
    pub fn record(&self, s: &Sample<'_>) {
        let slot = lookup(
            self.index(),
            &self.header().next_key,
            self.max_keys,
            s.key_id,
        );
        self.blocks()[slot as usize].apply(s);
        if let Some(counts) = &s.usage {
            // Model names share the key index's machinery: `-` for none, `other` past the
            // bound, so the `model` label is as bounded as the `key` label.
            let model = lookup(
                self.model_index(),
                &self.header().next_model,
                self.max_models,
                s.model,
            );
            self.usage()[slot as usize * self.model_slots + model as usize].apply(counts);
        }
    }

    /// Every model slot's label: `-`, `other`, then the names in the model index.
    fn model_labels(&self) -> Vec<(u32, String)> {
        let mut labels = vec![
            (UNAUTH_SLOT, UNAUTH_LABEL.to_owned()),
            (OTHER_SLOT, OTHER_LABEL.to_owned()),
        ];
        for e in self.model_index() {
            if let Some((bytes, len, slot)) = e.read() {
                if slot != OTHER_SLOT && (slot as usize) < self.model_slots {
                    labels.push((slot, String::from_utf8_lossy(&bytes[..len]).into_owned()));
                }
            }
        }
        labels.sort_unstable_by(|a, b| a.1.cmp(&b.1));
        labels
    }

    fn models_of(&self, key_slot: u32, labels: &[(u32, String)]) -> Vec<ModelSnapshot> {
        let row = &self.usage()[key_slot as usize * self.model_slots..][..self.model_slots];
        labels
            .iter()
            .filter_map(|(slot, model)| {
                let stats = row[*slot as usize].load();
                (stats.responses > 0).then(|| ModelSnapshot {
                    model: model.clone(),
                    stats,
                })
            })
            .collect()
    }

    /// A slot's counters, with the refusals its limit block counted.
    fn load_stats(&self, slot: u32) -> super::stats::SlotStats {
        let mut stats = self.blocks()[slot as usize].load();
        stats.limited = KeyLimits::new(self.limits_block(slot)).limited();
        stats
    }

    pub fn keys_tracked(&self) -> u32 {
        self.header()
            .next_key
            .load(Ordering::Relaxed)
            .min(self.max_keys)
    }

    /// Copies every slot with traffic. Reads atomics only, so writers never wait on it.
    pub fn snapshot(&self) -> Snapshot {
        let blocks = self.blocks();
        let model_labels = self.model_labels();
        let mut keys = Vec::with_capacity(self.keys_tracked() as usize + 2);
        for (slot, kind, label) in [
            (UNAUTH_SLOT, KeyKind::Unauthenticated, UNAUTH_LABEL),
            (OTHER_SLOT, KeyKind::Other, OTHER_LABEL),
        ] {
            keys.push(KeySnapshot {
                kind,
                key: label.to_owned(),
                stats: self.load_stats(slot),
                models: self.models_of(slot, &model_labels),
            });
        }
        for e in self.index() {
            let Some((bytes, len, slot)) = e.read() else {
                continue;
            };
            if slot == OTHER_SLOT || slot as usize >= blocks.len() {
                continue;
            }
            keys.push(KeySnapshot {
                kind: KeyKind::Key,
                key: String::from_utf8_lossy(&bytes[..len]).into_owned(),
                stats: self.load_stats(slot),
                models: self.models_of(slot, &model_labels),
            });
        }
        keys.retain(|k| k.stats.requests() > 0);
        keys.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        Snapshot {
            max_keys: self.max_keys,
            keys_tracked: self.keys_tracked(),
            max_models: self.max_models,
            models_tracked: self
                .header()
                .next_model
                .load(Ordering::Relaxed)
                .min(self.max_models),
            keys,
            fleet: self.fleet().stats(),
        }
    }

    fn fleet(&self) -> &FleetBlock {
        // SAFETY: the block lies within the region (Geometry), which outlives the handle;
        // it is only atomics, valid zeroed.
        unsafe { self.fleet.as_ref() }
    }

    /// One round trip to the fleet's Redis of `us` µs; `failed` indexes
    /// [`REDIS_ERROR_KINDS`](super::REDIS_ERROR_KINDS).
    pub fn record_redis(&self, us: u64, failed: Option<usize>) {
        self.fleet().record(us, failed);
    }

    /// `count` settlements or renewals lost, of kind `kind` (an index into REDIS_ERROR_KINDS).
    pub fn count_redis_errors(&self, kind: usize, count: u64) {
        self.fleet().count_errors(kind, count);
    }

    pub fn count_redis_fallback(&self) {
        self.fleet().count_fallback();
    }

    pub fn render_prometheus(&self, out: &mut String) {
        super::render::render_prometheus(&self.snapshot(), out);
    }
}

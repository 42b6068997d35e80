//! The `relay_guard_zone` shared memory: the directive's `NAME:SIZE [keys=N] [models=N]`, the zone's
//! layout, creation, reuse across reloads, and the locked nonce check that every worker goes
//! through.
//!
//! Layout, in slab allocations made when the zone is created: `ZoneHeader`, the metrics region
//! (sized by `keys=` and `models=`), then nonce slots filling every page that is left.

use core::ffi::c_void;
use core::{mem, ptr, slice};

use ngx::core::Status;
use ngx::ffi::{
    ngx_conf_t, ngx_int_t, ngx_pagesize, ngx_parse_size, ngx_pcalloc, ngx_shared_memory_add,
    ngx_shm_zone_t, ngx_shmtx_lock, ngx_shmtx_unlock, ngx_slab_calloc, ngx_slab_pool_t, ngx_str_t,
    NGX_LOG_EMERG,
};

use super::conf::StateFileConf;
use super::error::{GlueError, ZoneError};
use super::req::Req;

use crate::auth::nonce_table::{self, Fingerprinter, Insert, Slot};
use crate::metrics::{Metrics, MetricsLayout};

const MAGIC: u64 = u64::from_le_bytes(*b"rlguard1");
/// 2: the metrics region holds limit blocks.
const LAYOUT_VERSION: u32 = 2;

/// Lives at the start of the zone; shared by all workers and kept across reloads.
#[repr(C)]
struct ZoneHeader {
    magic: u64,
    version: u32,
    _pad: u32,
    /// Keys the nonce fingerprints, so clients cannot aim nonces at one bucket.
    secret: [u8; 32],
    nslots: u64,
    /// Unix seconds of the last "store full" warning (rate limit; under the lock).
    last_full_warning: u64,
}

/// Per-cycle, per-process view of the zone (allocated from the configuration pool; workers
/// inherit it through fork).
#[repr(C)]
pub struct ZoneCtx {
    pool: *mut ngx_slab_pool_t,
    header: *mut ZoneHeader,
    slots: *mut Slot,
    fingerprinter: Option<Fingerprinter>,
    /// `keys=` and `models=` of relay_guard_zone: how many key ids get their own metrics
    /// series, and how many model names their own token series.
    layout: MetricsLayout,
    pub metrics: Option<Metrics>,
    /// The cycle's `relay_guard_state_file`, read when the zone is created (postconfiguration
    /// sets it; the main configuration holding it lives as long as this context).
    pub state_file: Option<*const StateFileConf>,
}

/// The smallest zone that holds the metrics for the layout and a few pages of nonces.
fn min_size(layout: MetricsLayout) -> Result<usize, ZoneError> {
    let metrics = layout.bytes_needed()?;
    // SAFETY: ngx_pagesize is set by nginx before configuration is read.
    let page = unsafe { ngx_pagesize };
    Ok(metrics.div_ceil(page) * page + 8 * page)
}

/// Creates the per-cycle context and hooks zone initialisation.
///
/// # Safety
/// `cf` is the configuration being parsed; `shm` a zone it just added.
unsafe fn attach_ctx(
    cf: *mut ngx_conf_t,
    shm: *mut ngx_shm_zone_t,
    layout: MetricsLayout,
) -> Result<(), ZoneError> {
    // SAFETY: cf->pool is the configuration pool; zeroed memory is a valid ZoneCtx
    // (null pointers, None).
    let ctx = unsafe { ngx_pcalloc((*cf).pool, mem::size_of::<ZoneCtx>()) } as *mut ZoneCtx;
    if ctx.is_null() {
        return Err(ZoneError::NoMemory);
    }
    // SAFETY: ctx is freshly allocated and exclusively ours; shm is a live descriptor.
    unsafe {
        ptr::write(
            ctx,
            ZoneCtx {
                pool: ptr::null_mut(),
                header: ptr::null_mut(),
                slots: ptr::null_mut(),
                fingerprinter: None,
                layout,
                metrics: None,
                state_file: None,
            },
        );
        (*shm).data = ctx as *mut c_void;
        (*shm).init = Some(init_zone);
    }
    Ok(())
}

/// nginx calls this in the master when the configuration is (re)loaded. `data` is the previous
/// cycle's ZoneCtx when a zone of the same name, size and module survives the reload.
unsafe extern "C" fn init_zone(shm: *mut ngx_shm_zone_t, data: *mut c_void) -> ngx_int_t {
    // SAFETY: nginx passes the live zone descriptor; its data is the ZoneCtx attach_ctx set
    // (ours alone during configuration) and `data` is null or the previous cycle's ZoneCtx.
    let (ctx, old, log) = unsafe {
        (
            &mut *((*shm).data as *mut ZoneCtx),
            (data as *const ZoneCtx).as_ref(),
            (*shm).shm.log,
        )
    };
    let done = match old {
        Some(old) => reuse(ctx, old),
        // SAFETY: a shared zone starts with its slab pool; only the master runs this, before
        // any worker exists.
        None => unsafe { create_layout(ctx, (*shm).shm.addr as *mut ngx_slab_pool_t) }.map(|()| {
            // SAFETY: set by postconfiguration from the main conf, alive for this cycle.
            let conf = ctx.state_file.and_then(|p| unsafe { p.as_ref() });
            if let (Some(m), Some(conf)) = (&ctx.metrics, conf) {
                super::state_file::restore(m, conf, log);
            }
        }),
    };
    match done {
        Ok(()) => Status::NGX_OK.into(),
        Err(e) => {
            ngx::ngx_log_error!(NGX_LOG_EMERG, log, "relay_guard_zone: {e}");
            Status::NGX_ERROR.into()
        }
    }
}

/// Takes over the zone a reload kept, if its layout is this version's.
fn reuse(ctx: &mut ZoneCtx, old: &ZoneCtx) -> Result<(), ZoneError> {
    // SAFETY: old.header is null or points into the surviving zone, which nothing writes
    // while the master reloads.
    let same_layout = unsafe { old.header.as_ref() }
        .is_some_and(|h| h.magic == MAGIC && h.version == LAYOUT_VERSION);
    if !same_layout {
        return Err(ZoneError::Incompatible);
    }
    if old.layout.max_keys != ctx.layout.max_keys {
        return Err(ZoneError::KeysChanged {
            new: ctx.layout.max_keys,
            old: old.layout.max_keys,
        });
    }
    if old.layout.max_models != ctx.layout.max_models {
        return Err(ZoneError::ModelsChanged {
            new: ctx.layout.max_models,
            old: old.layout.max_models,
        });
    }
    ctx.pool = old.pool;
    ctx.header = old.header;
    ctx.slots = old.slots;
    ctx.fingerprinter.clone_from(&old.fingerprinter);
    ctx.metrics = old.metrics;
    Ok(())
}

/// # Safety
/// `pool` is a fresh zone's slab pool, and only the master runs this, before workers exist.
unsafe fn create_layout(ctx: &mut ZoneCtx, pool: *mut ngx_slab_pool_t) -> Result<(), ZoneError> {
    ctx.pool = pool;
    // SAFETY: the caller's promise: the pool is ours alone, so the allocations and writes
    // below race with nothing.
    unsafe {
        let header = ngx_slab_calloc(pool, mem::size_of::<ZoneHeader>()) as *mut ZoneHeader;
        if header.is_null() {
            return Err(ZoneError::NoRoomForHeader);
        }
        let layout = ctx.layout;
        let mbytes = layout.bytes_needed()?;
        // Slab allocations of a page or more are page-aligned, which Metrics needs (8).
        let region = ngx_slab_calloc(pool, mbytes) as *mut u8;
        if region.is_null() {
            return Err(ZoneError::NoRoomForMetrics(layout.max_keys));
        }
        ctx.metrics = Some(Metrics::init(region, mbytes, layout)?);
        // Every page left becomes nonce slots: capacity is exactly the rest of the zone.
        let free = (*pool).pfree * ngx_pagesize;
        let nslots = nonce_table::slots_for_bytes(free.saturating_sub(ngx_pagesize));
        let slots = ngx_slab_calloc(pool, nslots * mem::size_of::<Slot>()) as *mut Slot;
        if slots.is_null() || nslots == 0 {
            return Err(ZoneError::NoRoomForNonces(nslots));
        }
        let secret = super::ffi_util::random_32().map_err(ZoneError::Random)?;
        ptr::write(
            header,
            ZoneHeader {
                magic: MAGIC,
                version: LAYOUT_VERSION,
                _pad: 0,
                secret,
                nslots: nslots as u64,
                last_full_warning: 0,
            },
        );
        (*pool).data = header as *mut c_void;
        ctx.header = header;
        ctx.slots = slots;
        ctx.fingerprinter = Some(Fingerprinter::new(&secret));
    }
    Ok(())
}

pub struct NonceVerdict {
    pub insert: Insert,
    /// Set when the store is full and no warning was logged in the last 10 s.
    pub warn_full: bool,
    pub capacity: u64,
}

impl ZoneCtx {
    /// Records (key id, nonce) unless already present, under the zone's lock.
    pub fn check_and_insert(
        &self,
        key_id: &[u8],
        nonce: &[u8],
        expires: u64,
        now: u64,
    ) -> Result<NonceVerdict, GlueError> {
        let fp = self
            .fingerprinter
            .as_ref()
            .ok_or(GlueError::NoZone)?
            .fingerprint(key_id, nonce);
        if self.pool.is_null() || self.header.is_null() || self.slots.is_null() {
            return Err(GlueError::NoZone);
        }
        // SAFETY: pool, header and slots point into the shared zone, valid for the cycle; the
        // slab mutex serialises every access to header and slots across processes, and
        // nothing in between can unwind or return early.
        unsafe {
            ngx_shmtx_lock(&mut (*self.pool).mutex);
            let header = &mut *self.header;
            let slots = slice::from_raw_parts_mut(self.slots, header.nslots as usize);
            let insert = nonce_table::check_and_insert(slots, fp, expires, now);
            let warn_full = insert == Insert::Full && now >= header.last_full_warning + 10;
            if warn_full {
                header.last_full_warning = now;
            }
            let capacity = header.nslots;
            ngx_shmtx_unlock(&mut (*self.pool).mutex);
            Ok(NonceVerdict {
                insert,
                warn_full,
                capacity,
            })
        }
    }
}

/// The zone of the request's http block.
pub fn of_request(req: Req<'_>) -> Result<&'static ZoneCtx, GlueError> {
    let mcf = req.main_conf().ok_or(GlueError::NoZone)?;
    // SAFETY: mcf.zone is null or a zone made by `relay_guard_zone` (add() below), whose data
    // is the cycle's ZoneCtx; both live as long as the configuration.
    unsafe { ctx_of(mcf.zone) }.ok_or(GlueError::NoZone)
}

/// The ZoneCtx behind a zone descriptor from the main configuration.
///
/// # Safety
/// `shm` must be null or a zone created by `relay_guard_zone`.
pub unsafe fn ctx_of<'a>(shm: *mut ngx_shm_zone_t) -> Option<&'a ZoneCtx> {
    // SAFETY: guaranteed by the caller; data was set by attach_ctx.
    unsafe {
        shm.as_ref()
            .and_then(|z| (z.data as *const ZoneCtx).as_ref())
    }
}

/// As [`ctx_of`], for postconfiguration to finish the context.
///
/// # Safety
/// As for [`ctx_of`], and no other reference to the context is live (configuration time).
pub unsafe fn ctx_of_mut<'a>(shm: *mut ngx_shm_zone_t) -> Option<&'a mut ZoneCtx> {
    // SAFETY: guaranteed by the caller; data was set by attach_ctx.
    unsafe { shm.as_ref().and_then(|z| (z.data as *mut ZoneCtx).as_mut()) }
}

/// `relay_guard_zone NAME:SIZE [keys=N] [models=N]` as written.
pub struct ZoneSpec<'a> {
    pub name: &'a [u8],
    pub size: usize,
    pub layout: MetricsLayout,
}

/// `keys=N` / `models=N`: the number if `word` is `name=N` with N in `1..=max`.
fn count_param(word: &[u8], name: &[u8], max: u32) -> Option<Result<u32, ZoneError>> {
    let n = word.strip_prefix(name)?.strip_prefix(b"=")?;
    Some(
        std::str::from_utf8(n)
            .ok()
            .and_then(|n| n.parse::<u32>().ok())
            .filter(|&n| (1..=max).contains(&n))
            .ok_or_else(|| ZoneError::Param(show(word))),
    )
}

fn show(v: &[u8]) -> String {
    crate::conf_text::show(v)
}

impl<'a> ZoneSpec<'a> {
    /// Parses the directive's arguments (`spec`, then optional `keys=N` and `models=N` in
    /// any order) and checks the size against what the layout needs.
    pub fn parse<'p>(
        spec: &'a [u8],
        params: impl Iterator<Item = &'p [u8]>,
    ) -> Result<ZoneSpec<'a>, ZoneError> {
        let (mut keys, mut models) = (None, None);
        for p in params {
            let (slot, value) =
                if let Some(v) = count_param(p, b"keys", crate::metrics::MAX_MAX_KEYS) {
                    (&mut keys, v?)
                } else if let Some(v) = count_param(p, b"models", crate::metrics::MAX_MAX_MODELS) {
                    (&mut models, v?)
                } else {
                    return Err(ZoneError::Param(show(p)));
                };
            if slot.replace(value).is_some() {
                return Err(ZoneError::Param(show(p)));
            }
        }
        let layout = MetricsLayout {
            max_keys: keys.unwrap_or(crate::metrics::DEFAULT_MAX_KEYS),
            max_models: models.unwrap_or(crate::metrics::DEFAULT_MAX_MODELS),
        };
        let colon = spec
            .iter()
            .rposition(|&c| c == b':')
            .filter(|&i| i > 0)
            .ok_or_else(|| ZoneError::NameSize(show(spec)))?;
        let (name, size) = (&spec[..colon], &spec[colon + 1..]);
        if !crate::conf_text::is_plain_name(name) {
            return Err(ZoneError::Name(show(name)));
        }
        let mut size_str = ngx_str_t {
            len: size.len(),
            data: size.as_ptr() as *mut u8,
        };
        // SAFETY: ngx_parse_size only reads size_str's bytes, which `size` borrows.
        let size = unsafe { ngx_parse_size(&mut size_str) };
        if size < 0 {
            return Err(ZoneError::Size(show(spec)));
        }
        let min = min_size(layout)?;
        if (size as usize) < min {
            return Err(ZoneError::TooSmall {
                name: show(name),
                min_kib: min.div_ceil(1024),
                keys: layout.max_keys,
                models: layout.max_models,
            });
        }
        Ok(ZoneSpec {
            name,
            size: size as usize,
            layout,
        })
    }

    /// Declares the zone to nginx (which creates it, or keeps the running one across a
    /// reload) and hooks its initialisation.
    ///
    /// # Safety
    /// `cf` is the configuration being parsed, in a directive handler.
    pub unsafe fn add(&self, cf: *mut ngx_conf_t) -> Result<*mut ngx_shm_zone_t, ZoneError> {
        let mut zname = ngx_str_t {
            len: self.name.len(),
            data: self.name.as_ptr() as *mut u8,
        };
        // SAFETY: cf is valid (the caller's promise) and nginx copies the name; the tag is
        // this module, so nginx reuses the zone on reload only for us.
        let shm = unsafe {
            ngx_shared_memory_add(
                cf,
                &mut zname,
                self.size,
                core::ptr::addr_of_mut!(super::ngx_http_relay_guard_module) as *mut c_void,
            )
        };
        // SAFETY: null or a live zone descriptor owned by the cycle.
        let zone = unsafe { shm.as_ref() }.ok_or(ZoneError::NoMemory)?;
        if !zone.data.is_null() {
            return Err(ZoneError::Declared(show(self.name)));
        }
        // SAFETY: cf as above; shm is the zone just added.
        unsafe { attach_ctx(cf, shm, self.layout) }?;
        Ok(shm)
    }
}

//! The `relay_guard_zone` shared memory: its layout, creation, reuse across reloads, and the
//! locked nonce check that every worker goes through.
//!
//! Layout, in slab allocations made when the zone is created: `ZoneHeader`, the metrics region
//! (sized by `keys=`), then nonce slots filling every page that is left.

use core::ffi::c_void;
use core::{mem, ptr, slice};

use ngx::ffi::{
    ngx_conf_t, ngx_int_t, ngx_pagesize, ngx_pcalloc, ngx_shm_zone_t, ngx_shmtx_lock,
    ngx_shmtx_unlock, ngx_slab_calloc, ngx_slab_pool_t, NGX_ERROR, NGX_LOG_EMERG, NGX_OK,
};

use crate::auth::nonce_table::{self, Fingerprinter, Insert, Slot};
use crate::metrics::{Metrics, MetricsLayout};

const MAGIC: u64 = u64::from_le_bytes(*b"rlguard1");
const LAYOUT_VERSION: u32 = 1;

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
    /// `keys=` of relay_guard_zone: how many key ids get their own metrics series.
    max_keys: u32,
    pub metrics: Option<Metrics>,
}

/// The smallest zone that holds the metrics for `max_keys` keys and a few pages of nonces.
pub fn min_size(max_keys: u32) -> Result<usize, String> {
    let metrics = MetricsLayout { max_keys }
        .bytes_needed()
        .map_err(|e| e.to_string())?;
    // SAFETY: ngx_pagesize is set by nginx before configuration is read.
    let page = unsafe { ngx_pagesize };
    Ok(metrics.div_ceil(page) * page + 8 * page)
}

/// Creates the per-cycle context and hooks zone initialisation.
pub unsafe fn attach_ctx(
    cf: *mut ngx_conf_t,
    shm: *mut ngx_shm_zone_t,
    max_keys: u32,
) -> Result<(), String> {
    // SAFETY: cf->pool is the configuration pool; zeroed memory is a valid ZoneCtx
    // (null pointers, None).
    let ctx = unsafe { ngx_pcalloc((*cf).pool, mem::size_of::<ZoneCtx>()) } as *mut ZoneCtx;
    if ctx.is_null() {
        return Err("out of memory".into());
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
                max_keys,
                metrics: None,
            },
        );
        (*shm).data = ctx as *mut c_void;
        (*shm).init = Some(init_zone);
    }
    Ok(())
}

fn random_secret() -> Option<[u8; 32]> {
    let mut s = [0u8; 32];
    // SAFETY: getrandom writes at most s.len() bytes into s.
    let n = unsafe { libc::getrandom(s.as_mut_ptr() as *mut c_void, s.len(), 0) };
    (n == s.len() as isize).then_some(s)
}

/// nginx calls this in the master when the configuration is (re)loaded. `data` is the previous
/// cycle's ZoneCtx when a zone of the same name, size and module survives the reload.
unsafe extern "C" fn init_zone(shm: *mut ngx_shm_zone_t, data: *mut c_void) -> ngx_int_t {
    // SAFETY: shm->data is the ZoneCtx set by attach_ctx; data is null or an old ZoneCtx.
    let ctx = unsafe { &mut *((*shm).data as *mut ZoneCtx) };
    if let Some(old) = unsafe { (data as *const ZoneCtx).as_ref() } {
        // SAFETY: old.header points into the surviving zone.
        let same_layout = unsafe { old.header.as_ref() }
            .is_some_and(|h| h.magic == MAGIC && h.version == LAYOUT_VERSION);
        if !same_layout {
            // SAFETY: the cycle log is valid during configuration.
            let log = unsafe { (*shm).shm.log };
            ngx::ngx_log_error!(NGX_LOG_EMERG, log, "relay_guard_zone: the zone was created by an incompatible relay-guard version; rename the zone or restart nginx");
            return NGX_ERROR as ngx_int_t;
        }
        if old.max_keys != ctx.max_keys {
            // SAFETY: the cycle log is valid during configuration.
            let log = unsafe { (*shm).shm.log };
            ngx::ngx_log_error!(NGX_LOG_EMERG, log, "relay_guard_zone: keys={} differs from the running keys={}; the zone is kept across reloads, so use a new zone name (or restart nginx) to change it", ctx.max_keys, old.max_keys);
            return NGX_ERROR as ngx_int_t;
        }
        ctx.pool = old.pool;
        ctx.header = old.header;
        ctx.slots = old.slots;
        ctx.fingerprinter.clone_from(&old.fingerprinter);
        ctx.metrics = old.metrics;
        return NGX_OK as ngx_int_t;
    }
    // SAFETY: a shared zone starts with its slab pool.
    let pool = unsafe { (*shm).shm.addr as *mut ngx_slab_pool_t };
    ctx.pool = pool;
    match unsafe { create_layout(ctx, pool) } {
        Ok(()) => NGX_OK as ngx_int_t,
        Err(msg) => {
            // SAFETY: the cycle log is valid during configuration.
            let log = unsafe { (*shm).shm.log };
            ngx::ngx_log_error!(NGX_LOG_EMERG, log, "relay_guard_zone: {msg}");
            NGX_ERROR as ngx_int_t
        }
    }
}

unsafe fn create_layout(ctx: &mut ZoneCtx, pool: *mut ngx_slab_pool_t) -> Result<(), String> {
    // SAFETY: pool is the zone's slab pool; only the master runs this, before workers exist.
    unsafe {
        let header = ngx_slab_calloc(pool, mem::size_of::<ZoneHeader>()) as *mut ZoneHeader;
        if header.is_null() {
            return Err("zone too small for its header".into());
        }
        let layout = MetricsLayout {
            max_keys: ctx.max_keys,
        };
        let mbytes = layout.bytes_needed().map_err(|e| e.to_string())?;
        // Slab allocations of a page or more are page-aligned, which Metrics needs (8).
        let region = ngx_slab_calloc(pool, mbytes) as *mut u8;
        if region.is_null() {
            return Err(format!(
                "zone too small for metrics of {} keys",
                ctx.max_keys
            ));
        }
        ctx.metrics = Some(Metrics::init(region, mbytes, layout).map_err(|e| e.to_string())?);
        // Every page left becomes nonce slots: capacity is exactly the rest of the zone.
        let free = (*pool).pfree * ngx_pagesize;
        let nslots = nonce_table::slots_for_bytes(free.saturating_sub(ngx_pagesize));
        let slots = ngx_slab_calloc(pool, nslots * mem::size_of::<Slot>()) as *mut Slot;
        if slots.is_null() || nslots == 0 {
            return Err(format!("cannot allocate {nslots} nonce slots"));
        }
        let secret = random_secret().ok_or("getrandom() failed")?;
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

/// Records (key id, nonce) unless already present, under the zone's lock.
///
/// # Safety
/// `ctx` must be the ZoneCtx of an initialised zone (after init_zone ran).
pub unsafe fn check_and_insert(
    ctx: &ZoneCtx,
    key_id: &[u8],
    nonce: &[u8],
    expires: u64,
    now: u64,
) -> Option<NonceVerdict> {
    let fp = ctx.fingerprinter.as_ref()?.fingerprint(key_id, nonce);
    if ctx.pool.is_null() || ctx.header.is_null() || ctx.slots.is_null() {
        return None;
    }
    // SAFETY: pool, header and slots point into the shared zone, valid for the cycle; the
    // slab mutex serialises every access to header and slots across processes.
    unsafe {
        ngx_shmtx_lock(&mut (*ctx.pool).mutex);
        let header = &mut *ctx.header;
        let slots = slice::from_raw_parts_mut(ctx.slots, header.nslots as usize);
        let insert = nonce_table::check_and_insert(slots, fp, expires, now);
        let warn_full = insert == Insert::Full && now >= header.last_full_warning + 10;
        if warn_full {
            header.last_full_warning = now;
        }
        let capacity = header.nslots;
        ngx_shmtx_unlock(&mut (*ctx.pool).mutex);
        Some(NonceVerdict {
            insert,
            warn_full,
            capacity,
        })
    }
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

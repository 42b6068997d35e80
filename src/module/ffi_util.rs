//! Conversions from nginx types to Rust slices, done once at the boundary.

use core::cell::RefCell;
use core::slice;

use core::ptr;

use super::error::ChainError;
use ngx::ffi::{
    ngx_chain_t, ngx_conf_t, ngx_list_part_t, ngx_pnalloc, ngx_pool_t, ngx_str_t, ngx_table_elt_t,
    off_t,
};

/// The bytes of an `ngx_str_t`.
///
/// # Safety
/// `s.data` must point to `s.len` readable bytes that outlive `'a` (or `s.len` is 0).
pub unsafe fn bytes<'a>(s: &ngx_str_t) -> &'a [u8] {
    if s.len == 0 || s.data.is_null() {
        &[]
    } else {
        // SAFETY: guaranteed by the caller.
        unsafe { slice::from_raw_parts(s.data, s.len) }
    }
}

/// The directive's arguments, name first.
///
/// # Safety
/// `cf` must be the `ngx_conf_t` nginx passed to a directive handler.
pub unsafe fn conf_args<'a>(cf: *mut ngx_conf_t) -> &'a [ngx_str_t] {
    // SAFETY: during a directive handler cf->args is an array of ngx_str_t.
    unsafe { (*(*cf).args).as_slice() }
}

/// Walks an `ngx_list_t` of headers.
///
/// # Safety
/// `part` must be the first part of a live header list; the elements must outlive `'a`.
pub unsafe fn for_each_header<'a>(
    mut part: *const ngx_list_part_t,
    mut f: impl FnMut(&'a ngx_table_elt_t),
) {
    while !part.is_null() {
        // SAFETY: each part holds `nelts` ngx_table_elt_t elements at `elts`.
        let elts =
            unsafe { slice::from_raw_parts((*part).elts as *const ngx_table_elt_t, (*part).nelts) };
        for h in elts {
            f(h);
        }
        // SAFETY: `next` is null or another part of the same list.
        part = unsafe { (*part).next };
    }
}

/// [`for_each_header`] with each element mutable (to repoint its value).
///
/// # Safety
/// `part` must be the first part of a live header list that nothing else uses during the call.
pub unsafe fn for_each_header_mut(
    mut part: *mut ngx_list_part_t,
    mut f: impl FnMut(&mut ngx_table_elt_t),
) {
    while !part.is_null() {
        // SAFETY: each part holds `nelts` ngx_table_elt_t elements at `elts`, ours for now.
        let elts = unsafe {
            slice::from_raw_parts_mut((*part).elts as *mut ngx_table_elt_t, (*part).nelts)
        };
        for h in elts {
            f(h);
        }
        // SAFETY: `next` is null or another part of the same list.
        part = unsafe { (*part).next };
    }
}

/// Copies `v` into `pool`. When the pool is exhausted the result is empty: for the callers
/// (a key id for variables, a masked log field) losing a detail beats failing the request.
///
/// # Safety
/// `pool` must be a live nginx pool; the copy lives until the pool is destroyed.
pub unsafe fn pool_copy(pool: *mut ngx_pool_t, v: &[u8]) -> ngx_str_t {
    // SAFETY: ngx_pnalloc returns null or `len` writable bytes owned by the pool.
    unsafe {
        let p = ngx_pnalloc(pool, v.len().max(1)) as *mut u8;
        if p.is_null() {
            return ngx_str_t {
                len: 0,
                data: ptr::null_mut(),
            };
        }
        ptr::copy_nonoverlapping(v.as_ptr(), p, v.len());
        ngx_str_t {
            len: v.len(),
            data: p,
        }
    }
}

/// Reads temp-file buffers in 64 KiB pieces: large enough to amortise pread, small enough to
/// stay in L2 while the bytes are hashed or scanned.
const FILE_CHUNK: usize = 64 * 1024;

thread_local! {
    /// The worker's read buffer for file-backed buffers, made on the first one and kept: a
    /// chain of memory buffers (nearly every response) never pays for one.
    static FILE_SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Calls `f` with the bytes of every buffer of a chain, in order: memory buffers as they are,
/// file-backed ones (a spooled body or response) read back with `pread` into the worker's
/// scratch buffer. Stops at the first read error or a file shorter than its buffer says.
///
/// # Safety
/// `cl` must be null or a live chain whose buffers and files stay valid during the call.
pub unsafe fn for_each_chain_bytes(
    mut cl: *const ngx_chain_t,
    mut f: impl FnMut(&[u8]),
) -> Result<(), ChainError> {
    while !cl.is_null() {
        // SAFETY: cl is a live chain link and its buf is valid (the caller's promise).
        let b = unsafe { &*(*cl).buf };
        if b.temporary() != 0 || b.memory() != 0 || b.mmap() != 0 {
            let len = (b.last as usize).saturating_sub(b.pos as usize);
            if len > 0 {
                // SAFETY: pos..last is the buffer's readable data.
                f(unsafe { slice::from_raw_parts(b.pos, len) });
            }
        } else if b.in_file() != 0 && !b.file.is_null() {
            // SAFETY: b.file is the open file holding file_pos..file_last.
            let fd = unsafe { (*b.file).fd };
            FILE_SCRATCH.with(|cell| {
                // `f` only hashes or scans, so this is never re-entered; a fresh buffer if it
                // ever were.
                let mut fresh = Vec::new();
                let mut held = cell.try_borrow_mut();
                let scratch = match held.as_mut() {
                    Ok(v) => &mut **v,
                    Err(_) => &mut fresh,
                };
                if scratch.len() < FILE_CHUNK {
                    scratch.resize(FILE_CHUNK, 0);
                }
                read_file_range(fd, b.file_pos, b.file_last, scratch, &mut f)
            })?;
        }
        // SAFETY: next is null or the next link of the same chain.
        cl = unsafe { (*cl).next };
    }
    Ok(())
}

fn read_file_range(
    fd: i32,
    mut pos: off_t,
    end: off_t,
    scratch: &mut [u8],
    f: &mut impl FnMut(&[u8]),
) -> Result<(), ChainError> {
    while pos < end {
        let want = ((end - pos) as usize).min(scratch.len());
        // SAFETY: scratch has at least `want` writable bytes; fd is an open file.
        let n = unsafe {
            libc::pread(
                fd,
                scratch.as_mut_ptr() as *mut core::ffi::c_void,
                want,
                pos,
            )
        };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(ChainError::Read(err));
        }
        if n == 0 {
            return Err(ChainError::Short { at: pos, end });
        }
        f(&scratch[..n as usize]);
        pos += n as off_t;
    }
    Ok(())
}

/// 32 bytes from the kernel's random source, or the error: secrets that key fingerprints must
/// never fall back to something guessable such as a pid.
pub fn random_32() -> Result<[u8; 32], std::io::Error> {
    let mut k = [0u8; 32];
    let mut filled = 0;
    while filled < k.len() {
        let rest = &mut k[filled..];
        // SAFETY: getrandom writes at most rest.len() bytes into rest.
        let n =
            unsafe { libc::getrandom(rest.as_mut_ptr() as *mut core::ffi::c_void, rest.len(), 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += n as usize;
    }
    Ok(k)
}

/// nginx's cached clock in milliseconds; what every worker's limits decide on.
pub fn now_ms() -> u64 {
    // SAFETY: ngx_cached_time points at nginx's current time slot, updated by this worker's
    // event loop; reading it by value is what nginx's own ngx_time() does.
    unsafe {
        let t = &*ngx::ffi::ngx_cached_time;
        (t.sec.max(0) as u64) * 1000 + t.msec as u64
    }
}

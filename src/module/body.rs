//! SHA-256 of the request body as nginx holds it after reading: in memory buffers, in a temp
//! file, or both, chunked encoding already removed.

use core::ffi::c_void;
use core::slice;

use ngx::ffi::{ngx_http_request_t, off_t};
use sha2::{Digest, Sha256};

use crate::auth::canonical::{hex_digest, EMPTY_BODY_SHA256_HEX};

/// Reads temp-file bodies in 64 KiB pieces: large enough to amortise pread, small enough to
/// stay in L2 while hashing.
const FILE_CHUNK: usize = 64 * 1024;

/// Lowercase hex SHA-256 of the body read so far (the whole body once reading completed).
///
/// # Safety
/// `r` must be a live request whose body reading has finished (or never started).
pub unsafe fn body_sha256_hex(r: *mut ngx_http_request_t) -> Result<[u8; 64], String> {
    // SAFETY: r is live; request_body is null or nginx's body descriptor.
    let rb = unsafe { (*r).request_body };
    if rb.is_null() || unsafe { (*rb).bufs.is_null() } {
        return Ok(*EMPTY_BODY_SHA256_HEX);
    }
    let mut hasher = Sha256::new();
    let mut scratch: Vec<u8> = Vec::new();
    // SAFETY: bufs is a chain of buffers owned by the request.
    let mut cl = unsafe { (*rb).bufs };
    while !cl.is_null() {
        // SAFETY: cl is a live chain link; its buf is valid.
        let b = unsafe { &*(*cl).buf };
        let in_memory = b.temporary() != 0 || b.memory() != 0 || b.mmap() != 0;
        if in_memory {
            let len = (b.last as usize).saturating_sub(b.pos as usize);
            if len > 0 {
                // SAFETY: pos..last is the buffer's readable data.
                hasher.update(unsafe { slice::from_raw_parts(b.pos, len) });
            }
        } else if b.in_file() != 0 && !b.file.is_null() {
            if scratch.is_empty() {
                scratch.resize(FILE_CHUNK, 0);
            }
            // SAFETY: b.file is the temp file holding file_pos..file_last of the body.
            let fd = unsafe { (*b.file).fd };
            hash_file_range(fd, b.file_pos, b.file_last, &mut hasher, &mut scratch)?;
        }
        // SAFETY: next is null or the next link.
        cl = unsafe { (*cl).next };
    }
    let digest: [u8; 32] = hasher.finalize().into();
    Ok(hex_digest(&digest))
}

fn hash_file_range(
    fd: i32,
    mut pos: off_t,
    end: off_t,
    hasher: &mut Sha256,
    scratch: &mut [u8],
) -> Result<(), String> {
    while pos < end {
        let want = ((end - pos) as usize).min(scratch.len());
        // SAFETY: scratch has at least `want` writable bytes; fd is the open temp file.
        let n = unsafe { libc::pread(fd, scratch.as_mut_ptr() as *mut c_void, want, pos) };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!(
                "pread() of the request body temp file failed: {err}"
            ));
        }
        if n == 0 {
            return Err(format!(
                "request body temp file ended at {pos}, expected {end}"
            ));
        }
        hasher.update(&scratch[..n as usize]);
        pos += n as off_t;
    }
    Ok(())
}

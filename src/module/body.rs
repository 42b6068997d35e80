//! SHA-256 of the request body as nginx holds it after reading: in memory buffers, in a temp
//! file, or both, chunked encoding already removed.

use sha2::{Digest, Sha256};

use super::error::GlueError;
use super::ffi_util::for_each_chain_bytes;
use super::req::Req;
use crate::auth::canonical::{hex_digest, EMPTY_BODY_SHA256_HEX};

/// Lowercase hex SHA-256 of the body read so far (the whole body once reading completed).
/// Call it only when body reading has finished or never started.
pub fn body_sha256_hex(req: Req<'_>) -> Result<[u8; 64], GlueError> {
    // SAFETY: the request is live; request_body is null or nginx's body descriptor, whose
    // chain is complete (reading finished) and owned by the request.
    let bufs = unsafe { (*req.as_ptr()).request_body.as_ref() }
        .map_or(core::ptr::null_mut(), |rb| rb.bufs);
    if bufs.is_null() {
        return Ok(*EMPTY_BODY_SHA256_HEX);
    }
    let mut hasher = Sha256::new();
    // SAFETY: bufs is the request's body chain, live and unchanged during the call.
    unsafe { for_each_chain_bytes(bufs, |piece| hasher.update(piece)) }?;
    let digest: [u8; 32] = hasher.finalize().into();
    Ok(hex_digest(&digest))
}

//! The string to sign of wire protocol v1. It is fed to the MAC piece by piece, so verifying a
//! request allocates nothing; `string_to_sign` builds the same bytes for tests and tools.

use super::headers::SignatureHeaders;

pub const SCHEME: &[u8] = b"RG1-HMAC-SHA256";

/// What the request itself contributes to the string to sign.
#[derive(Debug, Clone, Copy)]
pub struct RequestParts<'a> {
    pub method: &'a [u8],
    /// The request-target exactly as sent on the request line (path and query, unnormalised).
    pub target: &'a [u8],
    /// Lowercase hex SHA-256 of the body as received (after de-chunking).
    pub body_sha256_hex: &'a [u8; 64],
}

/// Calls `sink` with the pieces of the string to sign, in order. The seven lines are joined by
/// `\n` with no trailing newline.
pub fn for_each_piece(
    h: &SignatureHeaders<'_>,
    req: &RequestParts<'_>,
    mut sink: impl FnMut(&[u8]),
) {
    let lines: [&[u8]; 7] = [
        SCHEME,
        h.key_id,
        h.timestamp_raw,
        h.nonce,
        req.method,
        req.target,
        req.body_sha256_hex,
    ];
    for (i, line) in lines.iter().enumerate() {
        if i > 0 {
            sink(b"\n");
        }
        sink(line);
    }
}

pub fn string_to_sign(h: &SignatureHeaders<'_>, req: &RequestParts<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    for_each_piece(h, req, |p| out.extend_from_slice(p));
    out
}

/// Lowercase hex of a SHA-256 digest, without allocating.
pub fn hex_digest(digest: &[u8; 32]) -> [u8; 64] {
    let mut out = [0u8; 64];
    // encode_to_slice only fails on a length mismatch, which the types rule out.
    let _ = hex::encode_to_slice(digest, &mut out);
    out
}

/// SHA-256 of the empty body, which every bodiless request signs.
pub const EMPTY_BODY_SHA256_HEX: &[u8; 64] =
    b"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn empty_body_constant_is_sha256_of_nothing() {
        let d: [u8; 32] = Sha256::digest(b"").into();
        assert_eq!(&hex_digest(&d), EMPTY_BODY_SHA256_HEX);
    }
}

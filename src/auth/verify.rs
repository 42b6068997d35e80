//! Signature verification: the time window, then the MAC. The nonce check comes after both
//! (in the caller, against the shared store) so forged requests never fill the store.

use hmac::Mac;

use super::canonical::{for_each_piece, RequestParts};
use super::headers::SignatureHeaders;
use super::keys::{Key, KeyRing};
use super::outcome::{Outcome, Rejection};

/// `|now - timestamp| <= skew`, symmetric: a clock running ahead is as suspect as one behind.
pub fn check_window(timestamp: u64, now: u64, skew: u64) -> Result<(), Rejection> {
    if timestamp.abs_diff(now) <= skew {
        return Ok(());
    }
    let dir = if timestamp < now {
        "behind"
    } else {
        "ahead of"
    };
    Err(Rejection::new(
        Outcome::Stale,
        format!(
            "X-Timestamp {timestamp} is {}s {dir} the server's clock ({now}); the allowed window is ±{skew}s: check the client's clock",
            timestamp.abs_diff(now)
        ),
    ))
}

/// The key for `h.key_id`, or an UNKNOWN_KEY rejection.
pub fn lookup<'r>(ring: &'r KeyRing, key_id: &[u8]) -> Result<&'r Key, Rejection> {
    ring.get(key_id).ok_or_else(|| {
        Rejection::new(
            Outcome::UnknownKey,
            format!("unknown key id {:?}", String::from_utf8_lossy(key_id)),
        )
    })
}

/// True when any of the key's secrets (rotation) produced `h.signature`.
pub fn signature_matches(key: &Key, h: &SignatureHeaders<'_>, req: &RequestParts<'_>) -> bool {
    key.mac_matches(
        |mac| for_each_piece(h, req, |p| mac.update(p)),
        &h.signature,
    )
}

pub fn verify_signature(
    key: &Key,
    h: &SignatureHeaders<'_>,
    req: &RequestParts<'_>,
) -> Result<(), Rejection> {
    if key.macs.is_empty() {
        return Err(Rejection::new(
            Outcome::UnknownKey,
            format!("key id {:?} has no signing secret (token only)", key.id),
        ));
    }
    if signature_matches(key, h, req) {
        Ok(())
    } else {
        Err(Rejection::new(
            Outcome::BadSignature,
            "signature mismatch: X-Signature does not match the request (method, target, timestamp, nonce or body differ from what was signed, or the secret is wrong)",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_is_symmetric_and_inclusive() {
        assert!(check_window(970, 1000, 30).is_ok());
        assert!(check_window(1030, 1000, 30).is_ok());
        let e = check_window(969, 1000, 30).unwrap_err();
        assert_eq!(e.outcome, Outcome::Stale);
        assert!(e.message.contains("31s behind"), "{}", e.message);
        assert!(e.message.contains("(1000)"));
        assert!(check_window(1031, 1000, 30)
            .unwrap_err()
            .message
            .contains("ahead"));
        assert!(check_window(u64::MAX, 0, 30).is_err());
    }
}

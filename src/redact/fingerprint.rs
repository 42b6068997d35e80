//! Keyed fingerprints: `[redacted:1a2b3c4d]` lets an operator correlate requests that carried the
//! same secret without the log revealing it. The key is random per boot, so the 32 logged bits
//! cannot be checked against a guessed secret offline.
//!
//! SipHash-1-3 (64-bit output) with a 128-bit key is a PRF, which is all a fingerprint needs; HMAC-SHA256 did
//! the same job for ~25x the instructions (callgrind, per masked secret), on every request
//! that carries a key.

use core::hash::Hasher;

use siphasher::sip::SipHasher13;
use siphasher::sip128::{Hasher128, SipHasher13 as SipHasher13x128};

/// Text written in place of a secret: `OPEN` + 8 hex + `CLOSE`.
pub(crate) const OPEN: &[u8] = b"[redacted:";
pub(crate) const CLOSE: &[u8] = b"]";
/// Length of one rendered mask, used to size the output buffer.
pub(crate) const MASK_LEN: usize = OPEN.len() + 8 + CLOSE.len();

/// First 4 bytes of SipHash-1-3-64(key, secret), little-endian, as 8 lowercase hex ASCII characters.
#[cfg(test)]
pub fn fingerprint(key: &[u8; 32], secret: &[u8]) -> [u8; 8] {
    Fingerprinter::new(key).fingerprint(secret)
}

/// SipHash's 128-bit key from the 32-byte per-boot key (every byte counts).
fn sip_key(key: &[u8; 32]) -> [u8; 16] {
    let mut lo = [0u8; 16];
    lo.copy_from_slice(&key[..16]);
    let mut h = SipHasher13x128::new_with_key(&lo);
    h.write(&key[16..]);
    h.finish128().as_bytes()
}

/// Keyed once at configuration time.
#[derive(Clone)]
pub(crate) struct Fingerprinter {
    keyed: SipHasher13,
}

impl Fingerprinter {
    pub(crate) fn new(key: &[u8; 32]) -> Self {
        Fingerprinter {
            keyed: SipHasher13::new_with_key(&sip_key(key)),
        }
    }

    pub(crate) fn fingerprint(&self, secret: &[u8]) -> [u8; 8] {
        let mut h = self.keyed;
        h.write(secret);
        // 64-bit output: the mask shows 32 bits, and the 128-bit finish costs six more rounds.
        let tag = h.finish().to_le_bytes();
        let mut out = [0u8; 8];
        for (i, b) in tag.iter().take(4).enumerate() {
            out[2 * i] = HEX[usize::from(b >> 4)];
            out[2 * i + 1] = HEX[usize::from(b & 0x0f)];
        }
        out
    }

    /// Appends `[redacted:xxxxxxxx]` for `secret`.
    pub(crate) fn write_mask(&self, secret: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(OPEN);
        out.extend_from_slice(&self.fingerprint(secret));
        out.extend_from_slice(CLOSE);
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_for_same_key_and_secret() {
        let k = [7u8; 32];
        assert_eq!(fingerprint(&k, b"secret"), fingerprint(&k, b"secret"));
        assert_eq!(
            Fingerprinter::new(&k).fingerprint(b"secret"),
            fingerprint(&k, b"secret")
        );
    }

    #[test]
    fn differs_across_keys_and_secrets() {
        let a = [1u8; 32];
        let b = [2u8; 32];
        assert_ne!(fingerprint(&a, b"secret"), fingerprint(&b, b"secret"));
        assert_ne!(fingerprint(&a, b"secret"), fingerprint(&a, b"secreT"));
        assert_ne!(fingerprint(&a, b""), fingerprint(&a, b"\0"));
    }

    #[test]
    fn is_first_four_tag_bytes_in_lowercase_hex() {
        let k = [9u8; 32];
        let mut h = SipHasher13::new_with_key(&sip_key(&k));
        h.write(b"abc");
        let want = hex::encode(&h.finish().to_le_bytes()[..4]);
        assert_eq!(&fingerprint(&k, b"abc")[..], want.as_bytes());
    }

    #[test]
    fn key_halves_both_matter() {
        let mut a = [0u8; 32];
        let mut b = [0u8; 32];
        a[3] = 1;
        b[19] = 1;
        assert_ne!(fingerprint(&a, b"s"), fingerprint(&[0u8; 32], b"s"));
        assert_ne!(fingerprint(&b, b"s"), fingerprint(&[0u8; 32], b"s"));
    }

    #[test]
    fn mask_has_fixed_shape() {
        let f = Fingerprinter::new(&[0u8; 32]);
        let mut out = Vec::new();
        f.write_mask(b"x", &mut out);
        assert_eq!(out.len(), MASK_LEN);
        assert!(out.starts_with(b"[redacted:") && out.ends_with(b"]"));
    }
}

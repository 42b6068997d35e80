//! Syntax of the four signature headers (wire protocol v1). These are the cheap checks that run
//! before the clock, the MAC or the body are looked at.

use super::outcome::{Outcome, Rejection};

pub const KEY_ID_MAX: usize = 64;
pub const NONCE_MIN: usize = 16;
pub const NONCE_MAX: usize = 128;
/// Ten digits cover Unix time until the year 2286; longer is an attack or a bug.
const TIMESTAMP_MAX_DIGITS: usize = 10;

/// The signature headers as they arrived, each `None` when absent.
#[derive(Debug, Default, Clone, Copy)]
pub struct RawSignatureHeaders<'a> {
    pub key_id: Option<&'a [u8]>,
    pub timestamp: Option<&'a [u8]>,
    pub nonce: Option<&'a [u8]>,
    pub signature: Option<&'a [u8]>,
}

impl RawSignatureHeaders<'_> {
    /// True when the client attempted signing at all (any one header present); `any` mode uses
    /// this to choose signature over token.
    pub fn any_present(&self) -> bool {
        self.key_id.is_some()
            || self.timestamp.is_some()
            || self.nonce.is_some()
            || self.signature.is_some()
    }
}

/// Syntactically valid signature headers.
#[derive(Debug, Clone, Copy)]
pub struct SignatureHeaders<'a> {
    pub key_id: &'a [u8],
    /// The timestamp exactly as sent: it is part of the string to sign.
    pub timestamp_raw: &'a [u8],
    pub timestamp: u64,
    pub nonce: &'a [u8],
    pub signature: [u8; 32],
}

pub fn is_key_id(v: &[u8]) -> bool {
    (1..=KEY_ID_MAX).contains(&v.len())
        && v.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

pub fn is_nonce(v: &[u8]) -> bool {
    (NONCE_MIN..=NONCE_MAX).contains(&v.len())
        && v.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'~' | b'-'))
}

/// Decimal digits only: no sign, no spaces, no fraction.
pub fn parse_unix_seconds(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > TIMESTAMP_MAX_DIGITS || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')))
}

/// 64 hex digits, either case.
pub fn parse_mac_hex(v: &[u8]) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if v.len() != 64 {
        return None;
    }
    hex::decode_to_slice(v, &mut out).ok()?;
    Some(out)
}

impl<'a> RawSignatureHeaders<'a> {
    pub fn parse(&self) -> Result<SignatureHeaders<'a>, Rejection> {
        let (Some(key_id), Some(ts), Some(nonce), Some(sig)) =
            (self.key_id, self.timestamp, self.nonce, self.signature)
        else {
            let missing: Vec<&str> = [
                ("X-Key-Id", self.key_id),
                ("X-Timestamp", self.timestamp),
                ("X-Nonce", self.nonce),
                ("X-Signature", self.signature),
            ]
            .iter()
            .filter(|(_, v)| v.is_none())
            .map(|(n, _)| *n)
            .collect();
            return Err(Rejection::new(
                Outcome::Missing,
                format!("missing request header {}", missing.join(", ")),
            ));
        };
        if !is_key_id(key_id) {
            return Err(malformed(
                "X-Key-Id must be 1-64 characters of A-Z a-z 0-9 . _ -",
            ));
        }
        let Some(timestamp) = parse_unix_seconds(ts) else {
            return Err(malformed(
                "X-Timestamp must be Unix time in seconds, decimal digits only",
            ));
        };
        if !is_nonce(nonce) {
            return Err(malformed(
                "X-Nonce must be 16-128 characters of A-Z a-z 0-9 . _ ~ -",
            ));
        }
        let Some(signature) = parse_mac_hex(sig) else {
            return Err(malformed("X-Signature must be 64 hex digits (HMAC-SHA256)"));
        };
        Ok(SignatureHeaders {
            key_id,
            timestamp_raw: ts,
            timestamp,
            nonce,
            signature,
        })
    }
}

fn malformed(msg: &str) -> Rejection {
    Rejection::new(Outcome::Malformed, msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw<'a>(k: &'a str, t: &'a str, n: &'a str, s: &'a str) -> RawSignatureHeaders<'a> {
        RawSignatureHeaders {
            key_id: Some(k.as_bytes()),
            timestamp: Some(t.as_bytes()),
            nonce: Some(n.as_bytes()),
            signature: Some(s.as_bytes()),
        }
    }
    const SIG: &str = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";

    #[test]
    fn accepts_the_documented_alphabet() {
        let h = raw("alice.team_1-x", "1767225600", "abcDEF0123456789._~-", SIG)
            .parse()
            .unwrap();
        assert_eq!(h.timestamp, 1_767_225_600);
        assert_eq!(h.signature[31], 0xff);
    }

    #[test]
    fn names_every_missing_header() {
        let mut r = raw("a", "1", "n", SIG);
        r.nonce = None;
        r.signature = None;
        let e = r.parse().unwrap_err();
        assert_eq!(e.outcome, Outcome::Missing);
        assert_eq!(e.message, "missing request header X-Nonce, X-Signature");
    }

    #[test]
    fn rejects_bad_syntax() {
        let nonce = "0123456789abcdef";
        let long = "k".repeat(65);
        for (k, t, n, s, what) in [
            ("a/b", "1", nonce, SIG, "X-Key-Id"),
            (long.as_str(), "1", nonce, SIG, "X-Key-Id"),
            ("", "1", nonce, SIG, "X-Key-Id"),
            ("a", "+1", nonce, SIG, "X-Timestamp"),
            ("a", "1.5", nonce, SIG, "X-Timestamp"),
            ("a", "", nonce, SIG, "X-Timestamp"),
            ("a", "12345678901", nonce, SIG, "X-Timestamp"),
            ("a", "1", "0123456789abcde", SIG, "X-Nonce"),
            ("a", "1", "0123456789abcde f", SIG, "X-Nonce"),
            ("a", "1", nonce, &SIG[1..], "X-Signature"),
            ("a", "1", nonce, &SIG.replace('0', "g"), "X-Signature"),
        ] {
            let e = raw(k, t, n, s).parse().unwrap_err();
            assert_eq!(e.outcome, Outcome::Malformed, "{what}");
            assert!(e.message.starts_with(what), "{}", e.message);
        }
        let max_nonce = "n".repeat(NONCE_MAX);
        assert!(raw("a", "1", &max_nonce, SIG).parse().is_ok());
        let over = "n".repeat(NONCE_MAX + 1);
        assert!(raw("a", "1", &over, SIG).parse().is_err());
    }
}

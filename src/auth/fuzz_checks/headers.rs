use crate::auth::headers::{is_key_id, is_nonce, RawSignatureHeaders};
use crate::auth::outcome::Outcome;

/// Input: key id, timestamp, nonce and signature, 0xff-separated (fewer fields: headers absent).
/// Promises: a missing header is `MISSING` naming exactly the absent ones; anything accepted is
/// in the documented alphabets and lengths, with the timestamp's decimal value and the
/// signature's bytes; a rejection is `MALFORMED` naming the first bad header and quoting none.
pub fn check_headers(data: &[u8]) {
    let [key_id, timestamp, nonce, signature] = super::fields::<4>(data);
    let raw = RawSignatureHeaders {
        key_id,
        timestamp,
        nonce,
        signature,
    };
    // The first field is always there, so signing was attempted.
    assert!(raw.any_present());
    match raw.parse() {
        Ok(h) => {
            assert!(is_key_id(h.key_id) && is_nonce(h.nonce));
            assert_eq!(Some(h.key_id), key_id);
            assert_eq!(Some(h.nonce), nonce);
            assert_eq!(Some(h.timestamp_raw), timestamp);
            let digits = std::str::from_utf8(h.timestamp_raw).expect("digits are ASCII");
            assert!(h.timestamp_raw.len() <= 10 && h.timestamp_raw.iter().all(u8::is_ascii_digit));
            assert_eq!(digits.parse::<u64>().ok(), Some(h.timestamp));
            let sig = signature.expect("parsed");
            assert!(hex::encode(h.signature)
                .as_bytes()
                .eq_ignore_ascii_case(sig));
        }
        Err(rej) => {
            let absent = [key_id, timestamp, nonce, signature]
                .iter()
                .any(Option::is_none);
            if absent {
                assert_eq!(rej.outcome, Outcome::Missing);
                for (name, v) in [
                    ("X-Key-Id", key_id),
                    ("X-Timestamp", timestamp),
                    ("X-Nonce", nonce),
                    ("X-Signature", signature),
                ] {
                    assert_eq!(rej.message.contains(name), v.is_none(), "{}", rej.message);
                }
            } else {
                assert_eq!(rej.outcome, Outcome::Malformed);
                assert!(rej.message.starts_with("X-"), "{}", rej.message);
            }
        }
    }
}

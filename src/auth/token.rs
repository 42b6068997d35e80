//! Client tokens for tools that cannot sign each request (Claude Code): static tokens, stored in
//! the keys file only as SHA-256, and short-lived `rgt1` tokens minted from the signing secret.
//!
//! `rgt1.<key id>.<expiry unix seconds>.<hex HMAC-SHA256(secret, "rgt1.<key id>.<expiry>")>`

use hmac::Mac;
use sha2::{Digest, Sha256};

use super::headers::{is_key_id, parse_mac_hex, parse_unix_seconds};
use super::keys::{Key, KeyRing};
use super::outcome::{Outcome, Rejection};

pub const PREFIX: &[u8] = b"rgt1.";

/// The credential a request presented in `Authorization: Bearer …` or `x-api-key: …`
/// (Bearer first, as Claude Code's ANTHROPIC_AUTH_TOKEN takes precedence there too).
pub fn credential<'a>(
    authorization: Option<&'a [u8]>,
    x_api_key: Option<&'a [u8]>,
) -> Option<&'a [u8]> {
    let [bearer, api_key] = credentials(authorization, x_api_key);
    bearer.or(api_key)
}

/// Both places a client can put a credential, each `None` when absent or empty. Redaction masks
/// every value a client presented, wherever else it was pasted.
pub fn credentials<'a>(
    authorization: Option<&'a [u8]>,
    x_api_key: Option<&'a [u8]>,
) -> [Option<&'a [u8]>; 2] {
    let bearer = authorization
        .filter(|a| a.len() > 7 && a[..7].eq_ignore_ascii_case(b"bearer "))
        .map(|a| a[7..].trim_ascii())
        .filter(|t| !t.is_empty());
    let api_key = x_api_key.map(<[u8]>::trim_ascii).filter(|t| !t.is_empty());
    [bearer, api_key]
}

pub fn is_short_lived(token: &[u8]) -> bool {
    token.starts_with(PREFIX)
}

struct ShortLived<'a> {
    key_id: &'a [u8],
    expiry: u64,
    /// Everything the MAC covers: `rgt1.<key id>.<expiry>`.
    signed: &'a [u8],
    mac: [u8; 32],
}

fn parse_short_lived(token: &[u8]) -> Option<ShortLived<'_>> {
    let rest = token.strip_prefix(PREFIX)?;
    // Split from the right: key ids may themselves contain dots.
    let mut parts = rest.rsplitn(3, |&c| c == b'.');
    let mac_hex = parts.next()?;
    let expiry_raw = parts.next()?;
    let key_id = parts.next()?;
    if !is_key_id(key_id) {
        return None;
    }
    let expiry = parse_unix_seconds(expiry_raw)?;
    let mac = parse_mac_hex(mac_hex)?;
    let signed_len = token.len() - mac_hex.len() - 1;
    Some(ShortLived {
        key_id,
        expiry,
        signed: &token[..signed_len],
        mac,
    })
}

/// Verifies any client token against the ring; returns the key it belongs to.
pub fn verify<'r>(
    ring: &'r KeyRing,
    token: &[u8],
    now: u64,
    max_ttl: u64,
) -> Result<&'r Key, Rejection> {
    if is_short_lived(token) {
        verify_short_lived(ring, token, now, max_ttl)
    } else {
        verify_static(ring, token)
    }
}

fn verify_static<'r>(ring: &'r KeyRing, token: &[u8]) -> Result<&'r Key, Rejection> {
    let digest: [u8; 32] = Sha256::digest(token).into();
    ring.key_for_token_hash(&digest)
        .ok_or_else(|| Rejection::new(Outcome::BadToken, "unknown token"))
}

fn verify_short_lived<'r>(
    ring: &'r KeyRing,
    token: &[u8],
    now: u64,
    max_ttl: u64,
) -> Result<&'r Key, Rejection> {
    let t = parse_short_lived(token).ok_or_else(|| {
        Rejection::new(
            Outcome::Malformed,
            "malformed token: expected rgt1.<key id>.<expiry>.<64 hex digits>",
        )
    })?;
    let key = ring.get(t.key_id).ok_or_else(|| {
        Rejection::new(
            Outcome::UnknownKey,
            format!(
                "unknown key id {:?} in token",
                String::from_utf8_lossy(t.key_id)
            ),
        )
    })?;
    let genuine = key.mac_matches(|mac| mac.update(t.signed), &t.mac);
    if !genuine {
        return Err(Rejection::new(
            Outcome::BadToken,
            "token signature mismatch (minted with another secret, or altered)",
        ));
    }
    // Time checks after the MAC, so "expired" is only ever said of a genuine token.
    if now > t.expiry {
        return Err(Rejection::new(
            Outcome::Expired,
            format!(
                "token expired at {} (server time {now}): mint a new one",
                t.expiry
            ),
        ));
    }
    if t.expiry - now > max_ttl {
        return Err(Rejection::new(
            Outcome::TtlTooLong,
            format!(
                "token expiry {} is more than {max_ttl}s ahead of the server's clock ({now})",
                t.expiry
            ),
        ));
    }
    Ok(key)
}

/// Mints a short-lived token (tests and tools; clients normally use scripts/rg-mint-token).
pub fn mint(key_id: &str, secret: &[u8], expiry: u64) -> String {
    let signed = format!("rgt1.{key_id}.{expiry}");
    // new_from_slice accepts any key length for HMAC; the Err arm is unreachable.
    let tag = match super::keys::HmacSha256::new_from_slice(secret) {
        Ok(mut m) => {
            m.update(signed.as_bytes());
            hex::encode(m.finalize().into_bytes())
        }
        Err(_) => String::new(),
    };
    format!("{signed}.{tag}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> KeyRing {
        let h = hex::encode(Sha256::digest(b"static-token-0123456789"));
        KeyRing::parse(
            "k",
            format!(
                r#"{{"keys":[{{"id":"cc","secrets":["0123456789abcdef-secret"],"token_sha256":["{h}"]}}]}}"#
            )
            .as_bytes(),
        )
        .unwrap()
    }

    #[test]
    fn credential_prefers_bearer_then_x_api_key() {
        assert_eq!(
            credential(Some(b"Bearer abc"), Some(b"xyz")),
            Some(&b"abc"[..])
        );
        assert_eq!(credential(Some(b"bearer  abc "), None), Some(&b"abc"[..]));
        assert_eq!(
            credential(Some(b"Basic abc"), Some(b"xyz")),
            Some(&b"xyz"[..])
        );
        assert_eq!(credential(Some(b"Bearer "), None), None);
        assert_eq!(credential(None, None), None);
    }

    #[test]
    fn static_and_short_lived() {
        let r = ring();
        assert_eq!(
            verify(&r, b"static-token-0123456789", 0, 3600).unwrap().id,
            "cc"
        );
        assert_eq!(
            verify(&r, b"nope", 0, 3600).unwrap_err().outcome,
            Outcome::BadToken
        );
        let t = mint("cc", b"0123456789abcdef-secret", 2000);
        assert!(verify(&r, t.as_bytes(), 1000, 3600).is_ok());
        assert_eq!(
            verify(&r, t.as_bytes(), 2001, 3600).unwrap_err().outcome,
            Outcome::Expired
        );
        let far = mint("cc", b"0123456789abcdef-secret", 1000 + 3601);
        assert_eq!(
            verify(&r, far.as_bytes(), 1000, 3600).unwrap_err().outcome,
            Outcome::TtlTooLong
        );
        assert!(verify(
            &r,
            mint("cc", b"0123456789abcdef-secret", 4600).as_bytes(),
            1000,
            3600
        )
        .is_ok());
        let forged = mint("cc", b"another-secret-xxxxxxxx", 2000);
        assert_eq!(
            verify(&r, forged.as_bytes(), 1000, 3600)
                .unwrap_err()
                .outcome,
            Outcome::BadToken
        );
        let dotted = mint("c.c", b"0123456789abcdef-secret", 2000);
        assert_eq!(
            verify(&r, dotted.as_bytes(), 1000, 3600)
                .unwrap_err()
                .outcome,
            Outcome::UnknownKey
        );
        let unknown = mint("zz", b"0123456789abcdef-secret", 2000);
        assert_eq!(
            verify(&r, unknown.as_bytes(), 1000, 3600)
                .unwrap_err()
                .outcome,
            Outcome::UnknownKey
        );
        for bad in [
            "rgt1.",
            "rgt1.cc",
            "rgt1.cc.12x.00",
            "rgt1.cc.1.abc",
            "rgt1.c/c.1.00",
        ] {
            assert_eq!(
                verify(&r, bad.as_bytes(), 0, 3600).unwrap_err().outcome,
                Outcome::Malformed,
                "{bad}"
            );
        }
    }
}

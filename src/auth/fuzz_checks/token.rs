use hmac::Mac;
use sha2::{Digest, Sha256};

use crate::auth::keys::{HmacSha256, KeyRing};
use crate::auth::outcome::Outcome;
use crate::auth::token::{credential, credentials, mint, verify};

const SECRET: &[u8] = b"fuzz-secret-0123456789";
const STATIC: &[u8] = b"rgs1_fuzz-static-token-0123456789";

fn ring() -> KeyRing {
    let doc = format!(
        r#"{{"keys":[{{"id":"k.1","secrets":["{}"],"token_sha256":"{}"}},{{"id":"t","token_sha256":["{}"]}}]}}"#,
        String::from_utf8_lossy(SECRET),
        hex::encode(Sha256::digest(STATIC)),
        hex::encode(Sha256::digest(b"other-static-token")),
    );
    KeyRing::parse("fuzz", doc.as_bytes()).expect("the fuzz ring is valid")
}

/// Input: an Authorization value, an x-api-key value and a token, 0xff-separated; the first 8
/// bytes of the token field also set the clock. Promises: `credential` returns a trimmed,
/// non-empty part of what was sent, Bearer first; a token is accepted only when it is the
/// static token of a key or a short-lived token carrying the MAC of its own signed part under
/// one of the key's secrets, unexpired and within the TTL; a genuine minted token verifies.
pub fn check_token(data: &[u8]) {
    let [authorization, x_api_key, token] = super::fields::<3>(data);
    let [bearer, api_key] = credentials(authorization, x_api_key);
    for c in [bearer, api_key].into_iter().flatten() {
        assert!(!c.is_empty() && c.trim_ascii() == c);
    }
    assert_eq!(credential(authorization, x_api_key), bearer.or(api_key));

    let ring = ring();
    let token = token.unwrap_or(data);
    let now = token
        .iter()
        .take(8)
        .fold(0u64, |n, &b| n << 8 | u64::from(b))
        % 4_000_000_000;
    let max_ttl = 3600;
    match verify(&ring, token, now, max_ttl) {
        Ok(key) if token.starts_with(b"rgt1.") => {
            let mac_at = token
                .iter()
                .rposition(|&c| c == b'.')
                .expect("rgt1 has dots");
            let (signed, mac_hex) = (&token[..mac_at], &token[mac_at + 1..]);
            let mut m = HmacSha256::new_from_slice(SECRET).expect("any length");
            m.update(signed);
            let want = hex::encode(m.finalize().into_bytes());
            assert!(want.as_bytes().eq_ignore_ascii_case(mac_hex));
            assert_eq!(key.id, "k.1");
            let expiry: u64 = std::str::from_utf8(
                &signed[signed.iter().rposition(|&c| c == b'.').expect("expiry") + 1..],
            )
            .expect("digits")
            .parse()
            .expect("digits");
            assert!(now <= expiry && expiry - now <= max_ttl);
        }
        Ok(key) => {
            let digest: [u8; 32] = Sha256::digest(token).into();
            assert!(key.token_hashes.contains(&digest));
        }
        Err(rej) => {
            assert_ne!(rej.outcome, Outcome::Ok);
            // The message may quote the token's own key id, which the client chose; never the
            // server's secret otherwise.
            let secret = String::from_utf8_lossy(SECRET);
            let sent = String::from_utf8_lossy(token);
            assert!(!rej.message.contains(&*secret) || sent.contains(&*secret));
        }
    }
    // Whatever the clock, a token minted for it within the TTL verifies.
    let genuine = mint("k.1", SECRET, now + now % (max_ttl + 1));
    assert!(
        verify(&ring, genuine.as_bytes(), now, max_ttl).is_ok(),
        "{genuine}"
    );
}

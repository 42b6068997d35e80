//! Checks the shared test vectors (t/data/vectors.json), which the Python client and the
//! nginx suite also check, so all three agree on the wire protocol byte for byte.

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::canonical::{hex_digest, string_to_sign, RequestParts};
use super::headers::RawSignatureHeaders;
use super::keys::KeyRing;
use super::outcome::Outcome;
use super::{token, verify};

const VECTORS: &str = include_str!("../../t/data/vectors.json");

fn vectors() -> Value {
    serde_json::from_str(VECTORS).expect("t/data/vectors.json is valid JSON")
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str()
        .unwrap_or_else(|| panic!("vector field {k} missing: {v}"))
}

fn body(v: &Value) -> Vec<u8> {
    use base64_decode as b64;
    b64(s(v, "body_b64"))
}

/// A tiny standard base64 decoder, so tests need no extra crate.
fn base64_decode(text: &str) -> Vec<u8> {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes().filter(|&c| c != b'=') {
        let d = A.iter().position(|&x| x == c).expect("base64 digit") as u32;
        acc = (acc << 6) | d;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

fn ring_for(key_id: &str, secret: &str) -> KeyRing {
    let doc = serde_json::json!({"keys": [{"id": key_id, "secrets": [secret]}]});
    KeyRing::parse("vectors", doc.to_string().as_bytes()).expect("vector key loads")
}

/// Runs the server's checks (minus clock and nonce) on one signature vector.
fn check(v: &Value) -> Result<Vec<u8>, Outcome> {
    let raw = RawSignatureHeaders {
        key_id: Some(s(v, "key_id").as_bytes()),
        timestamp: Some(s(v, "timestamp").as_bytes()),
        nonce: Some(s(v, "nonce").as_bytes()),
        signature: Some(s(v, "signature").as_bytes()),
    };
    let h = raw.parse().map_err(|r| r.outcome)?;
    let digest: [u8; 32] = Sha256::digest(body(v)).into();
    let body_hex = hex_digest(&digest);
    let parts = RequestParts {
        method: s(v, "method").as_bytes(),
        target: s(v, "target").as_bytes(),
        body_sha256_hex: &body_hex,
    };
    let ring = ring_for(s(v, "key_id"), s(v, "secret"));
    let key = verify::lookup(&ring, h.key_id).map_err(|r| r.outcome)?;
    verify::verify_signature(key, &h, &parts).map_err(|r| r.outcome)?;
    Ok(string_to_sign(&h, &parts))
}

#[test]
fn valid_signatures_verify_and_match_the_string_to_sign() {
    let all = vectors();
    let valid = all["signature"]["valid"].as_array().unwrap();
    assert!(valid.len() >= 8);
    for v in valid {
        let sts = check(v).unwrap_or_else(|o| panic!("{}: {o:?}", s(v, "name")));
        assert_eq!(
            String::from_utf8(sts).unwrap(),
            s(v, "string_to_sign"),
            "{}",
            s(v, "name")
        );
        let digest: [u8; 32] = Sha256::digest(body(v)).into();
        assert_eq!(hex::encode(digest), s(v, "body_sha256"));
    }
}

#[test]
fn invalid_signatures_fail_for_the_stated_reason() {
    let all = vectors();
    for v in all["signature"]["invalid"].as_array().unwrap() {
        let want = match s(v, "expect") {
            "BAD_SIGNATURE" => Outcome::BadSignature,
            "MALFORMED" => Outcome::Malformed,
            other => panic!("unknown expectation {other}"),
        };
        assert_eq!(check(v).err(), Some(want), "{}", s(v, "name"));
    }
}

#[test]
fn tokens() {
    let all = vectors();
    for v in all["token"]["valid"].as_array().unwrap() {
        let ring = ring_for(s(v, "key_id"), s(v, "secret"));
        let now = v["now"].as_u64().unwrap();
        let ttl = v["max_ttl"].as_u64().unwrap();
        let key = token::verify(&ring, s(v, "token").as_bytes(), now, ttl)
            .unwrap_or_else(|r| panic!("{}: {r:?}", s(v, "name")));
        assert_eq!(key.id, s(v, "key_id"));
        let expiry = v["expiry"].as_u64().unwrap();
        assert_eq!(
            token::mint(s(v, "key_id"), s(v, "secret").as_bytes(), expiry),
            s(v, "token")
        );
    }
    for v in all["token"]["invalid"].as_array().unwrap() {
        let ring = ring_for(s(v, "key_id"), s(v, "secret"));
        let now = v["now"].as_u64().unwrap();
        let ttl = v["max_ttl"].as_u64().unwrap();
        let got = token::verify(&ring, s(v, "token").as_bytes(), now, ttl).map(|k| k.id.clone());
        // Only the "rgt1." prefix marks a short-lived token; the server looks any other string
        // up as a static token (opaque, operator-chosen), which can only fail as BAD_TOKEN.
        let want = if s(v, "token").starts_with("rgt1.") {
            s(v, "expect")
        } else {
            "BAD_TOKEN"
        };
        let got = got.err().map(|r| r.outcome.as_str());
        assert_eq!(got, Some(want), "{}", s(v, "name"));
    }
}

#[test]
fn static_tokens_hash_as_documented() {
    let all = vectors();
    for v in all["static_token"].as_array().unwrap() {
        assert_eq!(
            hex::encode(Sha256::digest(s(v, "token").as_bytes())),
            s(v, "token_sha256")
        );
        let doc =
            serde_json::json!({"keys": [{"id": s(v, "id"), "token_sha256": s(v, "token_sha256")}]});
        let ring = KeyRing::parse("v", doc.to_string().as_bytes()).unwrap();
        assert_eq!(
            token::verify(&ring, s(v, "token").as_bytes(), 0, 3600)
                .unwrap()
                .id,
            s(v, "id")
        );
    }
}

use hmac::Mac;
use serde_json::Value;

use crate::auth::headers::{is_key_id, parse_mac_hex};
use crate::auth::keys::{HmacSha256, KeyRing, KeysError, SECRET_MIN_LEN};
use crate::limits::Limits;

/// Strings shorter than this are not looked for in messages: they occur in any English text.
const LEAK_MIN: usize = 16;

/// The documented field names at least LEAK_MIN long.
const FIELD_NAMES: [&str; 2] = ["requests_per_minute", "concurrent_requests"];

/// Input: a keys file's bytes. Promises: an error names the file and a position and quotes no
/// string from the file except a valid key id; an accepted file is exactly the documented
/// shape (checked here independently, on serde_json's `Value`), and the ring holds every
/// entry's secrets and token hashes, and the same ring comes back from the re-serialized file.
pub fn check_keys_file(data: &[u8]) {
    let doc: Option<Value> = serde_json::from_slice(data).ok();
    match KeyRing::parse("keys.json", data) {
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.starts_with("keys.json: "), "{msg}");
            match &e {
                KeysError::Json { line, .. } | KeysError::Invalid { line, .. } => {
                    assert!(*line > 0, "{msg}")
                }
                KeysError::ByteOrderMark { .. } => {
                    assert!(data.starts_with(b"\xEF\xBB\xBF"), "{msg}")
                }
                KeysError::Read { .. } => panic!("parse cannot fail to read: {msg}"),
            }
            let Some(doc) = doc else { return };
            let mut strings = Vec::new();
            walk(&doc, &mut strings);
            // The one thing a message may quote is a valid key id, as `id "<id>"`.
            let rest = without_valid_ids(&msg);
            for s in strings {
                // Messages name the documented fields; a field name is no secret.
                if s.len() >= LEAK_MIN && !FIELD_NAMES.contains(&s) {
                    assert!(!rest.contains(s), "{msg} quotes {s:?}");
                }
            }
        }
        Ok(ring) => {
            let doc = doc.expect("an accepted keys file is JSON");
            let entries = documented_entries(&doc);
            assert_eq!(ring.len(), entries.len());
            for (id, secrets, tokens) in &entries {
                let key = ring.get(id.as_bytes()).expect("every entry is in the ring");
                assert_eq!(key.macs.len(), secrets.len());
                for s in secrets {
                    let mut m = HmacSha256::new_from_slice(s.as_bytes()).expect("any length");
                    m.update(b"probe");
                    let tag: [u8; 32] = m.finalize().into_bytes().into();
                    assert!(key.mac_matches(|m| m.update(b"probe"), &tag));
                }
                assert_eq!(key.token_hashes.len(), tokens.len());
                for t in tokens {
                    let h = parse_mac_hex(t.as_bytes()).expect("documented: 64 hex digits");
                    assert_eq!(ring.key_for_token_hash(&h).map(|k| &k.id), Some(id));
                }
            }
            check_limits(&doc, &ring);
            let again = serde_json::to_vec(&doc).expect("a Value serializes");
            let ring2 = KeyRing::parse("keys.json", &again).expect("the re-serialized file");
            assert_eq!(format!("{ring:?}").len(), format!("{ring2:?}").len());
            assert_eq!(ring2.len(), ring.len());
        }
    }
}

/// Every string in the document, values and object keys.
fn walk<'v>(v: &'v Value, out: &mut Vec<&'v str>) {
    match v {
        Value::String(s) => out.push(s),
        Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
        Value::Object(o) => {
            for (k, x) in o {
                out.push(k);
                walk(x, out);
            }
        }
        _ => {}
    }
}

/// `msg` with each `id "<valid key id>"` cut out (a valid id has no quote or backslash, so its
/// Debug form is itself in quotes).
fn without_valid_ids(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(at) = rest.find("id \"") {
        let (head, tail) = rest.split_at(at + 4);
        out.push_str(head);
        match tail.find('"') {
            Some(end) if is_key_id(&tail.as_bytes()[..end]) => rest = &tail[end..],
            _ => rest = tail,
        }
    }
    out.push_str(rest);
    out
}

type Entry = (String, Vec<String>, Vec<String>);

/// Limits as the pure validator reads them from the accepted document: the ring must hold
/// exactly these (the visitor-based reader and `Limits::from_json` on a Value agree).
fn check_limits(doc: &Value, ring: &KeyRing) {
    let parse = |v: &Value| Limits::from_json(v).expect("accepted limits validate");
    let default = doc.get("default_limits").map(parse);
    for e in doc["keys"].as_array().expect("\"keys\" is an array") {
        let key = ring
            .get(e["id"].as_str().expect("id").as_bytes())
            .expect("in the ring");
        let own = e.get("limits").map(parse);
        assert_eq!(key.own_limits, own);
        let want = own.or(default.clone()).filter(|l| !l.is_empty());
        assert_eq!(ring.limits(key), want.as_ref());
    }
}

/// The entries of a file in the documented shape; panics on anything else.
fn documented_entries(doc: &Value) -> Vec<Entry> {
    let top = doc.as_object().expect("top level is an object");
    assert!(
        top.keys().all(|k| k == "keys" || k == "default_limits"),
        "only \"keys\" and \"default_limits\" at the top"
    );
    let keys = top["keys"].as_array().expect("\"keys\" is an array");
    let strs = |v: &Value| -> Vec<String> {
        v.as_array()
            .expect("an array")
            .iter()
            .map(|s| s.as_str().expect("of strings").to_owned())
            .collect()
    };
    let mut out = Vec::new();
    for e in keys {
        let e = e.as_object().expect("each key is an object");
        for k in e.keys() {
            assert!(matches!(
                k.as_str(),
                "id" | "secrets" | "token_sha256" | "comment" | "limits"
            ));
        }
        let id = e["id"].as_str().expect("id is a string");
        assert!(is_key_id(id.as_bytes()));
        let secrets = e.get("secrets").map(strs).unwrap_or_default();
        assert!(secrets.iter().all(|s| s.len() >= SECRET_MIN_LEN));
        let tokens = match e.get("token_sha256") {
            None => Vec::new(),
            Some(Value::String(s)) => vec![s.clone()],
            Some(v) => strs(v),
        };
        if let Some(c) = e.get("comment") {
            assert!(c.is_string());
        }
        assert!(!secrets.is_empty() || !tokens.is_empty());
        out.push((id.to_owned(), secrets, tokens));
    }
    out
}

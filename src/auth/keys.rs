//! The keys file: which key ids exist, the secrets that sign for them (several during a
//! rotation) and the SHA-256 of their static client tokens.
//!
//! `{"keys": [{"id": "alice", "secrets": ["current", "previous"], "token_sha256": ["<hex>"]}]}`
//! (`token_sha256` may also be one string; `comment` is free text). keys_file.rs reads it.

use std::collections::HashMap;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::headers::parse_mac_hex;
use crate::limits::Limits;

pub type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// Editors on Windows save "UTF-8" with a byte order mark; JSON parsers may refuse it, and
    /// serde_json's "expected value at line 1 column 1" would not say what to change.
    #[error("{path}: the file starts with a UTF-8 byte order mark (bytes EF BB BF), which JSON does not allow: save it as UTF-8 without a BOM (line 1 column 1)")]
    ByteOrderMark { path: String },
    /// Not JSON at all. serde_json's syntax messages are fixed texts that quote nothing.
    #[error("{path}: invalid JSON at line {line} column {column}: {msg} (expected {{\"keys\": [{{\"id\": \"...\", \"secrets\": [\"...\"]}}]}})")]
    Json {
        path: String,
        line: usize,
        column: usize,
        msg: String,
    },
    /// JSON, but not a valid keys file. `msg` is one of keys_file's own texts: it names the
    /// entry, the field and what was expected, never a value from the file.
    #[error("{path}: {msg} (line {line} column {column})")]
    Invalid {
        path: String,
        line: usize,
        column: usize,
        msg: String,
    },
}

impl KeysError {
    pub(super) fn from_json(path: &str, e: &serde_json::Error) -> KeysError {
        let (line, column) = (e.line(), e.column());
        let full = e.to_string();
        // serde_json appends the position to its message; it is reported in its own fields.
        let msg = full
            .strip_suffix(&format!(" at line {line} column {column}"))
            .unwrap_or(&full)
            .to_owned();
        let path = path.to_owned();
        match e.classify() {
            serde_json::error::Category::Data => KeysError::Invalid {
                path,
                line,
                column,
                msg,
            },
            _ => KeysError::Json {
                path,
                line,
                column,
                msg,
            },
        }
    }
}

/// One client key. Secrets are kept as keyed MAC states, so verifying skips the key schedule.
pub struct Key {
    pub id: String,
    pub macs: Vec<HmacSha256>,
    pub token_hashes: Vec<[u8; 32]>,
    /// The key's own `"limits"`, if it states any (`{}` included); otherwise the file's
    /// `"default_limits"` apply: [`KeyRing::limits`] resolves which.
    pub own_limits: Option<Limits>,
}

impl Key {
    /// True when any of the key's secrets (rotation) gives `tag` as the MAC of what `feed`
    /// writes. Each comparison is constant-time (`verify_slice` uses `subtle`); which secret
    /// matched is not secret.
    pub fn mac_matches(&self, feed: impl Fn(&mut HmacSha256), tag: &[u8; 32]) -> bool {
        self.macs.iter().any(|base| {
            let mut mac = base.clone();
            feed(&mut mac);
            mac.verify_slice(tag).is_ok()
        })
    }
}

impl std::fmt::Debug for Key {
    // Never print secret material, even in a debug dump.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("id", &self.id)
            .field("secrets", &self.macs.len())
            .field("tokens", &self.token_hashes.len())
            .finish()
    }
}

#[derive(Debug, Default)]
pub struct KeyRing {
    by_id: HashMap<Vec<u8>, Key>,
    /// token SHA-256 -> key id, for static tokens.
    by_token: HashMap<[u8; 32], Vec<u8>>,
    /// `"default_limits"`: for keys without their own.
    pub(super) default_limits: Option<Limits>,
}

/// Shortest secret accepted: below 16 bytes an offline guess of the HMAC key gets cheap.
pub const SECRET_MIN_LEN: usize = 16;

impl KeyRing {
    /// Adds one validated entry (`id` is a valid key id, secrets are long enough). The error
    /// names only the problem: the caller prefixes the entry, and no value is quoted.
    pub(super) fn add(
        &mut self,
        id: &str,
        secrets: &[String],
        tokens: &[String],
        own_limits: Option<Limits>,
    ) -> Result<(), String> {
        if self.by_id.contains_key(id.as_bytes()) {
            return Err("is listed twice".to_owned());
        }
        let mut macs = Vec::with_capacity(secrets.len());
        for s in secrets {
            // HMAC takes keys of any length; the arm only keeps a panic out of config loading.
            let mac = HmacSha256::new_from_slice(s.as_bytes())
                .map_err(|_| "a secret cannot key HMAC-SHA256".to_owned())?;
            macs.push(mac);
        }
        let mut token_hashes = Vec::with_capacity(tokens.len());
        for (j, t) in tokens.iter().enumerate() {
            let h = parse_mac_hex(t.as_bytes()).ok_or_else(|| {
                format!(
                    "token_sha256 #{} is not 64 hex digits (it holds the token's SHA-256, not the token: `relay_guard_client.py hash-token TOKEN` prints it)",
                    j + 1
                )
            })?;
            if let Some(other) = self.by_token.get(&h) {
                return Err(format!(
                    "token_sha256 #{} also belongs to id {:?}",
                    j + 1,
                    String::from_utf8_lossy(other)
                ));
            }
            token_hashes.push(h);
        }
        // Only now, so a failed entry leaves the ring as it was.
        for h in &token_hashes {
            self.by_token.insert(*h, id.as_bytes().to_vec());
        }
        self.by_id.insert(
            id.as_bytes().to_vec(),
            Key {
                id: id.to_owned(),
                macs,
                token_hashes,
                own_limits,
            },
        );
        Ok(())
    }

    /// The limits that bind `key`: its own, else the file's default; `None` when that is
    /// no limit at all.
    pub fn limits<'a>(&'a self, key: &'a Key) -> Option<&'a Limits> {
        key.own_limits
            .as_ref()
            .or(self.default_limits.as_ref())
            .filter(|l| !l.is_empty())
    }

    /// Whether any key has a limit (they need the shared zone).
    pub fn has_limits(&self) -> bool {
        self.by_id.values().any(|k| self.limits(k).is_some())
    }

    pub fn get(&self, id: &[u8]) -> Option<&Key> {
        self.by_id.get(id)
    }

    /// The key whose static token hashes to `digest`. A hash-map probe is not a secret-dependent
    /// comparison that leaks the token: the lookup key is a SHA-256 the attacker cannot steer.
    pub fn key_for_token_hash(&self, digest: &[u8; 32]) -> Option<&Key> {
        self.by_token.get(digest).and_then(|id| self.by_id.get(id))
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_secrets_and_tokens() {
        let h = "ab".repeat(32);
        let doc = format!(
            r#"{{"keys":[{{"id":"alice","secrets":["0123456789abcdef","fedcba9876543210"]}},
                {{"id":"team-a","token_sha256":"{h}"}}]}}"#
        );
        let ring = KeyRing::parse("k.json", doc.as_bytes()).unwrap();
        assert_eq!(ring.len(), 2);
        assert_eq!(ring.get(b"alice").unwrap().macs.len(), 2);
        let d: [u8; 32] = [0xab; 32];
        assert_eq!(ring.key_for_token_hash(&d).unwrap().id, "team-a");
    }

    #[test]
    fn errors_name_the_file_and_the_problem() {
        for (doc, want) in [
            ("{", "k.json: invalid JSON at line 1"),
            (
                r#"{"keys":[{"id":"a/b","secrets":["0123456789abcdef"]}]}"#,
                "key #1: \"id\" must be 1-64 characters",
            ),
            (r#"{"keys":[{"id":"a"}]}"#, "key #1: id \"a\": has neither"),
            (
                "\u{feff}{\"keys\":[]}",
                "k.json: the file starts with a UTF-8 byte order mark",
            ),
            (
                r#"{"keys":[{"id":"a","secrets":["short"]}]}"#,
                "key #1: id \"a\": secret #1 is shorter than 16",
            ),
            (
                r#"{"keys":[{"id":"a","token_sha256":"xyz"}]}"#,
                "key #1: id \"a\": token_sha256 #1 is not 64 hex",
            ),
            (
                r#"{"keys":[{"id":"a","secrets":["0123456789abcdef"]},{"id":"a","secrets":["0123456789abcdef"]}]}"#,
                "key #2: id \"a\": is listed twice (line 1 column 92)",
            ),
            (r#"{"kees":[]}"#, "unknown top-level field"),
            (
                r#"{"keys":[{"id":"a","secret":[]}]}"#,
                "key #1: id \"a\": unknown field",
            ),
            (
                r#"{"keys":[{"secrets":["0123456789abcdef"]}]}"#,
                "missing \"id\"",
            ),
            ("{}", "missing \"keys\""),
        ] {
            let e = KeyRing::parse("k.json", doc.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{e} lacks {want}");
            assert!(e.starts_with("k.json: "), "{e}");
            assert!(e.contains("line 1 column "), "{e}");
        }
    }

    /// The keys file's values, each put where serde's own messages would quote it. Found by
    /// the keys_file fuzz target's "no error quotes a value" check.
    #[test]
    fn no_error_quotes_a_value_from_the_file() {
        const S: &str = "S3cret-do-not-log-0123456789";
        let h = "ab".repeat(32);
        for doc in [
            format!(r#"{{"keys":[{{"id":"a","secrets":"{S}"}}]}}"#),
            format!(r#"{{"keys":[{{"id":"a","secrets":["{S}", 7]}}]}}"#),
            format!(r#"{{"keys":[{{"id":"a","secrets":[["{S}"]]}}]}}"#),
            format!(r#"{{"keys":[{{"id":"a","token_sha256":"{S}"}}]}}"#),
            format!(r#"{{"keys":[{{"id":"a","token_sha256":["{h}","{S}"]}}]}}"#),
            format!(r#"{{"keys":[{{"id":"a","token_sha256":{{"{S}":1}}}}]}}"#),
            format!(r#"{{"keys":[{{"id":"{S}/x","secrets":["0123456789abcdef"]}}]}}"#),
            format!(r#"{{"keys":[{{"id":["{S}"]}}]}}"#),
            format!(r#"{{"keys":[{{"id":"a","{S}":"x"}}]}}"#),
            format!(r#"{{"keys":"{S}"}}"#),
            format!(r#"{{"keys":["{S}"]}}"#),
            format!(r#"{{"{S}":[]}}"#),
            format!(r#""{S}""#),
            format!(r#"{{"keys":[{{"id":"a","comment":["{S}"]}}]}}"#),
            r#"{"keys":[{"id":"a","secrets":[12345678901234567890123]}]}"#.to_owned(),
            r#"{"keys":[{"id":"a","secrets":[1234567890123456789]}]}"#.to_owned(),
        ] {
            let e = KeyRing::parse("k.json", doc.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(!e.contains(S), "{e}");
            assert!(!e.contains("12345678901234567"), "{e}");
            assert!(e.contains("line 1 column"), "{e}");
        }
        let e = KeyRing::parse(
            "k.json",
            format!(r#"{{"keys":[{{"id":"alice","secrets":"{S}"}}]}}"#).as_bytes(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains(
                r#"key #1: id "alice": "secrets" must be an array of strings, not a string"#
            ),
            "{e}"
        );
    }

    /// serde's derived structs also take positional arrays and nulls; the file format does not.
    #[test]
    fn accepts_exactly_the_documented_shape() {
        let s = "0123456789abcdef";
        let h = "ab".repeat(32);
        for doc in [
            format!(r#"{{"keys":[["alice",["{s}"]]]}}"#),
            format!(r#"[[["alice",["{s}"]]]]"#),
            format!(r#"{{"keys":[{{"id":"a","secrets":["{s}"],"token_sha256":null}}]}}"#),
            format!(r#"{{"keys":[{{"id":"a","secrets":["{s}"],"comment":null}}]}}"#),
            format!(r#"{{"keys":[{{"id":"a","secrets":null,"token_sha256":"{h}"}}]}}"#),
            format!(r#"{{"keys":[{{"id":"a","secrets":["{s}"],"secrets":["{s}"]}}]}}"#),
            format!(r#"{{"keys":[{{"id":"a","id":"b","secrets":["{s}"]}}]}}"#),
            format!(r#"{{"keys":[],"keys":[{{"id":"a","secrets":["{s}"]}}]}}"#),
            format!(r#"{{"keys":[{{"id":"a","secrets":["{s}"],"keys":[]}}]}}"#),
            r#"{"keys":null}"#.to_owned(),
            r#"{"keys":{}}"#.to_owned(),
            "[]".to_owned(),
            "null".to_owned(),
        ] {
            let r = KeyRing::parse("k.json", doc.as_bytes());
            assert!(r.is_err(), "accepted {doc}");
        }
        // The documented forms, including the single-string token_sha256 the test data uses.
        for doc in [
            format!(r#"{{"keys":[{{"id":"a","secrets":["{s}"],"comment":"rotation"}}]}}"#),
            format!(r#"{{"keys":[{{"id":"a","token_sha256":"{h}"}}]}}"#),
            format!(r#"{{"keys":[{{"id":"a","token_sha256":["{h}"],"secrets":[]}}]}}"#),
            r#" {"keys": []} "#.to_owned(),
        ] {
            assert!(KeyRing::parse("k.json", doc.as_bytes()).is_ok(), "{doc}");
        }
    }

    #[test]
    fn a_failed_entry_adds_nothing() {
        let (h1, h2) = ("ab".repeat(32), "cd".repeat(32));
        let mut ring = KeyRing::default();
        // The first token is fine, the second is not: the entry is refused as a whole.
        assert!(ring
            .add("a", &[], &[h1.clone(), "zz".to_owned()], None)
            .is_err());
        assert_eq!(ring.len(), 0);
        assert!(
            ring.add("b", &[], std::slice::from_ref(&h1), None).is_ok(),
            "h1 still held by a"
        );
        let e = ring.add("c", &[], &[h2, h1], None).unwrap_err();
        assert!(
            e.contains("token_sha256 #2 also belongs to id \"b\""),
            "{e}"
        );
        assert_eq!(ring.len(), 1);
    }

    #[test]
    fn debug_never_prints_secrets() {
        let ring = KeyRing::parse(
            "k",
            br#"{"keys":[{"id":"a","secrets":["supersecretvalue0"]}]}"#,
        )
        .unwrap();
        assert!(!format!("{ring:?}").contains("supersecret"));
    }
}

#[cfg(test)]
mod limits_tests {
    use super::*;

    const S: &str = "0123456789abcdef";

    #[test]
    fn own_default_and_none() {
        let doc = format!(
            r#"{{"keys":[{{"id":"a","secrets":["{S}"]}},
                {{"id":"b","secrets":["{S}"],"limits":{{"concurrent_requests":2}}}},
                {{"id":"c","secrets":["{S}"],"limits":{{}}}}],
              "default_limits":{{"requests_per_minute":10}}}}"#
        );
        let ring = KeyRing::parse("k.json", doc.as_bytes()).unwrap();
        let lim = |id: &str| ring.limits(ring.get(id.as_bytes()).unwrap()).cloned();
        assert_eq!(lim("a").unwrap().rate.unwrap().per_minute, 10);
        let b = lim("b").unwrap();
        assert_eq!(
            (b.concurrent, b.rate),
            (Some(2), None),
            "own replaces the default whole"
        );
        assert_eq!(lim("c"), None, "{{}} is no limit");
        assert!(ring.has_limits());
        let plain = format!(r#"{{"keys":[{{"id":"a","secrets":["{S}"]}}]}}"#);
        assert!(!KeyRing::parse("k", plain.as_bytes()).unwrap().has_limits());
    }

    #[test]
    fn limit_errors_name_the_key_and_field() {
        for (limits, want) in [
            (
                r#""limits":{"requests_per_minute":0}"#,
                "key #1: id \"a\": \"limits\": \"requests_per_minute\" must be a whole number",
            ),
            (
                r#""limits":{"concurrent_requests":1,"concurrent_requests":2}"#,
                "\"limits\": \"concurrent_requests\" appears twice",
            ),
            (r#""limits":[]"#, "\"limits\": must be an object"),
            (r#""limits":{},"limits":{}"#, "\"limits\" appears twice"),
        ] {
            let doc = format!(r#"{{"keys":[{{"id":"a","secrets":["{S}"],{limits}}}]}}"#);
            let e = KeyRing::parse("k.json", doc.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{limits}: {e}");
            assert!(e.contains("line 1 column"), "{e}");
        }
        let doc = format!(
            r#"{{"keys":[{{"id":"a","secrets":["{S}"]}}],"default_limits":{{"tokens":{{"budget":1}}}}}}"#
        );
        let e = KeyRing::parse("k.json", doc.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\"default_limits\": \"tokens\" budget #1 needs both"),
            "{e}"
        );
    }
}

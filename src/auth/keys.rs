//! The keys file: which key ids exist, the secrets that sign for them (several during a
//! rotation) and the SHA-256 of their static client tokens.
//!
//! `{"keys": [{"id": "alice", "secrets": ["current", "previous"], "token_sha256": ["<hex>"]}]}`

use std::collections::HashMap;
use std::path::Path;

use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use super::headers::{is_key_id, parse_mac_hex};

pub type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: invalid JSON at line {line} column {column}: {msg} (expected {{\"keys\": [{{\"id\": \"...\", \"secrets\": [\"...\"]}}]}})")]
    Json {
        path: String,
        line: usize,
        column: usize,
        msg: String,
    },
    #[error("{path}: key #{index}: {msg}")]
    Entry {
        path: String,
        index: usize,
        msg: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    keys: Vec<FileKey>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileKey {
    id: String,
    #[serde(default)]
    secrets: Vec<String>,
    #[serde(default)]
    token_sha256: OneOrMany,
    /// Free text for the operator; ignored.
    #[serde(default, rename = "comment")]
    _comment: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(untagged)]
enum OneOrMany {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::None => Vec::new(),
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// One client key. Secrets are kept as keyed MAC states, so verifying skips the key schedule.
pub struct Key {
    pub id: String,
    pub macs: Vec<HmacSha256>,
    pub token_hashes: Vec<[u8; 32]>,
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
}

/// Shortest secret accepted: below 16 bytes an offline guess of the HMAC key gets cheap.
pub const SECRET_MIN_LEN: usize = 16;

impl KeyRing {
    pub fn load(path: &Path) -> Result<KeyRing, KeysError> {
        let p = path.display().to_string();
        let text = std::fs::read(path).map_err(|source| KeysError::Read {
            path: p.clone(),
            source,
        })?;
        KeyRing::parse(&p, &text)
    }

    pub fn parse(path: &str, text: &[u8]) -> Result<KeyRing, KeysError> {
        let doc: FileDoc = serde_json::from_slice(text).map_err(|e| KeysError::Json {
            path: path.to_owned(),
            line: e.line(),
            column: e.column(),
            msg: e.to_string(),
        })?;
        let mut ring = KeyRing::default();
        for (i, k) in doc.keys.into_iter().enumerate() {
            let index = i + 1;
            let entry = |msg: String| KeysError::Entry {
                path: path.to_owned(),
                index,
                msg,
            };
            if !is_key_id(k.id.as_bytes()) {
                return Err(entry(format!(
                    "id {:?} must be 1-64 characters of A-Z a-z 0-9 . _ -",
                    k.id
                )));
            }
            let tokens = k.token_sha256.into_vec();
            if k.secrets.is_empty() && tokens.is_empty() {
                return Err(entry(format!(
                    "id {:?} has neither \"secrets\" nor \"token_sha256\"",
                    k.id
                )));
            }
            let mut macs = Vec::with_capacity(k.secrets.len());
            for (j, s) in k.secrets.iter().enumerate() {
                if s.len() < SECRET_MIN_LEN {
                    return Err(entry(format!(
                        "id {:?}: secret #{} is shorter than {SECRET_MIN_LEN} bytes",
                        k.id,
                        j + 1
                    )));
                }
                let mac = HmacSha256::new_from_slice(s.as_bytes())
                    .map_err(|e| entry(format!("id {:?}: {e}", k.id)))?;
                macs.push(mac);
            }
            let mut token_hashes = Vec::with_capacity(tokens.len());
            for t in &tokens {
                let h = parse_mac_hex(t.as_bytes()).ok_or_else(|| {
                    entry(format!(
                        "id {:?}: token_sha256 {:?} is not 64 hex digits",
                        k.id, t
                    ))
                })?;
                if let Some(other) = ring.by_token.insert(h, k.id.clone().into_bytes()) {
                    return Err(entry(format!(
                        "id {:?}: token_sha256 also belongs to {:?}",
                        k.id,
                        String::from_utf8_lossy(&other)
                    )));
                }
                token_hashes.push(h);
            }
            let key = Key {
                id: k.id.clone(),
                macs,
                token_hashes,
            };
            if ring.by_id.insert(k.id.clone().into_bytes(), key).is_some() {
                return Err(entry(format!("id {:?} is listed twice", k.id)));
            }
        }
        Ok(ring)
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
                "key #1: id \"a/b\"",
            ),
            (r#"{"keys":[{"id":"a"}]}"#, "neither"),
            (
                r#"{"keys":[{"id":"a","secrets":["short"]}]}"#,
                "shorter than 16",
            ),
            (
                r#"{"keys":[{"id":"a","token_sha256":"xyz"}]}"#,
                "not 64 hex",
            ),
            (
                r#"{"keys":[{"id":"a","secrets":["0123456789abcdef"]},{"id":"a","secrets":["0123456789abcdef"]}]}"#,
                "listed twice",
            ),
            (r#"{"kees":[]}"#, "unknown field"),
        ] {
            let e = KeyRing::parse("k.json", doc.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{e} lacks {want}");
            assert!(e.starts_with("k.json"), "{e}");
        }
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

//! The state file: token-budget windows written out so a restart does not hand every key a
//! fresh budget. Only windows still current are worth keeping; a file that is not exactly
//! this shape is refused whole (the caller starts with empty windows and says so).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::block::WindowUse;
use super::spec::{MAX_BUDGET, MAX_BUDGETS};
use super::window::Window;

pub const FORMAT: &str = "relay-guard-limits-state";
pub const VERSION: u32 = 1;
/// Far above any real file (256 keys × 3 windows is ~40 KB): a bigger one is not ours.
pub const MAX_FILE_BYTES: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("not a relay-guard state file: {0}")]
    Json(#[from] serde_json::Error),
    #[error("not a relay-guard state file (format {0:?}, expected {FORMAT:?})")]
    Format(String),
    #[error("state file version {0}, this module reads version {VERSION}")]
    Version(u32),
    #[error("key {0:?}: {1}")]
    Entry(String, &'static str),
    #[error("a key id is not 1-64 characters of A-Z a-z 0-9 . _ - (the id is not shown)")]
    BadId,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedWindow {
    per_s: u64,
    window: u64,
    used: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Doc {
    format: String,
    version: u32,
    saved_at: u64,
    #[serde(deserialize_with = "unique_keys")]
    keys: BTreeMap<String, Vec<SavedWindow>>,
}

/// The `keys` object with each key id at most once: serde would keep the last of two, and a
/// file with a key twice was not written by this module.
fn unique_keys<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, Vec<SavedWindow>>, D::Error> {
    struct Keys;
    impl<'de> serde::de::Visitor<'de> for Keys {
        type Value = BTreeMap<String, Vec<SavedWindow>>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object of key ids")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut m: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some((id, ws)) = m.next_entry::<String, Vec<SavedWindow>>()? {
                if out.contains_key(&id) {
                    // The id is shown only when it is a key id (not, say, a pasted secret).
                    let shown = if crate::auth::headers::is_key_id(id.as_bytes()) {
                        format!("key {id:?}")
                    } else {
                        "a key".to_owned()
                    };
                    return Err(serde::de::Error::custom(format!("{shown} appears twice")));
                }
                out.insert(id, ws);
            }
            Ok(out)
        }
    }
    d.deserialize_map(Keys)
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Saved {
    pub saved_at: u64,
    pub keys: Vec<(String, Vec<WindowUse>)>,
}

pub fn encode(saved_at: u64, keys: &[(String, Vec<WindowUse>)]) -> Vec<u8> {
    let doc = Doc {
        format: FORMAT.to_owned(),
        version: VERSION,
        saved_at,
        keys: keys
            .iter()
            .filter(|(_, w)| !w.is_empty())
            .map(|(k, ws)| {
                let ws = ws
                    .iter()
                    .map(|w| SavedWindow {
                        per_s: w.per_s,
                        window: w.window,
                        used: w.used,
                    })
                    .collect();
                (k.clone(), ws)
            })
            .collect(),
    };
    // Strings and integers only: serializing cannot fail; an empty file would be refused on
    // read rather than misread.
    let mut out = serde_json::to_vec(&doc).unwrap_or_default();
    out.push(b'\n');
    out
}

pub fn decode(bytes: &[u8]) -> Result<Saved, StateError> {
    let doc: Doc = serde_json::from_slice(bytes)?;
    if doc.format != FORMAT {
        return Err(StateError::Format(doc.format.chars().take(64).collect()));
    }
    if doc.version != VERSION {
        return Err(StateError::Version(doc.version));
    }
    let mut keys = Vec::with_capacity(doc.keys.len());
    for (id, ws) in doc.keys {
        if !crate::auth::headers::is_key_id(id.as_bytes()) {
            // Not quoted: what is not a key id may be anything, a secret included.
            return Err(StateError::BadId);
        }
        let bad = |why| Err(StateError::Entry(id.clone(), why));
        if ws.len() > MAX_BUDGETS {
            return bad("more windows than a key can have");
        }
        let mut out = Vec::with_capacity(ws.len());
        for w in ws {
            if Window::from_secs(w.per_s).is_none() {
                return bad("a window length is out of range");
            }
            if w.used > MAX_BUDGET {
                return bad("a window's usage is out of range");
            }
            if out.iter().any(|o: &WindowUse| o.per_s == w.per_s) {
                return bad("a window length appears twice");
            }
            out.push(WindowUse {
                per_s: w.per_s,
                window: w.window,
                used: w.used,
            });
        }
        keys.push((id, out));
    }
    Ok(Saved {
        saved_at: doc.saved_at,
        keys,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_twice_or_a_bad_id_is_refused_without_quoting_what_is_not_a_key_id() {
        let doc = |keys: &str| {
            format!(r#"{{"format":"{FORMAT}","version":{VERSION},"saved_at":1,"keys":{keys}}}"#)
        };
        let w = r#"[{"per_s":86400,"window":1,"used":1}]"#;
        let e = decode(doc(&format!(r#"{{"alice":{w},"bob":{w},"alice":{w}}}"#)).as_bytes())
            .unwrap_err()
            .to_string();
        assert!(e.contains(r#"key "alice" appears twice"#), "{e}");
        let secret = "sk-ant-api03-pasted-here-0123456789";
        let e = decode(doc(&format!(r#"{{"{secret}!":{w},"{secret}!":{w}}}"#)).as_bytes())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("a key appears twice") && !e.contains("pasted"),
            "{e}"
        );
        let e = decode(doc(&format!(r#"{{"{secret} x":{w}}}"#)).as_bytes())
            .unwrap_err()
            .to_string();
        assert!(e.contains("not shown") && !e.contains("pasted"), "{e}");
        assert_eq!(
            decode(doc(&format!(r#"{{"alice":{w}}}"#)).as_bytes())
                .unwrap()
                .keys
                .len(),
            1
        );
    }

    #[test]
    fn round_trip() {
        let keys = vec![
            (
                "alice".to_owned(),
                vec![WindowUse {
                    per_s: 86_400,
                    window: 20_000,
                    used: 1234,
                }],
            ),
            ("bob".to_owned(), vec![]),
        ];
        let bytes = encode(1_796_000_000, &keys);
        let back = decode(&bytes).unwrap();
        assert_eq!(back.saved_at, 1_796_000_000);
        assert_eq!(back.keys, keys[..1].to_vec());
    }

    #[test]
    fn refuses_what_is_not_ours() {
        for (doc, want) in [
            ("", "not a relay-guard state file"),
            ("{}", "missing field"),
            (
                r#"{"format":"x","version":1,"saved_at":0,"keys":{}}"#,
                "format \"x\"",
            ),
            (
                r#"{"format":"relay-guard-limits-state","version":2,"saved_at":0,"keys":{}}"#,
                "version 2",
            ),
            (
                r#"{"format":"relay-guard-limits-state","version":1,"saved_at":0,"keys":{},"x":1}"#,
                "unknown field",
            ),
            (
                r#"{"format":"relay-guard-limits-state","version":1,"saved_at":0,"keys":{"a b":[]}}"#,
                "a key id is not 1-64 characters",
            ),
            (
                r#"{"format":"relay-guard-limits-state","version":1,"saved_at":0,"keys":{"a":[{"per_s":0,"window":1,"used":1}]}}"#,
                "length is out of range",
            ),
            (
                r#"{"format":"relay-guard-limits-state","version":1,"saved_at":0,"keys":{"a":[{"per_s":1,"window":1,"used":1099511627776}]}}"#,
                "usage is out of range",
            ),
            (
                r#"{"format":"relay-guard-limits-state","version":1,"saved_at":0,"keys":{"a":[{"per_s":1,"window":1,"used":-1}]}}"#,
                "not a relay-guard",
            ),
            (
                r#"{"format":"relay-guard-limits-state","version":1,"saved_at":0,"keys":{"a":[{"per_s":1,"window":1,"used":1},{"per_s":1,"window":1,"used":1}]}}"#,
                "appears twice",
            ),
        ] {
            let e = decode(doc.as_bytes()).unwrap_err().to_string();
            assert!(e.contains(want), "{doc}: {e}");
        }
    }
}

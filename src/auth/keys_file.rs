//! The keys file's JSON, read strictly: exactly the documented shape, and error messages that
//! never quote a value from the file.
//!
//! `{"keys": [{"id": "...", "secrets": ["..."], "token_sha256": "<hex>" | ["<hex>"], "comment": "...",
//! "limits": {...}}], "default_limits": {...}}` (limits: `crate::limits::Limits::from_json`)
//!
//! Why hand-written visitors instead of `#[derive(Deserialize)]`: derived structs also accept
//! serde's positional form (`{"keys": [["alice", ["secret"]]]}`), and serde's type errors quote
//! the offending value (`invalid type: string "<the secret>"`) straight into `nginx -t` output
//! and the error log. Every visitor here goes through `deserialize_any`, so serde_json hands
//! each value to a `visit_*` method of ours and every message is one we wrote, naming only the
//! kind of value found. Validation runs inside the visitors too, so serde_json attaches the
//! line and column of the entry at fault to every error.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use std::path::Path;

use super::headers::is_key_id;
use super::keys::{KeyRing, KeysError, SECRET_MIN_LEN};
use crate::limits::{Limits, StrictValue};

/// Where a message points: `key #3: id "alice"`, the id only once it is known to be valid (an
/// invalid id might be a secret pasted into the wrong field).
#[derive(Clone, Copy)]
struct Ctx<'a> {
    index: usize,
    id: Option<&'a str>,
}

impl fmt::Display for Ctx<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key #{}", self.index)?;
        if let Some(id) = self.id {
            write!(f, ": id {id:?}")?;
        }
        Ok(())
    }
}

/// Implements every `visit_*` a visitor does not accept as an error naming what `$want` says
/// and the kind found. Each visitor lists the kinds it accepts; the rest come from here.
macro_rules! reject_kinds {
    ($want:ident; $($kind:ident),*) => { $( reject_kinds!(@one $want $kind); )* };
    (@one $want:ident bool) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Err(E::custom(self.$want("true or false")))
        }
    };
    (@one $want:ident number) => {
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Err(E::custom(self.$want("a number")))
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Err(E::custom(self.$want("a number")))
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Err(E::custom(self.$want("a number")))
        }
    };
    (@one $want:ident null) => {
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Err(E::custom(self.$want("null")))
        }
    };
    (@one $want:ident str) => {
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Err(E::custom(self.$want("a string")))
        }
    };
    (@one $want:ident seq) => {
        fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
            Err(de::Error::custom(self.$want("an array")))
        }
    };
    (@one $want:ident map) => {
        fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
            Err(de::Error::custom(self.$want("an object")))
        }
    };
}

// The file's entry points live here, beside the reader, so that keys.rs (the ring itself)
// needs nothing from this file.
impl KeyRing {
    pub fn load(path: &Path) -> Result<KeyRing, KeysError> {
        let p = path.display().to_string();
        // Far above any real keys file (a thousand keys is ~200 KB).
        let text = super::read_bounded(path, 16 << 20).map_err(|source| KeysError::Read {
            path: p.clone(),
            source,
        })?;
        KeyRing::parse(&p, &text)
    }

    /// Parses a keys file's bytes; `path` only labels the errors.
    pub fn parse(path: &str, text: &[u8]) -> Result<KeyRing, KeysError> {
        if text.starts_with(b"\xEF\xBB\xBF") {
            return Err(KeysError::ByteOrderMark {
                path: path.to_owned(),
            });
        }
        read_ring(text).map_err(|e| KeysError::from_json(path, &e))
    }
}

/// Reads a whole keys file into a ring.
pub(super) fn read_ring(text: &[u8]) -> Result<KeyRing, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(text);
    let ring = Doc.deserialize(&mut de)?;
    de.end()?;
    Ok(ring)
}

const DOC_SHAPE: &str = r#"{"keys": [{"id": "...", "secrets": ["..."]}]}"#;

struct Doc;

impl Doc {
    fn want(&self, found: &str) -> String {
        format!("the file must be one JSON object {DOC_SHAPE}, not {found}")
    }
}

impl<'de> DeserializeSeed<'de> for Doc {
    type Value = KeyRing;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<KeyRing, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Doc {
    type Value = KeyRing;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(DOC_SHAPE)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<KeyRing, A::Error> {
        let mut ring: Option<KeyRing> = None;
        let mut default_limits = None;
        while let Some(name) = map.next_key_seed(FieldName)? {
            match name {
                Field::Keys => {
                    if ring.is_some() {
                        return Err(de::Error::custom("\"keys\" appears twice"));
                    }
                    ring = Some(map.next_value_seed(Keys)?);
                }
                Field::DefaultLimits => {
                    if default_limits.is_some() {
                        return Err(de::Error::custom("\"default_limits\" appears twice"));
                    }
                    default_limits = Some(limits_value(&mut map, "\"default_limits\"")?);
                }
                _ => {
                    return Err(de::Error::custom(format!(
                        "unknown top-level field: the file has only \"keys\" and \"default_limits\" ({DOC_SHAPE})"
                    )))
                }
            }
        }
        let mut ring =
            ring.ok_or_else(|| de::Error::custom(format!("missing \"keys\" ({DOC_SHAPE})")))?;
        ring.default_limits = default_limits;
        Ok(ring)
    }

    reject_kinds!(want; bool, number, null, str, seq);
}

/// The field names of the document and of an entry. Unknown names are not quoted: a secret
/// pasted as an object key must not reach the log either.
#[derive(PartialEq, Eq)]
enum Field {
    Keys,
    Id,
    Secrets,
    TokenSha256,
    Comment,
    Limits,
    DefaultLimits,
    Unknown,
}

struct FieldName;

impl<'de> DeserializeSeed<'de> for FieldName {
    type Value = Field;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Field, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FieldName {
    type Value = Field;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Field, E> {
        Ok(match v {
            "keys" => Field::Keys,
            "id" => Field::Id,
            "secrets" => Field::Secrets,
            "token_sha256" => Field::TokenSha256,
            "comment" => Field::Comment,
            "limits" => Field::Limits,
            "default_limits" => Field::DefaultLimits,
            _ => Field::Unknown,
        })
    }
}

struct Keys;

impl Keys {
    fn want(&self, found: &str) -> String {
        format!("\"keys\" must be an array of key objects, not {found}")
    }
}

impl<'de> DeserializeSeed<'de> for Keys {
    type Value = KeyRing;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<KeyRing, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Keys {
    type Value = KeyRing;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of key objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<KeyRing, A::Error> {
        let mut ring = KeyRing::default();
        let mut index = 1;
        while seq
            .next_element_seed(Entry {
                index,
                ring: &mut ring,
            })?
            .is_some()
        {
            index += 1;
        }
        Ok(ring)
    }

    reject_kinds!(want; bool, number, null, str, map);
}

/// One key object; adds itself to the ring once it is complete and valid.
struct Entry<'r> {
    index: usize,
    ring: &'r mut KeyRing,
}

impl Entry<'_> {
    fn want(&self, found: &str) -> String {
        format!(
            "key #{} must be an object {{\"id\": \"...\", \"secrets\": [\"...\"]}}, not {found}",
            self.index
        )
    }
}

impl<'de> DeserializeSeed<'de> for Entry<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

fn twice<E: de::Error>(ctx: Ctx<'_>, field: &str) -> E {
    E::custom(format!("{ctx}: {field:?} appears twice"))
}

impl<'de> Visitor<'de> for Entry<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut id: Option<String> = None;
        let mut secrets: Option<Vec<String>> = None;
        let mut tokens: Option<Vec<String>> = None;
        let mut comment = false;
        let mut limits = None;
        while let Some(name) = map.next_key_seed(FieldName)? {
            let valid_id = id.as_deref().filter(|i| is_key_id(i.as_bytes()));
            let ctx = Ctx {
                index: self.index,
                id: valid_id,
            };
            match name {
                Field::Id => {
                    if id.is_some() {
                        return Err(twice(ctx, "id"));
                    }
                    id = Some(map.next_value_seed(Str { ctx, field: "id" })?);
                }
                Field::Secrets => {
                    if secrets.is_some() {
                        return Err(twice(ctx, "secrets"));
                    }
                    secrets = Some(map.next_value_seed(StrList {
                        ctx,
                        field: "secrets",
                        one_allowed: false,
                    })?);
                }
                Field::TokenSha256 => {
                    if tokens.is_some() {
                        return Err(twice(ctx, "token_sha256"));
                    }
                    tokens = Some(map.next_value_seed(StrList {
                        ctx,
                        field: "token_sha256",
                        one_allowed: true,
                    })?);
                }
                Field::Comment => {
                    if comment {
                        return Err(twice(ctx, "comment"));
                    }
                    comment = true;
                    map.next_value_seed(Str {
                        ctx,
                        field: "comment",
                    })?;
                }
                Field::Limits => {
                    if limits.is_some() {
                        return Err(twice(ctx, "limits"));
                    }
                    limits = Some(limits_value(&mut map, &format!("{ctx}: \"limits\""))?);
                }
                Field::Keys | Field::DefaultLimits | Field::Unknown => {
                    return Err(de::Error::custom(format!(
                        "{ctx}: unknown field (a key has \"id\", \"secrets\", \"token_sha256\", \"comment\" and \"limits\")"
                    )));
                }
            }
        }
        let e = |msg: String| -> A::Error { de::Error::custom(msg) };
        let no_id = Ctx {
            index: self.index,
            id: None,
        };
        let Some(id) = id else {
            return Err(e(format!("{no_id}: missing \"id\"")));
        };
        if !is_key_id(id.as_bytes()) {
            return Err(e(format!(
                "{no_id}: \"id\" must be 1-64 characters of A-Z a-z 0-9 . _ -"
            )));
        }
        let ctx = Ctx {
            index: self.index,
            id: Some(&id),
        };
        let secrets = secrets.unwrap_or_default();
        let tokens = tokens.unwrap_or_default();
        if secrets.is_empty() && tokens.is_empty() {
            return Err(e(format!(
                "{ctx}: has neither \"secrets\" nor \"token_sha256\""
            )));
        }
        if let Some(j) = secrets.iter().position(|s| s.len() < SECRET_MIN_LEN) {
            return Err(e(format!(
                "{ctx}: secret #{} is shorter than {SECRET_MIN_LEN} bytes",
                j + 1
            )));
        }
        self.ring
            .add(&id, &secrets, &tokens, limits)
            .map_err(|why| e(format!("{ctx}: {why}")))
    }

    reject_kinds!(want; bool, number, null, str, seq);
}

/// A `limits` or `default_limits` object, validated where it stands (so serde_json's line and
/// column point at it); `what` names it in the message.
fn limits_value<'de, A: MapAccess<'de>>(map: &mut A, what: &str) -> Result<Limits, A::Error> {
    let v = map
        .next_value_seed(StrictValue::default())
        .map_err(|e| de::Error::custom(format!("{what}: {e}")))?;
    Limits::from_json(&v).map_err(|e| de::Error::custom(format!("{what}: {e}")))
}

/// A string field. The value is never quoted in an error.
struct Str<'a> {
    ctx: Ctx<'a>,
    field: &'static str,
}

impl Str<'_> {
    fn want(&self, found: &str) -> String {
        format!(
            "{}: {:?} must be a string, not {found}",
            self.ctx, self.field
        )
    }
}

impl<'de> DeserializeSeed<'de> for Str<'_> {
    type Value = String;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Str<'_> {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }

    reject_kinds!(want; bool, number, null, seq, map);
}

/// An array of strings (`secrets`), or for `token_sha256` also a single string.
struct StrList<'a> {
    ctx: Ctx<'a>,
    field: &'static str,
    one_allowed: bool,
}

impl StrList<'_> {
    fn want(&self, found: &str) -> String {
        let shape = if self.one_allowed {
            "a string or an array of strings"
        } else {
            "an array of strings"
        };
        format!(
            "{}: {:?} must be {shape}, not {found}",
            self.ctx, self.field
        )
    }
}

impl<'de> DeserializeSeed<'de> for StrList<'_> {
    type Value = Vec<String>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<String>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrList<'_> {
    type Value = Vec<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of strings")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<String>, E> {
        if self.one_allowed {
            Ok(vec![v.to_owned()])
        } else {
            Err(E::custom(self.want("a string")))
        }
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
        let mut out = Vec::new();
        while let Some(s) = seq.next_element_seed(Item {
            list: &self,
            n: out.len() + 1,
        })? {
            out.push(s);
        }
        Ok(out)
    }

    reject_kinds!(want; bool, number, null, map);
}

/// Element `n` of a string list.
struct Item<'l, 'a> {
    list: &'l StrList<'a>,
    n: usize,
}

impl Item<'_, '_> {
    fn want(&self, found: &str) -> String {
        format!(
            "{}: {:?} #{} must be a string, not {found}",
            self.list.ctx, self.list.field, self.n
        )
    }
}

impl<'de> DeserializeSeed<'de> for Item<'_, '_> {
    type Value = String;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Item<'_, '_> {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }

    reject_kinds!(want; bool, number, null, seq, map);
}

//! Any JSON value, as serde_json::Value, except that an object naming a field twice is an
//! error: serde_json would keep the last, and a limit written twice is a mistake to report,
//! not to resolve silently. Messages never quote a value (the keys file holds secrets).

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// The field names of a limits object and of a budget.
const KNOWN: [&str; 6] = [
    "requests_per_minute",
    "burst",
    "concurrent_requests",
    "tokens",
    "budget",
    "per",
];

/// Nesting deeper than this is not a limits object.
const MAX_DEPTH: u32 = 8;

#[derive(Clone, Copy, Default)]
pub struct StrictValue {
    depth: u32,
}

impl<'de> DeserializeSeed<'de> for StrictValue {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictValue {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.deeper::<A::Error>()?;
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(inner)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.deeper::<A::Error>()?;
        let mut out = Map::new();
        while let Some(name) = map.next_key::<String>()? {
            let v = map.next_value_seed(inner)?;
            if out.contains_key(&name) {
                // Only a documented name is quoted: an unknown one might be a pasted secret.
                return Err(de::Error::custom(
                    match KNOWN.iter().find(|k| **k == name) {
                        Some(k) => format!("{k:?} appears twice in one object"),
                        None => "a field appears twice in one object".to_owned(),
                    },
                ));
            }
            out.insert(name, v);
        }
        Ok(Value::Object(out))
    }
}

impl StrictValue {
    fn deeper<E: de::Error>(self) -> Result<StrictValue, E> {
        if self.depth >= MAX_DEPTH {
            return Err(E::custom("nested too deeply"));
        }
        Ok(StrictValue {
            depth: self.depth + 1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(s: &str) -> Result<Value, String> {
        let mut de = serde_json::Deserializer::from_str(s);
        StrictValue::default()
            .deserialize(&mut de)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn values_and_duplicates() {
        assert_eq!(
            read(r#"{"a":[1,-2,1.5,"x",null,true],"b":{}}"#).unwrap(),
            serde_json::json!({"a":[1,-2,1.5,"x",null,true],"b":{}})
        );
        assert!(read(r#"{"a":1,"a":2}"#)
            .unwrap_err()
            .contains("appears twice"));
        assert!(read(r#"{"t":[{"per":"1d","per":"1h"}]}"#)
            .unwrap_err()
            .contains("\"per\" appears twice"));
        assert!(read(r#"{"sk-secret":1,"sk-secret":2}"#)
            .unwrap_err()
            .starts_with("a field appears twice"));
        assert!(read(&"[".repeat(20))
            .unwrap_err()
            .contains("nested too deeply"));
    }
}

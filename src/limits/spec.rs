//! A key's limits as the keys file states them, validated: the only way to get a [`Limits`]
//! is [`Limits::from_json`], so every value the request path sees is in range.

use serde_json::{Map, Value};

use super::window::Window;
use crate::usage::TokenCounts;

/// What a budget counts: input, cache writes (5m and 1h) and output. Cache reads are left
/// out: they cost a tenth of input and are what a cache-friendly client should not be
/// punished for; they are reported, not budgeted.
pub fn counted_tokens(c: &TokenCounts) -> u64 {
    c.input
        .saturating_add(c.cache_write_5m)
        .saturating_add(c.cache_write_1h)
        .saturating_add(c.output)
}

pub const MAX_RPM: u32 = 1_000_000;
pub const MAX_CONCURRENT: u32 = 100_000;
/// Budgets and usage share a 40-bit field in the shared zone.
pub const MAX_BUDGET: u64 = (1 << 40) - 1;
pub const MAX_BUDGETS: usize = 3;

/// Requests per minute with a burst: GCRA, see `gcra.rs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_minute: u32,
    pub burst: u32,
}

impl Rate {
    /// Nanoseconds between two admissions at the steady rate.
    pub fn interval_ns(self) -> u64 {
        60_000_000_000 / u64::from(self.per_minute)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBudget {
    pub budget: u64,
    pub window: Window,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    pub rate: Option<Rate>,
    pub concurrent: Option<u32>,
    /// At most [`MAX_BUDGETS`], with distinct windows.
    pub tokens: Vec<TokenBudget>,
}

const FIELDS: &str = "\"requests_per_minute\", \"burst\", \"concurrent_requests\" and \"tokens\"";

/// What JSON kind a value is, for messages that never quote the value.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "true or false",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn integer(v: &Value, field: &str, max: u64) -> Result<u64, String> {
    v.as_u64()
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| match v {
            Value::Number(_) => format!("{field:?} must be a whole number from 1 to {max}"),
            other => format!(
                "{field:?} must be a whole number from 1 to {max}, not {}",
                kind(other)
            ),
        })
}

impl Limits {
    /// No limit at all (`"limits": {}`).
    pub fn is_empty(&self) -> bool {
        self.rate.is_none() && self.concurrent.is_none() && self.tokens.is_empty()
    }

    /// Validates one `limits` (or `default_limits`) object. The message names the field and
    /// what it must be; the caller says which key.
    pub fn from_json(v: &Value) -> Result<Limits, String> {
        let Value::Object(map) = v else {
            return Err(format!("must be an object with {FIELDS}, not {}", kind(v)));
        };
        Self::from_map(map)
    }

    fn from_map(map: &Map<String, Value>) -> Result<Limits, String> {
        let (mut rpm, mut burst, mut limits) = (None, None, Limits::default());
        // serde_json keeps the last of duplicate names; keys_file.rs refuses duplicates before
        // the value reaches here only for its own fields, so the object is walked as parsed.
        for (name, v) in map {
            match name.as_str() {
                "requests_per_minute" => rpm = Some(integer(v, name, u64::from(MAX_RPM))? as u32),
                "burst" => burst = Some(integer(v, name, u64::from(MAX_RPM))? as u32),
                "concurrent_requests" => {
                    limits.concurrent = Some(integer(v, name, u64::from(MAX_CONCURRENT))? as u32)
                }
                "tokens" => limits.tokens = budgets(v)?,
                _ => return Err(format!("unknown field (limits have {FIELDS})")),
            }
        }
        limits.rate = match (rpm, burst) {
            (Some(per_minute), burst) => Some(Rate {
                per_minute,
                burst: burst.unwrap_or(per_minute),
            }),
            (None, Some(_)) => {
                return Err("\"burst\" needs \"requests_per_minute\"".to_owned());
            }
            (None, None) => None,
        };
        Ok(limits)
    }
}

const BUDGET_SHAPE: &str = "{\"budget\": N, \"per\": \"1d\"}";

fn budgets(v: &Value) -> Result<Vec<TokenBudget>, String> {
    let list: Vec<&Value> = match v {
        Value::Object(_) => vec![v],
        Value::Array(a) if (1..=MAX_BUDGETS).contains(&a.len()) => a.iter().collect(),
        Value::Array(_) => {
            return Err(format!(
                "\"tokens\" must list 1 to {MAX_BUDGETS} budgets {BUDGET_SHAPE}"
            ))
        }
        other => {
            return Err(format!(
                "\"tokens\" must be {BUDGET_SHAPE} or an array of them, not {}",
                kind(other)
            ))
        }
    };
    let mut out: Vec<TokenBudget> = Vec::with_capacity(list.len());
    for (i, b) in list.into_iter().enumerate() {
        let n = i + 1;
        let Value::Object(m) = b else {
            return Err(format!(
                "\"tokens\" budget #{n} must be {BUDGET_SHAPE}, not {}",
                kind(b)
            ));
        };
        let (mut budget, mut window) = (None, None);
        for (name, v) in m {
            match name.as_str() {
                "budget" => {
                    budget = Some(
                        integer(v, "budget", MAX_BUDGET)
                            .map_err(|e| format!("\"tokens\" budget #{n}: {e}"))?,
                    )
                }
                "per" => {
                    window = Some(v.as_str().and_then(Window::parse).ok_or_else(|| {
                        format!("\"tokens\" budget #{n}: \"per\" must be a window such as \"1h\", \"5h\", \"1d\", \"7d\" or \"30d\" (a number then s, m, h or d; 1s to 366d)")
                    })?)
                }
                _ => {
                    return Err(format!(
                        "\"tokens\" budget #{n}: unknown field (a budget has \"budget\" and \"per\")"
                    ))
                }
            }
        }
        let (Some(budget), Some(window)) = (budget, window) else {
            return Err(format!(
                "\"tokens\" budget #{n} needs both \"budget\" and \"per\""
            ));
        };
        if out.iter().any(|o| o.window == window) {
            return Err(format!(
                "\"tokens\" budget #{n}: its \"per\" window is already an earlier budget's (each budget needs a window length of its own)"
            ));
        }
        out.push(TokenBudget { budget, window });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Limits, String> {
        Limits::from_json(&serde_json::from_str(s).unwrap())
    }

    #[test]
    fn full_and_defaults() {
        let l = parse(
            r#"{"requests_per_minute":120,"concurrent_requests":8,
                "tokens":{"budget":20000000,"per":"1d"}}"#,
        )
        .unwrap();
        assert_eq!(
            l.rate,
            Some(Rate {
                per_minute: 120,
                burst: 120
            })
        );
        assert_eq!(l.concurrent, Some(8));
        assert_eq!(l.tokens.len(), 1);
        assert_eq!(l.tokens[0].window.secs(), 86_400);
        assert_eq!(l.rate.unwrap().interval_ns(), 500_000_000);
        assert!(parse("{}").unwrap().is_empty());
        let two = parse(
            r#"{"requests_per_minute":60,"burst":2,"tokens":[{"budget":5,"per":"5h"},
                {"per":"7d","budget":10}]}"#,
        )
        .unwrap();
        assert_eq!(two.rate.unwrap().burst, 2);
        assert_eq!(two.tokens[1].budget, 10);
    }

    #[test]
    fn errors_name_the_field_never_the_value() {
        for (doc, want) in [
            (r#"[]"#, "must be an object"),
            (r#"{"rpm":1}"#, "unknown field"),
            (
                r#"{"requests_per_minute":0}"#,
                "\"requests_per_minute\" must be a whole number from 1 to 1000000",
            ),
            (r#"{"requests_per_minute":1.5}"#, "whole number"),
            (r#"{"requests_per_minute":"secret-ish"}"#, "not a string"),
            (r#"{"requests_per_minute":-1}"#, "whole number"),
            (r#"{"requests_per_minute":1000001}"#, "from 1 to 1000000"),
            (r#"{"burst":5}"#, "\"burst\" needs \"requests_per_minute\""),
            (r#"{"concurrent_requests":100001}"#, "from 1 to 100000"),
            (r#"{"tokens":5}"#, "\"tokens\" must be"),
            (r#"{"tokens":[]}"#, "1 to 3 budgets"),
            (r#"{"tokens":[1]}"#, "budget #1 must be"),
            (r#"{"tokens":{"budget":5}}"#, "needs both"),
            (
                r#"{"tokens":{"budget":5,"per":"1w"}}"#,
                "\"per\" must be a window",
            ),
            (
                r#"{"tokens":{"budget":1099511627776,"per":"1d"}}"#,
                "from 1 to 1099511627775",
            ),
            (
                r#"{"tokens":{"budget":5,"per":"1d","x":1}}"#,
                "unknown field",
            ),
            (
                r#"{"tokens":[{"budget":5,"per":"1d"},{"budget":6,"per":"24h"}]}"#,
                "budget #2: its \"per\" window is already an earlier budget's",
            ),
            (
                r#"{"tokens":[{"budget":1,"per":"1s"},{"budget":1,"per":"2s"},{"budget":1,"per":"3s"},{"budget":1,"per":"4s"}]}"#,
                "1 to 3 budgets",
            ),
        ] {
            let e = parse(doc).unwrap_err();
            assert!(e.contains(want), "{doc}: {e}");
            assert!(!e.contains("secret-ish"), "{e}");
        }
    }
}

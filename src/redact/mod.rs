//! Secret redaction for log lines (pure; no nginx).
//!
//! The nginx glue calls this in the LOG phase, before any access or error log line is written,
//! and swaps each returned value in for the request's header values, args, unparsed URI and
//! request line. A secret becomes `[redacted:1a2b3c4d]`: a keyed fingerprint that lets an
//! operator see that two requests carried the same secret without the log revealing it or
//! allowing an offline guess. Only a scheme word (`Bearer `) or a fixed public prefix
//! (`sk-ant-api03-`, `rgt1.`) stays readable.
//!
//! Masked output can be longer than the input (a 3-byte cookie value becomes a 19-byte mask);
//! the caller must copy it into fresh memory rather than over the original bytes.

mod args;
mod fingerprint;
mod headers;
mod literals;
mod patterns;
mod spans;
#[cfg(test)]
mod tests;

pub use fingerprint::fingerprint;
pub use literals::MIN_LITERAL_LEN;

use fingerprint::Fingerprinter;
use headers::Kind;
use patterns::Ctx;
use spans::Spans;

/// Query arguments masked by default (names compared case-insensitively).
pub const DEFAULT_ARGS: &[&str] = &[
    "key",
    "api_key",
    "apikey",
    "token",
    "access_token",
    "signature",
    "sig",
];

/// Which headers and arguments are secret by name, and which exact values are secret anywhere.
#[derive(Clone)]
pub struct RedactConfig {
    /// Lowercase header names whose values are secret.
    pub headers: Vec<Vec<u8>>,
    /// Lowercase query argument names whose values are secret.
    pub args: Vec<Vec<u8>>,
    /// Exact secret values masked wherever they appear (e.g. the upstream API key).
    pub literals: Vec<Vec<u8>>,
}

// Literals are secrets: never print them.
impl std::fmt::Debug for RedactConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedactConfig")
            .field(
                "headers",
                &self
                    .headers
                    .iter()
                    .map(|h| String::from_utf8_lossy(h))
                    .collect::<Vec<_>>(),
            )
            .field(
                "args",
                &self
                    .args
                    .iter()
                    .map(|a| String::from_utf8_lossy(a))
                    .collect::<Vec<_>>(),
            )
            .field("literals", &self.literals.len())
            .finish()
    }
}

fn len_bit(len: usize) -> u64 {
    1u64 << len.min(63)
}

fn push_lower(list: &mut Vec<Vec<u8>>, name: &[u8]) {
    let lower = name.to_ascii_lowercase();
    if !lower.is_empty() && !list.contains(&lower) {
        list.push(lower);
    }
}

impl RedactConfig {
    /// Nothing secret by name; patterns are still masked.
    pub fn empty() -> Self {
        RedactConfig {
            headers: Vec::new(),
            args: Vec::new(),
            literals: Vec::new(),
        }
    }

    /// Headers `authorization`, `proxy-authorization`, `x-api-key`, `cookie`, `x-signature`;
    /// args [`DEFAULT_ARGS`]; no literals.
    pub fn with_defaults() -> Self {
        let mut c = Self::empty();
        for h in headers::DEFAULT_HEADERS {
            c.add_header(h.as_bytes());
        }
        for a in DEFAULT_ARGS {
            c.add_arg(a.as_bytes());
        }
        c
    }

    /// Marks a header (any case) as secret: its whole value is masked.
    pub fn add_header(&mut self, name: &[u8]) {
        push_lower(&mut self.headers, name);
    }

    /// Marks a query argument name (any case) as secret.
    pub fn add_arg(&mut self, name: &[u8]) {
        push_lower(&mut self.args, name);
    }

    /// Masks this exact value wherever it appears. Values shorter than [`MIN_LITERAL_LEN`] are
    /// ignored by [`Redactor::new`].
    pub fn add_literal(&mut self, secret: &[u8]) {
        if !secret.is_empty() && !self.literals.iter().any(|l| l == secret) {
            self.literals.push(secret.to_vec());
        }
    }
}

/// Masks secrets in header values, query strings and request targets. Built once at
/// configuration time; immutable and shareable across workers' threads.
pub struct Redactor {
    headers: Vec<(Vec<u8>, Kind)>,
    /// Bit `n` set if some secret header name has length `n` (names of 63+ bytes share bit 63):
    /// most headers of a request are rejected by this one test.
    header_lens: u64,
    args: Vec<Vec<u8>>,
    /// Configured literals the pattern scanner does not already cover, each with the number of
    /// leading public bytes to keep.
    literals: Vec<(Vec<u8>, usize)>,
    fp: Fingerprinter,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field("headers", &self.headers.len())
            .field("args", &self.args.len())
            .field("literals", &self.literals.len())
            .finish_non_exhaustive()
    }
}

impl Redactor {
    pub fn new(cfg: &RedactConfig, fingerprint_key: [u8; 32]) -> Redactor {
        let mut hdrs: Vec<Vec<u8>> = Vec::new();
        cfg.headers.iter().for_each(|h| push_lower(&mut hdrs, h));
        let mut args: Vec<Vec<u8>> = Vec::new();
        cfg.args.iter().for_each(|a| push_lower(&mut args, a));
        let mut literals: Vec<(Vec<u8>, usize)> = Vec::new();
        for l in &cfg.literals {
            // Whole Anthropic keys and rgt1 tokens are masked by the pattern scanner already:
            // skipping them saves a pass per value and per configured key.
            if l.len() >= MIN_LITERAL_LEN
                && !patterns::covers_literal(l)
                && !literals.iter().any(|(x, _)| x == l)
            {
                literals.push((l.clone(), patterns::public_prefix_len(l)));
            }
        }
        let header_lens = hdrs.iter().fold(0u64, |m, h| m | len_bit(h.len()));
        Redactor {
            header_lens,
            headers: hdrs
                .into_iter()
                .map(|h| {
                    let k = headers::kind_of(&h);
                    (h, k)
                })
                .collect(),
            args,
            literals,
            fp: Fingerprinter::new(&fingerprint_key),
        }
    }

    fn header_kind(&self, name: &[u8]) -> Option<Kind> {
        if self.header_lens & len_bit(name.len()) == 0 {
            return None;
        }
        self.headers
            .iter()
            .find(|(h, _)| h.eq_ignore_ascii_case(name))
            .map(|&(_, k)| k)
    }

    /// True if this header's value is secret by name (configured or default, any case). For
    /// `cookie` the names stay readable and every value is masked.
    pub fn is_secret_header(&self, name: &[u8]) -> bool {
        self.header_kind(name).is_some()
    }

    /// The fingerprint this redactor writes for `secret`, for the glue's own log messages.
    pub fn fingerprint(&self, secret: &[u8]) -> [u8; 8] {
        self.fp.fingerprint(secret)
    }

    /// Masks a header value. Returns false and leaves `out` untouched when nothing matched (no
    /// allocation). Otherwise clears `out`, writes the masked value and returns true.
    ///
    /// Secret headers are masked by name; every header is also scanned for key formats, bearer
    /// tokens and literals; `Referer` additionally gets its query arguments masked by name.
    pub fn mask_header(
        &self,
        name: &[u8],
        value: &[u8],
        extra: &[&[u8]],
        out: &mut Vec<u8>,
    ) -> bool {
        let mut spans = Spans::new();
        if let Some(kind) = self.header_kind(name) {
            headers::scan(kind, value, &mut spans);
            patterns::scan(value, Ctx::Text, 0, &mut spans);
            if kind != Kind::Cookie {
                // Everything but a scheme word is masked already: no literal can hide here.
                return spans.render(value, &self.fp, out);
            }
        } else if name.eq_ignore_ascii_case(b"referer") {
            self.scan_target(value, &mut spans);
        } else {
            patterns::scan(value, Ctx::Text, 0, &mut spans);
        }
        self.scan_literals(value, extra, &mut spans);
        spans.render(value, &self.fp, out)
    }

    /// Same for a query string (`r->args`, no leading `?`).
    pub fn mask_args(&self, args: &[u8], extra: &[&[u8]], out: &mut Vec<u8>) -> bool {
        let mut spans = Spans::new();
        args::scan(args, &self.args, 0, &mut spans);
        patterns::scan(args, Ctx::Query, 0, &mut spans);
        self.scan_literals(args, extra, &mut spans);
        spans.render(args, &self.fp, out)
    }

    /// Same for a request target, unparsed URI or whole request line: patterns everywhere, arg
    /// names in the query (after the first `?`, up to a space or `#`).
    pub fn mask_target(&self, text: &[u8], extra: &[&[u8]], out: &mut Vec<u8>) -> bool {
        let mut spans = Spans::new();
        self.scan_target(text, &mut spans);
        self.scan_literals(text, extra, &mut spans);
        spans.render(text, &self.fp, out)
    }

    fn scan_target(&self, text: &[u8], spans: &mut Spans) {
        let Some(q) = literals::find_byte(text, b'?') else {
            patterns::scan(text, Ctx::Text, 0, spans);
            return;
        };
        let qs = q + 1;
        let rest = &text[qs..];
        let qe = qs
            + rest
                .iter()
                .position(|&b| b == b' ' || b == b'#')
                .unwrap_or(rest.len());
        let query = &text[qs..qe];
        patterns::scan(&text[..q], Ctx::Text, 0, spans);
        args::scan(query, &self.args, qs, spans);
        patterns::scan(query, Ctx::Query, qs, spans);
        patterns::scan(&text[qe..], Ctx::Text, qe, spans);
    }

    fn scan_literals(&self, text: &[u8], extra: &[&[u8]], spans: &mut Spans) {
        for (lit, keep) in &self.literals {
            literals::find_all(text, lit, *keep, spans);
        }
        let nothing_found = spans.is_empty();
        for lit in extra {
            if lit.len() >= MIN_LITERAL_LEN && !(nothing_found && patterns::implied_by_scan(lit)) {
                literals::find_all(text, lit, patterns::public_prefix_len(lit), spans);
            }
        }
    }
}

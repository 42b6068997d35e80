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
mod decoded;
mod ends;
mod fingerprint;
mod headers;
mod literals;
mod masker;
mod patterns;
mod pieces;
mod prefilter;
mod properties;
mod spans;
#[cfg(test)]
mod test_rng;
#[cfg(test)]
mod tests;

pub use literals::MIN_LITERAL_LEN;
pub use masker::RequestMasker;
#[doc(hidden)]
pub use prefilter::check_prefilter_fuzz_input;
#[doc(hidden)]
pub use properties::{check_fuzz_input, check_mask_properties, PropertyViolation};

use fingerprint::Fingerprinter;
use headers::Kind;
use literals::{Literal, Meta};

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

/// Bit `len` (63 for anything longer): a one-word set of name lengths.
#[inline(always)]
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
    /// The same with `referer` added: the names [`RequestMasker::mask_header`] treats apart.
    special_lens: u64,
    args: args::Names,
    /// Configured literals the pattern scanner does not already cover.
    literals: Vec<(Vec<u8>, Meta)>,
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
        let mut arg_names: Vec<Vec<u8>> = Vec::new();
        cfg.args.iter().for_each(|a| push_lower(&mut arg_names, a));
        let mut literals: Vec<(Vec<u8>, Meta)> = Vec::new();
        for l in &cfg.literals {
            // Whole Anthropic keys and rgt1 tokens are masked by the pattern scanner already:
            // skipping them saves a pass per value and per configured key.
            if l.len() >= MIN_LITERAL_LEN
                && !patterns::covers_literal(l)
                && !literals.iter().any(|(x, _)| x == l)
            {
                literals.push((l.clone(), Meta::of(l)));
            }
        }
        let header_lens = hdrs.iter().fold(0u64, |m, h| m | len_bit(h.len()));
        Redactor {
            header_lens,
            special_lens: header_lens | len_bit(b"referer".len()),
            headers: hdrs
                .into_iter()
                .map(|h| {
                    let k = headers::kind_of(&h);
                    (h, k)
                })
                .collect(),
            args: args::Names::new(arg_names),
            literals,
            fp: Fingerprinter::new(&fingerprint_key),
        }
    }

    #[inline]
    fn header_kind(&self, name: &[u8]) -> Option<Kind> {
        if self.header_lens & len_bit(name.len()) == 0 {
            return None;
        }
        // Names of the same length (`accept` and `cookie`) mostly differ in the first byte.
        let first = name.first()?.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(h, _)| h.first() == Some(&first) && h.eq_ignore_ascii_case(name))
            .map(|&(_, k)| k)
    }

    /// True if this header's value is secret by name (configured or default, any case). For
    /// `cookie` the names stay readable and every value is masked.
    #[cfg(test)]
    fn is_secret_header(&self, name: &[u8]) -> bool {
        self.header_kind(name).is_some()
    }

    /// The fingerprint this redactor writes for `secret`.
    #[cfg(test)]
    fn fingerprint(&self, secret: &[u8]) -> [u8; 8] {
        self.fp.fingerprint(secret)
    }

    fn configured(&self) -> impl Iterator<Item = Literal<'_>> {
        self.literals
            .iter()
            .map(|(bytes, meta)| Literal { bytes, meta: *meta })
    }

    /// Prepares a request's extra literals, values masked wherever they appear (the
    /// credentials it presented). Values shorter than [`MIN_LITERAL_LEN`] are ignored.
    pub fn for_request<'a>(&'a self, extra: &'a [&'a [u8]]) -> RequestMasker<'a> {
        RequestMasker::new(self, extra)
    }

    /// [`RequestMasker::mask_header`] for a one-off value.
    pub fn mask_header(
        &self,
        name: &[u8],
        value: &[u8],
        extra: &[&[u8]],
        out: &mut Vec<u8>,
    ) -> bool {
        self.for_request(extra).mask_header(name, value, out)
    }

    /// [`RequestMasker::mask_args`] for a one-off value.
    pub fn mask_args(&self, args: &[u8], extra: &[&[u8]], out: &mut Vec<u8>) -> bool {
        self.for_request(extra).mask_args(args, out)
    }

    /// [`RequestMasker::mask_target`] for a one-off value.
    pub fn mask_target(&self, text: &[u8], extra: &[&[u8]], out: &mut Vec<u8>) -> bool {
        self.for_request(extra).mask_target(text, out)
    }
}

//! The properties every masking call must have, checked against a slow reference rather than
//! the scanners themselves, so that the randomized tests (and a fuzz target) can find inputs
//! where the fast paths go wrong.

use super::decoded::{self, Decoded};
use super::fingerprint::{MASK_LEN, OPEN};
use super::literals::MIN_LITERAL_LEN;
use super::masker::query_range;
use super::spans::{is_rendered_mask, overlaps_mask};
use super::{Redactor, RequestMasker};

/// Windows shorter than this are not checked: short runs of a secret's bytes occur by chance.
const WINDOW: usize = 12;

/// The field kinds a request's values are masked as: header names of each kind, then the
/// query string, the request target, a cached variable (literals in any case) and `$host`
/// (nginx's lower-cased copy of the Host header up to a `:`).
const FIELDS: [&str; 9] = [
    "authorization",
    "x-api-key",
    "cookie",
    "x-custom",
    "referer",
    "args",
    "target",
    "folded",
    "host",
];

/// A property that did not hold, with what is needed to reproduce it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PropertyViolation {
    #[error("{field}: {window:?} of a secret survived in {output:?} (input {input:?})")]
    Leak {
        field: &'static str,
        window: String,
        output: String,
        input: String,
    },
    #[error("{field}: masking again changed {once:?} into {twice:?} (input {input:?})")]
    NotIdempotent {
        field: &'static str,
        once: String,
        twice: String,
        input: String,
    },
    #[error(
        "{field}: the prefilter changed the result from {slow:?} to {fast:?} (input {input:?})"
    )]
    PrefilterChanged {
        field: &'static str,
        fast: Option<String>,
        slow: Option<String>,
        input: String,
    },
}

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Checks, for every field kind, that masking `text` with the credentials `extra`:
/// (a) leaves no 12-byte window of a secret (a configured or extra literal, a part of an extra
/// literal, or a match of the reference patterns) in the output, other than copies that were outside every secret in the
/// input; (b) is idempotent; (c) gives the same result with and without the prefilter.
#[doc(hidden)]
pub fn check_mask_properties(
    red: &Redactor,
    extra: &[&[u8]],
    text: &[u8],
) -> Result<(), PropertyViolation> {
    let mut once = Vec::new();
    let mut slow = Vec::new();
    let mut twice = Vec::new();
    for field in FIELDS {
        let masked = {
            let m = red.for_request(extra);
            mask_as(field, &m, text, &mut once)
        };
        // What the field shows unmasked: the text itself, or for `$host` its image.
        let shown = if field == "host" {
            host_image(text)
        } else {
            text.to_vec()
        };
        let out: &[u8] = if masked { &once } else { &shown };
        {
            let m = red.for_request(extra).without_prefilter();
            let slow_masked = mask_as(field, &m, text, &mut slow);
            if slow_masked != masked || (masked && slow != once) {
                return Err(PropertyViolation::PrefilterChanged {
                    field,
                    fast: masked.then(|| show(&once)),
                    slow: slow_masked.then(|| show(&slow)),
                    input: show(text),
                });
            }
        }
        if let Some(window) = leaked(red, extra, field, text, out) {
            return Err(PropertyViolation::Leak {
                field,
                window: show(&window),
                output: show(out),
                input: show(text),
            });
        }
        let m = red.for_request(extra);
        // A masked `$host` is its own source: masking it again must change nothing.
        let again = if field == "host" {
            m.mask_host(out, out, &mut twice)
        } else {
            mask_as(field, &m, out, &mut twice)
        };
        if again && twice != out {
            return Err(PropertyViolation::NotIdempotent {
                field,
                once: show(out),
                twice: show(&twice),
                input: show(text),
            });
        }
    }
    Ok(())
}

/// nginx's `$host` for a Host header `text`: up to the first `:`, lower-cased.
fn host_image(text: &[u8]) -> Vec<u8> {
    let n = text.iter().position(|&b| b == b':').unwrap_or(text.len());
    text[..n].to_ascii_lowercase()
}

/// One masking call by field kind. Headers go through the length check first, as the glue does.
fn mask_as<'t>(field: &str, m: &RequestMasker<'t>, text: &'t [u8], out: &mut Vec<u8>) -> bool {
    match field {
        "args" => m.mask_args(text, out),
        "target" => m.mask_target(text, out),
        "folded" => m.mask_target_folded(text, out),
        "host" => m.mask_host(text, &host_image(text), out),
        header => {
            m.header_may_hold_secret(header.len(), text.len())
                && m.mask_header(header.as_bytes(), text, out)
        }
    }
}

/// A window of a secret found in `out` more often than in the parts of the unmasked field
/// outside every secret: masking keeps only text outside its spans, so a complete masking can
/// never add one. Pieces are compared as they are and percent-decoded, and in any letter case
/// for the fields that match literals so.
fn leaked(
    red: &Redactor,
    extra: &[&[u8]],
    field: &str,
    text: &[u8],
    out: &[u8],
) -> Option<Vec<u8>> {
    let fold = matches!(field, "folded" | "host");
    let mut ranges = Vec::new();
    let mut secrets: Vec<Vec<u8>> = Vec::new();
    let view = if field == "host" {
        let image = host_image(text);
        let n = image.len();
        // The Host header's own secrets, where the image shows them, and the image's.
        let mut source = Vec::new();
        reference_secrets(
            red,
            extra,
            "x-custom",
            text,
            false,
            &mut source,
            &mut secrets,
        );
        ranges.extend(source.into_iter().map(|(a, z)| (a.min(n), z.min(n))));
        reference_secrets(
            red,
            extra,
            "x-custom",
            &image,
            true,
            &mut ranges,
            &mut secrets,
        );
        image
    } else {
        reference_secrets(red, extra, field, text, fold, &mut ranges, &mut secrets);
        text.to_vec()
    };
    let norm = |p: &[u8]| -> Vec<Vec<u8>> {
        let decoded = Decoded::new(p)
            .map(|d| d.bytes.to_vec())
            .unwrap_or_default();
        let mut v = vec![p.to_vec(), decoded];
        if fold {
            v.iter_mut().for_each(|x| x.make_ascii_lowercase());
        }
        v
    };
    let residual: Vec<Vec<u8>> = pieces_outside(&view, &ranges)
        .into_iter()
        .flat_map(norm)
        .collect();
    let kept: Vec<Vec<u8>> = pieces_between_masks(out)
        .into_iter()
        .flat_map(norm)
        .collect();
    let count = |pieces: &[Vec<u8>], w: &[u8]| -> usize {
        pieces
            .iter()
            .map(|p| p.windows(w.len()).filter(|x| *x == w).count())
            .sum()
    };
    secrets
        .into_iter()
        .map(|mut s| {
            if fold {
                s.make_ascii_lowercase();
            }
            s
        })
        .flat_map(|s| s.windows(WINDOW).map(<[u8]>::to_vec).collect::<Vec<_>>())
        .find(|w| count(&kept, w) > count(&residual, w))
}

/// The segments of a field's text with their context (true: a query).
fn segments(field: &str, text: &[u8]) -> Vec<(usize, usize, bool)> {
    match field {
        "args" => vec![(0, text.len(), true)],
        // The path ends before the `?`: a token in it ends there too, as the query's own
        // bytes after it are not part of it (RFC 6750 tokens hold no `?`).
        "target" | "referer" | "folded" => match query_range(text) {
            Some((qs, qe)) => vec![(0, qs - 1, false), (qs, qe, true), (qe, text.len(), false)],
            None => vec![(0, text.len(), false)],
        },
        _ => vec![(0, text.len(), false)],
    }
}

/// Every secret the reference finds in a field's `text`: its secret ranges (into `ranges`)
/// and the secret values whose windows must not survive (into `secrets`), in the text as it
/// is and in its percent-decoded copy (ranges mapped back onto the escaped bytes).
fn reference_secrets(
    red: &Redactor,
    extra: &[&[u8]],
    field: &str,
    text: &[u8],
    fold: bool,
    ranges: &mut Vec<(usize, usize)>,
    secrets: &mut Vec<Vec<u8>>,
) {
    let segs = segments(field, text);
    let found = reference_in(red, extra, text, &segs, fold, secrets);
    ranges.extend(found.iter().copied());
    secrets.extend(found.iter().map(|&(a, z)| text[a..z].to_vec()));
    if let Some(d) = decoded::has_escape(text)
        .then(|| Decoded::new(text))
        .flatten()
    {
        let dsegs: Vec<_> = segs
            .iter()
            .map(|&(a, z, q)| (d.decoded(a), d.decoded(z), q))
            .collect();
        let found = reference_in(red, extra, &d.bytes, &dsegs, fold, secrets);
        secrets.extend(found.iter().map(|&(a, z)| d.bytes[a..z].to_vec()));
        ranges.extend(found.iter().map(|&(a, z)| (d.original(a), d.original(z))));
    }
}

/// The secret ranges of `text`: literal occurrences (in any case if `fold`) after their public
/// prefix, and reference pattern matches per segment. Literals found are added to `secrets`.
fn reference_in(
    red: &Redactor,
    extra: &[&[u8]],
    text: &[u8],
    segs: &[(usize, usize, bool)],
    fold: bool,
    secrets: &mut Vec<Vec<u8>>,
) -> Vec<(usize, usize)> {
    let mut secret = Vec::new();
    // A presented credential's parts (split at whitespace, list separators and quotes, the
    // scheme word left out) are secrets on their own.
    let parts = extra.iter().flat_map(|&l| {
        l.split(|b| b" \t,;\"'".contains(b))
            .filter(|p| !p.eq_ignore_ascii_case(b"bearer"))
            .chain(std::iter::once(l))
    });
    let literals = red
        .literals
        .iter()
        .map(|(l, m)| (l.as_slice(), m.keep))
        .chain(
            parts
                .filter(|l| l.len() >= MIN_LITERAL_LEN)
                .map(|l| (l, reference_public_prefix(l))),
        );
    for (lit, keep) in literals {
        let mut found = false;
        for s in 0..(text.len() + 1).saturating_sub(lit.len()) {
            let at = &text[s..s + lit.len()];
            // A match across a mask's edge is of the mask (see `spans::overlaps_mask`).
            let hit = at == lit || (fold && at.eq_ignore_ascii_case(lit));
            if hit && !overlaps_mask(text, s, s + lit.len()) {
                secret.push((s + keep, s + lit.len()));
                found = true;
            }
        }
        if found {
            secrets.push(lit.to_vec());
        }
    }
    for &(a, z, query) in segs {
        reference_patterns(&text[a..z], a, query, &mut secret);
    }
    secret
}

/// The parts of `text` outside the given ranges.
fn pieces_outside<'t>(text: &'t [u8], ranges: &[(usize, usize)]) -> Vec<&'t [u8]> {
    let mut covered = vec![false; text.len()];
    for &(a, z) in ranges {
        covered[a..z].iter_mut().for_each(|c| *c = true);
    }
    let mut pieces = Vec::new();
    let mut start = 0;
    for i in 0..=text.len() {
        if i == text.len() || covered[i] {
            pieces.push(&text[start..i]);
            start = i + 1;
        }
    }
    pieces
}

/// The parts of `out` between rendered masks.
fn pieces_between_masks(out: &[u8]) -> Vec<&[u8]> {
    let mut pieces = Vec::new();
    let (mut start, mut i) = (0, 0);
    while i < out.len() {
        if out[i..].starts_with(OPEN) && out.get(i..i + MASK_LEN).is_some_and(is_rendered_mask) {
            pieces.push(&out[start..i]);
            i += MASK_LEN;
            start = i;
        } else {
            i += 1;
        }
    }
    pieces.push(&out[start..]);
    pieces
}

fn key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// `sk-ant-<kind>-` (`sk-ant-` in any case, a short lowercase kind), `rgt1.` or `rgs1_` (any
/// case): what may stay.
fn reference_public_prefix(v: &[u8]) -> usize {
    if v.len() >= 7 && v[..7].eq_ignore_ascii_case(b"sk-ant-") {
        let kind = v[7..]
            .iter()
            .take_while(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            .count();
        if (1..=12).contains(&kind) && v.get(7 + kind) == Some(&b'-') {
            return 8 + kind;
        }
        return 7;
    }
    if v.len() >= 5
        && (v[..5].eq_ignore_ascii_case(b"rgt1.") || v[..5].eq_ignore_ascii_case(b"rgs1_"))
    {
        return 5;
    }
    0
}

/// Every match of every pattern at every position, with no shortcut: Anthropic keys in any
/// case, rgt1 and rgs1 tokens in any case, and `Bearer <token>` (the token ends earlier in a
/// query).
fn reference_patterns(text: &[u8], base: usize, query: bool, out: &mut Vec<(usize, usize)>) {
    let ends = |b: u8| b" \t\r\n\"',;".contains(&b) || (query && (b == b'&' || b == b'#'));
    for i in 0..text.len() {
        let rest = &text[i..];
        if rest.len() >= 7 && rest[..7].eq_ignore_ascii_case(b"sk-ant-") {
            let body = i + reference_public_prefix(rest);
            let end = body + text[body..].iter().take_while(|&&b| key_byte(b)).count();
            out.push((base + body, base + end));
        }
        for (prefix, dots) in [(&b"rgt1."[..], true), (b"rgs1_", false)] {
            if rest.len() >= 5 && rest[..5].eq_ignore_ascii_case(prefix) {
                let body = i + 5;
                let end = body
                    + text[body..]
                        .iter()
                        .take_while(|&&b| key_byte(b) || (dots && b == b'.'))
                        .count();
                out.push((base + body, base + end));
            }
        }
        if rest.len() >= 6 && rest[..6].eq_ignore_ascii_case(b"bearer") {
            let mut tok = i + 6;
            loop {
                match text.get(tok) {
                    Some(b' ' | b'\t' | b'+') => tok += 1,
                    Some(b'%') if text.get(tok + 1..tok + 3) == Some(b"20") => tok += 3,
                    _ => break,
                }
            }
            if tok > i + 6 {
                let end = tok + text[tok..].iter().take_while(|&&b| !ends(b)).count();
                let secret = tok + reference_public_prefix(&text[tok..end]);
                out.push((base + secret, base + end));
            }
        }
    }
    out.retain(|&(a, z)| a < z);
}

/// The fuzz target's body (`src/fuzz/fuzz_targets/redact.rs`), also replayed over its corpus by
/// `cargo test`: input `extra 0xff text` is the credential a request presented, then a field's
/// text (without a 0xff byte it is all text), checked by [`check_mask_properties`] against the
/// default patterns plus one configured literal. Panics on a broken promise.
#[doc(hidden)]
pub fn check_fuzz_input(data: &[u8]) {
    static REDACTOR: std::sync::OnceLock<Redactor> = std::sync::OnceLock::new();
    let red = REDACTOR.get_or_init(|| {
        let mut cfg = super::RedactConfig::with_defaults();
        cfg.add_literal(b"sk-ant-api03-configured-upstream-key-0123456789");
        Redactor::new(&cfg, [7; 32])
    });
    let (extra, text) = match data.iter().position(|&b| b == 0xff) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&[][..], data),
    };
    let extras: &[&[u8]] = if extra.is_empty() { &[] } else { &[extra] };
    if let Err(e) = check_mask_properties(red, extras, text) {
        panic!("{e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redactor() -> Redactor {
        Redactor::new(&super::super::RedactConfig::with_defaults(), [7; 32])
    }

    /// The `?` that opens a Referer's query is no byte of a bearer token in the path, so a
    /// copy of it left readable there is not a leak of the same text masked whole later on
    /// (where `?` is an ordinary token byte); an unmasked token still is.
    #[test]
    fn query_mark_ends_a_path_token_in_the_reference() {
        let red = redactor();
        let text: &[u8] = b"Bearer x?abcdefghijklmnop Bearer x?abcdefghijklmnop";
        let m = red.for_request(&[]);
        let mut out = Vec::new();
        assert!(m.mask_target(text, &mut out));
        assert_eq!(leaked(&red, &[], "referer", text, &out), None);
        assert_eq!(
            leaked(&red, &[], "referer", text, text),
            Some(b"x?abcdefghij".to_vec())
        );
    }
}

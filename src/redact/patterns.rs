//! Format-based secret detection, applied to every header value, path and query: Anthropic keys
//! (`sk-ant-<kind>-<body>`), `Bearer <token>` anywhere, and relay-guard tokens: short-lived
//! (`rgt1.<…>`) and static (`rgs1_<…>`, the form `relay_guard_client.py new-key` makes). Every
//! prefix is recognised in any letter case.
//!
//! One pass over the text looks for anchor bytes; each anchor kind then reads a greedy run of
//! its own character class. A kind's runs never overlap (an anchor inside an earlier run of the
//! same kind is already covered, because the anchor bytes are in the class), so the run reads
//! add at most one pass per kind: linear in the input whatever it contains.

use super::ends::{Stop, END_QUERY, END_TEXT};
use super::spans::Spans;
use crate::swar;

/// Where the text sits, which decides what ends a bearer token.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Ctx {
    /// Header values and paths: a token ends at whitespace, a quote, `,` or `;`.
    Text,
    /// Query strings: additionally at `&` and `#`, since a raw query value cannot contain them
    /// and masking into the next argument would hide non-secret data.
    Query,
}

const SK_PREFIX: &[u8] = b"sk-ant-";
const RGT_PREFIX: &[u8] = b"rgt1.";
const RGS_PREFIX: &[u8] = b"rgs1_";
/// `sk-ant-<kind>-`: public kinds are short (`api03`, `admin01`, `oat01`, `ort01`); a longer
/// lowercase word is more likely key material, so it is masked rather than kept.
const MAX_KIND_LEN: usize = 12;

/// Anchor bytes are the rarest byte of each prefix in typical header text: `k` of `sk-ant-`,
/// `g` of `rgt1.` and `rgs1_`, `b` of `bearer`. Folding ASCII case (`| 0x20`) lets one compare per anchor
/// catch `B`; the other folded hits are rejected by the exact check.
const FOLD: u64 = swar::splat(0x20);

/// Anthropic key body: `[A-Za-z0-9_-]`.
const fn key_class() -> [bool; 256] {
    let mut t = [false; 256];
    let mut c = 0usize;
    while c < 256 {
        let b = c as u8;
        t[c] = b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
        c += 1;
    }
    t
}
static KEY: [bool; 256] = key_class();

/// relay-guard token after `rgt1.`: key id, expiry and MAC separated by dots.
const fn rgt_class() -> [bool; 256] {
    let mut t = key_class();
    t[b'.' as usize] = true;
    t
}
static RGT: [bool; 256] = rgt_class();

/// Length of the run of `class` bytes starting at `from`.
fn run(text: &[u8], from: usize, class: &[bool; 256]) -> usize {
    text.get(from..)
        .unwrap_or_default()
        .iter()
        .position(|&b| !class[usize::from(b)])
        .unwrap_or(text.len().saturating_sub(from))
}

/// `prefix` in any letter case: `SK-ANT-…` is as much a key as `sk-ant-…` to a client that
/// upper-cases what it sends, and nginx lower-cases `$host`, so all are masked the same way.
#[inline]
fn starts_with_ci(v: &[u8], prefix: &[u8]) -> bool {
    v.get(..prefix.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
}

#[inline]
fn starts_with_sk(v: &[u8]) -> bool {
    starts_with_ci(v, SK_PREFIX)
}

/// `rgt1.` or `rgs1_` (any case): a relay-guard token's prefix, and the class of its body.
#[inline]
fn relay_token(v: &[u8]) -> Option<&'static [bool; 256]> {
    if starts_with_ci(v, RGT_PREFIX) {
        Some(&RGT)
    } else if starts_with_ci(v, RGS_PREFIX) {
        Some(&KEY)
    } else {
        None
    }
}

/// How many leading bytes of a credential are a fixed public prefix that may stay in the log:
/// `sk-ant-<kind>-` or `rgt1.`. Everything after it is secret.
pub(crate) fn public_prefix_len(v: &[u8]) -> usize {
    prefix_of(v).0
}

/// The public prefix's length, and the class of the secret after it when the prefix says
/// which pattern this is: `sk-ant-<kind>-` (a kind of its own) or a relay-guard token. Worked
/// out once per literal and per presented credential, so the first byte picks the one
/// comparison to make.
pub(crate) fn prefix_of(v: &[u8]) -> (usize, Option<&'static [bool; 256]>) {
    match v.first().map(|&b| b | 0x20) {
        Some(b's') if starts_with_sk(v) => {
            let rest = &v[SK_PREFIX.len()..];
            let kind = rest
                .iter()
                .position(|b| !(b.is_ascii_lowercase() || b.is_ascii_digit()))
                .unwrap_or(rest.len());
            if (1..=MAX_KIND_LEN).contains(&kind) && rest.get(kind) == Some(&b'-') {
                return (SK_PREFIX.len() + kind + 1, Some(&KEY));
            }
            (SK_PREFIX.len(), None)
        }
        Some(b'r') => match relay_token(v) {
            Some(class) => (RGT_PREFIX.len(), Some(class)),
            None => (0, None),
        },
        _ => (0, None),
    }
}

/// True if every occurrence of `lit` in any text is already masked by [`scan`] up to a public
/// prefix, so the literal matcher can skip it. Holds for whole Anthropic keys and rgt1 tokens:
/// the scanners need nothing to the left of the prefix and their runs only grow in context.
pub(crate) fn covers_literal(lit: &[u8]) -> bool {
    // `sk-ant-abc123` has no kind of its own, but in `sk-ant-abc123-x` the scanner reads
    // `abc123` as the kind and keeps it: only a literal whose kind ends inside it is covered.
    let (p, class) = prefix_of(lit);
    class.is_some_and(|c| p < lit.len() && lit[p..].iter().all(|&b| c[usize::from(b)]))
}

/// True if `lit` can only occur where [`scan`] pushes a span: it starts with a public prefix
/// whose meaning does not depend on what follows (`rgt1.`, or `sk-ant-<kind>-` with the kind's
/// `-` inside the literal) and its first secret byte is in that pattern's class. Then a scan
/// that found nothing proves the literal absent, and the per-request literal pass can be
/// skipped on the clean common path. The prefixes have no self-overlap, so an occurrence cannot
/// hide inside another match's public prefix.
#[cfg(test)]
pub(crate) fn implied_by_scan(lit: &[u8]) -> bool {
    implied_given(lit, prefix_of(lit))
}

/// [`implied_by_scan`] with the literal's [`prefix_of`] already known.
pub(crate) fn implied_given(lit: &[u8], (p, class): (usize, Option<&[bool; 256]>)) -> bool {
    class.is_some_and(|c| lit.get(p).is_some_and(|&b| c[usize::from(b)]))
}

/// Bearer scheme word followed by at least one separator (space, tab, or URL-encoded space
/// `+` / `%20`); returns the offset of the token after it.
fn bearer_token_start(text: &[u8], at: usize) -> Option<usize> {
    let word = text.get(at..at + 6)?;
    if !word.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let mut i = at + 6;
    loop {
        match text.get(i) {
            Some(b' ' | b'\t' | b'+') => i += 1,
            Some(b'%') if text.get(i + 1..i + 3) == Some(b"20") => i += 3,
            _ => break,
        }
    }
    (i > at + 6).then_some(i)
}

/// Pushes the secret part of every pattern match in `text` (offsets shifted by `base`).
pub(crate) fn scan(text: &[u8], ctx: Ctx, base: usize, spans: &mut Spans) {
    let mut st = Scan {
        text,
        base,
        end_class: match ctx {
            Ctx::Text => &END_TEXT,
            Ctx::Query => &END_QUERY,
        },
        stop: match ctx {
            Ctx::Text => Stop::Text,
            Ctx::Query => Stop::Query,
        },
        sk_end: 0,
        bearer_end: 0,
        rgt_end: 0,
        rgs_end: 0,
    };
    // Eight bytes per step; almost every word of ordinary header text has no anchor at all.
    let mut chunks = text.chunks_exact(8);
    let mut at = 0usize;
    for c in &mut chunks {
        let mut b = [0u8; 8];
        b.copy_from_slice(c);
        st.word(at, b, spans);
        at += 8;
    }
    // The tail is zero-padded to a word: a folded zero is a space, never an anchor.
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut b = [0u8; 8];
        // A byte loop: a variable-length copy_from_slice becomes a memcpy call per value.
        for (d, &x) in b.iter_mut().zip(rest) {
            *d = x;
        }
        st.word(at, b, spans);
    }
}

struct Scan<'a> {
    text: &'a [u8],
    base: usize,
    end_class: &'a [bool; 256],
    stop: Stop,
    // End of the last run per kind: anchors before it are inside that run and already covered.
    sk_end: usize,
    bearer_end: usize,
    rgt_end: usize,
    rgs_end: usize,
}

impl Scan<'_> {
    #[inline(always)]
    fn word(&mut self, at: usize, bytes: [u8; 8], spans: &mut Spans) {
        let w = u64::from_le_bytes(bytes) | FOLD;
        let mut m = swar::eq_marks(w, b'k') | swar::eq_marks(w, b'g') | swar::eq_marks(w, b'b');
        while m != 0 {
            self.anchor(at + (m.trailing_zeros() / 8) as usize, spans);
            m &= m - 1;
        }
    }

    #[inline]
    fn anchor(&mut self, i: usize, spans: &mut Spans) {
        let text = self.text;
        match text.get(i) {
            Some(b'k' | b'K') if i >= 1 && i > self.sk_end && starts_with_sk(&text[i - 1..]) => {
                let p = i - 1;
                let body = p + public_prefix_len(&text[p..]);
                self.sk_end = body + run(text, body, &KEY);
                spans.keep(self.base + p, self.base + body);
                spans.push(self.base + body, self.base + self.sk_end);
            }
            Some(b'g' | b'G') if i >= 1 && text[i - 1] | 0x20 == b'r' => {
                let Some(class) = relay_token(&text[i - 1..]) else {
                    return;
                };
                // Static and short-lived tokens have classes of their own, so each kind keeps
                // its own end: a `rgt1.` inside a static token's run still reads its dots.
                let last = if core::ptr::eq(class, &RGT) {
                    &mut self.rgt_end
                } else {
                    &mut self.rgs_end
                };
                if i <= *last {
                    return;
                }
                let body = i - 1 + RGT_PREFIX.len();
                *last = body + run(text, body, class);
                spans.keep(self.base + i - 1, self.base + body);
                spans.push(self.base + body, self.base + *last);
            }
            // A scheme word inside the last token is looked at too: in `Bearer Bearer  tok` the
            // first token is the second `Bearer`, and the real token follows it. A token that
            // starts inside the last one ends where it ends (no end byte lies between), which
            // keeps the pass linear.
            Some(b'b' | b'B') => {
                if let Some(tok) = bearer_token_start(text, i) {
                    let tok_end = if tok < self.bearer_end {
                        self.bearer_end
                    } else {
                        tok + run_until(text, tok, self.end_class)
                    };
                    let secret = tok + public_prefix_len(&text[tok..tok_end]);
                    self.bearer_end = tok_end;
                    spans.keep(self.base + tok, self.base + secret);
                    let limit = self.base + text.len();
                    spans.push_until(self.base + secret, self.base + tok_end, self.stop, limit);
                }
            }
            _ => {}
        }
    }
}

/// Length of the run of bytes *not* in `end` starting at `from`.
fn run_until(text: &[u8], from: usize, end: &[bool; 256]) -> usize {
    text.get(from..)
        .unwrap_or_default()
        .iter()
        .position(|&b| end[usize::from(b)])
        .unwrap_or(text.len().saturating_sub(from))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redact::spans::Span;

    fn found(text: &[u8], ctx: Ctx) -> Vec<(String, String)> {
        let mut s = Spans::new();
        scan(text, ctx, 0, &mut s);
        s.normalized(text)
            .into_iter()
            .map(|Span { start, end }| {
                (
                    String::from_utf8_lossy(&text[..start]).into_owned(),
                    String::from_utf8_lossy(&text[start..end]).into_owned(),
                )
            })
            .collect()
    }

    fn secrets(text: &str, ctx: Ctx) -> Vec<String> {
        found(text.as_bytes(), ctx)
            .into_iter()
            .map(|(_, s)| s)
            .collect()
    }

    #[test]
    fn anthropic_key_kinds_keep_only_the_public_prefix() {
        for kind in ["api03", "admin01", "oat01", "ort01", "xyz9"] {
            let text = format!("k: sk-ant-{kind}-AbC_d-9z end");
            let got = found(text.as_bytes(), Ctx::Text);
            assert_eq!(got.len(), 1, "{text}");
            assert_eq!(got[0].0, format!("k: sk-ant-{kind}-"));
            assert_eq!(got[0].1, "AbC_d-9z");
        }
    }

    #[test]
    fn anthropic_key_without_a_short_kind_is_masked_after_sk_ant() {
        assert_eq!(secrets("sk-ant-ABCDEF", Ctx::Text), ["ABCDEF"]);
        assert_eq!(
            secrets("sk-ant-abcdefghijklmnopqrstuvwxyz-tail", Ctx::Text),
            ["abcdefghijklmnopqrstuvwxyz-tail"]
        );
        assert_eq!(secrets("sk-ant-api03", Ctx::Text), ["api03"]);
        assert!(secrets("sk-ant-api03- x", Ctx::Text).is_empty());
        assert!(secrets("sk-ant-", Ctx::Text).is_empty());
    }

    #[test]
    fn key_run_stops_outside_its_class() {
        assert_eq!(secrets("/p/sk-ant-api03-AAA/b", Ctx::Text), ["AAA"]);
        assert_eq!(secrets("x=sk-ant-api03-AAA&y=1", Ctx::Query), ["AAA"]);
    }

    #[test]
    fn bearer_anywhere_case_insensitive() {
        assert_eq!(secrets("Bearer abc.def", Ctx::Text), ["abc.def"]);
        assert_eq!(secrets("x bEaReR  tok/+=; rest", Ctx::Text), ["tok/+="]);
        assert_eq!(secrets("\"BEARER tok\",", Ctx::Text), ["tok"]);
        assert_eq!(secrets("a=Bearer%20tok&b=2", Ctx::Query), ["tok"]);
        assert_eq!(secrets("a=bearer+tok#f", Ctx::Query), ["tok"]);
        assert_eq!(secrets("a=bearer+tok&b", Ctx::Text), ["tok&b"]);
        assert!(secrets("bearer", Ctx::Text).is_empty());
        assert!(secrets("bearerx tok", Ctx::Text).is_empty());
        assert!(secrets("Bearer ", Ctx::Text).is_empty());
    }

    #[test]
    fn bearer_keeps_public_prefix_of_known_credentials() {
        let got = found(b"Bearer sk-ant-oat01-SECRET", Ctx::Text);
        assert_eq!(got, [("Bearer sk-ant-oat01-".into(), "SECRET".into())]);
        let got = found(b"Bearer rgt1.k1.17.abcdef", Ctx::Text);
        assert_eq!(got, [("Bearer rgt1.".into(), "k1.17.abcdef".into())]);
    }

    #[test]
    fn rgt_token_keeps_only_rgt1_prefix() {
        let hex = "0123456789abcdef".repeat(4);
        let text = format!("t=rgt1.key-1.1700000000.{hex}&x");
        let got = found(text.as_bytes(), Ctx::Query);
        assert_eq!(got, [("t=rgt1.".into(), format!("key-1.1700000000.{hex}"))]);
        assert!(secrets("rgt1.", Ctx::Text).is_empty());
    }

    #[test]
    fn overlapping_anchors_merge() {
        // An rgt1 token glued to a key body: the key run stops at '.', the rgt run continues.
        assert_eq!(
            secrets("sk-ant-api03-AArgt1.k.1.ff", Ctx::Text),
            ["AArgt1", "k.1.ff"]
        );
        // The first anchor reads `sk` as the kind; the inner key's body is inside its run.
        assert_eq!(
            secrets("sk-ant-sk-ant-api03-XYZ", Ctx::Text),
            ["ant-api03-XYZ"]
        );
        assert_eq!(
            secrets("Bearer Bearer Bearer x", Ctx::Text),
            ["Bearer", "Bearer", "x"]
        );
    }

    /// A scheme word that is itself the token (`Bearer Bearer tok`, as a client that prefixes
    /// the scheme twice sends it) does not hide the real token after it.
    #[test]
    fn repeated_scheme_words_do_not_hide_the_token() {
        assert_eq!(
            secrets("x Bearer Bearer opaque-token-123", Ctx::Text),
            ["Bearer", "opaque-token-123"]
        );
        assert_eq!(
            secrets("a=bearer+Bearer%20 tok&b", Ctx::Query),
            ["Bearer%20", "tok"]
        );
        // Nested inside one token (no end byte between): one span, and linear.
        assert_eq!(secrets("Bearer a+bearer+tok", Ctx::Text), ["a+bearer+tok"]);
        let text = "Bearer ".to_string() + &"bearer+".repeat(100_000) + " x";
        let mut s = Spans::new();
        scan(text.as_bytes(), Ctx::Text, 0, &mut s);
        assert_eq!(s.normalized(text.as_bytes()).len(), 2);
    }

    #[test]
    fn anthropic_keys_in_any_case() {
        assert_eq!(secrets("SK-ANT-API03-SECRET", Ctx::Text), ["API03-SECRET"]);
        assert_eq!(secrets("x Sk-Ant-api03-SECRET", Ctx::Text), ["SECRET"]);
        assert_eq!(secrets("q=sK-aNt-oat01-SECRET&b", Ctx::Query), ["SECRET"]);
        assert_eq!(public_prefix_len(b"SK-ANT-api03-x"), 13);
    }

    #[test]
    fn public_prefix() {
        assert_eq!(public_prefix_len(b"sk-ant-api03-x"), 13);
        assert_eq!(public_prefix_len(b"sk-ant-API03-x"), 7);
        assert_eq!(public_prefix_len(b"rgt1.x"), 5);
        assert_eq!(public_prefix_len(b"token"), 0);
        assert_eq!(public_prefix_len(b""), 0);
    }

    #[test]
    fn covered_literals() {
        assert!(covers_literal(b"sk-ant-api03-abc_DEF-123"));
        assert!(covers_literal(b"rgt1.k1.123.abcdef"));
        assert!(!covers_literal(b"sk-ant-api03-"));
        assert!(!covers_literal(b"sk-ant-api03-a b"));
        assert!(!covers_literal(b"xsk-ant-api03-ab"));
        assert!(!covers_literal(b"opaque-secret"));
        assert!(!covers_literal(b"sk-ant-abc12345"));
    }

    #[test]
    fn implied_literals_always_produce_a_span_where_they_occur() {
        let lits: [&[u8]; 4] = [
            b"rgt1.k1.5.ab",
            b"rgt1.x y",
            b"sk-ant-api03-Q z",
            b"sk-ant-oat01-x",
        ];
        let pads: [&[u8]; 10] = [
            b"",
            b"-",
            b".",
            b" ",
            b"sk-ant-",
            b"rgt1.",
            b"sk-ant-api03-",
            b"a",
            b"?",
            b"sk-ant-sk-ant-ab-",
        ];
        for lit in lits {
            assert!(implied_by_scan(lit));
            for pre in pads {
                for post in pads {
                    let text = [pre, lit, post].concat();
                    for ctx in [Ctx::Text, Ctx::Query] {
                        let mut s = Spans::new();
                        scan(&text, ctx, 0, &mut s);
                        assert!(!s.is_empty(), "{:?}", String::from_utf8_lossy(&text));
                    }
                }
            }
        }
        for lit in [
            &b"sk-ant-abc"[..],
            b"sk-ant-api03- x",
            b"rgt1. x",
            b"opaque-token",
            b"rgt1.",
        ] {
            assert!(!implied_by_scan(lit), "{:?}", String::from_utf8_lossy(lit));
        }
    }

    #[test]
    fn hostile_repetition_is_linear_and_safe() {
        let text =
            "sk-ant-".repeat(100_000) + &"Bearer+".repeat(100_000) + &"rgt1.".repeat(100_000);
        let mut s = Spans::new();
        scan(text.as_bytes(), Ctx::Query, 0, &mut s);
        assert!(!s.is_empty());
        let bad: Vec<u8> = (0..=255u8).cycle().take(1 << 16).collect();
        let mut s = Spans::new();
        scan(&bad, Ctx::Text, 0, &mut s);
    }
}

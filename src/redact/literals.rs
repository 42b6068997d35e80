//! Exact secret values (the upstream API key, the token a client presented) masked wherever
//! they occur, whatever their format.
//!
//! The common case is a scan for the literal's rarest byte, which stops almost nowhere. A
//! hostile text can make naive matching quadratic (text `aaaa…`, literal `aaa…ab`), so the
//! scan counts the bytes it compares and, past a linear budget, finishes with Knuth-Morris-Pratt,
//! which is linear whatever the input. Only that fallback allocates.

use super::fingerprint::MASK_LEN;
use super::patterns::{implied_given, prefix_of};
use super::spans::{overlaps_mask, Spans};
use crate::swar;

/// Shorter values are not masked: they would hide ordinary text all over the line (a client
/// could present a one-letter "token") and are too short to be real credentials.
pub const MIN_LITERAL_LEN: usize = 8;

/// Position of the first `needle` byte, eight bytes per step.
pub(crate) fn find_byte(hay: &[u8], needle: u8) -> Option<usize> {
    find_or_masked(hay, needle, 0)
}

/// Position of the first byte equal to the ASCII letter `letter` in either case.
fn find_letter(hay: &[u8], letter: u8) -> Option<usize> {
    // Only the two cases of a letter fold to its lowercase byte.
    find_or_masked(hay, letter | 0x20, 0x20)
}

/// Position of the first byte `b` with `b | or == needle`, eight bytes per step.
#[inline(always)]
fn find_or_masked(hay: &[u8], needle: u8, or: u8) -> Option<usize> {
    let fold = swar::splat(or);
    let mut chunks = hay.chunks_exact(8);
    let mut at = 0usize;
    for c in &mut chunks {
        // The lowest mark is the first equal byte.
        let t = swar::eq_marks(swar::word(c) | fold, needle);
        if t != 0 {
            return Some(at + (t.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b | or == needle)
        .map(|p| at + p)
}

/// Rough rarity of a byte in HTTP header text (lower is rarer), so the scan searches for the
/// literal's least common byte and stops rarely: searching for the `r` of `rgt1.` would stop at
/// every `r` in `interleaved-thinking`.
const fn rank_of(b: u8) -> u8 {
    match b {
        b'A'..=b'Z' => 1,
        b'j' | b'q' | b'x' | b'z' | b'k' | b'v' | b'w' | b'y' => 2,
        b'b' | b'f' | b'g' | b'p' | b'h' | b'u' | b'm' => 4,
        b'0'..=b'9' => 5,
        b'a'..=b'z' | b'-' | b'.' | b',' | b';' | b'/' | b' ' | b'=' | b'_' | b':' => 6,
        _ => 3,
    }
}

const fn ranks() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = rank_of(i as u8);
        i += 1;
    }
    t
}
static RANK: [u8; 256] = ranks();

/// How far into the literal the prefilter byte may be; the first few bytes are enough to find a
/// rare one, and keeping it near the start keeps candidates close to their match.
const RARE_WINDOW: usize = 16;

/// Offset and value of the rarest byte of `window` (the first one on ties).
fn rarest(window: &[u8]) -> (usize, u8) {
    // Rank and offset in one key: the minimum is the rarest byte, the first one on ties, and
    // the loop has no branch to mispredict.
    let key = window
        .iter()
        .zip(0u16..)
        .map(|(&b, j)| u16::from(RANK[usize::from(b)]) << 8 | j)
        .min()
        .unwrap_or(0);
    let at = usize::from(key & 0xff);
    (at, window.get(at).copied().unwrap_or(0))
}

/// The prefilter's pair: the rarest byte and the one after it (or before it, at the end). A
/// rare byte makes a rare pair, and it costs nothing more to find; this runs per request.
fn pair_around(bytes: &[u8], at: usize) -> [u8; 2] {
    let byte = |i: usize| bytes.get(i).copied().unwrap_or(0);
    let start = if at + 1 < bytes.len() {
        at
    } else {
        at.saturating_sub(1)
    };
    [byte(start), byte(start + 1)]
}

/// What matching needs to know about a secret value besides its bytes, worked out once per
/// literal (per request for the presented credentials), not once per header.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Meta {
    /// Leading public bytes left visible (`sk-ant-api03-`, `rgt1.`).
    pub(crate) keep: usize,
    /// Offset and value of the byte the literal search looks for.
    rare_at: usize,
    rare: u8,
    /// Two adjacent bytes of the literal, chosen to be rare together, for the prefilter.
    pub(crate) pair: [u8; 2],
    /// Every occurrence makes the pattern scan push a span (see `patterns::implied_by_scan`).
    pub(crate) implied: bool,
}

impl Meta {
    pub(crate) fn of(bytes: &[u8]) -> Meta {
        let (rare_at, rare) = rarest(&bytes[..bytes.len().min(RARE_WINDOW)]);
        let prefix = prefix_of(bytes);
        Meta {
            keep: prefix.0,
            rare_at,
            rare,
            pair: pair_around(bytes, rare_at),
            implied: implied_given(bytes, prefix),
        }
    }
}

/// A secret value with its [`Meta`].
#[derive(Clone, Copy)]
pub(crate) struct Literal<'a> {
    pub(crate) bytes: &'a [u8],
    pub(crate) meta: Meta,
}

// The bytes are a secret: never print them.
impl std::fmt::Debug for Literal<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Literal")
            .field("len", &self.bytes.len())
            .finish_non_exhaustive()
    }
}

impl<'a> Literal<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Literal<'a> {
        Literal {
            bytes,
            meta: Meta::of(bytes),
        }
    }
}

/// Pushes every occurrence of `lit` in `text` (overlapping ones too; the merge joins them),
/// leaving its public prefix visible: a literal that is an Anthropic key or rgt1 token then
/// yields exactly the span the pattern scanner yields, so both merge into one mask with the
/// same fingerprint as everywhere else.
pub(crate) fn find_all(text: &[u8], lit: &Literal<'_>, spans: &mut Spans) {
    find::<false>(text, lit, spans)
}

/// [`find_all`] in any letter case, for the copies nginx lower-cases (`$host`, and what a
/// `map` or a `server_name` regex made of it).
pub(crate) fn find_all_folded(text: &[u8], lit: &Literal<'_>, spans: &mut Spans) {
    find::<true>(text, lit, spans)
}

/// Pushes the start of `lit` if `text` ends with it (at least [`MIN_LITERAL_LEN`] bytes of
/// it, not all): what is left of a literal where a text was cut short.
pub(crate) fn find_cut(text: &[u8], lit: &Literal<'_>, spans: &mut Spans) {
    let bytes = lit.bytes;
    let longest = bytes.len().saturating_sub(1).min(text.len());
    for k in (MIN_LITERAL_LEN..=longest).rev() {
        let s = text.len() - k;
        if text.ends_with(&bytes[..k]) && !across_mask(text, &bytes[..k], s) {
            let keep = lit.meta.keep.min(k);
            spans.keep(s, s + keep);
            spans.push(s + keep, text.len());
            return;
        }
    }
}

/// True if the occurrence of `lit` at `at` in `text` runs across a rendered mask's edge. Only
/// a literal holding `[` or `]` can (see `spans::overlaps_mask`); one inside a mask is left to
/// rendering, which skips it. Asked at every match, and the presented token matches in its own
/// header on nearly every request: the text around the match is first searched for a `[`,
/// eight bytes per step, which almost no request holds.
fn across_mask(text: &[u8], lit: &[u8], at: usize) -> bool {
    let from = at.saturating_sub(MASK_LEN - 1);
    let to = (at + lit.len()).min(text.len());
    text.get(from..to)
        .is_some_and(|around| find_byte(around, b'[').is_some())
        && (find_byte(lit, b'[').is_some() || find_byte(lit, b']').is_some())
        && overlaps_mask(text, at, at + lit.len())
}

#[inline(always)]
fn same<const FOLD: bool>(a: u8, b: u8) -> bool {
    if FOLD {
        a.eq_ignore_ascii_case(&b)
    } else {
        a == b
    }
}

fn find<const FOLD: bool>(text: &[u8], lit: &Literal<'_>, spans: &mut Spans) {
    let (bytes, keep, o, rare) = (lit.bytes, lit.meta.keep, lit.meta.rare_at, lit.meta.rare);
    let (n, m) = (text.len(), bytes.len());
    if m < 2 || m > n {
        return;
    }
    let letter = FOLD && rare.is_ascii_alphabetic();
    let budget = 2 * n + 64;
    let mut work = 0usize;
    let last_start = n - m;
    // `i` is the first start not yet tried; a candidate start `s` has `text[s + o] == rare`.
    let mut i = 0usize;
    while i <= last_start {
        let window = &text[i + o..=last_start + o];
        let found = if letter {
            find_letter(window, rare)
        } else {
            find_byte(window, rare)
        };
        let Some(off) = found else {
            return;
        };
        let s = i + off;
        work += 1;
        if same::<FOLD>(text[s], bytes[0]) {
            work += m;
            let hit = if FOLD {
                text[s..s + m].eq_ignore_ascii_case(bytes)
            } else {
                &text[s..s + m] == bytes
            };
            // A literal holding `[` (a presented `x [redacted`) can match a mask an earlier
            // masking wrote: that match is not the secret, and masking it would make masking
            // the output again change it.
            if hit && !across_mask(text, bytes, s) {
                spans.keep(s, s + keep);
                spans.push(s + keep, s + m);
            }
        }
        i = s + 1;
        if work > budget {
            kmp::<FOLD>(text, i, lit, spans);
            return;
        }
    }
}

/// Knuth-Morris-Pratt from `from` on; every start before `from` has already been tried.
fn kmp<const FOLD: bool>(text: &[u8], from: usize, literal: &Literal<'_>, spans: &mut Spans) {
    let (lit, keep) = (literal.bytes, literal.meta.keep);
    let m = lit.len();
    // fail[j] = length of the longest proper border of lit[..=j].
    let mut fail = vec![0usize; m];
    let mut k = 0usize;
    for j in 1..m {
        while k > 0 && !same::<FOLD>(lit[j], lit[k]) {
            k = fail[k - 1];
        }
        if same::<FOLD>(lit[j], lit[k]) {
            k += 1;
        }
        fail[j] = k;
    }
    let mut j = 0usize;
    for (i, &b) in text.iter().enumerate().skip(from) {
        while j > 0 && !same::<FOLD>(b, lit[j]) {
            j = fail[j - 1];
        }
        if same::<FOLD>(b, lit[j]) {
            j += 1;
        }
        if j == m {
            let end = i + 1;
            if !across_mask(text, lit, end - m) {
                spans.keep(end - m, end - m + keep);
                spans.push(end - m + keep, end);
            }
            j = fail[m - 1];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redact::spans::Span;

    fn all(text: &[u8], lit: &[u8]) -> Vec<(usize, usize)> {
        let mut s = Spans::new();
        // keep = 0 whatever the literal looks like: these tests are about positions.
        let mut l = Literal::new(lit);
        l.meta.keep = 0;
        find_all(text, &l, &mut s);
        s.normalized(text)
            .into_iter()
            .map(|Span { start, end }| (start, end))
            .collect()
    }

    fn naive(text: &[u8], lit: &[u8]) -> Vec<(usize, usize)> {
        let mut s = Spans::new();
        if lit.len() >= 2 && lit.len() <= text.len() {
            for i in 0..=text.len() - lit.len() {
                if &text[i..i + lit.len()] == lit {
                    s.push(i, i + lit.len());
                }
            }
        }
        s.normalized(text)
            .into_iter()
            .map(|Span { start, end }| (start, end))
            .collect()
    }

    #[test]
    fn find_byte_matches_position() {
        let hay: Vec<u8> = (0..100u8).collect();
        for n in 0..100u8 {
            for start in [0usize, 1, 7, 8, 9] {
                let want = hay[start..].iter().position(|&b| b == n);
                assert_eq!(find_byte(&hay[start..], n), want);
            }
        }
        assert_eq!(find_byte(b"", 0), None);
        assert_eq!(
            find_byte(&[0x80, 0x81, 0xff, 0x00, 0x7f][..], 0x00),
            Some(3)
        );
        assert_eq!(find_byte(&[1u8; 9][..], 0x00), None);
    }

    #[test]
    fn finds_every_occurrence_including_overlaps() {
        assert_eq!(all(b"xxSECRETxxSECRET", b"SECRET"), [(2, 8), (10, 16)]);
        assert_eq!(all(b"abababab", b"abab"), [(0, 8)]);
        assert_eq!(all(b"ab", b"abc"), []);
        assert_eq!(all(b"abc", b"a"), []);
    }

    #[test]
    fn rare_byte_offsets_find_matches_at_the_edges() {
        let lit = b"abcdefQhij";
        assert_eq!(all(b"abcdefQhij", lit), [(0, 10)]);
        assert_eq!(all(b"xxQabcdefQhij", lit), [(3, 13)]);
        assert_eq!(all(b"QQQQQQQQabcdefQhi", lit), []);
    }

    #[test]
    fn keep_leaves_the_public_prefix() {
        let mut s = Spans::new();
        find_all(b"x rgt1.secret y", &Literal::new(b"rgt1.secret"), &mut s);
        assert_eq!(s.normalized(b""), [Span { start: 7, end: 13 }]);
    }

    #[test]
    fn hostile_periodic_text_takes_the_kmp_path_with_same_result() {
        let lit: Vec<u8> = [vec![b'a'; 200], b"b".to_vec(), vec![b'a'; 50]].concat();
        let mut text = vec![b'a'; 100_000];
        text.extend_from_slice(&lit);
        text.extend(std::iter::repeat_n(b'a', 1000));
        text.extend_from_slice(&lit[..lit.len() - 1]);
        assert_eq!(all(&text, &lit), naive(&text, &lit));
        assert_eq!(all(&text, &lit).len(), 1);
    }

    #[test]
    fn kmp_agrees_with_naive_on_small_alphabets() {
        // Deterministic pseudo-random texts over {a,b} exercise borders and overlaps.
        let mut next = crate::redact::test_rng::xorshift(0x2545_f491_4f6c_dd1d);
        for round in 0..200 {
            let text: Vec<u8> = (0..300).map(|_| b'a' + (next() % 2) as u8).collect();
            let lit: Vec<u8> = (0..(2 + round % 6))
                .map(|_| b'a' + (next() % 2) as u8)
                .collect();
            let mut fast = Spans::new();
            let mut l = Literal::new(&lit);
            l.meta.keep = 0;
            kmp::<false>(&text, 0, &l, &mut fast);
            let fast: Vec<_> = fast
                .normalized(&text)
                .into_iter()
                .map(|s| (s.start, s.end))
                .collect();
            assert_eq!(fast, naive(&text, &lit));
            assert_eq!(all(&text, &lit), naive(&text, &lit));
        }
    }

    #[test]
    fn folded_search_finds_every_case_and_only_that() {
        let lit = Literal::new(b"AbCdEfGh-12");
        for text in [&b"x abcdefgh-12 y"[..], b"ABCDEFGH-12", b"zzAbCdEfGh-12"] {
            let mut s = Spans::new();
            find_all_folded(text, &lit, &mut s);
            assert_eq!(
                s.normalized(text).len(),
                1,
                "{:?}",
                String::from_utf8_lossy(text)
            );
            let mut s = Spans::new();
            find_all(text, &lit, &mut s);
            assert_eq!(s.is_empty(), text != b"zzAbCdEfGh-12");
        }
        let mut s = Spans::new();
        find_all_folded(b"abcdefgh_12", &lit, &mut s);
        assert!(s.is_empty());
        // Past the budget (a candidate at every byte), KMP folds the same way.
        let lit = Literal::new(b"AAAAAAAAAAB");
        let text = [&vec![b'a'; 100_000][..], b"aaaaaaaaaab", b"AAAAAAAAAAb"].concat();
        let mut s = Spans::new();
        find_all_folded(&text, &lit, &mut s);
        assert_eq!(
            s.normalized(&text),
            [Span {
                start: 100_000,
                end: 100_022
            }]
        );
    }
}

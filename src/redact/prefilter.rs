//! A quick "could anything here be secret?" test, run on a value before the scanners.
//!
//! Almost every header value, path and query of a relayed request holds nothing secret, and the
//! full scanners pay a fixed cost per value and per anchor byte (`k` of `keep-alive`, `g` of
//! `thinking`, `be` of `?beta=true`). This test reads each byte once, sixteen at a time on
//! x86_64, and looks for three-byte *triples* that every pattern match contains: `k-a`
//! (`sk-ant-`), `gt1` (`rgt1.`), `gs1` (`rgs1_`), `bea` (`bearer`), all in any case, a `%` (a
//! percent-encoded secret contains none of them), plus a byte pair of each literal the pattern
//! scanner cannot vouch for. It may say yes when nothing matches (the scanners then
//! decide); it never says no when a scanner would find something, which the redaction tests
//! check against the scanners themselves.

mod check;
#[doc(hidden)]
pub use check::check_prefilter_fuzz_input;

/// No pattern match or literal is shorter: `rgt1.` plus one token byte. Shorter values (`js`,
/// `x64`, `600`, `true` in a typical request) skip every scan.
pub(crate) const MIN_MATCH_LEN: usize = 6;
// Literals shorter than this are not masked at all (see `MIN_LITERAL_LEN`).
const _: () = assert!(MIN_MATCH_LEN <= super::MIN_LITERAL_LEN);

/// Literal pairs the vector test carries; more literals than this switch the filter off.
const MAX_PAIRS: usize = 4;

/// The per-request filter: the pattern triples are fixed, the literal pairs vary.
// No Debug: the pairs are bytes of secrets.
#[derive(Clone, Copy)]
pub(crate) struct Prefilter {
    pairs: [[u8; 2]; MAX_PAIRS],
    n_pairs: usize,
    /// The CPU has AVX2 (checked once per request; std caches the answer). Read only on
    /// x86_64.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    wide: bool,
    /// Too many literals to test in one pass: every value goes to the scanners.
    off: bool,
    /// The pairs are compared in any letter case (they are stored folded).
    fold: bool,
}

impl Prefilter {
    /// `pairs` holds two adjacent bytes of each literal whose occurrence the pattern scan does
    /// not imply (so every occurrence of the literal contains its pair).
    pub(crate) fn new(pairs: impl Iterator<Item = [u8; 2]>) -> Prefilter {
        Self::build(pairs, false)
    }

    /// The same for texts whose letters may have changed case (see `literals::find_all_folded`).
    pub(crate) fn folded(pairs: impl Iterator<Item = [u8; 2]>) -> Prefilter {
        Self::build(pairs.map(|[a, z]| [a | FOLD, z | FOLD]), true)
    }

    fn build(pairs: impl Iterator<Item = [u8; 2]>, fold: bool) -> Prefilter {
        let mut p = Prefilter::always();
        p.off = false;
        p.fold = fold;
        p.wide = has_avx2();
        for pair in pairs {
            if p.pairs[..p.n_pairs].contains(&pair) {
                continue;
            }
            if p.n_pairs == MAX_PAIRS {
                p.off = true;
                break;
            }
            p.pairs[p.n_pairs] = pair;
            p.n_pairs += 1;
        }
        p
    }

    /// A filter that sends every value to the scanners.
    pub(crate) fn always() -> Prefilter {
        Prefilter {
            pairs: [[0; 2]; MAX_PAIRS],
            n_pairs: 0,
            wide: false,
            off: true,
            fold: false,
        }
    }

    /// False only if no pattern match and no literal can occur in `text`.
    #[inline(always)]
    pub(crate) fn may_match(&self, text: &[u8]) -> bool {
        if text.len() < MIN_MATCH_LEN {
            return false;
        }
        if self.off {
            return true;
        }
        let pairs = &self.pairs[..self.n_pairs];
        // Short values (most header values) take one 16-byte block, inlined here: a call into
        // the AVX2 code costs more than the block itself.
        #[cfg(target_arch = "x86_64")]
        if text.len() < 18 {
            return sse2::short(text, pairs, self.fold);
        }
        #[cfg(target_arch = "x86_64")]
        if self.wide {
            // SAFETY: `wide` is only set when the CPU reports AVX2.
            return unsafe { avx2::any_candidate(text, pairs, self.fold) };
        }
        any_candidate(text, pairs, self.fold)
    }
}

#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
}

#[cfg(not(target_arch = "x86_64"))]
fn has_avx2() -> bool {
    false
}

const FOLD: u8 = 0x20;
/// The pattern triples after folding every byte with `| 0x20`. Folding lets one compare catch
/// `BEARER`; the other bytes it folds together only add false alarms, never misses.
/// The vector blocks rely on the second and third sharing their first and last bytes.
const TRIPLES: [[u8; 3]; 4] = [*b"k-a", *b"gt1", *b"gs1", *b"bea"];
const _: () = assert!(TRIPLES[1][0] == TRIPLES[2][0] && TRIPLES[1][2] == TRIPLES[2][2]);
/// Starts every percent-encoded secret (folded, it also matches 0x05: a false alarm).
const ESCAPE: u8 = b'%';

#[cfg(target_arch = "x86_64")]
fn any_candidate(text: &[u8], pairs: &[[u8; 2]], fold: bool) -> bool {
    sse2::any_candidate(text, pairs, fold)
}

#[cfg(not(target_arch = "x86_64"))]
fn any_candidate(text: &[u8], pairs: &[[u8; 2]], fold: bool) -> bool {
    swar::any_candidate(text, pairs, fold)
}

/// A short text (under 64 bytes) copied into a zero-padded block with at most two overlapping
/// fixed-size moves (no call into memcpy). A padding zero never completes a triple or a pair at
/// a reported position except as a false alarm (a pair ending in a zero byte), which is allowed.
#[inline(always)]
fn padded(text: &[u8]) -> [u8; 64] {
    let mut b = [0u8; 64];
    let n = text.len().min(64);
    let text = &text[..n];
    if n >= 32 {
        b[..32].copy_from_slice(&text[..32]);
        b[n - 32..n].copy_from_slice(&text[n - 32..n]);
    } else if n >= 16 {
        b[..16].copy_from_slice(&text[..16]);
        b[n - 16..n].copy_from_slice(&text[n - 16..n]);
    } else if n >= 8 {
        b[..8].copy_from_slice(&text[..8]);
        b[n - 8..n].copy_from_slice(&text[n - 8..n]);
    } else if n >= 4 {
        b[..4].copy_from_slice(&text[..4]);
        b[n - 4..n].copy_from_slice(&text[n - 4..n]);
    } else {
        b[..n].copy_from_slice(text);
    }
    b
}

#[cfg(target_arch = "x86_64")]
mod sse2 {
    use super::{last_pair, padded, ESCAPE, FOLD, TRIPLES};
    use core::arch::x86_64::{
        __m128i, _mm_and_si128, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };

    /// Bit i set if position i of the 18 bytes at `p` starts a triple or a literal pair.
    ///
    /// # Safety
    /// `p` must be readable for 18 bytes.
    #[inline(always)]
    pub(super) unsafe fn block(p: *const u8, pairs: &[[u8; 2]], fold: bool) -> u32 {
        // SAFETY: SSE2 is part of x86_64; the caller guarantees 18 readable bytes, so the three
        // unaligned 16-byte loads stay inside them.
        unsafe {
            let splat = |c: u8| _mm_set1_epi8(c as i8);
            let eq = |v: __m128i, c: u8| _mm_cmpeq_epi8(v, splat(c));
            let v0 = _mm_loadu_si128(p as *const __m128i);
            let v1 = _mm_loadu_si128(p.add(1) as *const __m128i);
            let v2 = _mm_loadu_si128(p.add(2) as *const __m128i);
            let (f0, f1, f2) = (
                _mm_or_si128(v0, splat(FOLD)),
                _mm_or_si128(v1, splat(FOLD)),
                _mm_or_si128(v2, splat(FOLD)),
            );
            let triple =
                |t: [u8; 3]| _mm_and_si128(_mm_and_si128(eq(f0, t[0]), eq(f1, t[1])), eq(f2, t[2]));
            // `gt1` and `gs1` share their outer bytes: one test with either middle byte.
            let g1 = _mm_and_si128(eq(f0, TRIPLES[1][0]), eq(f2, TRIPLES[1][2]));
            let g = _mm_and_si128(
                g1,
                _mm_or_si128(eq(f1, TRIPLES[1][1]), eq(f1, TRIPLES[2][1])),
            );
            let mut hits = _mm_or_si128(_mm_or_si128(triple(TRIPLES[0]), g), triple(TRIPLES[3]));
            hits = _mm_or_si128(hits, eq(f0, ESCAPE));
            let (a0, a1) = if fold { (f0, f1) } else { (v0, v1) };
            for &[a, z] in pairs {
                hits = _mm_or_si128(hits, _mm_and_si128(eq(a0, a), eq(a1, z)));
            }
            _mm_movemask_epi8(hits) as u32
        }
    }

    /// A text under 18 bytes: one block over a zero-padded copy.
    #[inline(always)]
    pub(super) fn short(text: &[u8], pairs: &[[u8; 2]], fold: bool) -> bool {
        let n = text.len().min(17);
        let b = padded(text);
        // SAFETY: b is 64 bytes.
        let bits = unsafe { block(b.as_ptr(), pairs, fold) };
        bits & ((1u32 << n) - 1) != 0
    }

    pub(super) fn any_candidate(text: &[u8], pairs: &[[u8; 2]], fold: bool) -> bool {
        let n = text.len();
        if n < 18 {
            return short(text, pairs, fold);
        }
        let p = text.as_ptr();
        let mut at = 0usize;
        while at + 18 <= n {
            // SAFETY: at + 18 <= n, so 18 bytes from p + at are inside text.
            if unsafe { block(p.add(at), pairs, fold) } != 0 {
                return true;
            }
            at += 16;
        }
        // One block ending at the last byte covers every triple start up to n - 3 and every
        // pair start up to n - 3 (re-reading bytes already seen is harmless); the pair at n - 2
        // is checked on its own.
        // SAFETY: n >= 18, so 18 bytes from p + n - 18 are inside text.
        if unsafe { block(p.add(n - 18), pairs, fold) } != 0 {
            return true;
        }
        last_pair(text, pairs, fold)
    }
}

/// The pair at the last two bytes, which the blocks do not test.
fn last_pair(text: &[u8], pairs: &[[u8; 2]], fold: bool) -> bool {
    let n = text.len();
    let f = |b: u8| if fold { b | FOLD } else { b };
    n >= 2 && pairs.contains(&[f(text[n - 2]), f(text[n - 1])])
}

/// The same test 32 bytes at a time, on CPUs that have AVX2 (nearly every x86_64 server):
/// most header values then take one block.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{last_pair, padded, ESCAPE, FOLD, MAX_PAIRS, TRIPLES};
    use core::arch::x86_64::{
        __m256i, _mm256_and_si256, _mm256_cmpeq_epi8, _mm256_loadu_si256, _mm256_movemask_epi8,
        _mm256_or_si256, _mm256_set1_epi8,
    };

    /// Bit i set if position i of the 34 bytes at `p` starts a triple or a literal pair.
    ///
    /// # Safety
    /// The CPU must have AVX2 and `p` must be readable for 34 bytes.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn block<const N: usize>(
        p: *const u8,
        pairs: &[[u8; 2]; N],
        fold: bool,
    ) -> u32 {
        // SAFETY: the caller guarantees AVX2 and 34 readable bytes, so the three unaligned
        // 32-byte loads stay inside them.
        unsafe {
            let splat = |c: u8| _mm256_set1_epi8(c as i8);
            let eq = |v: __m256i, c: u8| _mm256_cmpeq_epi8(v, splat(c));
            let v0 = _mm256_loadu_si256(p as *const __m256i);
            let v1 = _mm256_loadu_si256(p.add(1) as *const __m256i);
            let v2 = _mm256_loadu_si256(p.add(2) as *const __m256i);
            let (f0, f1, f2) = (
                _mm256_or_si256(v0, splat(FOLD)),
                _mm256_or_si256(v1, splat(FOLD)),
                _mm256_or_si256(v2, splat(FOLD)),
            );
            let triple = |t: [u8; 3]| {
                _mm256_and_si256(_mm256_and_si256(eq(f0, t[0]), eq(f1, t[1])), eq(f2, t[2]))
            };
            // `gt1` and `gs1` share their outer bytes: one test with either middle byte.
            let g1 = _mm256_and_si256(eq(f0, TRIPLES[1][0]), eq(f2, TRIPLES[1][2]));
            let mid = _mm256_or_si256(eq(f1, TRIPLES[1][1]), eq(f1, TRIPLES[2][1]));
            let mut hits = _mm256_or_si256(
                _mm256_or_si256(triple(TRIPLES[0]), _mm256_and_si256(g1, mid)),
                triple(TRIPLES[3]),
            );
            hits = _mm256_or_si256(hits, eq(f0, ESCAPE));
            let (a0, a1) = if fold { (f0, f1) } else { (v0, v1) };
            for &[a, z] in pairs {
                hits = _mm256_or_si256(hits, _mm256_and_si256(eq(a0, a), eq(a1, z)));
            }
            _mm256_movemask_epi8(hits) as u32
        }
    }

    /// # Safety
    /// The CPU must have AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn any_candidate(text: &[u8], pairs: &[[u8; 2]], fold: bool) -> bool {
        // A request has zero to two literal pairs; a fixed count unrolls the pair loop.
        // SAFETY: every arm only runs AVX2 code, which the caller's promise allows.
        unsafe {
            // The arms cover 0..=MAX_PAIRS pairs; a larger MAX_PAIRS must add arms.
            const _: () = assert!(MAX_PAIRS == 4);
            debug_assert!(pairs.len() <= MAX_PAIRS);
            match pairs.len() {
                0 => scan::<0>(text, &[], fold),
                1 => scan::<1>(text, &[pairs[0]], fold),
                2 => scan::<2>(text, &[pairs[0], pairs[1]], fold),
                3 => scan::<3>(text, &[pairs[0], pairs[1], pairs[2]], fold),
                _ => scan::<4>(text, &[pairs[0], pairs[1], pairs[2], pairs[3]], fold),
            }
        }
    }

    /// # Safety
    /// The CPU must have AVX2.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn scan<const N: usize>(text: &[u8], pairs: &[[u8; 2]; N], fold: bool) -> bool {
        let n = text.len();
        if n < 34 {
            // Positions 0..32 hold every triple and pair start of a text of up to 33 bytes.
            let b = padded(text);
            let valid = if n >= 32 { u32::MAX } else { (1u32 << n) - 1 };
            // SAFETY: AVX2 per the caller; b is 64 bytes.
            return unsafe { block(b.as_ptr(), pairs, fold) } & valid != 0;
        }
        let p = text.as_ptr();
        let mut at = 0usize;
        while at + 34 <= n {
            // SAFETY: AVX2 per the caller; at + 34 <= n keeps the block inside text.
            if unsafe { block(p.add(at), pairs, fold) } != 0 {
                return true;
            }
            at += 32;
        }
        // As in the SSE2 version: a block ending at the last byte, then the last pair alone.
        // SAFETY: AVX2 per the caller; n >= 34.
        if unsafe { block(p.add(n - 34), pairs, fold) } != 0 {
            return true;
        }
        last_pair(text, pairs, fold)
    }
}

/// Eight bytes per step with the zero-byte trick, for targets without a vector unit assumed.
/// Compiled everywhere so the tests hold it to the same reference as the vector version.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
mod swar {
    use super::{last_pair, padded, ESCAPE, FOLD, TRIPLES};
    use crate::swar::{eq_marks as eq, splat, word, HI};

    /// Same as the vector block, for the 10 bytes at the start of `b`: 8 positions.
    #[inline(always)]
    pub(super) fn block(b: &[u8], pairs: &[[u8; 2]], folded: bool) -> u64 {
        let (v0, v1, v2) = (word(b), word(&b[1..]), word(&b[2..]));
        let fold = splat(FOLD);
        let (f0, f1, f2) = (v0 | fold, v1 | fold, v2 | fold);
        let mut hits = 0u64;
        for t in TRIPLES {
            hits |= eq(f0, t[0]) & eq(f1, t[1]) & eq(f2, t[2]);
        }
        hits |= eq(f0, ESCAPE);
        let (a0, a1) = if folded { (f0, f1) } else { (v0, v1) };
        for &[a, z] in pairs {
            hits |= eq(a0, a) & eq(a1, z);
        }
        hits
    }

    pub(super) fn any_candidate(text: &[u8], pairs: &[[u8; 2]], fold: bool) -> bool {
        let n = text.len();
        if n == 0 {
            return false;
        }
        if n < 10 {
            let b = padded(text);
            // Positions 0..8 hold every triple and pair start of a text of up to 9 bytes.
            return block(&b, pairs, fold) & (HI >> (8 * (8 - n.min(8)))) != 0;
        }
        let mut at = 0usize;
        while at + 10 <= n {
            if block(&text[at..at + 10], pairs, fold) != 0 {
                return true;
            }
            at += 8;
        }
        block(&text[n - 10..], pairs, fold) != 0 || last_pair(text, pairs, fold)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the filter must approximate from above (see `check::candidate_at`).
    use check::reference_of;

    fn reference(text: &[u8], pairs: &[[u8; 2]], fold: bool) -> bool {
        reference_of(text, pairs, fold, false)
    }

    /// The SSE2 answer, checked equal to the AVX2 one where the CPU has it.
    fn vector(text: &[u8], pairs: &[[u8; 2]], fold: bool) -> bool {
        let narrow = any_candidate(text, pairs, fold);
        #[cfg(target_arch = "x86_64")]
        if has_avx2() {
            // SAFETY: the CPU has AVX2.
            let wide = unsafe { avx2::any_candidate(text, pairs, fold) };
            // Padding can complete a pair ending in a zero byte: a false alarm that the two
            // versions, padding differently, may raise differently.
            // So can a `%` in the last two bytes, which no escape starts at.
            let tail = &text[text.len().saturating_sub(2)..];
            if pairs.iter().all(|p| p[1] != 0 && p[1] != FOLD)
                && !tail.iter().any(|&b| b | FOLD == ESCAPE)
            {
                assert_eq!(wide, narrow, "avx2 and sse2 differ on {text:?} {pairs:?}");
            } else {
                assert!(
                    wide || !reference(text, pairs, fold),
                    "avx2 missed {text:?} {pairs:?}"
                );
            }
        }
        narrow
    }

    /// The filter may over-report (a pair completed by padding; in the word version, a borrow
    /// of the zero-byte trick) but must never miss. The vector version is exact otherwise.
    fn check(text: &[u8], pairs: &[[u8; 2]]) {
        let folded: Vec<[u8; 2]> = pairs.iter().map(|&[a, z]| [a | FOLD, z | FOLD]).collect();
        for (fold, pairs) in [(false, pairs), (true, &folded[..])] {
            let want = reference(text, pairs, fold);
            let word = swar::any_candidate(text, pairs, fold);
            assert!(word || !want, "word version missed {text:?} {pairs:?}");
            let vector = vector(text, pairs, fold);
            assert!(vector || !want, "vector version missed {text:?} {pairs:?}");
            if pairs.iter().all(|p| p[1] != 0 && p[1] != FOLD) {
                let loose = reference_of(text, pairs, fold, true);
                assert!(!vector || loose, "vector version {text:?} {pairs:?} {fold}");
            }
        }
    }

    #[test]
    fn vector_and_word_versions_agree_with_the_reference() {
        let alphabet = b"kKgGtTsSbBeEaA-1. xyzXYZ%\x05\x00\x0d\x11\xff";
        let mut next = crate::redact::test_rng::xorshift(0x9e37_79b9_7f4a_7c15);
        for len in 0..100usize {
            for _ in 0..300 {
                let text: Vec<u8> = (0..len)
                    .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                    .collect();
                for pairs in [
                    &[][..],
                    &[*b"xy"],
                    &[*b"\x00x", *b"z\xff"],
                    &[*b"y\x00"],
                    &[*b"zz", *b"yx", *b"1."],
                    &[*b"zz", *b"yx", *b"1.", *b"-k"],
                    &[*b"Zx", *b"yY"],
                ] {
                    check(&text, pairs);
                }
            }
        }
    }

    #[test]
    fn a_triple_or_pair_at_every_position_is_seen() {
        for len in 2..70usize {
            for at in 0..len.saturating_sub(2) {
                for t in [b"k-a", b"GT1", b"gS1", b"bEa", b"%xx"] {
                    let mut text = vec![b'x'; len];
                    text[at..at + 3].copy_from_slice(t);
                    assert!(vector(&text, &[], false), "{len} {at}");
                    assert!(swar::any_candidate(&text, &[], false), "{len} {at}");
                }
            }
            for at in 0..len - 1 {
                let mut text = vec![b'x'; len];
                text[at..at + 2].copy_from_slice(b"QR");
                assert!(vector(&text, &[*b"QR"], false), "{len} {at}");
                assert!(swar::any_candidate(&text, &[*b"QR"], false), "{len} {at}");
                assert!(!vector(&text, &[*b"RQ"], false));
                assert!(!vector(&text, &[*b"qr"], false));
                assert!(vector(&text, &[*b"qr"], true), "{len} {at}");
                assert!(swar::any_candidate(&text, &[*b"qr"], true), "{len} {at}");
            }
        }
    }

    #[test]
    fn typical_header_values_pass_without_a_scan() {
        let p = Prefilter::new(std::iter::empty());
        assert!(Prefilter::always().may_match(b"abcdef"));
        assert!(!Prefilter::always().may_match(b"abcde"));
        for v in [
            "claude-cli/1.0.83 (external, cli)",
            "claude-code-20250219,oauth-2025-04-20,interleaved-thinking-2025-05-14,fine-grained-tool-streaming-2025-05-14",
            "application/json",
            "gzip, deflate, br",
            "keep-alive",
            "v22.17.0",
            "GET /v1/messages?beta=true HTTP/1.1",
        ] {
            assert!(!p.may_match(v.as_bytes()), "{v}");
        }
        assert!(p.may_match(b"x sk-ant-api03-abc"));
        assert!(p.may_match(b"BEARER x"));
        assert!(p.may_match(b"rgt1.abc"));
        assert!(p.may_match(b"RGS1_abc"));
        assert!(p.may_match(b"/v1/%73k"));
        let p = Prefilter::folded([*b"Qz"].into_iter());
        assert!(p.may_match(b"xxxxqZxxxx"));
        assert!(!p.may_match(b"xxxxqyxxxx"));
    }

    #[test]
    fn too_many_literals_turn_the_filter_off() {
        let p = Prefilter::new([*b"AB", *b"CD", *b"EF", *b"GH", *b"AB"].into_iter());
        assert!(!p.may_match(b"nothing here at all"));
        assert!(p.may_match(b"xxCDxx yyyyy"));
        let p = Prefilter::new([*b"AB", *b"CD", *b"EF", *b"GH", *b"IJ"].into_iter());
        assert!(p.may_match(b"nothing here at all"));
        assert!(p.may_match(b"abcdef"));
    }
}

//! The prefilter held differentially to its scalar reference over arbitrary input (fuzz target
//! `prefilter`, also replayed over its corpus by `cargo test`).
//!
//! The contract, from the parent module's docs, stated position by position:
//! - a vector block (SSE2, and AVX2 where the CPU has it) over bytes of the text marks exactly
//!   the positions the reference marks: a folded triple, a `%`, a literal pair;
//! - a word (SWAR) block marks every position the reference marks, and may mark more (the
//!   borrow of the zero-byte trick);
//! - over a whole text, every version says yes whenever the reference finds a candidate that can
//!   start a match (a `%` followed by two bytes); the vector versions say yes only when the
//!   reference finds a candidate anywhere (a `%` in the last two bytes, or a pair completed by
//!   the zero padding of a short text when a pair ends in `0x00`/`0x20`, are allowed false
//!   alarms), and agree with each other outside those two cases;
//! - `Prefilter::may_match` is false for texts under `MIN_MATCH_LEN`, true for every text once
//!   more than `MAX_PAIRS` distinct pairs switched it off, and otherwise the whole-text answer.

use super::{any_candidate, swar, Prefilter, ESCAPE, FOLD, MAX_PAIRS, MIN_MATCH_LEN, TRIPLES};

/// The scalar reference: does a candidate start at `i`? A `%` counts only with two bytes after
/// it unless `loose`; pairs are compared folded when `fold` (they are stored folded then).
pub(super) fn candidate_at(
    text: &[u8],
    i: usize,
    pairs: &[[u8; 2]],
    fold: bool,
    loose: bool,
) -> bool {
    let f = |b: u8| b | FOLD;
    let p = |b: u8| if fold { f(b) } else { b };
    let pair = text
        .get(i..i + 2)
        .is_some_and(|w| pairs.contains(&[p(w[0]), p(w[1])]));
    let triple = text
        .get(i..i + 3)
        .is_some_and(|w| TRIPLES.contains(&[f(w[0]), f(w[1]), f(w[2])]));
    let escape = text.get(i).is_some_and(|&b| f(b) == ESCAPE) && (loose || i + 3 <= text.len());
    pair || triple || escape
}

/// Whether any position of `text` holds a candidate (see [`candidate_at`]).
pub(super) fn reference_of(text: &[u8], pairs: &[[u8; 2]], fold: bool, loose: bool) -> bool {
    (0..text.len()).any(|i| candidate_at(text, i, pairs, fold, loose))
}

/// Padding can complete a pair ending in a zero byte (folded: `0x20`).
fn pairs_padding_can_complete(pairs: &[[u8; 2]]) -> bool {
    pairs.iter().any(|p| p[1] == 0 || p[1] == FOLD)
}

/// The positions a block at `at` covers, as the bit mask the reference gives.
fn reference_bits(text: &[u8], at: usize, width: usize, pairs: &[[u8; 2]], fold: bool) -> u64 {
    (0..width).fold(0, |m, i| {
        // Block bit i looks at bytes at+i.. of the text; the block is inside the text, so
        // every byte a candidate needs is real (a `%` is loose: its two bytes are not read).
        m | (candidate_at(text, at + i, pairs, fold, true) as u64) << i
    })
}

/// Every block position over `text`, each version against the reference.
fn check_blocks(text: &[u8], pairs: &[[u8; 2]], fold: bool) {
    // Word block: 10 bytes in, 8 positions out, high bit of each byte.
    for at in 0..text.len().saturating_sub(9) {
        let want = reference_bits(text, at, 8, pairs, fold);
        let marks = swar::block(&text[at..at + 10], pairs, fold);
        let got = (0..8).fold(0u64, |m, i| m | (marks >> (8 * i + 7) & 1) << i);
        assert_eq!(
            got & want,
            want,
            "word block at {at} misses candidates {:#x}",
            want & !got
        );
    }
    #[cfg(target_arch = "x86_64")]
    vector_blocks(text, pairs, fold);
}

#[cfg(target_arch = "x86_64")]
fn vector_blocks(text: &[u8], pairs: &[[u8; 2]], fold: bool) {
    use super::{has_avx2, sse2};
    for at in 0..text.len().saturating_sub(17) {
        let want = reference_bits(text, at, 16, pairs, fold);
        // SAFETY: at + 18 <= text.len().
        let got = unsafe { sse2::block(text.as_ptr().add(at), pairs, fold) };
        assert_eq!(u64::from(got), want, "sse2 block at {at}");
    }
    if !has_avx2() {
        return;
    }
    for at in 0..text.len().saturating_sub(33) {
        let want = reference_bits(text, at, 32, pairs, fold);
        // SAFETY: the CPU has AVX2 and at + 34 <= text.len().
        let got = unsafe { avx2_block(text.as_ptr().add(at), pairs, fold) };
        assert_eq!(u64::from(got), want, "avx2 block at {at}");
    }
}

/// The AVX2 block for a run-time number of pairs (it takes a fixed count).
///
/// # Safety
/// The CPU must have AVX2 and `p` must be readable for 34 bytes.
#[cfg(target_arch = "x86_64")]
unsafe fn avx2_block(p: *const u8, pairs: &[[u8; 2]], fold: bool) -> u32 {
    use super::avx2::block;
    // SAFETY: the caller's promise is block's.
    unsafe {
        match *pairs {
            [] => block::<0>(p, &[], fold),
            [a] => block::<1>(p, &[a], fold),
            [a, b] => block::<2>(p, &[a, b], fold),
            [a, b, c] => block::<3>(p, &[a, b, c], fold),
            [a, b, c, d] => block::<4>(p, &[a, b, c, d], fold),
            _ => unreachable!("at most MAX_PAIRS pairs reach the blocks"),
        }
    }
}

/// The whole-text answers of every version against the reference.
fn check_text(text: &[u8], pairs: &[[u8; 2]], fold: bool) {
    let strict = reference_of(text, pairs, fold, false);
    let loose = reference_of(text, pairs, fold, true);
    let word = swar::any_candidate(text, pairs, fold);
    assert!(word || !strict, "word version missed a candidate");
    let vector = any_candidate(text, pairs, fold);
    assert!(vector || !strict, "vector version missed a candidate");
    let exact = !pairs_padding_can_complete(pairs);
    if exact {
        assert!(!vector || loose, "vector version reported no candidate");
    }
    #[cfg(target_arch = "x86_64")]
    if super::has_avx2() {
        // SAFETY: the CPU has AVX2.
        let wide = unsafe { super::avx2::any_candidate(text, pairs, fold) };
        assert!(wide || !strict, "avx2 version missed a candidate");
        let tail = &text[text.len().saturating_sub(2)..];
        if exact && !tail.iter().any(|&b| b | FOLD == ESCAPE) {
            assert_eq!(wide, vector, "avx2 and sse2 differ");
        }
    }
}

/// The public entry, built the way the masker builds it, against the same reference.
fn check_filter(text: &[u8], raw: &[[u8; 2]], fold: bool) {
    let filter = if fold {
        Prefilter::folded(raw.iter().copied())
    } else {
        Prefilter::new(raw.iter().copied())
    };
    let mut pairs: Vec<[u8; 2]> = Vec::new();
    for &[a, z] in raw {
        let p = if fold { [a | FOLD, z | FOLD] } else { [a, z] };
        if !pairs.contains(&p) {
            pairs.push(p);
        }
    }
    let got = filter.may_match(text);
    check_filter_answer(got, text, &pairs, fold);
}

fn check_filter_answer(got: bool, text: &[u8], pairs: &[[u8; 2]], fold: bool) {
    if text.len() < MIN_MATCH_LEN {
        assert!(!got, "a text under MIN_MATCH_LEN was sent to the scanners");
    } else if pairs.len() > MAX_PAIRS {
        assert!(got, "a filter with too many pairs skipped a text");
    } else {
        let strict = reference_of(text, pairs, fold, false);
        assert!(got || !strict, "may_match missed a candidate");
        if !pairs_padding_can_complete(pairs) {
            assert!(
                !got || reference_of(text, pairs, fold, true),
                "may_match false alarm"
            );
        }
    }
}

/// Longest text checked; every prefix and suffix up to [`AFFIXED`] bytes, every sub-slice up to
/// [`SLICED`] (each start is another block alignment, each end another tail).
const MAX_TEXT: usize = 4096;
const AFFIXED: usize = 256;
const SLICED: usize = 24;

/// Input: byte 0 holds `fold` (bit 7) and the pair count (its low three bits, up to 7 so that
/// the "too many pairs" path is reached), then two bytes per pair, then the text. Every block
/// position and the whole text are checked; for a short text also every sub-slice (each start
/// is a different block alignment and tail). Panics on a broken promise.
#[doc(hidden)]
pub fn check_prefilter_fuzz_input(data: &[u8]) {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let fold = head & 0x80 != 0;
    let n = usize::from(head & 7).min(rest.len() / 2);
    let raw: Vec<[u8; 2]> = rest[..2 * n]
        .chunks_exact(2)
        .map(|c| [c[0], c[1]])
        .collect();
    let text = &rest[2 * n..];
    let text = &text[..text.len().min(MAX_TEXT)];
    check_filter(text, &raw, fold);
    // The block-level and whole-text checks take the pairs as the filter stores them.
    let mut pairs: Vec<[u8; 2]> = Vec::new();
    for &[a, z] in &raw {
        let p = if fold { [a | FOLD, z | FOLD] } else { [a, z] };
        if !pairs.contains(&p) && pairs.len() < MAX_PAIRS {
            pairs.push(p);
        }
    }
    check_blocks(text, &pairs, fold);
    check_text(text, &pairs, fold);
    let n = text.len();
    let slices: Vec<(usize, usize)> = if n <= SLICED {
        (0..=n).flat_map(|a| (a..=n).map(move |z| (a, z))).collect()
    } else if n <= AFFIXED {
        (0..=n).flat_map(|i| [(0, i), (i, n)]).collect()
    } else {
        Vec::new()
    };
    for (a, z) in slices {
        check_text(&text[a..z], &pairs, fold);
        check_filter(&text[a..z], &raw, fold);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_marks_what_the_contract_lists() {
        assert!(candidate_at(b"xK-Ay", 1, &[], false, false));
        assert!(!candidate_at(b"xK-Ay", 0, &[], false, false));
        assert!(candidate_at(b"ab%", 2, &[], false, true));
        assert!(!candidate_at(b"ab%", 2, &[], false, false));
        assert!(candidate_at(b"aQz", 1, &[*b"qz"], true, false));
        assert!(!candidate_at(b"aQz", 1, &[*b"qz"], false, false));
    }

    #[test]
    fn reference_bits_are_the_positions_listed_by_hand() {
        //            0123456789abcdef0123
        let text = b"xxk-AxxGs1x%yyqzxxxx";
        // k-a at 2, gs1 at 7, % at 11, the pair qz at 14 (folded: also QZ).
        let want = 1 << 2 | 1 << 7 | 1 << 11 | 1 << 14;
        assert_eq!(reference_bits(text, 0, 16, &[*b"qz"], false), want);
        assert_eq!(
            reference_bits(b"xxk-AxxGs1x%yyQZxxxx", 0, 16, &[*b"qz"], true),
            want
        );
        assert_eq!(
            reference_bits(b"xxk-AxxGs1x%yyQZxxxx", 0, 16, &[*b"qz"], false),
            want & !(1 << 14)
        );
        assert_eq!(reference_bits(text, 3, 8, &[], false), 1 << 4);
    }

    #[test]
    fn inputs_of_every_shape_pass() {
        let mut next = crate::redact::test_rng::xorshift(0x2545_f491_4f6c_dd1d);
        let alphabet = b"kKgGtTsSbBeEaA-1. xyz%\x05\x00\x20\xff";
        for len in 0..120usize {
            for _ in 0..20 {
                let data: Vec<u8> = (0..len)
                    .map(|i| {
                        let r = next();
                        if i == 0 {
                            r as u8
                        } else {
                            alphabet[(r % alphabet.len() as u64) as usize]
                        }
                    })
                    .collect();
                check_prefilter_fuzz_input(&data);
            }
        }
    }
}

//! The parts of a presented credential that are secrets on their own.
//!
//! The access handler hands over a credential as the client sent it, trimmed: a quoted value
//! (`"tok"`), several joined (`tok1, tok2` in one `x-api-key`), or a scheme word left in
//! (`Bearer Bearer tok` presents `Bearer tok`). A copy of just `tok` pasted elsewhere would not
//! match the whole value, so each part long enough to be a literal is masked as well.

use super::literals::MIN_LITERAL_LEN;
#[cfg(not(target_arch = "x86_64"))]
use crate::swar::{eq_marks, splat, word, HI};

/// Bytes that separate the parts: whitespace, list separators, quotes.
fn is_sep(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b',' | b';' | b'"' | b'\'')
}

/// True if some byte of `v` may be a separator: every separator is below `-` or is `;`, which
/// the bytes of an ordinary token (`[A-Za-z0-9._~+/=-]` but `+`, see below) never are. False
/// alarms (`+`, non-ASCII) only cost the exact split. This runs on every presented credential
/// of every request, so it reads sixteen bytes per step and tests once at the end.
#[cfg(target_arch = "x86_64")]
#[inline]
fn may_have_sep(v: &[u8]) -> bool {
    use core::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_cmplt_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };
    let n = v.len();
    if n < 16 {
        return v.iter().any(|&b| b < b'-' || b == b';');
    }
    let p = v.as_ptr();
    // SAFETY: SSE2 is part of x86_64. Every load reads the 16 bytes at p + at with
    // at + 16 <= n (the last block is the one ending at n), so all reads are inside `v`.
    unsafe {
        let (lim, semi) = (_mm_set1_epi8(b'-' as i8), _mm_set1_epi8(b';' as i8));
        // Signed compare: bytes from 0x80 up count as below `-` too (a false alarm).
        let marks = |at: usize| {
            let x = _mm_loadu_si128(p.add(at) as *const __m128i);
            _mm_or_si128(_mm_cmplt_epi8(x, lim), _mm_cmpeq_epi8(x, semi))
        };
        let mut acc = marks(n - 16);
        let mut at = 0usize;
        while at + 16 <= n {
            acc = _mm_or_si128(acc, marks(at));
            at += 16;
        }
        _mm_movemask_epi8(acc) != 0
    }
}

/// The same eight bytes per step, for targets without a vector unit assumed.
#[cfg(not(target_arch = "x86_64"))]
fn may_have_sep(v: &[u8]) -> bool {
    let mut chunks = v.chunks_exact(8);
    let mut acc = 0u64;
    for c in &mut chunks {
        let w = word(c);
        // A byte below `-` (exact as an any-test for bounds up to 0x80), or a `;`.
        acc |= w.wrapping_sub(splat(b'-')) & !w & HI | eq_marks(w, b';');
    }
    acc != 0 || chunks.remainder().iter().any(|&b| b < b'-' || b == b';')
}

/// Calls `f` with each part of `cred` that is shorter than `cred` and at least
/// [`MIN_LITERAL_LEN`] long, scheme words (`bearer`) left out. Nothing for an ordinary token.
pub(crate) fn for_each_piece<'a>(cred: &'a [u8], mut f: impl FnMut(&'a [u8])) {
    if cred.len() <= MIN_LITERAL_LEN || !may_have_sep(cred) {
        return;
    }
    for piece in cred.split(|&b| is_sep(b)) {
        if piece.len() >= MIN_LITERAL_LEN
            && piece.len() < cred.len()
            && !piece.eq_ignore_ascii_case(b"bearer")
        {
            f(piece);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(cred: &[u8]) -> Vec<&[u8]> {
        let mut v = Vec::new();
        for_each_piece(cred, |p| v.push(p));
        v
    }

    #[test]
    fn quoted_joined_and_scheme_prefixed_credentials_split() {
        assert_eq!(pieces(b"\"tok-12345678\""), [b"tok-12345678"]);
        assert_eq!(pieces(b"'tok-12345678'"), [b"tok-12345678"]);
        assert_eq!(
            pieces(b"aaaa-1234, bbbb-5678;cccc-9012"),
            [&b"aaaa-1234"[..], b"bbbb-5678", b"cccc-9012"]
        );
        assert_eq!(pieces(b"Bearer tok-12345678"), [b"tok-12345678"]);
        assert_eq!(pieces(b"BEARER\ttok-12345678"), [b"tok-12345678"]);
    }

    #[test]
    fn ordinary_tokens_and_short_parts_give_nothing() {
        assert!(pieces(b"rgt1.client-7.1767225600.0123456789abcdef").is_empty());
        assert!(pieces(b"sk-ant-api03-Zq8xW3vT9mK2pL5nR7sY1uB4cD6eF0gH_iJ-kLmNo").is_empty());
        assert!(pieces(b"a b c d e f g h i").is_empty());
        assert!(pieces(b"\"short\"").is_empty());
        assert!(pieces(b"").is_empty());
    }

    #[test]
    fn the_word_test_finds_every_separator() {
        for len in 1..20 {
            for at in 0..len {
                for sep in [b' ', b'\t', b',', b';', b'"', b'\''] {
                    let mut v = vec![b'x'; len];
                    v[at] = sep;
                    assert!(may_have_sep(&v), "{len} {at} {sep}");
                }
                assert!(!may_have_sep(&vec![b'Z'; len]));
            }
        }
        assert!(!may_have_sep(b"AZaz09._-~"));
        assert!(!may_have_sep(&[b'Z'; 100]));
        for at in 0..100 {
            let mut v = vec![b'Z'; 100];
            v[at] = b';';
            assert!(may_have_sep(&v), "{at}");
        }
    }
}

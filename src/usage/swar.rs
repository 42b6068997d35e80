//! The searches the scanners skip with, sixteen bytes at a time in an SSE2 register on
//! x86_64 and eight in a `u64` elsewhere (SIMD within a register), so the bytes no counting
//! path needs (most of every body) cost a fraction of a per-byte state machine step.

use crate::swar::{eq_marks, word};

/// Index of the first byte of `b` equal to `x` or `y`: sixteen bytes per step with SSE2
/// (part of x86_64), then eight per step for the tail.
#[inline(always)]
fn find2(b: &[u8], x: u8, y: u8) -> Option<usize> {
    let mut i = 0;
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{
            __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128,
            _mm_set1_epi8,
        };
        let p = b.as_ptr();
        // SAFETY: SSE2 is part of x86_64; each load reads the 16 bytes at p + i with
        // i + 16 <= b.len(), inside `b`.
        unsafe {
            let (vx, vy) = (_mm_set1_epi8(x as i8), _mm_set1_epi8(y as i8));
            while i + 16 <= b.len() {
                let v = _mm_loadu_si128(p.add(i) as *const __m128i);
                let m =
                    _mm_movemask_epi8(_mm_or_si128(_mm_cmpeq_epi8(v, vx), _mm_cmpeq_epi8(v, vy)));
                if m != 0 {
                    return Some(i + m.trailing_zeros() as usize);
                }
                i += 16;
            }
        }
    }
    while let Some(chunk) = b.get(i..i + 8) {
        let w = word(chunk);
        let m = eq_marks(w, x) | eq_marks(w, y);
        if m != 0 {
            return Some(i + (m.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    b[i..].iter().position(|&c| c == x || c == y).map(|p| p + i)
}

/// Index of the first `\n` or `\r`: the end of an SSE line.
pub(super) fn find_eol(b: &[u8]) -> Option<usize> {
    find2(b, b'\n', b'\r')
}

/// Index of the first `"` or `\`: where a JSON string whose bytes do not matter may end.
pub(super) fn find_quote_or_escape(b: &[u8]) -> Option<usize> {
    find2(b, b'"', b'\\')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn searches_match_naive() {
        let hay = b"abcdefghijklmnopq\rrstuvwxyz0123456789\nxyz\"0123456789abcdef\\gh";
        for s in 0..hay.len() {
            let naive = hay[s..].iter().position(|&c| c == b'\n' || c == b'\r');
            assert_eq!(find_eol(&hay[s..]), naive, "start {s}");
            let naive = hay[s..].iter().position(|&c| c == b'"' || c == b'\\');
            assert_eq!(find_quote_or_escape(&hay[s..]), naive, "start {s}");
        }
        assert_eq!(find_eol(b"\x8a\x8d\x0b\x0c\x0e\x09\xff\x00abcdefgh"), None);
        assert_eq!(
            find_quote_or_escape(b"\xa2\xdc\x23\x5b\x5d\x21\xff\x00'abcdefg"),
            None
        );
        // A byte one above the target after a match (the borrow case) never hides the match.
        assert_eq!(find_quote_or_escape(b"aaaaaa\"#"), Some(6));
        assert_eq!(find_eol(b"\x01\n\x0baaaaaa"), Some(1));
        // Every position in and around the 16- and 8-byte steps.
        for len in 0..40 {
            for at in 0..len {
                let mut v = vec![b'a'; len];
                v[at] = b'"';
                assert_eq!(find_quote_or_escape(&v), Some(at), "{len} {at}");
                v[at] = b'\r';
                assert_eq!(find_eol(&v), Some(at), "{len} {at}");
            }
            assert_eq!(find_eol(&vec![0x8d; len]), None);
        }
    }
}

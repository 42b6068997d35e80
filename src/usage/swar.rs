//! The searches the scanners skip with, sixteen bytes at a time in an SSE2 register on
//! x86_64 (64 at a time, with AVX2 where the CPU has it, past the first 64 bytes) and eight
//! in a `u64` elsewhere (SIMD within a register), so the bytes no counting path needs (most
//! of every body) cost a fraction of a per-byte state machine step.

use crate::swar::{eq_marks, word};

/// Index of the first byte of `b` equal to `x` or `y`.
///
/// Most searches end within a few bytes (a key, a short value, an event name): the first
/// [`SHORT`] bytes are tried here, inlined, sixteen at a time with SSE2 (part of x86_64). A
/// longer string (a text block, a tool's input, a content delta's line) goes on in
/// [`long::find2`], 64 bytes per step.
#[inline(always)]
fn find2(b: &[u8], x: u8, y: u8) -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_set1_epi8};
        let mut i = 0;
        let p = b.as_ptr();
        // SAFETY: SSE2 is part of x86_64; each load reads the 16 bytes at p + i with
        // i + 16 <= b.len(), inside `b`.
        unsafe {
            let (vx, vy) = (_mm_set1_epi8(x as i8), _mm_set1_epi8(y as i8));
            let block = |i: usize| sse2::marks(_mm_loadu_si128(p.add(i) as *const __m128i), vx, vy);
            if b.len() >= SHORT + long::MIN {
                while i < SHORT {
                    let m = block(i);
                    if m != 0 {
                        return Some(i + m.trailing_zeros() as usize);
                    }
                    i += 16;
                }
                return long::find2(b, i, x, y);
            }
            while i + 16 <= b.len() {
                let m = block(i);
                if m != 0 {
                    return Some(i + m.trailing_zeros() as usize);
                }
                i += 16;
            }
        }
        tail(b, i, x, y)
    }
    #[cfg(not(target_arch = "x86_64"))]
    tail(b, 0, x, y)
}

/// Bytes [`find2`] searches inline before it hands a long string to [`long::find2`]: past
/// nearly every key, value and SSE line of a typical response, so that the call (a few dozen
/// instructions) is only paid where the wide steps more than make up for it.
const SHORT: usize = 64;

/// The last bytes from `i`: eight per step in a `u64`, then one by one.
#[inline(always)]
fn tail(b: &[u8], mut i: usize, x: u8, y: u8) -> Option<usize> {
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

#[cfg(target_arch = "x86_64")]
mod sse2 {
    use core::arch::x86_64::{__m128i, _mm_cmpeq_epi8, _mm_movemask_epi8, _mm_or_si128};

    /// Bit k set when byte k of `v` is one of the two bytes `vx` and `vy` hold in every lane.
    #[inline(always)]
    pub(super) fn marks(v: __m128i, vx: __m128i, vy: __m128i) -> u32 {
        // SAFETY: SSE2 is part of x86_64; register operations only.
        unsafe {
            _mm_movemask_epi8(_mm_or_si128(_mm_cmpeq_epi8(v, vx), _mm_cmpeq_epi8(v, vy))) as u32
        }
    }
}

/// Long strings, 64 bytes per step: with AVX2 when the CPU has it (two 32-byte compares per
/// step), else with SSE2 (four 16-byte ones), one branch per step either way; the last
/// bytes are one more 64-byte step that ends with the string (overlapping bytes already
/// searched, whose marks are shifted out), so there is no tail loop. Out of line: it runs
/// once per long search, and its code would only crowd the short path.
#[cfg(target_arch = "x86_64")]
mod long {
    use core::arch::x86_64::{
        __m128i, __m256i, _mm256_cmpeq_epi8, _mm256_loadu_si256, _mm256_movemask_epi8,
        _mm256_or_si256, _mm256_set1_epi8, _mm_loadu_si128, _mm_set1_epi8,
    };

    use super::sse2;

    /// What must be left when [`super::find2`] hands over: one whole step.
    pub(super) const MIN: usize = 64;

    pub(super) fn has_avx2() -> bool {
        // std caches the CPUID answer: a load and a test.
        std::arch::is_x86_feature_detected!("avx2")
    }

    /// [`super::find2`] from `i` on, with `b.len() - i >= MIN`.
    #[inline(always)]
    pub(super) fn find2(b: &[u8], i: usize, x: u8, y: u8) -> Option<usize> {
        with(b, i, x, y, true)
    }

    /// The same with AVX2 (when the CPU has it) or without; tests run both.
    #[inline(always)]
    pub(super) fn with(b: &[u8], i: usize, x: u8, y: u8, avx2: bool) -> Option<usize> {
        if b.len() < i + MIN {
            return super::tail(b, i, x, y);
        }
        if avx2 && has_avx2() {
            // SAFETY: the CPU has AVX2; b.len() - i >= MIN.
            unsafe { find2_avx2(b, i, x, y) }
        } else {
            // SAFETY: b.len() - i >= MIN.
            unsafe { find2_sse2(b, i, x, y) }
        }
    }

    /// # Safety
    /// The CPU must have AVX2, and `b.len() - i >= MIN`.
    #[inline(never)]
    #[target_feature(enable = "avx2")]
    unsafe fn find2_avx2(b: &[u8], mut i: usize, x: u8, y: u8) -> Option<usize> {
        let (p, n) = (b.as_ptr(), b.len());
        let (vx, vy) = (_mm256_set1_epi8(x as i8), _mm256_set1_epi8(y as i8));
        // Marks of the 64 bytes at `at`, bit k for byte at + k.
        // SAFETY: AVX2 per the caller; every call has at + 64 <= n: both loads are in `b`.
        let marks = |at: usize| unsafe {
            let hit = |v: __m256i| {
                _mm256_movemask_epi8(_mm256_or_si256(
                    _mm256_cmpeq_epi8(v, vx),
                    _mm256_cmpeq_epi8(v, vy),
                )) as u32
            };
            u64::from(hit(_mm256_loadu_si256(p.add(at) as *const __m256i)))
                | u64::from(hit(_mm256_loadu_si256(p.add(at + 32) as *const __m256i))) << 32
        };
        while i + 64 <= n {
            let m = marks(i);
            if m != 0 {
                return Some(i + m.trailing_zeros() as usize);
            }
            i += 64;
        }
        last(i, n, marks(n - 64))
    }

    /// # Safety
    /// `b.len() - i >= MIN`.
    #[inline(never)]
    unsafe fn find2_sse2(b: &[u8], mut i: usize, x: u8, y: u8) -> Option<usize> {
        let (p, n) = (b.as_ptr(), b.len());
        // SAFETY: SSE2 is part of x86_64.
        let (vx, vy) = unsafe { (_mm_set1_epi8(x as i8), _mm_set1_epi8(y as i8)) };
        // SAFETY: every call has at + 64 <= n: the four 16-byte loads are in `b`.
        let marks = |at: usize| unsafe {
            let m = |k: usize| {
                u64::from(sse2::marks(
                    _mm_loadu_si128(p.add(at + k) as *const __m128i),
                    vx,
                    vy,
                ))
            };
            m(0) | m(16) << 16 | m(32) << 32 | m(48) << 48
        };
        while i + 64 <= n {
            let m = marks(i);
            if m != 0 {
                return Some(i + m.trailing_zeros() as usize);
            }
            i += 64;
        }
        last(i, n, marks(n - 64))
    }

    /// The last step: `m` marks the 64 bytes that end at `n`, of which those before `i`
    /// were searched already.
    #[inline(always)]
    fn last(i: usize, n: usize, m: u64) -> Option<usize> {
        if i == n {
            return None;
        }
        // 0 < n - i < 64: the bytes from i are the top n - i of the 64.
        let m = m >> (64 - (n - i));
        (m != 0).then(|| i + m.trailing_zeros() as usize)
    }
}

/// Index of the first `\n` or `\r`: the end of an SSE line.
#[inline(always)]
pub(super) fn find_eol(b: &[u8]) -> Option<usize> {
    find2(b, b'\n', b'\r')
}

/// Index of the first `"` or `\`: where a JSON string whose bytes do not matter may end.
#[inline(always)]
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

    /// Long strings: every position, through the inline blocks, the hand-over and both
    /// long paths (AVX2 only where the CPU has it), and the tails after them.
    #[test]
    fn long_searches_match_naive_on_both_paths() {
        for len in [63, 64, 95, 96, 97, 127, 128, 129, 160, 191, 192, 200, 300] {
            for at in 0..len {
                for (x, y) in [(b'"', b'\\'), (b'\n', b'\r')] {
                    let mut v = vec![b'a'; len];
                    v[at] = y;
                    assert_eq!(find2(&v, x, y), Some(at), "{len} {at}");
                    for from in [SHORT, SHORT + 1, len.saturating_sub(40)] {
                        let want = (at >= from).then_some(at);
                        if from <= len {
                            #[cfg(target_arch = "x86_64")]
                            for avx2 in [false, long::has_avx2()] {
                                assert_eq!(
                                    long::with(&v, from, x, y, avx2),
                                    want,
                                    "{len} {at} {from}"
                                );
                            }
                        }
                    }
                }
            }
            let v = vec![b'a'; len];
            assert_eq!(find_quote_or_escape(&v), None);
            #[cfg(target_arch = "x86_64")]
            for avx2 in [false, long::has_avx2()]
                .into_iter()
                .filter(|_| len >= SHORT)
            {
                assert_eq!(long::with(&v, SHORT, b'"', b'\\', avx2), None);
            }
        }
    }
}

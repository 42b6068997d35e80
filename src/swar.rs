//! Eight bytes at a time in a `u64` (SIMD within a register): the byte-equality test that the
//! redaction scanners and prefilter and the usage scanner's searches share.

/// `0x01` in every byte.
pub(crate) const LO: u64 = 0x0101_0101_0101_0101;
/// `0x80` in every byte.
pub(crate) const HI: u64 = 0x8080_8080_8080_8080;

/// `b` in every byte.
#[inline(always)]
pub(crate) const fn splat(b: u8) -> u64 {
    LO.wrapping_mul(b as u64)
}

/// High bit set in every byte of `w` equal to `c`; a byte above a real match may be marked too
/// (a borrow), so the lowest mark is exact and the others are candidates to check.
#[inline(always)]
pub(crate) fn eq_marks(w: u64, c: u8) -> u64 {
    let x = w ^ splat(c);
    x.wrapping_sub(LO) & !x & HI
}

/// The eight bytes of `b` (at least eight long) as a little-endian word.
#[inline(always)]
pub(crate) fn word(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[..8]);
    u64::from_le_bytes(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowest_mark_is_the_first_equal_byte_and_no_equal_byte_is_missed() {
        for c in [0u8, 1, b'k', 0x7f, 0x80, 0xff] {
            for pattern in 0u32..512 {
                let bytes: [u8; 8] = core::array::from_fn(|i| {
                    if pattern >> i & 1 == 1 {
                        c
                    } else {
                        c ^ (pattern >> 8) as u8 | 1
                    }
                });
                let m = eq_marks(word(&bytes), c);
                for (i, &b) in bytes.iter().enumerate() {
                    if b == c {
                        assert_ne!(m >> (8 * i + 7) & 1, 0, "{bytes:?} {c}");
                    }
                }
                let first = bytes.iter().position(|&b| b == c);
                assert_eq!(
                    (m != 0).then(|| (m.trailing_zeros() / 8) as usize),
                    first,
                    "{bytes:?} {c}"
                );
            }
        }
    }
}

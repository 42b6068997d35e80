//! Percent-encoded secrets: `sk-ant-api03-%41b…`, `%73k%2Dant-…`, a token with any of its bytes
//! escaped in either hex case. nginx logs the request target (and any header) as it was
//! received, so the scanners also read a decoded copy of a text that holds an escape, and
//! what they find there is mapped back onto the escaped bytes.

use smallvec::SmallVec;

use super::ends::hex_val;
use super::literals::find_byte;

/// Decoded values of this many bytes or fewer (a request target, a header) need no allocation.
const INLINE: usize = 256;

/// True if `text` holds a `%XX` escape.
pub(crate) fn has_escape(text: &[u8]) -> bool {
    let mut from = 0usize;
    while let Some(p) = find_byte(&text[from..], b'%') {
        let at = from + p;
        if let Some(&[h, l]) = text.get(at + 1..at + 3) {
            if hex_val(h).is_some() && hex_val(l).is_some() {
                return true;
            }
        }
        from = at + 1;
    }
    false
}

/// A text with every `%XX` escape decoded (a malformed one is kept as it is, as servers do),
/// and where each decoded byte came from.
pub(crate) struct Decoded {
    pub(crate) bytes: SmallVec<[u8; INLINE]>,
    /// `at[i]`: offset in the original text of decoded byte `i`; `at[bytes.len()]` is the
    /// original length, so a decoded range `[a, z)` is the original range `[at[a], at[z])`.
    at: SmallVec<[u32; INLINE]>,
}

impl Decoded {
    /// None for a text of 4 GiB or more (nginx holds no such value).
    pub(crate) fn new(text: &[u8]) -> Option<Decoded> {
        u32::try_from(text.len()).ok()?;
        let mut bytes = SmallVec::with_capacity(text.len());
        let mut at = SmallVec::with_capacity(text.len() + 1);
        let mut r = 0usize;
        while r < text.len() {
            // Below text.len(), which fits in u32.
            at.push(r as u32);
            let escaped = match text.get(r..r + 3) {
                Some(&[b'%', h, l]) => hex_val(h).zip(hex_val(l)).map(|(h, l)| h << 4 | l),
                _ => None,
            };
            match escaped {
                Some(b) => {
                    bytes.push(b);
                    r += 3;
                }
                None => {
                    bytes.push(text[r]);
                    r += 1;
                }
            }
        }
        at.push(text.len() as u32);
        Some(Decoded { bytes, at })
    }

    /// The original offset of decoded offset `i` (clamped to the end).
    pub(crate) fn original(&self, i: usize) -> usize {
        self.at.get(i).or(self.at.last()).map_or(0, |&a| a as usize)
    }

    /// The decoded offset of the first decoded byte at or after original offset `raw`.
    pub(crate) fn decoded(&self, raw: usize) -> usize {
        self.at.partition_point(|&a| (a as usize) < raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_any_mix_in_either_case_and_maps_back() {
        let d = Decoded::new(b"a%41%2db%zz%4").unwrap();
        assert_eq!(&d.bytes[..], b"aA-b%zz%4");
        assert_eq!(d.original(1), 1);
        assert_eq!(d.original(2), 4);
        assert_eq!(d.original(3), 7);
        assert_eq!(d.original(d.bytes.len()), 13);
        assert_eq!(d.decoded(4), 2);
        assert_eq!(d.decoded(5), 3);
        assert_eq!(d.decoded(13), d.bytes.len());
    }

    #[test]
    fn escapes_are_found_only_when_well_formed() {
        assert!(has_escape(b"x%2Fy"));
        assert!(has_escape(b"%%41"));
        assert!(has_escape(b"%aF"));
        assert!(!has_escape(b"100% sure %g1 %4"));
        assert!(!has_escape(b""));
    }
}

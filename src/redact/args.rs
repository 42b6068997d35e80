//! Query arguments masked by name (`?key=…&token=…`).
//!
//! The value's raw bytes, between `=` and the next separator, are masked as they are: no
//! decoding is needed to hide them, and the log then shows the same encoding nginx received.
//! Names are compared percent-decoded and case-insensitively, so `K%65y=` cannot slip a key
//! past the list. Both `&` and `;` separate arguments: some backends accept `;`, and treating
//! it as a separator can only mask more.

use super::ends::{hex_val, Stop};
use super::len_bit;
use super::literals::find_byte;
use super::patterns::public_prefix_len;
use super::spans::Spans;

/// Names longer than this are compared undecoded; no sensible argument name is this long.
const MAX_DECODED_NAME: usize = 64;

/// Percent-decodes `raw` into `buf`; malformed escapes are kept literally, as servers do.
fn decode<'a>(raw: &[u8], buf: &'a mut [u8; MAX_DECODED_NAME]) -> Option<&'a [u8]> {
    let (mut r, mut w) = (0usize, 0usize);
    while r < raw.len() {
        let escaped = match (raw.get(r), raw.get(r + 1), raw.get(r + 2)) {
            (Some(b'%'), Some(&h), Some(&l)) => hex_val(h).zip(hex_val(l)).map(|(h, l)| h << 4 | l),
            _ => None,
        };
        let (byte, used) = match escaped {
            Some(b) => (b, 3),
            None => (raw[r], 1),
        };
        *buf.get_mut(w)? = byte;
        w += 1;
        r += used;
    }
    buf.get(..w)
}

/// The argument names masked by name (lowercase), with the length test that rejects most
/// arguments of a request before any comparison.
pub(crate) struct Names {
    names: Vec<Vec<u8>>,
    /// Bit `n` set if some name has length `n` (63+ share bit 63).
    lens: u64,
    /// Bytes a listed name can end with, in either case: the byte before a `=` that closes a
    /// listed name is one of these, or the last hex digit of a `%XX` escape.
    last: [bool; 256],
}

impl Names {
    pub(crate) fn new(names: Vec<Vec<u8>>) -> Names {
        let lens = names.iter().fold(0, |m, n| m | len_bit(n.len()));
        let mut last = [false; 256];
        for b in names.iter().filter_map(|n| n.last()) {
            last[usize::from(b.to_ascii_lowercase())] = true;
            last[usize::from(b.to_ascii_uppercase())] = true;
        }
        Names { names, lens, last }
    }

    pub(crate) fn len(&self) -> usize {
        self.names.len()
    }

    /// `has_percent`: whether `raw` contains `%` (the caller's scan already knows).
    #[inline(never)]
    fn matches(&self, raw: &[u8], has_percent: bool) -> bool {
        if !has_percent {
            return self.lens & len_bit(raw.len()) != 0 && self.listed(raw);
        }
        let mut buf = [0u8; MAX_DECODED_NAME];
        self.listed(decode(raw, &mut buf).unwrap_or(raw))
    }

    fn listed(&self, name: &[u8]) -> bool {
        self.names.iter().any(|n| n.eq_ignore_ascii_case(name))
    }

    /// Pushes the value of every argument in `query` (no leading `?`) whose name is listed.
    /// Offsets are shifted by `base`.
    #[cfg(test)]
    pub(crate) fn scan(&self, query: &[u8], base: usize, spans: &mut Spans) {
        if self.names.is_empty() || !self.may_match(query) {
            return;
        }
        self.scan_all(query, base, spans);
    }

    /// False only if no `=` in `query` can close a listed name: the byte before it must be a
    /// listed name's last byte, or end a `%XX` escape. Most queries (`beta=true`) fail this at
    /// their one `=`, found eight bytes at a time.
    pub(crate) fn may_match(&self, query: &[u8]) -> bool {
        if self.names.is_empty() {
            return false;
        }
        let mut from = 0usize;
        while let Some(at) = find_byte(&query[from..], b'=') {
            let eq = from + at;
            let before = |k: usize| eq.checked_sub(k).map(|i| query[i]);
            let escaped =
                before(3) == Some(b'%') && before(1).is_some_and(|b| b.is_ascii_hexdigit());
            if escaped || before(1).is_some_and(|b| self.last[usize::from(b)]) {
                return true;
            }
            from = eq + 1;
        }
        false
    }

    /// [`Self::scan`] without the quick rejection.
    pub(crate) fn scan_all(&self, query: &[u8], base: usize, spans: &mut Spans) {
        // One pass: each segment's start, its first `=`, and whether its name has a `%`.
        let (mut start, mut eq, mut percent) = (0usize, None, false);
        for i in 0..=query.len() {
            // A separator past the end closes the last segment.
            match query.get(i).copied().unwrap_or(b'&') {
                b'&' | b';' => {
                    if let Some(e) = eq {
                        if self.matches(&query[start..e], percent) {
                            let from = e + 1 + public_prefix_len(&query[e + 1..i]);
                            spans.keep(base + e + 1, base + from);
                            let limit = base + query.len();
                            spans.push_until(base + from, base + i, Stop::Arg, limit);
                        }
                    }
                    (start, eq, percent) = (i + 1, None, false);
                }
                b'=' if eq.is_none() => eq = Some(i),
                b'%' if eq.is_none() => percent = true,
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redact::spans::Span;

    fn masked(query: &str) -> Vec<String> {
        let names: Vec<Vec<u8>> = ["key", "token", "sig"]
            .iter()
            .map(|n| n.as_bytes().to_vec())
            .collect();
        let mut s = Spans::new();
        Names::new(names).scan(query.as_bytes(), 0, &mut s);
        s.normalized(query.as_bytes())
            .into_iter()
            .map(|Span { start, end }| query[start..end].to_string())
            .collect()
    }

    #[test]
    fn masks_named_values_only() {
        assert_eq!(masked("a=1&key=s3cr3t&b=2"), ["s3cr3t"]);
        assert_eq!(masked("key=s3cr3t"), ["s3cr3t"]);
        assert_eq!(masked("keys=x&akey=y&ke=z"), Vec::<String>::new());
    }

    #[test]
    fn names_are_case_insensitive_and_percent_decoded() {
        assert_eq!(masked("KEY=a&Token=b"), ["a", "b"]);
        assert_eq!(masked("k%65y=a&%6B%45%59=b"), ["a", "b"]);
        assert_eq!(masked("k%6=a&k%zzy=b"), Vec::<String>::new());
    }

    #[test]
    fn percent_encoded_values_are_masked_raw() {
        assert_eq!(masked("token=ab%26cd%3D%3D&x=1"), ["ab%26cd%3D%3D"]);
    }

    #[test]
    fn repeated_args_all_masked_and_empty_ones_left() {
        assert_eq!(masked("key=a&key=&key=b;key=c&key"), ["a", "b", "c"]);
    }

    #[test]
    fn anthropic_key_prefix_kept_in_values() {
        assert_eq!(masked("key=sk-ant-api03-BODY&x=1"), ["BODY"]);
        assert_eq!(masked("key=sk-ant-api03-"), Vec::<String>::new());
    }

    #[test]
    fn value_may_contain_equals() {
        assert_eq!(masked("sig=abc==&x"), ["abc=="]);
    }

    #[test]
    fn long_and_odd_names_do_not_panic() {
        let long = "%41".repeat(1000) + "=v";
        assert!(masked(&long).is_empty());
        assert!(masked("&&&;;=&=x&%=&%%%").is_empty());
        let many = "a=1&".repeat(100_000) + "key=z";
        assert_eq!(masked(&many), ["z"]);
    }

    #[test]
    fn quick_rejection_never_changes_a_result() {
        let names = Names::new(
            ["key", "api_key", "token", "sig", "x%y"]
                .iter()
                .map(|n| n.as_bytes().to_vec())
                .collect(),
        );
        let alphabet: &[&[u8]] = &[
            b"k",
            b"K",
            b"e",
            b"y",
            b"Y",
            b"%",
            b"6B",
            b"79",
            b"%79",
            b"=",
            b"&",
            b";",
            b"token",
            b"sig",
            b"a",
            b"b",
            b"_",
            b"x",
            b"ke%79",
            b"si%67",
            b"toke%6E",
            b"api_ke%59",
        ];
        let mut next = crate::redact::test_rng::xorshift(0x853c_49e6_748f_ea9b);
        let mut matched = 0;
        for _ in 0..50_000 {
            let mut q = Vec::new();
            for _ in 0..(next() % 9) {
                q.extend_from_slice(alphabet[(next() % alphabet.len() as u64) as usize]);
            }
            let (mut fast, mut full) = (Spans::new(), Spans::new());
            names.scan(&q, 0, &mut fast);
            names.scan_all(&q, 0, &mut full);
            matched += usize::from(!full.is_empty());
            assert_eq!(
                fast.normalized(&q),
                full.normalized(&q),
                "{:?}",
                String::from_utf8_lossy(&q)
            );
        }
        assert!(matched > 200, "the corpus rarely matches: {matched}");
    }
}

//! Secret byte ranges found by the scanners, and rendering the masked text from them.
//!
//! Scanners only push ranges; overlaps between them (`Bearer sk-ant-api03-…`, a literal that
//! contains a key) are resolved here by merging, so each secret becomes exactly one mask.

use smallvec::SmallVec;

use super::ends::Stop;
use super::fingerprint::{Fingerprinter, CLOSE, MASK_LEN, OPEN};

/// `[redacted:` + 8 lowercase hex + `]`: what `write_mask` produces.
pub(crate) fn is_rendered_mask(v: &[u8]) -> bool {
    v.len() == MASK_LEN
        && v.starts_with(OPEN)
        && v.ends_with(CLOSE)
        && v[OPEN.len()..OPEN.len() + 8]
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
}

/// Where a rendered mask covering byte `i` of `text` starts, if one does. At most
/// [`MASK_LEN`] candidates, each rejected at its first byte unless it is `[`.
fn mask_around(text: &[u8], i: usize) -> Option<usize> {
    (i.saturating_sub(MASK_LEN - 1)..=i)
        .find(|&p| text.get(p..p + MASK_LEN).is_some_and(is_rendered_mask))
}

/// True if a rendered mask in `text` overlaps `[start, end)`. Only a value holding `[` or
/// `]` can match text across a mask's edge: such a match is of the mask, not of a secret.
pub(crate) fn overlaps_mask(text: &[u8], start: usize, end: usize) -> bool {
    let from = start.saturating_sub(MASK_LEN - 1);
    let to = end.min(text.len());
    (from..to).any(|p| text[p] == b'[' && text.get(p..p + MASK_LEN).is_some_and(is_rendered_mask))
}

/// Half-open byte range `[start, end)` of the input that must not reach the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Span {
    pub start: usize,
    pub end: usize,
}

/// Bounds the fingerprinting work and output growth a hostile request can cause (e.g. a cookie header of
/// thousands of `a=1` pairs): past this many masks, everything from the last one on is masked
/// as a single span. Over-masking is always safe; unbounded per-span hashing is not.
pub(crate) const MAX_SPANS: usize = 64;

/// Where a delimited secret (see [`Stop`]) ended, and how far its context reaches.
#[derive(Clone, Copy, Debug)]
struct Tail {
    end: usize,
    limit: usize,
    stop: Stop,
}

/// Collected ranges, the first few in place: a request masks a value or two (its own
/// credential header) and would otherwise pay an allocation and a free for each.
#[derive(Default)]
pub(crate) struct Spans {
    v: SmallVec<[Span; 4]>,
    /// Text left readable on purpose: a key's public prefix, a scheme word, a cookie's `name=`.
    kept: SmallVec<[Span; 2]>,
    /// The ends of the spans that run up to a delimiter.
    tails: SmallVec<[Tail; 2]>,
}

impl Spans {
    pub(crate) fn new() -> Self {
        Spans {
            v: SmallVec::new(),
            kept: SmallVec::new(),
            tails: SmallVec::new(),
        }
    }

    /// A span that runs up to a delimiter of kind `stop` (or to `limit`, the end of its
    /// context): if another span covers that delimiter, this one reads on to the next. An
    /// empty one (`Bearer rgs1_`, `key=`) is remembered too: once its delimiter is covered,
    /// the masked text reads a secret there.
    pub(crate) fn push_until(&mut self, start: usize, end: usize, stop: Stop, limit: usize) {
        if start < end {
            self.v.push(Span { start, end });
        }
        if start <= end {
            self.tails.push(Tail { end, limit, stop });
        }
    }

    /// Moves `other`'s spans, kept ranges and tails into this one, every offset mapped by `at`
    /// (from `other`'s text to this one's). `decoded`: `other` was found in the decoded copy
    /// of this text, so its delimited secrets also end at an escaped delimiter.
    pub(crate) fn absorb(&mut self, other: Spans, at: impl Fn(usize) -> usize, decoded: bool) {
        for s in other.v {
            self.push(at(s.start), at(s.end));
        }
        for k in other.kept {
            self.keep(at(k.start), at(k.end));
        }
        for t in other.tails {
            self.tails.push(Tail {
                end: at(t.end),
                limit: at(t.limit),
                stop: if decoded { t.stop.in_decoded() } else { t.stop },
            });
        }
    }

    /// Records `[start, end)` as left readable on purpose. A span that starts inside it (a
    /// literal beginning in `sk-ant-api03-`, a bearer token swallowing a cookie's `=`) is
    /// widened to its start: otherwise the readable part left behind would read differently
    /// the next time (`sk-ant-api[…]` has another public prefix), and masking the masked text
    /// again would change it.
    pub(crate) fn keep(&mut self, start: usize, end: usize) {
        if start < end {
            self.kept.push(Span { start, end });
        }
    }

    pub(crate) fn push(&mut self, start: usize, end: usize) {
        if start < end {
            self.v.push(Span { start, end });
        }
    }

    /// Leaves byte `at` out of every span, splitting a span that covers it in two.
    pub(crate) fn exclude(&mut self, at: usize) {
        let mut tail_end = at + 1;
        for s in self.v.iter_mut() {
            if s.start <= at && at < s.end {
                tail_end = tail_end.max(s.end);
                s.end = at;
            }
        }
        self.v.retain(|s| s.start < s.end);
        self.push(at + 1, tail_end);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.v.is_empty()
    }

    /// How many spans and ends of delimited secrets were found.
    pub(crate) fn len(&self) -> usize {
        self.v.len() + self.tails.len()
    }

    /// True if some span starts at the first byte.
    pub(crate) fn starts_at_zero(&self) -> bool {
        self.v.iter().any(|s| s.start == 0)
    }

    /// Sorts and merges overlapping or touching spans, reads delimited secrets on past
    /// delimiters that other spans cover, then applies [`MAX_SPANS`].
    fn normalize(&mut self, text: &[u8]) {
        self.widen_into_kept();
        // Scanners emit in near order, so this is cheap; unstable sort needs no extra memory.
        self.v.sort_unstable_by_key(|s| s.start);
        if self.tails.is_empty() {
            let mut w = 0usize;
            for r in 0..self.v.len() {
                let cur = self.v[r];
                if w > 0 && cur.start <= self.v[w - 1].end {
                    let last = &mut self.v[w - 1];
                    last.end = last.end.max(cur.end);
                } else {
                    self.v[w] = cur;
                    w += 1;
                }
            }
            self.v.truncate(w);
        } else {
            self.merge_reading_on(text);
        }
        if self.v.len() > MAX_SPANS {
            let end = self.v.iter().map(|s| s.end).max().unwrap_or(0);
            self.v.truncate(MAX_SPANS);
            if let Some(last) = self.v.last_mut() {
                last.end = end;
            }
        }
    }

    /// The merge of [`Self::normalize`] when some spans run up to a delimiter. A merged range
    /// that covers such a span's delimiter is rendered as masks, which end nothing, so the
    /// range grows to where that secret would end in the masked text: its next delimiter
    /// outside every span. Growing can swallow the next span and its delimiters, so the
    /// checks repeat until the range's end satisfies every delimited span in it. Each step
    /// moves the end forward, and the delimiters looked for are deduplicated by kind, so the
    /// whole merge stays linear in the text.
    fn merge_reading_on(&mut self, text: &[u8]) {
        self.tails.sort_unstable_by_key(|t| t.end);
        let n = self.v.len();
        let (mut w, mut r, mut t) = (0usize, 0usize, 0usize);
        let mut active: SmallVec<[(Stop, usize); 4]> = SmallVec::new();
        while r < n {
            let start = self.v[r].start;
            let mut end = self.v[r].end;
            r += 1;
            loop {
                while r < n && self.v[r].start <= end {
                    end = end.max(self.v[r].end);
                    r += 1;
                }
                // Tails ending inside this range (the earlier ones belong to earlier ranges, or
                // are empty secrets whose delimiter no range covers).
                while let Some(tail) = self.tails.get(t).filter(|tail| tail.end <= end) {
                    if tail.end >= start && !active.contains(&(tail.stop, tail.limit)) {
                        active.push((tail.stop, tail.limit));
                    }
                    t += 1;
                }
                let mut grew = false;
                for &(stop, limit) in &active {
                    if !stop.ends_at(text, end, limit) {
                        end = stop.end_from(text, end, limit);
                        grew = true;
                    }
                }
                if !grew {
                    break;
                }
            }
            active.clear();
            self.v[w] = Span { start, end };
            w += 1;
        }
        self.v.truncate(w);
    }

    /// See [`Self::keep`]. The kept ranges are merged first, so one widening is enough.
    fn widen_into_kept(&mut self) {
        if self.kept.is_empty() {
            return;
        }
        self.kept.sort_unstable_by_key(|k| k.start);
        let mut w = 0usize;
        for r in 0..self.kept.len() {
            let cur = self.kept[r];
            // Only overlaps merge: a span may start where a kept range ends.
            if w > 0 && cur.start < self.kept[w - 1].end {
                let last = &mut self.kept[w - 1];
                last.end = last.end.max(cur.end);
            } else {
                self.kept[w] = cur;
                w += 1;
            }
        }
        self.kept.truncate(w);
        let kept = &self.kept;
        for s in self.v.iter_mut() {
            // The last kept range starting before the span.
            let i = kept.partition_point(|k| k.start < s.start);
            if let Some(k) = i.checked_sub(1).map(|i| kept[i]) {
                if s.start < k.end {
                    s.start = k.start;
                }
            }
        }
    }

    /// Writes `text` with every span replaced by its mask. Returns false (leaving `out`
    /// untouched) when there is nothing to mask.
    #[inline]
    pub(crate) fn render(self, text: &[u8], fp: &Fingerprinter, out: &mut Vec<u8>) -> bool {
        if self.v.is_empty() {
            return false;
        }
        self.render_slow(text, fp, out)
    }

    #[inline(never)]
    fn render_slow(mut self, text: &[u8], fp: &Fingerprinter, out: &mut Vec<u8>) -> bool {
        // A value masked whole (`x-api-key`, a bare Authorization) on nearly every request.
        // Unless a mask begins or ends it: then the general path trims the span to outside it.
        if let [Span { start: 0, end }] = self.v[..] {
            if end == text.len()
                && mask_around(text, 0).is_none()
                && mask_around(text, end - 1).is_none()
            {
                out.clear();
                fp.write_mask(text, out);
                return true;
            }
        }
        self.normalize(text);
        // Masking is idempotent: a value that was already masked (e.g. a field seen twice)
        // keeps its fingerprint instead of getting the fingerprint of the mask, and a literal
        // that matches a part of a mask (a presented `x [redacted`) does not mask it again.
        // Trimming keeps the spans sorted and apart.
        for s in self.v.iter_mut() {
            if let Some(p) = mask_around(text, s.start) {
                s.start = p + MASK_LEN;
            }
            if s.start < s.end {
                if let Some(p) = mask_around(text, s.end - 1) {
                    s.end = p;
                }
            }
        }
        self.v
            .retain(|s| s.start < s.end && !text.get(s.start..s.end).is_some_and(is_rendered_mask));
        if self.v.is_empty() {
            return false;
        }
        out.clear();
        out.reserve(text.len() + self.v.len() * MASK_LEN);
        let mut at = 0usize;
        for s in &self.v {
            // Scanners never produce spans outside `text`; `get` keeps that a non-panicking fact.
            let (Some(before), Some(secret)) = (text.get(at..s.start), text.get(s.start..s.end))
            else {
                continue;
            };
            out.extend_from_slice(before);
            fp.write_mask(secret, out);
            at = s.end;
        }
        out.extend_from_slice(text.get(at..).unwrap_or_default());
        true
    }

    /// The spans as rendering would mask them in `text`.
    #[cfg(test)]
    pub(crate) fn normalized(mut self, text: &[u8]) -> Vec<Span> {
        self.normalize(text);
        self.v.into_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spans(list: &[(usize, usize)]) -> Vec<Span> {
        let mut s = Spans::new();
        for &(a, b) in list {
            s.push(a, b);
        }
        s.normalized(b"")
    }

    #[test]
    fn merges_overlapping_touching_and_nested() {
        let got = spans(&[(10, 20), (0, 3), (15, 30), (3, 5), (40, 41), (12, 13)]);
        assert_eq!(
            got,
            vec![
                Span { start: 0, end: 5 },
                Span { start: 10, end: 30 },
                Span { start: 40, end: 41 }
            ]
        );
    }

    #[test]
    fn already_masked_text_is_left_alone() {
        let fp = Fingerprinter::new(&[3; 32]);
        let text = b"Bearer [redacted:0123abcd]";
        let mut s = Spans::new();
        s.push(7, text.len());
        let mut out = b"untouched".to_vec();
        assert!(!s.render(text, &fp, &mut out));
        assert_eq!(out, b"untouched");
    }

    /// A literal across a target's `?` is masked on both sides of it, and the `?` stays.
    #[test]
    fn exclude_keeps_one_byte_and_both_sides() {
        let fp = Fingerprinter::new(&[3; 32]);
        let text = b"/p?xy";
        let mut s = Spans::new();
        s.push(1, 5);
        s.push(0, 3);
        s.exclude(2);
        let mut out = Vec::new();
        assert!(s.render(text, &fp, &mut out));
        let mut want = Vec::new();
        fp.write_mask(b"/p", &mut want);
        want.push(b'?');
        fp.write_mask(b"xy", &mut want);
        assert_eq!(out, want);
    }

    /// A match ending or starting inside a mask (a presented credential holding `[redacted`)
    /// masks only the text outside it, so masking the output again changes nothing.
    #[test]
    fn spans_reaching_into_a_mask_stop_at_its_edge() {
        let fp = Fingerprinter::new(&[3; 32]);
        let text = b"ab[redacted:0123abcd]cd";
        let mut s = Spans::new();
        s.push(0, 5);
        s.push(4, 9);
        s.push(15, 23);
        let mut out = Vec::new();
        assert!(s.render(text, &fp, &mut out));
        let mut want = Vec::new();
        fp.write_mask(b"ab", &mut want);
        want.extend_from_slice(b"[redacted:0123abcd]");
        fp.write_mask(b"cd", &mut want);
        assert_eq!(out, want);
    }

    #[test]
    fn a_span_starting_inside_a_kept_range_takes_all_of_it() {
        let mut s = Spans::new();
        s.keep(0, 13);
        s.keep(20, 25);
        s.push(10, 18);
        s.push(25, 30);
        assert_eq!(
            s.normalized(b""),
            [Span { start: 0, end: 18 }, Span { start: 25, end: 30 }]
        );
    }

    #[test]
    fn empty_spans_are_ignored() {
        assert!(spans(&[(4, 4), (5, 2)]).is_empty());
    }

    #[test]
    fn caps_span_count_by_masking_the_tail() {
        let list: Vec<(usize, usize)> = (0..200).map(|i| (i * 3, i * 3 + 1)).collect();
        let got = spans(&list);
        assert_eq!(got.len(), MAX_SPANS);
        assert_eq!(got.last().map(|s| s.end), Some(199 * 3 + 1));
    }

    #[test]
    fn render_replaces_each_span_once() {
        let fp = Fingerprinter::new(&[3u8; 32]);
        let mut s = Spans::new();
        s.push(2, 5);
        s.push(4, 7);
        let mut out = b"junk".to_vec();
        assert!(s.render(b"abSECRETcd", &fp, &mut out));
        let mut want = b"ab".to_vec();
        fp.write_mask(b"SECRE", &mut want);
        want.extend_from_slice(b"Tcd");
        assert_eq!(out, want);
    }

    #[test]
    fn render_without_spans_leaves_out_untouched() {
        let fp = Fingerprinter::new(&[3u8; 32]);
        let mut out = b"keep".to_vec();
        assert!(!Spans::new().render(b"text", &fp, &mut out));
        assert_eq!(out, b"keep");
    }
}

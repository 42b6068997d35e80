//! One request's masker: a [`Redactor`] with the credentials the request presented, and the
//! memory of what it already found clean.

use super::decoded::{self, Decoded};
use super::headers::{self, Kind};
use super::literals::{self, Literal, MIN_LITERAL_LEN};
use super::patterns::{self, Ctx};
use super::pieces;
use super::prefilter::{self, Prefilter};
use super::spans::Spans;
use super::{len_bit, Redactor};
use smallvec::SmallVec;
use std::cell::{Cell, OnceCell};
use std::marker::PhantomData;

/// Where the query of a request target lies: after the first `?`, up to a space or `#`.
#[inline]
pub(super) fn query_range(text: &[u8]) -> Option<(usize, usize)> {
    let qs = literals::find_byte(text, b'?')? + 1;
    let rest = &text[qs..];
    let len = rest
        .iter()
        .position(|&b| b == b' ' || b == b'#')
        .unwrap_or(rest.len());
    Some((qs, qs + len))
}

/// Presented credentials prepared without allocating; a request presents at most two.
const MAX_EXTRA: usize = 2;

/// A [`Redactor`] together with one request's extra literals (the credentials it presented),
/// prepared once so that each header costs only the scan itself. Get one from
/// [`Redactor::for_request`].
pub struct RequestMasker<'a> {
    red: &'a Redactor,
    extra: [Option<Literal<'a>>; MAX_EXTRA],
    /// Extras beyond [`MAX_EXTRA`], prepared at each use (the prefilter is off then).
    extra_rest: &'a [&'a [u8]],
    /// The parts of quoted, joined or scheme-prefixed credentials (see `pieces`); none for an
    /// ordinary token, so no allocation unless a request presents more than a few.
    pieces: SmallVec<[Literal<'a>; 2]>,
    filter: Prefilter,
    /// The same for texts nginx may have lower-cased, made when one is first checked.
    folded: OnceCell<Prefilter>,
    /// Address range of the longest text the prefilter found clean. The URI, the args and
    /// the upstream URI usually lie inside the request line, and any part of a clean text is
    /// clean, so they are not read again. Texts are borrowed for `'a`, so no text can change
    /// or be freed while this is in use.
    pub(super) clean: Cell<(usize, usize)>,
    /// Address and length of the last two queries with no listed argument in them: the
    /// request line's (shared with the unparsed URI and the args) and the upstream URI's copy.
    pub(super) clean_query: Cell<[(usize, usize); 2]>,
    /// Makes `'a` invariant: otherwise a `&RequestMasker<'long>` would shrink to a shorter
    /// lifetime at each call, and a text could be freed and its memory reused for another
    /// text between two calls, defeating the memory of clean ranges.
    _texts: PhantomData<Cell<&'a [u8]>>,
}

impl<'a> RequestMasker<'a> {
    /// See [`Redactor::for_request`].
    #[inline]
    pub(super) fn new(red: &'a Redactor, extra: &'a [&'a [u8]]) -> Self {
        let mut prepared: [Option<Literal<'a>>; MAX_EXTRA] = [None; MAX_EXTRA];
        let (now, rest) = extra.split_at(extra.len().min(MAX_EXTRA));
        for (slot, lit) in prepared.iter_mut().zip(now) {
            if lit.len() >= MIN_LITERAL_LEN {
                *slot = Some(Literal::new(lit));
            }
        }
        let mut pieces: SmallVec<[Literal<'a>; 2]> = SmallVec::new();
        for cred in extra {
            pieces::for_each_piece(cred, |p| pieces.push(Literal::new(p)));
        }
        // An implied literal needs no byte of its own: where the filter sees no pattern pair,
        // the scan finds nothing, so the literal is not there either.
        let filter = if rest.is_empty() {
            let metas = red.literals.iter().map(|(_, m)| m);
            Prefilter::new(
                metas
                    .chain(prepared.iter().flatten().map(|l| &l.meta))
                    .chain(pieces.iter().map(|l| &l.meta))
                    .filter(|m| !m.implied)
                    .map(|m| m.pair),
            )
        } else {
            Prefilter::always()
        };
        RequestMasker {
            red,
            extra: prepared,
            extra_rest: rest,
            pieces,
            filter,
            folded: OnceCell::new(),
            clean: Cell::new((0, 0)),
            clean_query: Cell::new([(0, 0); 2]),
            _texts: PhantomData,
        }
    }

    /// The same masker sending every value to the scanners, to check the prefilter against.
    pub(super) fn without_prefilter(mut self) -> Self {
        self.filter = Prefilter::always();
        self.folded = OnceCell::from(Prefilter::always());
        self
    }

    /// Every literal of this request (configured, presented, parts of presented), prepared.
    fn all_literals(&self) -> impl Iterator<Item = Literal<'_>> {
        let rest = self
            .extra_rest
            .iter()
            .filter(|l| l.len() >= MIN_LITERAL_LEN)
            .map(|l| Literal::new(l));
        self.red
            .configured()
            .chain(self.extra.iter().flatten().copied())
            .chain(self.pieces.iter().copied())
            .chain(rest)
    }

    /// The prefilter for lower-cased copies: every literal's pair in any case. No literal is
    /// implied by the pattern scan here: a copy's letters may differ in case from the literal's.
    fn folded_filter(&self) -> &Prefilter {
        self.folded.get_or_init(|| {
            if self.extra_rest.is_empty() {
                Prefilter::folded(self.all_literals().map(|l| l.meta.pair))
            } else {
                Prefilter::always()
            }
        })
    }

    /// A secret-by-name header scanned for patterns and literals as well, which
    /// [`Self::mask_header`] skips as redundant; the tests hold the two to the same result.
    /// The decoded copy is read for a cookie only: elsewhere decoding can only reread the
    /// scheme word or public prefix (the property tests check that nothing leaks for it).
    #[cfg(test)]
    pub(super) fn mask_secret_header_fully(
        &self,
        name: &[u8],
        value: &'a [u8],
        out: &mut Vec<u8>,
    ) -> bool {
        let mut spans = Spans::new();
        let kind = self.red.header_kind(name);
        if let Some(kind) = kind {
            headers::scan(kind, value, &mut spans);
        }
        if kind.is_none_or(|k| k == Kind::Cookie) {
            self.scan_whole(value, Ctx::Text, false, &mut spans);
        } else {
            patterns::scan(value, Ctx::Text, 0, &mut spans);
            self.scan_literals(value, false, &mut spans);
        }
        spans.render(value, &self.red.fp, out)
    }

    /// False if a header with a name and value of these lengths cannot need masking: the name
    /// cannot be secret or `Referer`, and the value is too short to hold any match.
    #[inline(always)]
    pub fn header_may_hold_secret(&self, name_len: usize, value_len: usize) -> bool {
        value_len >= prefilter::MIN_MATCH_LEN || self.red.special_lens & len_bit(name_len) != 0
    }

    /// Masks a header value. Returns false and leaves `out` untouched when nothing matched (no
    /// allocation). Otherwise clears `out`, writes the masked value and returns true.
    ///
    /// Secret headers are masked by name; every header is also scanned for key formats, bearer
    /// tokens and literals; `Referer` additionally gets its query arguments masked by name.
    #[inline(always)]
    pub fn mask_header(&self, name: &[u8], value: &'a [u8], out: &mut Vec<u8>) -> bool {
        // Nearly every header is neither secret by name nor Referer (one bit test on the
        // name's length says so for most) and holds nothing the prefilter recognizes: that
        // case is settled here, inlined in the caller's loop, without the set-up of a scan.
        if self.red.special_lens & len_bit(name.len()) != 0 {
            if let Some(masked) = self.mask_special_header(name, value, out) {
                return masked;
            }
        }
        self.may_match(value) && self.mask_text_scanned(value, out)
    }

    /// A header secret by name, or the Referer; None for any other header (one whose name only
    /// has the length of a special one).
    #[inline(never)]
    fn mask_special_header(&self, name: &[u8], value: &'a [u8], out: &mut Vec<u8>) -> Option<bool> {
        if let Some(kind) = self.red.header_kind(name) {
            return Some(self.mask_secret_header(kind, value, out));
        }
        if name.eq_ignore_ascii_case(b"referer") {
            return Some(self.mask_target(value, out));
        }
        None
    }

    fn mask_secret_header(&self, kind: Kind, value: &'a [u8], out: &mut Vec<u8>) -> bool {
        let mut spans = Spans::new();
        headers::scan(kind, value, &mut spans);
        // Only a scheme word and a key's public prefix stay visible here, and no pattern match
        // can start in those without starting where the mask does. A configured or presented
        // literal can (`sk-ant-<its first bytes>-…`), so those are still looked for unless the
        // whole value is masked already.
        // The same holds for the decoded copy: what is not masked is the scheme word and a
        // public prefix, unescaped, where a decoded match would start as a raw one does.
        let kept_prefix = kind != Kind::Cookie && !spans.starts_at_zero();
        if kind == Kind::Cookie && self.may_match(value) {
            let whole = [(0, value.len(), Ctx::Text)];
            self.scan_found(value, &whole, false, &mut spans);
        } else if kept_prefix && self.may_match(value) {
            self.scan_literals(value, false, &mut spans);
        }
        spans.render(value, &self.red.fp, out)
    }

    /// An ordinary header value the prefilter did not clear.
    #[inline(never)]
    fn mask_text_scanned(&self, value: &[u8], out: &mut Vec<u8>) -> bool {
        let mut spans = Spans::new();
        self.scan_whole(value, Ctx::Text, false, &mut spans);
        spans.render(value, &self.red.fp, out)
    }

    /// Any text (an error-log line): patterns and literals, percent-encoded or not.
    pub fn mask_text(&self, text: &'a [u8], out: &mut Vec<u8>) -> bool {
        self.may_match(text) && self.mask_text_scanned(text, out)
    }

    /// [`Self::mask_text`] for a text that was cut short at the offsets `cuts` (an error-log
    /// line longer than nginx's line buffer): a literal a cut left incomplete is masked as
    /// well, down to its first [`MIN_LITERAL_LEN`] bytes. Patterns need nothing of that kind:
    /// a cut key or token still matches.
    pub fn mask_text_cut(&self, text: &'a [u8], cuts: &[usize], out: &mut Vec<u8>) -> bool {
        let mut spans = Spans::new();
        if self.may_match(text) {
            self.scan_whole(text, Ctx::Text, false, &mut spans);
        }
        for &cut in cuts {
            let Some(before) = text.get(..cut) else {
                continue;
            };
            for lit in self.all_literals() {
                literals::find_cut(before, &lit, &mut spans);
            }
        }
        spans.render(text, &self.red.fp, out)
    }

    /// A value that is secret whole, like an `x-api-key` header: only a public prefix
    /// (`sk-ant-api03-`) stays.
    pub fn mask_whole(&self, value: &[u8], out: &mut Vec<u8>) -> bool {
        let mut spans = Spans::new();
        headers::scan(Kind::Whole, value, &mut spans);
        spans.render(value, &self.red.fp, out)
    }

    /// `$host`: `image`, nginx's lower-cased copy of the first `image.len()` bytes of `source`
    /// (the Host header as received; a port or a final dot cut off). Masks in the image what
    /// masking `source` as a header masks there (so a secret cut short by the cut is still
    /// found whole), and what the image shows in any letter case.
    pub fn mask_host(&self, source: &'a [u8], image: &[u8], out: &mut Vec<u8>) -> bool {
        let n = image.len();
        let mut spans = Spans::new();
        if n <= source.len() && self.may_match(source) {
            let mut found = Spans::new();
            self.scan_whole(source, Ctx::Text, false, &mut found);
            spans.absorb(found, |i| i.min(n), false);
        }
        if self.folded_filter().may_match(image) {
            self.scan_whole(image, Ctx::Text, true, &mut spans);
        }
        spans.render(image, &self.red.fp, out)
    }

    /// Patterns (if `patterns`) in each segment of `text` (its range and context), and the
    /// literals in all of it, in any letter case if `fold`; then the same in the percent-decoded
    /// copy of `text` if it holds an escape, mapped back onto the escaped bytes.
    fn scan_found(
        &self,
        text: &[u8],
        segments: &[(usize, usize, Ctx)],
        fold: bool,
        spans: &mut Spans,
    ) {
        for &(a, z, ctx) in segments {
            patterns::scan(&text[a..z], ctx, a, spans);
        }
        self.scan_literals(text, fold, spans);
        if decoded::has_escape(text) {
            self.scan_decoded(text, segments, fold, spans);
        }
    }

    /// Patterns of one context over all of `text`, then literals, decoded forms included.
    fn scan_whole(&self, text: &[u8], ctx: Ctx, fold: bool, spans: &mut Spans) {
        self.scan_found(text, &[(0, text.len(), ctx)], fold, spans);
    }

    #[inline(never)]
    fn scan_decoded(
        &self,
        text: &[u8],
        segments: &[(usize, usize, Ctx)],
        fold: bool,
        spans: &mut Spans,
    ) {
        let Some(d) = Decoded::new(text) else {
            return;
        };
        // Most escapes decode to nothing a scanner looks for (`%2F`, `%3D`): the prefilter on
        // the decoded bytes settles those without a scan.
        let filter = if fold {
            self.folded_filter()
        } else {
            &self.filter
        };
        if !filter.may_match(&d.bytes) {
            return;
        }
        let mut found = Spans::new();
        // Patterns always: a decoded match has no visible prefix in the text, so no shortcut
        // of the callers applies to it.
        for &(a, z, ctx) in segments {
            let (da, dz) = (d.decoded(a), d.decoded(z));
            patterns::scan(&d.bytes[da..dz], ctx, da, &mut found);
        }
        self.scan_literals(&d.bytes, fold, &mut found);
        spans.absorb(found, |i| d.original(i), true);
    }

    /// Same for a query string (`r->args`, no leading `?`).
    #[inline]
    pub fn mask_args(&self, args: &'a [u8], out: &mut Vec<u8>) -> bool {
        let patterns = self.may_match(args);
        let args_clean = self.query_clean(args);
        if !patterns && args_clean {
            return false;
        }
        self.mask_args_scanned(args, patterns, args_clean, out)
    }

    #[inline(never)]
    fn mask_args_scanned(
        &self,
        args: &'a [u8],
        patterns: bool,
        args_clean: bool,
        out: &mut Vec<u8>,
    ) -> bool {
        let mut spans = Spans::new();
        if !args_clean {
            self.scan_args(args, 0, &mut spans);
        }
        if patterns {
            self.scan_whole(args, Ctx::Query, false, &mut spans);
        }
        spans.render(args, &self.red.fp, out)
    }

    /// Same for a request target, unparsed URI or whole request line: patterns everywhere, arg
    /// names in the query (after the first `?`, up to a space or `#`).
    #[inline]
    pub fn mask_target(&self, text: &'a [u8], out: &mut Vec<u8>) -> bool {
        let patterns = self.may_match(text);
        // The query's range, and whether it is known to hold no listed argument.
        let query = query_range(text).map(|(qs, qe)| (qs, qe, self.query_clean(&text[qs..qe])));
        if !patterns && query.is_none_or(|(_, _, clean)| clean) {
            return false;
        }
        self.mask_target_scanned(text, patterns, false, query, out)
    }

    /// [`Self::mask_target`] for a value nginx may have lower-cased on the way (a cached
    /// variable: a `map` of `$host`, a `server_name` regex capture): literals in any case.
    pub fn mask_target_folded(&self, text: &'a [u8], out: &mut Vec<u8>) -> bool {
        let patterns =
            text.len() >= prefilter::MIN_MATCH_LEN && self.folded_filter().may_match(text);
        let query = query_range(text).map(|(qs, qe)| (qs, qe, self.query_clean(&text[qs..qe])));
        if !patterns && query.is_none_or(|(_, _, clean)| clean) {
            return false;
        }
        self.mask_target_scanned(text, patterns, true, query, out)
    }

    #[inline(never)]
    fn mask_target_scanned(
        &self,
        text: &'a [u8],
        patterns: bool,
        fold: bool,
        query: Option<(usize, usize, bool)>,
        out: &mut Vec<u8>,
    ) -> bool {
        let mut spans = Spans::new();
        if let Some((qs, qe, false)) = query {
            self.scan_args(&text[qs..qe], qs, &mut spans);
        }
        if patterns {
            match query {
                // The `?` itself is at qs - 1 and matches nothing.
                Some((qs, qe, _)) => {
                    let segments = [
                        (0, qs - 1, Ctx::Text),
                        (qs, qe, Ctx::Query),
                        (qe, text.len(), Ctx::Text),
                    ];
                    self.scan_found(text, &segments, fold, &mut spans);
                }
                None => self.scan_whole(text, Ctx::Text, fold, &mut spans),
            }
            if let Some((qs, qe, _)) = query {
                // A literal may run across the `?` that starts the query, or the space or `#`
                // that ends it; those bytes stay, so masking the output again splits path,
                // query and the rest at the same places (a mask ends nothing).
                spans.exclude(qs - 1);
                if qe < text.len() {
                    spans.exclude(qe);
                }
            }
        }
        spans.render(text, &self.red.fp, out)
    }

    /// The prefilter, remembering the longest clean text (see `clean`).
    #[inline(always)]
    fn may_match(&self, text: &'a [u8]) -> bool {
        if text.len() < prefilter::MIN_MATCH_LEN {
            return false;
        }
        let (start, end) = (text.as_ptr() as usize, text.as_ptr() as usize + text.len());
        let (clean_start, clean_end) = self.clean.get();
        if clean_start <= start && end <= clean_end {
            return false;
        }
        let found = self.filter.may_match(text);
        if !found && end - start > clean_end - clean_start {
            self.clean.set((start, end));
        }
        found
    }

    /// True if no listed argument can be in `query`: it was seen clean before (the request
    /// line's query, then the unparsed URI's and `r->args`, are one piece of memory), or no
    /// `=` in it can close a listed name.
    #[inline]
    fn query_clean(&self, query: &'a [u8]) -> bool {
        let key = (query.as_ptr() as usize, query.len());
        let seen = self.clean_query.get();
        if query.is_empty() || seen.contains(&key) {
            return true;
        }
        if !self.red.args.may_match(query) {
            self.clean_query.set([key, seen[0]]);
            return true;
        }
        false
    }

    /// Arguments masked by name, in a query [`Self::query_clean`] did not clear.
    fn scan_args(&self, query: &'a [u8], base: usize, spans: &mut Spans) {
        let before = spans.len();
        self.red.args.scan_all(query, base, spans);
        if spans.len() == before {
            let seen = self.clean_query.get();
            self.clean_query
                .set([(query.as_ptr() as usize, query.len()), seen[0]]);
        }
    }

    fn scan_literals(&self, text: &[u8], fold: bool, spans: &mut Spans) {
        if fold {
            for lit in self.all_literals() {
                literals::find_all_folded(text, &lit, spans);
            }
            return;
        }
        for lit in self.red.configured() {
            literals::find_all(text, &lit, spans);
        }
        let nothing_found = spans.is_empty();
        let rest = self
            .extra_rest
            .iter()
            .filter(|l| l.len() >= MIN_LITERAL_LEN);
        for lit in self
            .extra
            .iter()
            .flatten()
            .chain(self.pieces.iter())
            .copied()
            .chain(rest.map(|l| Literal::new(l)))
        {
            if !(nothing_found && lit.meta.implied) {
                literals::find_all(text, &lit, spans);
            }
        }
    }
}

//! A streaming JSON scanner that follows only the counting paths of `paths.rs`.
//!
//! It is a tokenizer with a depth counter, not a parser: no tree, no recursion, no heap, and
//! its whole state fits in a few words, so a body can arrive split at any byte. Inside the
//! objects on a path (at most four deep) it reads keys and the values of the keys it wants;
//! everything else (text, tool input, content blocks, any nesting depth) is skipped by
//! counting brackets outside strings, with a word-at-a-time search through string bytes.
//! Keys and compared values are matched after JSON unescaping (`\u0075sage` is `usage`), so a
//! key means what a JSON parser would say it means; a string is never structure, so `"usage"`
//! written inside a text delta or a tool's input is never a key. A document that stops being
//! JSON the scanner can follow stops being read: what was committed stays.

use super::counts::{Field, Usage};
use super::model::ModelSlot;
use super::outcome::ErrorType;
use super::paths::{self, Names, Node, Slot, MAX_DEPTH};
use super::swar::find_quote_or_escape;

/// What the documents scanned so far reported. The scanner writes each value when it is
/// complete: a count at the byte after its last digit, a string at its closing quote.
#[derive(Debug, Clone, Copy)]
pub(super) struct Findings {
    pub(super) usage: Usage,
    pub(super) model: ModelSlot,
    pub(super) error_type: Option<ErrorType>,
    /// A body's root `type` was "message" (its last `type`: in JSON a later key wins).
    pub(super) is_message: bool,
}

impl Findings {
    pub(super) const fn new() -> Self {
        Findings {
            usage: Usage::NONE,
            model: ModelSlot::new(),
            error_type: None,
            is_message: false,
        }
    }
}

/// What a skipped string was, for what follows its closing quote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    /// A key off every path: its value is skipped.
    Key,
    /// A value in a node.
    Value,
    /// A body root's `type` that is not "message".
    NotMessage,
    /// An error type that is none of the known ones.
    OtherError,
    /// A string inside a skipped container.
    Skipped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    /// Before the root value.
    Start,
    /// The root value ended, or the document is not JSON the scanner can follow.
    Done,
    /// After `{`: a key or `}`.
    KeyOrEnd,
    /// After `,` in a node: a key.
    Key,
    Colon(Slot),
    Value(Slot),
    /// After a value in a node: `,` or `}`.
    Next,
    /// Inside a string compared with `Names`; `mask`, `pos`, `esc` and `hex` hold how far.
    Match(Names),
    /// Inside a model string.
    Model,
    /// Inside a string whose bytes do not matter.
    SkipStr(After),
    /// A usage count's digits; `num` and `nflags` hold them.
    Number(Field),
    /// A number or literal no path needs.
    Scalar,
    /// Inside a container off every path, outside its strings: only brackets count.
    Skip,
}

/// `nflags`: a digit was seen; the first digit was 0; not a plain non-negative integer.
const DIGIT: u8 = 1;
const ZERO: u8 = 2;
const BAD: u8 = 4;

#[derive(Debug, Clone, Copy)]
pub(super) struct Json {
    st: St,
    /// Open containers, on a path or not. Past u32::MAX the document is given up.
    depth: u32,
    /// Open nodes (containers on a path), `stack[..nodes]`; `depth == nodes` while inside
    /// one, `depth > nodes` inside a skipped container.
    nodes: u8,
    stack: [Node; MAX_DEPTH],
    /// `Match`: candidates left, bytes matched, escape progress (0 none, 1 after `\`,
    /// 2..=5 reading `\u` hex digits), the hex value so far. `esc == 1` in `SkipStr`: the
    /// next byte is escaped.
    mask: u16,
    pos: u8,
    esc: u8,
    hex: u16,
    num: u64,
    nflags: u8,
}

const fn is_ws(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r')
}

/// A byte of a number or literal the scanner skips (`Scalar`).
const fn is_scalar_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'+' | b'.')
}

/// The byte a one-character escape stands for (`None`: not a JSON escape).
const fn unescape(c: u8) -> Option<u8> {
    Some(match c {
        b'"' | b'\\' | b'/' => c,
        b'b' => 8,
        b'f' => 12,
        b'n' => b'\n',
        b'r' => b'\r',
        b't' => b'\t',
        _ => return None,
    })
}

const fn hex_val(c: u8) -> Option<u16> {
    Some(match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        _ => return None,
    } as u16)
}

impl Json {
    pub(super) const fn new() -> Self {
        Json {
            st: St::Start,
            depth: 0,
            nodes: 0,
            stack: [Node::Body; MAX_DEPTH],
            mask: 0,
            pos: 0,
            esc: 0,
            hex: 0,
            num: 0,
            nflags: 0,
        }
    }

    /// Nothing more will be read from this document.
    pub(super) fn is_done(&self) -> bool {
        self.st == St::Done
    }

    /// Reads nothing more of this document.
    pub(super) fn give_up(&mut self) {
        self.st = St::Done;
    }

    /// The next piece of the document; `root` is the node its root object is (used when the
    /// root's `{` arrives).
    pub(super) fn feed(&mut self, b: &[u8], root: Node, out: &mut Findings) {
        let mut i = 0;
        while i < b.len() {
            match self.st {
                St::Done => return,
                St::SkipStr(after) => {
                    let Some(end) = self.skip_str(b, i) else {
                        return;
                    };
                    i = end;
                    self.end_skipped(after, out);
                    continue;
                }
                St::Skip => {
                    i = self.skip(b, i);
                    continue;
                }
                St::Number(f) => {
                    i = self.number(f, b, i, out);
                    continue;
                }
                St::KeyOrEnd | St::Key | St::Next => {
                    // Where it stops, the token at `i` is one it leaves to the byte loop
                    // below (which then takes at least one byte: no round trips forever).
                    let j = self.members(b, i, out);
                    if j != i {
                        i = j;
                        continue;
                    }
                }
                _ => {}
            }
            let c = b[i];
            i += 1;
            match self.st {
                _ if is_ws(c) && self.between_tokens() => {}
                St::Start => {
                    if c == b'{' {
                        self.push(root);
                    } else {
                        self.st = St::Done;
                    }
                }
                St::KeyOrEnd if c == b'}' => self.close(),
                St::KeyOrEnd | St::Key => {
                    if c == b'"' {
                        i = self.begin_key(b, i);
                    } else {
                        self.st = St::Done;
                    }
                }
                St::Colon(slot) => self.st = if c == b':' { St::Value(slot) } else { St::Done },
                St::Value(slot) => i = self.value(slot, c, b, i, out),
                St::Next => match c {
                    b',' => self.st = St::Key,
                    b'}' => self.close(),
                    _ => self.st = St::Done,
                },
                St::Match(names) => {
                    if !self.match_byte(names, c, out) {
                        // Not an escape after all: the byte is the string's own.
                        i -= 1;
                    }
                }
                St::Model => match c {
                    b'"' => {
                        out.model.end();
                        self.st = St::Next;
                    }
                    _ if out.model.push(c) => {}
                    _ => {
                        self.esc = u8::from(c == b'\\');
                        self.st = St::SkipStr(After::Value);
                    }
                },
                St::Scalar => {
                    if !is_scalar_byte(c) {
                        self.st = St::Next;
                        i -= 1;
                    }
                }
                St::Done | St::SkipStr(_) | St::Skip | St::Number(_) => {}
            }
        }
    }

    /// The common case without a round of `feed`'s byte loop per token: the members of
    /// nodes in compact JSON (`"key":value,` with no whitespace), each key whole in the
    /// buffer and unescaped. It makes exactly the transitions the byte loop makes, one token
    /// at a time, and stops before the first token it does not take (whitespace, an escaped
    /// or split key, a byte that is not JSON) with the state the byte loop expects there, or
    /// inside a value left in a partial state (a string, number or skipped container the
    /// buffer ends in). Call it with `st` one of `KeyOrEnd`, `Key`, `Next`.
    #[inline(always)]
    fn members(&mut self, b: &[u8], mut i: usize, out: &mut Findings) -> usize {
        loop {
            let Some(&c) = b.get(i) else {
                return i;
            };
            match (self.st, c) {
                (St::Next, b',') => {
                    self.st = St::Key;
                    i += 1;
                    continue;
                }
                (St::Next | St::KeyOrEnd, b'}') => {
                    self.close();
                    i += 1;
                    if self.st == St::Done {
                        return i;
                    }
                    continue;
                }
                (St::Key | St::KeyOrEnd, b'"') => {}
                _ => return i,
            }
            // `"key":v` with `v` a value's first byte, all in this buffer.
            let key = &b[i + 1..];
            let Some(p) = find_quote_or_escape(key) else {
                return i;
            };
            let (Some(b'"'), Some(b':'), Some(&v)) = (key.get(p), key.get(p + 1), key.get(p + 2))
            else {
                return i;
            };
            if is_ws(v) {
                return i;
            }
            let slot = paths::key_slot(self.top(), &key[..p]);
            i = self.value(slot, v, b, i + p + 4, out);
            // What the value left: go on with the next member, or finish the value here.
            loop {
                match self.st {
                    St::Next | St::KeyOrEnd => break,
                    St::Number(f) if i < b.len() => i = self.number(f, b, i, out),
                    St::Skip if i < b.len() => i = self.skip(b, i),
                    St::Scalar => {
                        while b.get(i).is_some_and(|&c| is_scalar_byte(c)) {
                            i += 1;
                        }
                        if i == b.len() {
                            return i;
                        }
                        self.st = St::Next;
                    }
                    _ => return i,
                }
            }
        }
    }

    /// Whitespace here is between tokens (not part of a string or a number).
    fn between_tokens(&self) -> bool {
        matches!(
            self.st,
            St::Start | St::KeyOrEnd | St::Key | St::Colon(_) | St::Value(_) | St::Next
        )
    }

    fn top(&self) -> Node {
        self.stack
            .get(usize::from(self.nodes).wrapping_sub(1))
            .copied()
            .unwrap_or(Node::Body)
    }

    fn push(&mut self, n: Node) {
        match self.stack.get_mut(usize::from(self.nodes)) {
            Some(slot) if self.depth == u32::from(self.nodes) => {
                *slot = n;
                self.nodes += 1;
                self.depth += 1;
                self.st = St::KeyOrEnd;
            }
            // Deeper than any path goes (cannot happen with the tables in paths.rs).
            _ => self.open(),
        }
    }

    /// Enters a container off every path.
    fn open(&mut self) {
        match self.depth.checked_add(1) {
            Some(d) => {
                self.depth = d;
                self.st = St::Skip;
            }
            None => self.st = St::Done,
        }
    }

    /// `}` of a node.
    fn close(&mut self) {
        self.nodes -= 1;
        self.depth -= 1;
        self.st = if self.depth == 0 { St::Done } else { St::Next };
    }

    /// Skips string bytes from `b[i..]` (`esc == 1`: `b[i]` is escaped). Returns the index
    /// after the closing quote, or `None` when the buffer ends first (with `esc` set if it
    /// ends on a backslash).
    #[inline]
    fn skip_str(&mut self, b: &[u8], mut i: usize) -> Option<usize> {
        if self.esc != 0 {
            if i >= b.len() {
                return None;
            }
            self.esc = 0;
            i += 1;
        }
        loop {
            i += find_quote_or_escape(b.get(i..)?)? + 1;
            if b[i - 1] == b'"' {
                return Some(i);
            }
            if i >= b.len() {
                self.esc = 1;
                return None;
            }
            i += 1;
        }
    }

    /// Inside skipped containers: counts brackets up to the one that closes the outermost,
    /// or up to a string. Returns where it stopped.
    fn skip(&mut self, b: &[u8], mut i: usize) -> usize {
        while let Some(&c) = b.get(i) {
            i += 1;
            match c {
                b'"' => match self.skip_str(b, i) {
                    Some(end) => i = end,
                    None => {
                        self.st = St::SkipStr(After::Skipped);
                        return b.len();
                    }
                },
                b'{' | b'[' => {
                    self.open();
                    if self.st == St::Done {
                        return i;
                    }
                }
                b'}' | b']' => {
                    self.depth -= 1;
                    if self.depth == u32::from(self.nodes) {
                        self.st = St::Next;
                        return i;
                    }
                }
                _ => {}
            }
        }
        i
    }

    /// A usage count's bytes from `b[i..]`, up to the byte after it (left for `Next`).
    #[inline]
    fn number(&mut self, f: Field, b: &[u8], mut i: usize, out: &mut Findings) -> usize {
        while let Some(&c) = b.get(i) {
            match c {
                b'0'..=b'9' => {
                    if self.nflags & DIGIT == 0 {
                        self.nflags |= DIGIT | if c == b'0' { ZERO } else { 0 };
                    } else if self.nflags & ZERO != 0 {
                        self.nflags |= BAD;
                    }
                    self.num = self
                        .num
                        .saturating_mul(10)
                        .saturating_add(u64::from(c - b'0'));
                }
                b'-' | b'+' | b'.' | b'e' | b'E' => self.nflags |= BAD,
                b',' | b'}' | b' ' | b'\t' | b'\n' | b'\r' => {
                    if self.nflags & (DIGIT | BAD) == DIGIT {
                        out.usage.set(f, self.num);
                    }
                    self.st = St::Next;
                    return i;
                }
                _ => {
                    self.st = St::Done;
                    return i;
                }
            }
            i += 1;
        }
        i
    }

    /// The first byte of a value under `slot` (`c`, at `b[i - 1]`).
    #[inline(always)]
    fn value(&mut self, slot: Slot, c: u8, b: &[u8], i: usize, out: &mut Findings) -> usize {
        match (c, slot) {
            (b'"', Slot::Model) => {
                let rest = &b[i..];
                if let Some(p) = find_quote_or_escape(rest) {
                    if rest[p] == b'"' {
                        out.model.set(&rest[..p]);
                        self.st = St::Next;
                        return i + p + 1;
                    }
                }
                out.model.start();
                self.st = St::Model;
            }
            (b'"', Slot::Type) => return self.begin(Names::Type, b, i, out),
            (b'"', Slot::ErrorType) => return self.begin(Names::ErrorType, b, i, out),
            (b'"', _) => {
                self.esc = 0;
                return match self.skip_str(b, i) {
                    Some(end) => {
                        self.st = St::Next;
                        end
                    }
                    None => {
                        self.st = St::SkipStr(After::Value);
                        b.len()
                    }
                };
            }
            (b'{', Slot::Child(n)) => self.push(n),
            (b'0'..=b'9' | b'-', Slot::Field(f)) => {
                self.num = 0;
                self.nflags = 0;
                self.st = St::Number(f);
                return i - 1;
            }
            (b'{' | b'[' | b'0'..=b'9' | b'-' | b'a'..=b'z', _) => {
                // Not a string: a model, type or error type that cannot be one we name.
                match slot {
                    Slot::Model => out.model.set_invalid(),
                    Slot::Type => out.is_message = false,
                    Slot::ErrorType => out.error_type = Some(ErrorType::Other),
                    _ => {}
                }
                if matches!(c, b'{' | b'[') {
                    self.open();
                } else {
                    self.st = St::Scalar;
                }
            }
            _ => self.st = St::Done,
        }
        i
    }

    /// A key of the innermost node opens at `b[i - 1]`. When the whole key is in this buffer
    /// without escapes it is looked up at once (and the colon that nearly always follows it
    /// taken too); otherwise it is compared byte by byte as it comes.
    fn begin_key(&mut self, b: &[u8], i: usize) -> usize {
        let n = self.top();
        let rest = &b[i..];
        if let Some(p) = find_quote_or_escape(rest) {
            if rest[p] == b'"' {
                let slot = paths::key_slot(n, &rest[..p]);
                return if rest.get(p + 1) == Some(&b':') {
                    self.st = St::Value(slot);
                    i + p + 2
                } else {
                    self.st = St::Colon(slot);
                    i + p + 1
                };
            }
        }
        self.begin_stepwise(Names::Keys(n), i)
    }

    /// A string value compared with `names` opens at `b[i - 1]`: compared at once when it
    /// is whole in this buffer without escapes, otherwise byte by byte as it comes.
    fn begin(&mut self, names: Names, b: &[u8], i: usize, out: &mut Findings) -> usize {
        let rest = &b[i..];
        if let Some(p) = find_quote_or_escape(rest) {
            if rest[p] == b'"' {
                self.matched(names, names.find(&rest[..p]), out);
                return i + p + 1;
            }
        }
        self.begin_stepwise(names, i)
    }

    fn begin_stepwise(&mut self, names: Names, i: usize) -> usize {
        self.mask = names.all();
        self.pos = 0;
        self.esc = 0;
        self.st = St::Match(names);
        i
    }

    /// The string compared with `names` closed; `found` is the candidate it equals.
    fn matched(&mut self, names: Names, found: Option<usize>, out: &mut Findings) {
        self.st = St::Next;
        match names {
            Names::Keys(n) => self.st = St::Colon(paths::slot(n, found)),
            Names::Type => out.is_message = found.is_some(),
            Names::ErrorType => out.error_type = Some(paths::error_type(found)),
        }
    }

    /// One byte of a string compared with `names`. False: the byte ended a `\u` escape
    /// early and must be read again as a plain string byte.
    fn match_byte(&mut self, names: Names, c: u8, out: &mut Findings) -> bool {
        let decoded = match self.esc {
            0 => match c {
                b'"' => {
                    let found = names.winner(self.mask, self.pos);
                    self.matched(names, found, out);
                    return true;
                }
                b'\\' => {
                    self.esc = 1;
                    return true;
                }
                _ => Some(c),
            },
            1 if c == b'u' => {
                self.esc = 2;
                self.hex = 0;
                return true;
            }
            1 => {
                self.esc = 0;
                unescape(c)
            }
            _ => match hex_val(c) {
                Some(v) => {
                    self.hex = self.hex << 4 | v;
                    if self.esc < 5 {
                        self.esc += 1;
                        return true;
                    }
                    self.esc = 0;
                    // Only ASCII can be part of a name we match.
                    u8::try_from(self.hex).ok().filter(u8::is_ascii)
                }
                None => {
                    self.esc = 0;
                    self.mismatch(names);
                    return false;
                }
            },
        };
        match decoded {
            Some(d) => {
                self.mask = names.step(self.mask, self.pos, d);
                self.pos = self.pos.saturating_add(1);
            }
            None => self.mask = 0,
        }
        if self.mask == 0 {
            self.mismatch(names);
        }
        true
    }

    /// The string can equal no candidate: skip the rest of it.
    fn mismatch(&mut self, names: Names) {
        self.st = St::SkipStr(match names {
            Names::Keys(_) => After::Key,
            Names::Type => After::NotMessage,
            Names::ErrorType => After::OtherError,
        });
    }

    fn end_skipped(&mut self, after: After, out: &mut Findings) {
        self.st = match after {
            After::Key => St::Colon(Slot::None),
            After::Value => St::Next,
            After::NotMessage => {
                out.is_message = false;
                St::Next
            }
            After::OtherError => {
                out.error_type = Some(ErrorType::Other);
                St::Next
            }
            After::Skipped => St::Skip,
        };
    }
}

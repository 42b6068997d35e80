//! The counting paths: which keys of which objects the JSON scanner follows, and what the
//! value under each one is. Everything else in a body is skipped unread.
//!
//! A node is an object on a counting path. Nodes nest at most four deep (an SSE
//! `message_start`'s root, `message`, `usage`, `cache_creation`), which bounds the scanner's
//! stack; any deeper object is off every path and only has its brackets counted.

use super::counts::Field;
use super::outcome::ErrorType;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Node {
    /// A non-streaming body's root: `type`, `model`, `usage`.
    Body,
    /// `event: message_start`'s root: `message`.
    Start,
    /// `event: message_delta`'s root: `usage`.
    Delta,
    /// `event: error`'s root: `error`.
    ErrorRoot,
    /// The root of an event without an `event:` line: `message` and `usage`, as
    /// `message_start` and `message_delta` would have them (no other Anthropic event has
    /// either key at its root).
    Unnamed,
    /// `message_start.message`: `model`, `usage`.
    Message,
    Usage,
    CacheCreation,
    ServerToolUse,
    /// `error.error`: `type`.
    Error,
}

/// What the value after a key is to the scanner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Slot {
    /// Off every path: skipped.
    None,
    /// A usage count: committed when its number is complete.
    Field(Field),
    /// An object on a path; any other value there is skipped.
    Child(Node),
    /// The response's model.
    Model,
    /// A body root's `type` (usage counts only when it is "message").
    Type,
    /// An error event's `error.type`.
    ErrorType,
}

/// Deepest nesting of nodes.
pub(super) const MAX_DEPTH: usize = 4;

/// A node's keys and, in the same order, the slot each leads to.
struct Keys {
    names: &'static [&'static [u8]],
    slots: &'static [Slot],
}

const BODY: Keys = Keys {
    names: &[b"type", b"model", b"usage"],
    slots: &[Slot::Type, Slot::Model, Slot::Child(Node::Usage)],
};
const START: Keys = Keys {
    names: &[b"message"],
    slots: &[Slot::Child(Node::Message)],
};
const DELTA: Keys = Keys {
    names: &[b"usage"],
    slots: &[Slot::Child(Node::Usage)],
};
const ERROR_ROOT: Keys = Keys {
    names: &[b"error"],
    slots: &[Slot::Child(Node::Error)],
};
const UNNAMED: Keys = Keys {
    names: &[b"message", b"usage"],
    slots: &[Slot::Child(Node::Message), Slot::Child(Node::Usage)],
};
const MESSAGE: Keys = Keys {
    names: &[b"model", b"usage"],
    slots: &[Slot::Model, Slot::Child(Node::Usage)],
};
const USAGE: Keys = Keys {
    names: &[
        b"input_tokens",
        b"output_tokens",
        b"cache_creation_input_tokens",
        b"cache_read_input_tokens",
        b"cache_creation",
        b"server_tool_use",
    ],
    slots: &[
        Slot::Field(Field::Input),
        Slot::Field(Field::Output),
        Slot::Field(Field::CacheCreation),
        Slot::Field(Field::CacheRead),
        Slot::Child(Node::CacheCreation),
        Slot::Child(Node::ServerToolUse),
    ],
};
const CACHE_CREATION: Keys = Keys {
    names: &[b"ephemeral_5m_input_tokens", b"ephemeral_1h_input_tokens"],
    slots: &[
        Slot::Field(Field::CacheWrite5m),
        Slot::Field(Field::CacheWrite1h),
    ],
};
const SERVER_TOOL_USE: Keys = Keys {
    names: &[b"web_search_requests"],
    slots: &[Slot::Field(Field::WebSearch)],
};
const ERROR: Keys = Keys {
    names: &[b"type"],
    slots: &[Slot::ErrorType],
};

fn keys(n: Node) -> &'static Keys {
    match n {
        Node::Body => &BODY,
        Node::Start => &START,
        Node::Delta => &DELTA,
        Node::ErrorRoot => &ERROR_ROOT,
        Node::Unnamed => &UNNAMED,
        Node::Message => &MESSAGE,
        Node::Usage => &USAGE,
        Node::CacheCreation => &CACHE_CREATION,
        Node::ServerToolUse => &SERVER_TOOL_USE,
        Node::Error => &ERROR,
    }
}

/// The string values the scanner compares whole: a body's `type` and an error's type.
const TYPE_MESSAGE: &[&[u8]] = &[b"message"];
const ERROR_TYPES: [&[u8]; ErrorType::ALL.len() - 1] = {
    let empty: &[u8] = b"";
    let mut out = [empty; ErrorType::ALL.len() - 1];
    let mut i = 0;
    while i < out.len() {
        out[i] = ErrorType::ALL[i].label().as_bytes();
        i += 1;
    }
    out
};

/// A string matched against a fixed list of candidates, byte by byte as it arrives (it may
/// be split across buffers, or escaped): at most 16 candidates, one bit each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Names {
    Keys(Node),
    Type,
    ErrorType,
}

impl Names {
    #[inline]
    fn table(self) -> &'static [&'static [u8]] {
        match self {
            Names::Keys(n) => keys(n).names,
            Names::Type => TYPE_MESSAGE,
            Names::ErrorType => &ERROR_TYPES,
        }
    }

    /// All candidates still possible.
    pub(super) fn all(self) -> u16 {
        (1u32 << self.table().len()).wrapping_sub(1) as u16
    }

    /// Drops the candidates whose byte `pos` is not `c`.
    #[inline]
    pub(super) fn step(self, mut mask: u16, pos: u8, c: u8) -> u16 {
        let table = self.table();
        let mut bits = mask;
        while bits != 0 {
            let i = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            if table.get(i).and_then(|n| n.get(pos as usize)) != Some(&c) {
                mask &= !(1 << i);
            }
        }
        mask
    }

    /// The candidate that is exactly the `len` bytes matched so far.
    pub(super) fn winner(self, mask: u16, len: u8) -> Option<usize> {
        let table = self.table();
        let mut bits = mask;
        while bits != 0 {
            let i = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            if table.get(i).map(|n| n.len()) == Some(len as usize) {
                return Some(i);
            }
        }
        None
    }

    /// The whole string at once (it arrived in one buffer, unescaped).
    #[inline]
    pub(super) fn find(self, s: &[u8]) -> Option<usize> {
        // One call of `find_in` per table, each with its table a constant, so the compiler
        // unrolls the search into compares with the candidates' lengths and bytes (this runs
        // for every key of every node: a loop over a table picked at run time cost several
        // times as much).
        match self {
            Names::Keys(n) => match n {
                Node::Body => find_in(BODY.names, s),
                Node::Start => find_in(START.names, s),
                Node::Delta => find_in(DELTA.names, s),
                Node::ErrorRoot => find_in(ERROR_ROOT.names, s),
                Node::Unnamed => find_in(UNNAMED.names, s),
                Node::Message => find_in(MESSAGE.names, s),
                Node::Usage => find_in(USAGE.names, s),
                Node::CacheCreation => find_in(CACHE_CREATION.names, s),
                Node::ServerToolUse => find_in(SERVER_TOOL_USE.names, s),
                Node::Error => find_in(ERROR.names, s),
            },
            Names::Type => find_in(TYPE_MESSAGE, s),
            Names::ErrorType => find_in(&ERROR_TYPES, s),
        }
    }
}

/// The candidate of `table` equal to `s`.
#[inline(always)]
fn find_in(table: &[&[u8]], s: &[u8]) -> Option<usize> {
    // Length and first byte first: most keys differ there, and a short compare beats a
    // call to memcmp.
    let first = s.first()?;
    table
        .iter()
        .position(|n| n.len() == s.len() && n.first() == Some(first) && same(n, s))
}

/// `a == b` for two short strings of the same length, eight bytes per step (the first and
/// last words overlap) rather than a call to memcmp.
#[inline]
fn same(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if n < 8 {
        return a == b;
    }
    let w = |s: &[u8], at: usize| {
        s.get(at..at + 8)
            .map(|x| u64::from_le_bytes([x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7]]))
    };
    let mut at = 0;
    while at + 8 < n {
        if w(a, at) != w(b, at) {
            return false;
        }
        at += 8;
    }
    w(a, n - 8) == w(b, n - 8)
}

/// The slot the key `s` (whole, unescaped) of node `n` leads to: [`Names::find`] and
/// [`slot`] in one, each table a constant (see `find`).
#[inline]
pub(super) fn key_slot(n: Node, s: &[u8]) -> Slot {
    match n {
        Node::Body => slot_in(&BODY, s),
        Node::Start => slot_in(&START, s),
        Node::Delta => slot_in(&DELTA, s),
        Node::ErrorRoot => slot_in(&ERROR_ROOT, s),
        Node::Unnamed => slot_in(&UNNAMED, s),
        Node::Message => slot_in(&MESSAGE, s),
        Node::Usage => slot_in(&USAGE, s),
        Node::CacheCreation => slot_in(&CACHE_CREATION, s),
        Node::ServerToolUse => slot_in(&SERVER_TOOL_USE, s),
        Node::Error => slot_in(&ERROR, s),
    }
}

#[inline(always)]
fn slot_in(k: &Keys, s: &[u8]) -> Slot {
    find_in(k.names, s)
        .and_then(|i| k.slots.get(i))
        .copied()
        .unwrap_or(Slot::None)
}

/// The slot a key of node `n` leads to.
pub(super) fn slot(n: Node, key: Option<usize>) -> Slot {
    key.and_then(|i| keys(n).slots.get(i))
        .copied()
        .unwrap_or(Slot::None)
}

pub(super) fn error_type(i: Option<usize>) -> ErrorType {
    i.and_then(|i| ErrorType::ALL.get(i).copied())
        .unwrap_or(ErrorType::Other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_fit_their_masks_and_error_types_line_up() {
        for n in [
            Node::Body,
            Node::Start,
            Node::Delta,
            Node::ErrorRoot,
            Node::Unnamed,
            Node::Message,
            Node::Usage,
            Node::CacheCreation,
            Node::ServerToolUse,
            Node::Error,
        ] {
            let k = keys(n);
            assert!(k.names.len() <= 16);
            assert_eq!(k.names.len(), k.slots.len());
            for (i, name) in k.names.iter().enumerate() {
                assert_eq!(Names::Keys(n).find(name), Some(i));
            }
        }
        for t in ErrorType::ALL {
            let i = Names::ErrorType.find(t.label().as_bytes());
            assert_eq!(error_type(i), t);
        }
    }

    #[test]
    fn same_is_equality() {
        let a = b"cache_creation_input_tokens_and_more_bytes";
        for n in 0..a.len() {
            for m in 0..a.len() {
                assert_eq!(same(&a[..n], &a[..m]), n == m);
            }
            for flip in 0..n {
                let mut b = a[..n].to_vec();
                b[flip] ^= 1;
                assert!(!same(&a[..n], &b), "{n} {flip}");
            }
        }
    }

    #[test]
    fn stepwise_matching_agrees_with_whole_matching() {
        let names = Names::Keys(Node::Usage);
        for k in USAGE.names.iter().chain(&[&b""[..], b"cache", b"x"]) {
            for cut in 0..=k.len() {
                let s = &k[..cut];
                let mut mask = names.all();
                for (p, &c) in s.iter().enumerate() {
                    mask = names.step(mask, p as u8, c);
                }
                assert_eq!(names.winner(mask, s.len() as u8), names.find(s), "{s:?}");
            }
        }
    }
}

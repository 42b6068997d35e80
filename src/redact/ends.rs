//! What ends a secret that runs up to a delimiter (a bearer token, an argument's value, a
//! cookie's value), and where such a secret ends once another match has covered its delimiter.
//!
//! A mask ends nothing: masking replaces a covered delimiter with mask bytes, so the next
//! reading of the masked text would carry the secret on to the next delimiter and mask text the
//! first pass left readable. The first pass therefore reads on the same way (see
//! `Spans::normalize`), which is what keeps masking idempotent.

/// One hex digit of a `%hh` escape.
pub(crate) fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// How a delimited secret ends.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Stop {
    /// A bearer token in a header value or path: whitespace, a quote, `,` or `;`.
    Text,
    /// A bearer token in a query: also `&` and `#`.
    Query,
    /// [`Stop::Text`] for a token found in percent-decoded text: an escaped end byte (`%20`)
    /// ends it as well.
    TextDecoded,
    /// [`Stop::Query`] likewise.
    QueryDecoded,
    /// A query argument's value: `&` or `;`.
    Arg,
    /// A cookie's value: the `;` after it, blanks before that `;` left out.
    Cookie,
}

/// Bytes that end a bearer token, per context.
const fn token_end(query: bool) -> [bool; 256] {
    let mut t = [false; 256];
    let ends: &[u8] = b" \t\r\n\"',;";
    let mut i = 0;
    while i < ends.len() {
        t[ends[i] as usize] = true;
        i += 1;
    }
    if query {
        t[b'&' as usize] = true;
        t[b'#' as usize] = true;
    }
    t
}
pub(crate) static END_TEXT: [bool; 256] = token_end(false);
pub(crate) static END_QUERY: [bool; 256] = token_end(true);

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// The byte a `%XX` escape at `at` stands for.
fn escaped(text: &[u8], at: usize) -> Option<u8> {
    match text.get(at..at + 3)? {
        [b'%', h, l] => Some(hex_val(*h)? << 4 | hex_val(*l)?),
        _ => None,
    }
}

impl Stop {
    fn table(self) -> Option<&'static [bool; 256]> {
        match self {
            Stop::Text | Stop::TextDecoded => Some(&END_TEXT),
            Stop::Query | Stop::QueryDecoded => Some(&END_QUERY),
            Stop::Arg | Stop::Cookie => None,
        }
    }

    fn decoded(self) -> bool {
        matches!(self, Stop::TextDecoded | Stop::QueryDecoded)
    }

    /// The same stop for a match found in the percent-decoded copy of a text.
    pub(crate) fn in_decoded(self) -> Stop {
        match self {
            Stop::Text => Stop::TextDecoded,
            Stop::Query => Stop::QueryDecoded,
            other => other,
        }
    }

    /// True if a secret of this kind that reached `at` (below its limit) ends there.
    pub(crate) fn ends_at(self, text: &[u8], at: usize, limit: usize) -> bool {
        let Some(&b) = text.get(at).filter(|_| at < limit) else {
            return true;
        };
        match self {
            Stop::Arg => b == b'&' || b == b';',
            Stop::Cookie => {
                let blanks = text[at..limit].iter().take_while(|&&c| is_blank(c)).count();
                at + blanks == limit || text[at + blanks] == b';'
            }
            _ => {
                let table = self.table().unwrap_or(&END_TEXT);
                table[usize::from(b)]
                    || (self.decoded() && escaped(text, at).is_some_and(|c| table[usize::from(c)]))
            }
        }
    }

    /// The first position from `from` on (up to `limit`) where a secret of this kind that
    /// reached `from` ends.
    pub(crate) fn end_from(self, text: &[u8], from: usize, limit: usize) -> usize {
        let limit = limit.min(text.len());
        if from >= limit {
            return from;
        }
        match self {
            Stop::Arg => text[from..limit]
                .iter()
                .position(|&b| b == b'&' || b == b';')
                .map_or(limit, |p| from + p),
            Stop::Cookie => {
                let semi = text[from..limit]
                    .iter()
                    .position(|&b| b == b';')
                    .map_or(limit, |p| from + p);
                let blanks = text[from..semi]
                    .iter()
                    .rev()
                    .take_while(|&&c| is_blank(c))
                    .count();
                semi - blanks
            }
            _ => {
                let mut at = from;
                while at < limit && !self.ends_at(text, at, limit) {
                    // An escape is one byte of the decoded text: step over it whole, as the
                    // decoder does.
                    at += if self.decoded() && escaped(text, at).is_some() {
                        3
                    } else {
                        1
                    };
                }
                at.min(limit)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_of_each_kind() {
        let t = b"ab cd&e%20f;g";
        assert_eq!(Stop::Text.end_from(t, 0, t.len()), 2);
        assert_eq!(Stop::Text.end_from(t, 3, t.len()), 11);
        assert_eq!(Stop::Query.end_from(t, 3, t.len()), 5);
        assert_eq!(Stop::TextDecoded.end_from(t, 3, t.len()), 7);
        assert_eq!(Stop::QueryDecoded.end_from(t, 6, t.len()), 7);
        assert_eq!(Stop::Arg.end_from(t, 0, t.len()), 5);
        assert_eq!(Stop::Text.end_from(t, 3, 9), 9);
        let c = b"a=x y  ; b=1 ";
        assert_eq!(Stop::Cookie.end_from(c, 2, c.len()), 5);
        assert!(Stop::Cookie.ends_at(c, 5, c.len()));
        assert!(!Stop::Cookie.ends_at(c, 3, c.len()));
        assert_eq!(Stop::Cookie.end_from(c, 11, c.len()), 12);
        assert!(Stop::Cookie.ends_at(c, 12, c.len()));
    }

    #[test]
    fn a_decoded_stop_steps_over_escapes_whole() {
        // `%2%20`: the first `%` is literal, then an escaped space.
        let t = b"x%2%20y";
        assert_eq!(Stop::TextDecoded.end_from(t, 0, t.len()), 3);
        assert_eq!(Stop::Text.end_from(t, 0, t.len()), t.len());
        // An escape of an ordinary byte is skipped whole, so `%25` + `20` is no space.
        let t = b"a%2520b c";
        assert_eq!(Stop::TextDecoded.end_from(t, 0, t.len()), 7);
    }
}

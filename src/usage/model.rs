//! The model a response names, as the scanner keeps it: the bytes in a fixed buffer, so the
//! scanner stays free of the heap and the metrics can key a series by name.

/// Longest model name kept (today's longest Claude id is about 30 bytes).
pub const MODEL_MAX: usize = 64;

/// The response's `model`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Model<'a> {
    /// The response named no model.
    None,
    /// 1..=64 bytes of `[A-Za-z0-9._:@/+-]`: safe as a metrics label and a log field.
    Named(&'a [u8]),
    /// A model value that is not such a string (escapes, too long, other bytes, not a
    /// string): counted as `other`, so an upstream cannot invent label values.
    Invalid,
}

/// The bytes a model name may hold.
pub(super) const fn model_byte(c: u8) -> bool {
    matches!(c, b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b':' | b'@' | b'/' | b'+' | b'-')
}

/// [`model_byte`] for every byte value: one load per byte where a whole name is checked.
static MODEL_BYTES: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        t[c] = model_byte(c as u8);
        c += 1;
    }
    t
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    None,
    Named,
    Invalid,
}

/// One buffer: a model string being read overwrites the one before, so until its closing
/// quote the model reads as `Invalid` (only a hostile body names two models, and only a cut
/// one stops inside the second).
#[derive(Debug, Clone, Copy)]
pub(super) struct ModelSlot {
    buf: [u8; MODEL_MAX],
    len: u8,
    state: State,
}

impl ModelSlot {
    pub(super) const fn new() -> Self {
        ModelSlot {
            buf: [0; MODEL_MAX],
            len: 0,
            state: State::None,
        }
    }

    /// A model string starts: nothing valid until it ends.
    pub(super) fn start(&mut self) {
        self.len = 0;
        self.state = State::Invalid;
    }

    /// One byte of the string, raw; false once the name can no longer be valid (the caller
    /// then skips the rest of the string).
    pub(super) fn push(&mut self, c: u8) -> bool {
        let n = self.len as usize;
        if n < MODEL_MAX && model_byte(c) {
            self.buf[n] = c;
            self.len += 1;
            true
        } else {
            false
        }
    }

    /// The string ended with every byte pushed.
    pub(super) fn end(&mut self) {
        if self.len > 0 {
            self.state = State::Named;
        }
    }

    /// A whole unescaped string at once.
    pub(super) fn set(&mut self, s: &[u8]) {
        match self.buf.get_mut(..s.len()) {
            Some(buf) if !s.is_empty() && s.iter().all(|&c| MODEL_BYTES[usize::from(c)]) => {
                buf.copy_from_slice(s);
                self.len = s.len() as u8;
                self.state = State::Named;
            }
            _ => self.state = State::Invalid,
        }
    }

    pub(super) fn set_invalid(&mut self) {
        self.state = State::Invalid;
    }

    pub(super) fn get(&self) -> Model<'_> {
        match self.state {
            State::None => Model::None,
            State::Named => Model::Named(&self.buf[..self.len as usize]),
            State::Invalid => Model::Invalid,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_and_plain() {
        let mut m = ModelSlot::new();
        assert_eq!(m.get(), Model::None);
        m.start();
        assert!(b"claude-sonnet-4-5@20250929".iter().all(|&c| m.push(c)));
        assert_eq!(m.get(), Model::Invalid, "unfinished");
        m.end();
        assert_eq!(m.get(), Model::Named(b"claude-sonnet-4-5@20250929"));
        m.start();
        m.end();
        assert_eq!(m.get(), Model::Invalid, "empty");
        m.start();
        assert!((0..MODEL_MAX).all(|_| m.push(b'a')));
        assert!(!m.push(b'a'), "65 bytes");
        m.start();
        assert!(!m.push(b' '));
        assert!(!m.push(b'"'));
        assert!(!m.push(0xc3));
        // At once: the same rules.
        for (s, named) in [
            (&b"claude-x"[..], true),
            (b"", false),
            (&[b'a'; MODEL_MAX], true),
            (&[b'a'; MODEL_MAX + 1], false),
            (b"a b", false),
        ] {
            m.set(s);
            assert_eq!(m.get() == Model::Named(s), named, "{s:?}");
            assert_eq!(m.get() == Model::Invalid, !named, "{s:?}");
        }
    }
}

use crate::auth::upstream_key::{parse, ParseError};

/// Input: the upstream key file's bytes. Promises: the key is the first line without
/// surrounding whitespace, non-empty printable ASCII (it becomes a header value); an error
/// points at the first byte that is not, and the key is never altered or truncated silently.
pub fn check_upstream_key(data: &[u8]) {
    let line = data.split(|&c| c == b'\n').next().unwrap_or_default();
    match parse(data) {
        Ok(key) => {
            assert!(!key.is_empty() && key.iter().all(u8::is_ascii_graphic));
            assert_eq!(key, line.trim_ascii());
        }
        Err(ParseError::Empty) => assert!(line.trim_ascii().is_empty()),
        Err(ParseError::NotPrintable { column }) => {
            let bad = line[column - 1];
            assert!(!bad.is_ascii_graphic(), "column {column}");
            assert!(line[..column - 1]
                .trim_ascii()
                .iter()
                .all(u8::is_ascii_graphic));
        }
    }
}

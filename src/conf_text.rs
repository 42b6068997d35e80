//! How configuration values are shown in nginx's messages, and which file names are refused
//! before any file is opened (pure; no nginx).
//!
//! A value quoted in an `[emerg]` comes from nginx.conf and may hold anything: control bytes
//! (a terminal escape in the error log), bytes that are not UTF-8, or 4 KB of text that would
//! push the end of the message, the part that says what to write instead, past nginx's
//! 2 KB limit for a configuration error.

use std::fmt::Write;

/// Longest part of a value quoted; the rest is counted, not shown.
pub const MAX_SHOWN: usize = 64;

/// `value` for a message: printable ASCII as it is (`"` and `\` escaped), every other byte as
/// `\xNN`, at most [`MAX_SHOWN`] bytes of it, then how many bytes were left out.
pub fn show(value: &[u8]) -> String {
    let mut out = String::with_capacity(value.len().min(MAX_SHOWN) + 16);
    for &b in value.iter().take(MAX_SHOWN) {
        match b {
            b'"' | b'\\' => {
                out.push('\\');
                out.push(b as char);
            }
            0x20..=0x7e => out.push(b as char),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    if value.len() > MAX_SHOWN {
        let _ = write!(out, "...({} bytes)", value.len());
    }
    out
}

const NAME_MAX: usize = 255;

/// Why a file name given to a directive cannot be right, as the end of "invalid value "…" in
/// "…" directive, …": None when it may be opened.
pub fn path_problem(path: &[u8]) -> Option<&'static str> {
    if path.is_empty() {
        return Some("expected a file name");
    }
    if path.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return Some("expected a file name without control bytes");
    }
    if std::str::from_utf8(path).is_err() {
        return Some("expected a file name in UTF-8");
    }
    // Linux's NAME_MAX: the open would fail, and its message would quote the whole path.
    if path.split(|&b| b == b'/').any(|part| part.len() > NAME_MAX) {
        return Some("expected a file name whose every part between slashes is at most 255 bytes");
    }
    None
}

/// A name nginx.conf gives to something (a zone): printable ASCII without spaces, so that it
/// reads the same in every message and metric.
pub fn is_plain_name(name: &[u8]) -> bool {
    !name.is_empty() && name.iter().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names() {
        assert!(is_plain_name(b"relay_guard"));
        assert!(is_plain_name(b"rg-v2.1"));
        assert!(!is_plain_name(b""));
        assert!(!is_plain_name(b"r\x01g"));
        assert!(!is_plain_name(b"a b"));
        assert!(!is_plain_name(b"\xff"));
    }

    #[test]
    fn printable_ascii_is_kept_and_everything_else_escaped() {
        assert_eq!(show(b"token"), "token");
        assert_eq!(show(b""), "");
        assert_eq!(show(b"x\x01\x1b[31my"), "x\\x01\\x1b[31my");
        assert_eq!(show(b"tok\x00en\r\n\t"), "tok\\x00en\\x0d\\x0a\\x09");
        assert_eq!(show(b"\xff\xfe\x80"), "\\xff\\xfe\\x80");
        assert_eq!(show("é".as_bytes()), "\\xc3\\xa9");
        assert_eq!(show(b"a\"b\\c"), "a\\\"b\\\\c");
        assert!(!show(&(0u8..=255).collect::<Vec<_>>())
            .bytes()
            .any(|b| !(0x20..=0x7e).contains(&b)));
    }

    #[test]
    fn a_long_value_is_cut_and_its_length_given() {
        let v = vec![b'b'; 4000];
        let s = show(&v);
        assert_eq!(s, format!("{}...(4000 bytes)", "b".repeat(MAX_SHOWN)));
        assert_eq!(show(&v[..MAX_SHOWN]), "b".repeat(MAX_SHOWN));
    }

    #[test]
    fn file_names_refused_before_opening() {
        assert_eq!(path_problem(b""), Some("expected a file name"));
        assert!(path_problem(b"/tmp/k\x00ey")
            .unwrap()
            .contains("control bytes"));
        assert!(path_problem(b"/tmp/\x1b[31m")
            .unwrap()
            .contains("control bytes"));
        assert!(path_problem(b"keys.json\x7f")
            .unwrap()
            .contains("control bytes"));
        assert!(path_problem(b"/tmp/\xff\xfe").unwrap().contains("UTF-8"));
        assert_eq!(path_problem(b"/etc/nginx/keys.json"), None);
        assert_eq!(path_problem("/etc/nginx/clés.json".as_bytes()), None);
        assert_eq!(path_problem(b"with space.json"), None);
        let long = format!("/tmp/{}/k.json", "b".repeat(256));
        assert!(path_problem(long.as_bytes())
            .unwrap()
            .contains("at most 255 bytes"));
        let ok = format!("/tmp/{}/k.json", "b".repeat(255));
        assert_eq!(path_problem(ok.as_bytes()), None);
    }
}

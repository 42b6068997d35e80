//! A RESP reply reader for the few replies the fleet check expects, treating every byte from
//! Redis as hostile: bounded sizes, bounded nesting, no allocation proportional to a length
//! the server claims, and "not yet complete" told apart from "never valid".
//!
//! RESP2 (`+ - : $ *`) and the RESP3 types a server may send to a RESP2 client that is
//! configured oddly (`_` null, `#` boolean) are read; anything else is a protocol error.

use thiserror::Error;

/// Longest line (simple string, error, integer, length) accepted, CRLF excluded.
pub const MAX_LINE: usize = 512;
/// Largest bulk string accepted: the fleet's replies carry integers and short strings.
pub const MAX_BULK: usize = 4096;
/// Most elements in one array, and deepest nesting.
pub const MAX_ARRAY: usize = 16;
pub const MAX_DEPTH: usize = 4;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Simple(Vec<u8>),
    Error(Vec<u8>),
    Integer(i64),
    /// A bulk string; `None` is RESP2's null bulk (`$-1`).
    Bulk(Option<Vec<u8>>),
    /// An array; `None` is RESP2's null array (`*-1`).
    Array(Option<Vec<Reply>>),
    /// RESP3's `_`.
    Null,
    /// RESP3's `#t` / `#f`.
    Boolean(bool),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum RespError {
    #[error("unknown reply type byte {0:#04x}")]
    UnknownType(u8),
    #[error("a reply line longer than {MAX_LINE} bytes")]
    LineTooLong,
    #[error("a reply line not ended by CRLF")]
    BadLineEnd,
    #[error("a malformed integer or length")]
    BadNumber,
    #[error("a bulk string of {0} bytes (the most accepted is {MAX_BULK})")]
    BulkTooLarge(i64),
    #[error("an array of {0} elements (the most accepted is {MAX_ARRAY})")]
    ArrayTooLarge(i64),
    #[error("replies nested deeper than {MAX_DEPTH}")]
    TooDeep,
}

/// Reads one reply from the start of `buf`: `Ok(None)` when more bytes are needed, or the
/// reply and how many bytes it took.
pub fn parse(buf: &[u8]) -> Result<Option<(Reply, usize)>, RespError> {
    let mut pos = 0;
    match reply(buf, &mut pos, 0)? {
        Some(r) => Ok(Some((r, pos))),
        None => Ok(None),
    }
}

/// Reads `n` replies in a row (a pipeline's answers), all or none.
pub fn parse_n(buf: &[u8], n: usize) -> Result<Option<(Vec<Reply>, usize)>, RespError> {
    let mut pos = 0;
    let mut out = Vec::with_capacity(n.min(MAX_ARRAY));
    for _ in 0..n {
        match reply(buf, &mut pos, 0)? {
            Some(r) => out.push(r),
            None => return Ok(None),
        }
    }
    Ok(Some((out, pos)))
}

fn reply(buf: &[u8], pos: &mut usize, depth: usize) -> Result<Option<Reply>, RespError> {
    if depth > MAX_DEPTH {
        return Err(RespError::TooDeep);
    }
    let Some(&kind) = buf.get(*pos) else {
        return Ok(None);
    };
    if !matches!(kind, b'+' | b'-' | b':' | b'$' | b'*' | b'_' | b'#') {
        return Err(RespError::UnknownType(kind));
    }
    let mut at = *pos + 1;
    let Some(line) = line(buf, &mut at)? else {
        return Ok(None);
    };
    let r = match kind {
        b'+' => Reply::Simple(line.to_vec()),
        b'-' => Reply::Error(line.to_vec()),
        b':' => Reply::Integer(number(line)?),
        b'_' if line.is_empty() => Reply::Null,
        b'#' => match line {
            b"t" => Reply::Boolean(true),
            b"f" => Reply::Boolean(false),
            _ => return Err(RespError::BadNumber),
        },
        b'$' => {
            let n = number(line)?;
            if n == -1 {
                Reply::Bulk(None)
            } else if n < 0 || n as u64 > MAX_BULK as u64 {
                return Err(RespError::BulkTooLarge(n));
            } else {
                let n = n as usize;
                let Some(body) = buf.get(at..at + n + 2) else {
                    return Ok(None);
                };
                if &body[n..] != b"\r\n" {
                    return Err(RespError::BadLineEnd);
                }
                at += n + 2;
                Reply::Bulk(Some(body[..n].to_vec()))
            }
        }
        b'*' => {
            let n = number(line)?;
            if n == -1 {
                Reply::Array(None)
            } else if n < 0 || n as u64 > MAX_ARRAY as u64 {
                return Err(RespError::ArrayTooLarge(n));
            } else {
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    match reply(buf, &mut at, depth + 1)? {
                        Some(r) => items.push(r),
                        None => return Ok(None),
                    }
                }
                Reply::Array(Some(items))
            }
        }
        _ => return Err(RespError::UnknownType(kind)),
    };
    *pos = at;
    Ok(Some(r))
}

/// The line starting at `*at`, without its CRLF; moves `*at` past the CRLF.
fn line<'b>(buf: &'b [u8], at: &mut usize) -> Result<Option<&'b [u8]>, RespError> {
    let rest = &buf[*at..];
    let window = &rest[..rest.len().min(MAX_LINE + 2)];
    match window.iter().position(|&c| c == b'\r') {
        Some(i) => {
            match rest.get(i + 1) {
                None => return Ok(None),
                Some(b'\n') => {}
                Some(_) => return Err(RespError::BadLineEnd),
            }
            if rest[..i].contains(&b'\n') {
                return Err(RespError::BadLineEnd);
            }
            *at += i + 2;
            Ok(Some(&rest[..i]))
        }
        None if rest.len() > MAX_LINE + 1 => Err(RespError::LineTooLong),
        None if window.contains(&b'\n') => Err(RespError::BadLineEnd),
        None => Ok(None),
    }
}

fn number(line: &[u8]) -> Result<i64, RespError> {
    let (neg, digits) = match line.split_first() {
        Some((b'-', d)) => (true, d),
        _ => (false, line),
    };
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(RespError::BadNumber);
    }
    let mut v: i64 = 0;
    for &d in digits {
        v = v
            .checked_mul(10)
            .and_then(|v| v.checked_add(i64::from(d - b'0')))
            .ok_or(RespError::BadNumber)?;
    }
    Ok(if neg { -v } else { v })
}

/// Encodes a command as RESP: an array of bulk strings.
pub fn command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// The arguments of one command [`command`] wrote (tests read commands back with it: the
/// reply parser's bounds are for replies, and a script's arguments exceed them).
#[cfg(test)]
pub fn command_args(bytes: &[u8]) -> Vec<String> {
    fn line(b: &[u8]) -> (&[u8], &[u8]) {
        let end = b.windows(2).position(|w| w == b"\r\n").expect("a CRLF");
        (&b[..end], &b[end + 2..])
    }
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let (head, mut rest) = line(bytes);
    let n: usize = text(&head[1..]).parse().expect("an array length");
    assert_eq!(head[0], b'*');
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let (len, after) = line(rest);
        assert_eq!(len[0], b'$');
        let len: usize = text(&len[1..]).parse().expect("a bulk length");
        out.push(text(&after[..len]));
        assert_eq!(&after[len..len + 2], b"\r\n");
        rest = &after[len + 2..];
    }
    assert!(rest.is_empty(), "one command");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(b: &[u8]) -> Reply {
        let (r, n) = parse(b).expect("valid").expect("complete");
        assert_eq!(n, b.len());
        r
    }

    #[test]
    fn reads_each_type() {
        assert_eq!(one(b"+OK\r\n"), Reply::Simple(b"OK".to_vec()));
        assert_eq!(one(b"-ERR x\r\n"), Reply::Error(b"ERR x".to_vec()));
        assert_eq!(one(b":-42\r\n"), Reply::Integer(-42));
        assert_eq!(one(b"$-1\r\n"), Reply::Bulk(None));
        assert_eq!(
            one(b"$3\r\na\r\n\r\n"),
            Reply::Bulk(Some(b"a\r\n".to_vec()))
        );
        assert_eq!(one(b"*-1\r\n"), Reply::Array(None));
        assert_eq!(one(b"_\r\n"), Reply::Null);
        assert_eq!(one(b"#t\r\n"), Reply::Boolean(true));
        assert_eq!(
            one(b"*2\r\n:1\r\n:0\r\n"),
            Reply::Array(Some(vec![Reply::Integer(1), Reply::Integer(0)]))
        );
    }

    #[test]
    fn every_prefix_of_a_reply_is_incomplete() {
        let full = b"+OK\r\n*2\r\n:1\r\n$5\r\nhello\r\n";
        for cut in 0..full.len() {
            assert_eq!(parse_n(&full[..cut], 2), Ok(None), "cut at {cut}");
        }
        let (rs, n) = parse_n(full, 2).unwrap().unwrap();
        assert_eq!(n, full.len());
        assert_eq!(rs.len(), 2);
    }

    #[test]
    fn refuses_hostile_replies() {
        assert_eq!(parse(b"!3\r\n"), Err(RespError::UnknownType(b'!')));
        assert_eq!(
            parse(b"$99999999\r\n"),
            Err(RespError::BulkTooLarge(99_999_999))
        );
        assert_eq!(parse(b"$-2\r\n"), Err(RespError::BulkTooLarge(-2)));
        assert_eq!(parse(b"*100\r\n"), Err(RespError::ArrayTooLarge(100)));
        assert_eq!(parse(b":1x\r\n"), Err(RespError::BadNumber));
        assert_eq!(parse(b":\r\n"), Err(RespError::BadNumber));
        assert_eq!(
            parse(b":99999999999999999999\r\n"),
            Err(RespError::BadNumber)
        );
        assert_eq!(parse(b"+OK\rX"), Err(RespError::BadLineEnd));
        assert_eq!(parse(b"+O\nK\r\n"), Err(RespError::BadLineEnd));
        assert_eq!(parse(b"$2\r\nabcd\r\n"), Err(RespError::BadLineEnd));
        assert_eq!(parse(&[b'+'; 2000]), Err(RespError::LineTooLong));
        assert_eq!(
            parse(b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n"),
            Err(RespError::TooDeep)
        );
    }

    #[test]
    fn encodes_commands() {
        let mut out = Vec::new();
        command(&mut out, &[b"AUTH", b"p w"]);
        assert_eq!(out, b"*2\r\n$4\r\nAUTH\r\n$3\r\np w\r\n");
    }
}

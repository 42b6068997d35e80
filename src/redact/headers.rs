//! Headers whose whole value is secret by name, and how much of each may stay readable.

use super::ends::Stop;
use super::patterns::public_prefix_len;
use super::spans::Spans;

/// How a secret header's value is masked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `Authorization`, `Proxy-Authorization`: keep a known scheme word, mask the credentials.
    Auth,
    /// `Cookie`: keep cookie names (useful when debugging sessions), mask every value.
    Cookie,
    /// Anything else: mask the whole value.
    Whole,
}

/// Built-in secret headers (lowercase).
pub(crate) const DEFAULT_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "cookie",
    "x-signature",
];

pub(crate) fn kind_of(lower_name: &[u8]) -> Kind {
    match lower_name {
        b"authorization" | b"proxy-authorization" => Kind::Auth,
        b"cookie" => Kind::Cookie,
        _ => Kind::Whole,
    }
}

/// Only registered scheme words are kept: an unknown first word could itself be the secret
/// (`Authorization: s3cr3t extra`), so it is masked with the rest.
const SCHEMES: &[&[u8]] = &[
    b"bearer",
    b"basic",
    b"digest",
    b"negotiate",
    b"ntlm",
    b"hoba",
    b"mutual",
    b"vapid",
    b"scram-sha-1",
    b"scram-sha-256",
    b"aws4-hmac-sha256",
    b"token",
];

fn is_space(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Length of `<scheme> <spaces>` at the start of an Authorization value, 0 if not a known scheme.
fn scheme_len(v: &[u8]) -> usize {
    let word = v.iter().position(|&b| is_space(b)).unwrap_or(v.len());
    if !SCHEMES.iter().any(|s| s.eq_ignore_ascii_case(&v[..word])) {
        return 0;
    }
    word + v[word..].iter().take_while(|&&b| is_space(b)).count()
}

/// Pushes the secret part of a value that is secret by name.
pub(crate) fn scan(kind: Kind, v: &[u8], spans: &mut Spans) {
    match kind {
        Kind::Auth => {
            let scheme = scheme_len(v);
            let from = if scheme == 0 {
                0
            } else {
                scheme + public_prefix_len(&v[scheme..])
            };
            spans.keep(0, from);
            spans.push(from, v.len());
        }
        Kind::Whole => {
            let from = public_prefix_len(v);
            spans.keep(0, from);
            spans.push(from, v.len());
        }
        Kind::Cookie => cookies(v, spans),
    }
}

/// `a=1; b=2`: mask each value, keep names. A part without `=` is masked whole, since a bare
/// value is as likely to be a secret as any.
fn cookies(v: &[u8], spans: &mut Spans) {
    let mut start = 0usize;
    for part in v.split(|&b| b == b';') {
        let lead = part.iter().take_while(|&&b| is_space(b)).count();
        let trail = part[lead..]
            .iter()
            .rev()
            .take_while(|&&b| is_space(b))
            .count();
        let body = &part[lead..part.len() - trail];
        let from = match body.iter().position(|&b| b == b'=') {
            Some(eq) => eq + 1,
            None => 0,
        };
        // A match that starts in the name and runs past `=` takes the name with it: left
        // behind, the name would read as a bare value the next time.
        spans.keep(start + lead, start + lead + from);
        spans.push_until(
            start + lead + from,
            start + lead + body.len(),
            Stop::Cookie,
            v.len(),
        );
        start += part.len() + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redact::spans::Span;

    fn kept_and_masked(kind: Kind, v: &str) -> Vec<(String, String)> {
        let mut s = Spans::new();
        scan(kind, v.as_bytes(), &mut s);
        let mut at = 0;
        s.normalized(v.as_bytes())
            .into_iter()
            .map(|Span { start, end }| {
                let r = (v[at..start].to_string(), v[start..end].to_string());
                at = end;
                r
            })
            .collect()
    }

    #[test]
    fn auth_keeps_known_scheme_word() {
        assert_eq!(
            kept_and_masked(Kind::Auth, "Bearer abc"),
            [("Bearer ".into(), "abc".into())]
        );
        assert_eq!(
            kept_and_masked(Kind::Auth, "basic  dXNlcjpwdw=="),
            [("basic  ".into(), "dXNlcjpwdw==".into())]
        );
        assert_eq!(
            kept_and_masked(Kind::Auth, "Bearer sk-ant-oat01-SECRET"),
            [("Bearer sk-ant-oat01-".into(), "SECRET".into())]
        );
        assert_eq!(
            kept_and_masked(Kind::Auth, "Digest username=\"u\", response=\"r\""),
            [("Digest ".into(), "username=\"u\", response=\"r\"".into())]
        );
    }

    #[test]
    fn auth_unknown_scheme_or_bare_value_masked_whole() {
        assert_eq!(
            kept_and_masked(Kind::Auth, "s3cr3t more"),
            [("".into(), "s3cr3t more".into())]
        );
        assert_eq!(
            kept_and_masked(Kind::Auth, "s3cr3t"),
            [("".into(), "s3cr3t".into())]
        );
        assert!(kept_and_masked(Kind::Auth, "Bearer ").is_empty());
        assert!(kept_and_masked(Kind::Auth, "").is_empty());
    }

    #[test]
    fn whole_keeps_only_public_key_prefix() {
        assert_eq!(
            kept_and_masked(Kind::Whole, "sk-ant-api03-BODY"),
            [("sk-ant-api03-".into(), "BODY".into())]
        );
        assert_eq!(
            kept_and_masked(Kind::Whole, "t=1,v1=ab"),
            [("".into(), "t=1,v1=ab".into())]
        );
    }

    #[test]
    fn cookie_values_masked_names_kept() {
        assert_eq!(
            kept_and_masked(Kind::Cookie, "a=1; sess=xyz;  bare ;e=; q=\"v\""),
            [
                ("a=".into(), "1".into()),
                ("; sess=".into(), "xyz".into()),
                (";  ".into(), "bare".into()),
                (" ;e=; q=".into(), "\"v\"".into()),
            ]
        );
        assert!(kept_and_masked(Kind::Cookie, ";;  ; a=").is_empty());
    }

    #[test]
    fn kinds() {
        assert_eq!(kind_of(b"authorization"), Kind::Auth);
        assert_eq!(kind_of(b"proxy-authorization"), Kind::Auth);
        assert_eq!(kind_of(b"cookie"), Kind::Cookie);
        assert_eq!(kind_of(b"x-api-key"), Kind::Whole);
    }
}

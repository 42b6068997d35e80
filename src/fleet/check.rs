//! The one Redis round trip a request makes in a fleet: the nonce's `SET NX` and the key's
//! fleet-wide rate (GCRA on Redis's clock), as one script so both are atomic together and
//! cost one round trip; and how its replies are read. A nonce alone (a key without a rate, the
//! common case) is a plain `SET NX`: a script costs Redis several times its CPU.

use sha2::{Digest, Sha256};
use thiserror::Error;

use super::resp::{self, Reply, RespError};
use crate::limits::Rate;

/// KEYS[1]: the nonce's key or ""; KEYS[2]: the key's rate key or "".
/// ARGV[1]: the nonce's lifetime (ms); ARGV[2]: the rate's interval and ARGV[3] its burst
/// tolerance (µs). Returns {1, 0} admitted, {0, 0} a replay, {1, wait_µs} over the rate.
/// Times are Redis's (`TIME`), so the hosts' clocks need not agree. Lua numbers are doubles:
/// µs since the epoch stay exact (below 2^53); `%d` keeps them from becoming `1.7e+15`.
pub const SCRIPT: &str = "\
if KEYS[1] ~= '' and not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return {0, 0} end
if KEYS[2] == '' then return {1, 0} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[2])) or 0
local nxt = math.max(tat, now) + tonumber(ARGV[2])
local ahead = nxt - now
if ahead > tonumber(ARGV[3]) then return {1, ahead - tonumber(ARGV[3])} end
redis.call('SET', KEYS[2], string.format('%d', nxt), 'PX', math.ceil(ahead / 1000) + 1000)
return {1, 0}";

/// What one request asks of Redis.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetCheck {
    /// The nonce's Redis key and its lifetime, for a signed request.
    pub nonce: Option<(String, u64)>,
    /// The key's rate key and its rate, when the key has a rate limit.
    pub rate: Option<(String, Rate)>,
}

/// Which command a [`FleetCheck`] sent, and so which reply it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    /// `SET key 1 NX PX ttl`: `+OK` or a nil.
    SetNx,
    /// `EVAL` of [`SCRIPT`]: `{0|1, wait}`.
    Script,
}

/// Redis's answer to a [`FleetCheck`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FleetVerdict {
    Admit,
    /// Some host already stored this nonce.
    Replay,
    /// The fleet's rate for the key is spent: this long until it admits again.
    OverRate {
        wait_us: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FleetReplyError {
    #[error("not a RESP reply: {0}")]
    Resp(#[from] RespError),
    /// Redis answered with an error (wrong password, a read-only replica, out of memory, …).
    /// Its text is Redis's own, with no secret of ours in it, and is cut to a log line.
    #[error("Redis answered \"{0}\"")]
    ErrorReply(String),
    #[error("an unexpected reply: {0}")]
    Unexpected(&'static str),
    #[error("bytes after the reply")]
    Trailing,
}

/// Why Redis gave no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FleetFailure {
    /// No connection (refused, unreachable, every server down).
    Connect,
    /// No full answer within `timeout=`.
    Timeout,
    /// Bytes that are not the replies asked for (truncated, wrong type, too large).
    Protocol,
    /// Redis answered with an error (`-WRONGPASS`, `-OOM`, `-READONLY`, …).
    ErrorReply,
}

impl FleetFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            FleetFailure::Connect => "connect",
            FleetFailure::Timeout => "timeout",
            FleetFailure::Protocol => "protocol",
            FleetFailure::ErrorReply => "error_reply",
        }
    }
}

/// The nonce's Redis key: hashed, so Redis holds no nonce in the clear, and bound to the key
/// id. (Not keyed with the key's secret: during a rotation the hosts may list a key's secrets
/// in different orders, and every host must derive the same name.)
pub fn nonce_key(prefix: &str, key_id: &str, nonce: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(b"relay-guard nonce\0");
    h.update(key_id.as_bytes());
    h.update(b"\0");
    h.update(nonce);
    let d = h.finalize();
    format!("{prefix}n:{}", hex::encode(&d[..16]))
}

/// The key's fleet-wide rate state.
pub fn rate_key(prefix: &str, key_id: &str) -> String {
    format!("{prefix}r:{key_id}")
}

impl FleetCheck {
    /// Nothing to ask: the request needs no round trip.
    pub fn is_empty(&self) -> bool {
        self.nonce.is_none() && self.rate.is_none()
    }

    /// The command this check sends.
    pub fn asked(&self) -> Asked {
        match (&self.nonce, &self.rate) {
            (Some(_), None) => Asked::SetNx,
            _ => Asked::Script,
        }
    }

    /// The bytes to send: `AUTH` first when a password is set (every time: nginx's
    /// keepalive pool does not say whether a connection is new), then the command.
    pub fn encode(&self, password: Option<&[u8]>) -> Vec<u8> {
        let mut out = Vec::with_capacity(SCRIPT.len() + 256);
        if let Some(p) = password {
            resp::command(&mut out, &[b"AUTH", p]);
        }
        if let (Asked::SetNx, Some((k, ms))) = (self.asked(), &self.nonce) {
            let ms = ms.to_string();
            resp::command(
                &mut out,
                &[b"SET", k.as_bytes(), b"1", b"NX", b"PX", ms.as_bytes()],
            );
            return out;
        }
        let (nk, ttl) = match &self.nonce {
            Some((k, ms)) => (k.as_str(), *ms),
            None => ("", 0),
        };
        let (rk, interval, tolerance) = match &self.rate {
            Some((k, r)) => {
                let t = r.interval_ns() / 1000;
                (k.as_str(), t, t.saturating_mul(u64::from(r.burst)))
            }
            None => ("", 0, 0),
        };
        let (ttl, interval, tolerance) =
            (ttl.to_string(), interval.to_string(), tolerance.to_string());
        resp::command(
            &mut out,
            &[
                b"EVAL",
                SCRIPT.as_bytes(),
                b"2",
                nk.as_bytes(),
                rk.as_bytes(),
                ttl.as_bytes(),
                interval.as_bytes(),
                tolerance.as_bytes(),
            ],
        );
        out
    }

    /// How many replies [`encode`](Self::encode)'s bytes draw.
    pub fn replies(password: bool) -> usize {
        1 + usize::from(password)
    }
}

/// Reads the answers to [`FleetCheck::encode`] from everything received so far: `Ok(None)`
/// while incomplete. Any bytes beyond the replies are an error (nothing else was asked).
pub fn read_verdict(
    buf: &[u8],
    password: bool,
    asked: Asked,
) -> Result<Option<FleetVerdict>, FleetReplyError> {
    let Some((replies, used)) = resp::parse_n(buf, FleetCheck::replies(password))? else {
        return Ok(None);
    };
    if used != buf.len() {
        return Err(FleetReplyError::Trailing);
    }
    let mut it = replies.into_iter();
    if password {
        match it.next() {
            Some(Reply::Simple(s)) if s == b"OK" => {}
            Some(Reply::Error(e)) => return Err(error_reply(&e)),
            _ => return Err(FleetReplyError::Unexpected("AUTH did not answer OK")),
        }
    }
    let reply = it.next();
    if asked == Asked::SetNx {
        return match reply {
            Some(Reply::Simple(s)) if s == b"OK" => Ok(Some(FleetVerdict::Admit)),
            Some(Reply::Bulk(None) | Reply::Null) => Ok(Some(FleetVerdict::Replay)),
            Some(Reply::Error(e)) => Err(error_reply(&e)),
            _ => Err(FleetReplyError::Unexpected(
                "SET NX answered neither OK nor nil",
            )),
        };
    }
    match reply {
        Some(Reply::Array(Some(a))) => match a.as_slice() {
            [Reply::Integer(0), Reply::Integer(_)] => Ok(Some(FleetVerdict::Replay)),
            [Reply::Integer(1), Reply::Integer(0)] => Ok(Some(FleetVerdict::Admit)),
            [Reply::Integer(1), Reply::Integer(w)] if *w > 0 => {
                Ok(Some(FleetVerdict::OverRate { wait_us: *w as u64 }))
            }
            _ => Err(FleetReplyError::Unexpected(
                "the script's array is not {0|1, wait}",
            )),
        },
        Some(Reply::Error(e)) => Err(error_reply(&e)),
        _ => Err(FleetReplyError::Unexpected(
            "the script did not answer an array",
        )),
    }
}

fn error_reply(e: &[u8]) -> FleetReplyError {
    let text: String = String::from_utf8_lossy(&e[..e.len().min(120)])
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    FleetReplyError::ErrorReply(text)
}

/// The fuzz target's promise: any bytes give a verdict, "incomplete" or an error — and a
/// verdict only for exactly the replies a script can send.
pub fn check_fleet_reply(data: &[u8]) {
    for (password, asked) in [
        (false, Asked::Script),
        (true, Asked::Script),
        (false, Asked::SetNx),
        (true, Asked::SetNx),
    ] {
        if let Ok(Some(v)) = read_verdict(data, password, asked) {
            let (_, used) = resp::parse_n(data, FleetCheck::replies(password))
                .expect("a verdict came from valid RESP")
                .expect("and complete");
            assert_eq!(used, data.len(), "{v:?} from trailing bytes");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonce_keys_hide_the_nonce_and_bind_the_key() {
        let a = nonce_key("relay-guard:", "alice", b"n0nce-0123456789");
        assert!(a.starts_with("relay-guard:n:"));
        assert_eq!(a.len(), "relay-guard:n:".len() + 32);
        assert!(!a.contains("n0nce"));
        assert_ne!(a, nonce_key("relay-guard:", "bob", b"n0nce-0123456789"));
        assert_eq!(a, nonce_key("relay-guard:", "alice", b"n0nce-0123456789"));
    }

    #[test]
    fn encodes_auth_then_the_script() {
        let c = FleetCheck {
            nonce: Some(("p:n:ab".into(), 65_000)),
            rate: Some((
                "p:r:alice".into(),
                Rate {
                    per_minute: 60,
                    burst: 5,
                },
            )),
        };
        let b = c.encode(Some(b"secret"));
        let text = String::from_utf8_lossy(&b);
        assert!(text.starts_with("*2\r\n$4\r\nAUTH\r\n$6\r\nsecret\r\n*8\r\n$4\r\nEVAL\r\n"));
        assert!(text.ends_with(
            "$6\r\np:n:ab\r\n$9\r\np:r:alice\r\n$5\r\n65000\r\n$7\r\n1000000\r\n$7\r\n5000000\r\n"
        ));
        let plain = String::from_utf8_lossy(&FleetCheck::default().encode(None)).into_owned();
        assert!(plain.starts_with("*8\r\n$4\r\nEVAL\r\n"));
        assert!(plain.ends_with("$0\r\n\r\n$0\r\n\r\n$1\r\n0\r\n$1\r\n0\r\n$1\r\n0\r\n"));
    }

    #[test]
    fn reads_each_verdict() {
        assert_eq!(
            read_verdict(b"*2\r\n:1\r\n:0\r\n", false, Asked::Script),
            Ok(Some(FleetVerdict::Admit))
        );
        assert_eq!(
            read_verdict(b"*2\r\n:0\r\n:0\r\n", false, Asked::Script),
            Ok(Some(FleetVerdict::Replay))
        );
        assert_eq!(
            read_verdict(b"+OK\r\n*2\r\n:1\r\n:2500\r\n", true, Asked::Script),
            Ok(Some(FleetVerdict::OverRate { wait_us: 2500 }))
        );
        assert_eq!(
            read_verdict(b"+OK\r\n*2\r\n:1", true, Asked::Script),
            Ok(None)
        );
        assert_eq!(read_verdict(b"", false, Asked::Script), Ok(None));
    }

    #[test]
    fn a_nonce_alone_is_a_plain_set_nx() {
        let c = FleetCheck {
            nonce: Some(("p:n:ab".into(), 65_000)),
            rate: None,
        };
        assert_eq!(c.asked(), Asked::SetNx);
        assert_eq!(
            c.encode(None),
            b"*6\r\n$3\r\nSET\r\n$6\r\np:n:ab\r\n$1\r\n1\r\n$2\r\nNX\r\n$2\r\nPX\r\n$5\r\n65000\r\n"
        );
        let v = |b: &[u8]| read_verdict(b, false, Asked::SetNx);
        assert_eq!(v(b"+OK\r\n"), Ok(Some(FleetVerdict::Admit)));
        assert_eq!(v(b"$-1\r\n"), Ok(Some(FleetVerdict::Replay)));
        assert_eq!(v(b"_\r\n"), Ok(Some(FleetVerdict::Replay)));
        assert_eq!(v(b"+OK"), Ok(None));
        assert!(v(b"*2\r\n:1\r\n:0\r\n").is_err());
        assert!(v(b"$2\r\nOK\r\n").is_err());
        assert!(v(b"+OK\r\n+OK\r\n").is_err());
        assert!(matches!(
            v(b"-OOM no\r\n"),
            Err(FleetReplyError::ErrorReply(_))
        ));
        assert_eq!(
            read_verdict(b"+OK\r\n$-1\r\n", true, Asked::SetNx),
            Ok(Some(FleetVerdict::Replay))
        );
    }

    #[test]
    fn refuses_what_a_script_never_sends() {
        let bad: [&[u8]; 8] = [
            b"*2\r\n:1\r\n:-5\r\n",
            b"*2\r\n:2\r\n:0\r\n",
            b"*1\r\n:1\r\n",
            b"$-1\r\n",
            b"+OK\r\n",
            b"*2\r\n:1\r\n:0\r\n+extra\r\n",
            b"*2\r\n$1\r\n1\r\n:0\r\n",
            b"*-1\r\n",
        ];
        for b in bad {
            assert!(
                read_verdict(b, false, Asked::Script).is_err(),
                "{:?}",
                String::from_utf8_lossy(b)
            );
        }
        assert_eq!(
            read_verdict(
                b"-WRONGPASS invalid\r\n*2\r\n:1\r\n:0\r\n",
                true,
                Asked::Script
            ),
            Err(FleetReplyError::ErrorReply("WRONGPASS invalid".into()))
        );
        assert!(matches!(
            read_verdict(b"-NOSCRIPT\x07\r\n", false, Asked::Script),
            Err(FleetReplyError::ErrorReply(s)) if s == "NOSCRIPT?"
        ));
    }
}

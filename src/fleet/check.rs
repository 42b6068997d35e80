//! The one Redis round trip a request makes in a fleet: the nonce's `SET NX`, and the key's
//! fleet-wide limits (its rate as GCRA, its token budgets, its concurrency slots), as one
//! script so all are atomic together and cost one round trip; and how its replies are read.
//! A nonce alone (a key without limits, the common case) is a plain `SET NX`: a script costs
//! Redis several times its CPU.

use sha2::{Digest, Sha256};
use thiserror::Error;

use super::resp::{self, Reply, RespError};
use crate::limits::Rate;

/// KEYS[1]: the nonce's key or ""; KEYS[2]: the rate key or ""; KEYS[3]: the concurrency set
/// or ""; KEYS[4..]: the token budgets' key stems (the window's number is appended here, on
/// Redis's clock).
/// ARGV[1]: the nonce's lifetime (ms); ARGV[2]/ARGV[3]: the rate's interval and burst
/// tolerance (µs); ARGV[4]/ARGV[5]/ARGV[6]: the concurrency limit, this request's member and
/// its lease (ms); then a window (s) and a budget for each stem.
/// Returns {0,0,0} a replay, {1,0,0} admitted, {2,wait_µs,0} over the rate, {3,1 s,0} at
/// the concurrency limit, {4,wait_µs,i} budget i (from 0) spent. Every check is made before
/// anything but the nonce is written, so a refused request takes no slot and no rate.
/// Times are Redis's (`TIME`), so the hosts' clocks need not agree. Lua numbers are doubles:
/// µs since the epoch stay exact (below 2^53); `%d` keeps them from becoming `1.7e+15`.
pub const SCRIPT: &str = "\
if KEYS[1] ~= '' and not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return {0, 0, 0} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local secs = tonumber(t[1])
for i = 4, #KEYS do
  local w = tonumber(ARGV[2 * i - 1])
  local used = tonumber(redis.call('GET', KEYS[i] .. ':' .. math.floor(secs / w))) or 0
  if used >= tonumber(ARGV[2 * i]) then return {4, (w - secs % w) * 1000000, i - 4} end
end
local now_ms = math.floor(now / 1000)
if KEYS[3] ~= '' then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now_ms)
  if redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[4]) then return {3, 1000000, 0} end
end
if KEYS[2] ~= '' then
  local tat = tonumber(redis.call('GET', KEYS[2])) or 0
  local nxt = math.max(tat, now) + tonumber(ARGV[2])
  local ahead = nxt - now
  if ahead > tonumber(ARGV[3]) then return {2, ahead - tonumber(ARGV[3]), 0} end
  redis.call('SET', KEYS[2], string.format('%d', nxt), 'PX', math.ceil(ahead / 1000) + 1000)
end
if KEYS[3] ~= '' then
  local lease = tonumber(ARGV[6])
  redis.call('ZADD', KEYS[3], string.format('%d', now_ms + lease), ARGV[5])
  redis.call('PEXPIRE', KEYS[3], 2 * lease)
end
return {1, 0, 0}";

/// A concurrency slot asked of the fleet: the key's set of in-flight requests, its limit, this
/// request's member and how long the slot lives unless renewed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotAsk {
    pub set: String,
    pub limit: u32,
    pub member: String,
    pub lease_ms: u64,
}

/// A token budget checked fleet-wide: the stem of its window keys, the window and the budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetAsk {
    pub stem: String,
    pub window_s: u64,
    pub budget: u64,
}

/// What one request asks of Redis.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetCheck {
    /// The nonce's Redis key and its lifetime, for a signed request.
    pub nonce: Option<(String, u64)>,
    /// The key's rate key and its rate, when the key has a rate limit.
    pub rate: Option<(String, Rate)>,
    /// The key's concurrency limit, when it has one.
    pub slot: Option<SlotAsk>,
    /// The key's token budgets (at most `limits::MAX_BUDGETS`).
    pub budgets: Vec<BudgetAsk>,
}

/// Which command a [`FleetCheck`] sent, and so which reply it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    /// `SET key 1 NX PX ttl`: `+OK` or a nil.
    SetNx,
    /// `EVAL` of [`SCRIPT`] with this many budgets: `{verdict, wait, budget}`.
    Script { budgets: u8 },
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
    /// The key's slots are all taken fleet-wide.
    AtConcurrency,
    /// Budget `index` (in the order asked) is spent until its window ends.
    OverBudget {
        index: u8,
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

/// The stem of a key's token-budget window keys; the script appends `:<window number>`.
pub fn budget_stem(prefix: &str, key_id: &str, window_s: u64) -> String {
    format!("{prefix}t:{key_id}:{window_s}")
}

/// The key's set of in-flight requests (members are leases scored by their expiry, in ms).
pub fn slot_set(prefix: &str, key_id: &str) -> String {
    format!("{prefix}c:{key_id}")
}

impl FleetCheck {
    /// Nothing to ask: the request needs no round trip.
    pub fn is_empty(&self) -> bool {
        self.nonce.is_none() && !self.has_limits()
    }

    fn has_limits(&self) -> bool {
        self.rate.is_some() || self.slot.is_some() || !self.budgets.is_empty()
    }

    /// The command this check sends.
    pub fn asked(&self) -> Asked {
        if self.nonce.is_some() && !self.has_limits() {
            return Asked::SetNx;
        }
        Asked::Script {
            budgets: self.budgets.len().min(u8::MAX as usize) as u8,
        }
    }

    /// The command's bytes (the worker's link sends `AUTH` once, when it connects).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(SCRIPT.len() + 256);
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
        let (set, limit, member, lease) = match &self.slot {
            Some(s) => (s.set.as_str(), s.limit, s.member.as_str(), s.lease_ms),
            None => ("", 0, "", 0),
        };
        let nkeys = (3 + self.budgets.len()).to_string();
        let numbers = [
            ttl.to_string(),
            interval.to_string(),
            tolerance.to_string(),
            limit.to_string(),
        ];
        let lease = lease.to_string();
        let budget_args: Vec<[String; 2]> = self
            .budgets
            .iter()
            .map(|b| [b.window_s.to_string(), b.budget.to_string()])
            .collect();
        let mut args: Vec<&[u8]> = vec![
            b"EVAL",
            SCRIPT.as_bytes(),
            nkeys.as_bytes(),
            nk.as_bytes(),
            rk.as_bytes(),
            set.as_bytes(),
        ];
        args.extend(self.budgets.iter().map(|b| b.stem.as_bytes()));
        args.extend(numbers.iter().map(|n| n.as_bytes()));
        args.push(member.as_bytes());
        args.push(lease.as_bytes());
        args.extend(budget_args.iter().flatten().map(|n| n.as_bytes()));
        resp::command(&mut out, &args);
        out
    }
}

/// Reads the one reply to [`FleetCheck::encode`] from `buf`: `Ok(None)` while incomplete.
/// Any bytes beyond it are an error (nothing else was asked).
pub fn read_verdict(buf: &[u8], asked: Asked) -> Result<Option<FleetVerdict>, FleetReplyError> {
    let Some((reply, used)) = resp::parse(buf)? else {
        return Ok(None);
    };
    if used != buf.len() {
        return Err(FleetReplyError::Trailing);
    }
    verdict_of(reply, asked).map(Some)
}

/// What one complete reply to the command `asked` says.
pub fn verdict_of(reply: Reply, asked: Asked) -> Result<FleetVerdict, FleetReplyError> {
    let budgets = match asked {
        Asked::SetNx => {
            return match reply {
                Reply::Simple(s) if s == b"OK" => Ok(FleetVerdict::Admit),
                Reply::Bulk(None) | Reply::Null => Ok(FleetVerdict::Replay),
                Reply::Error(e) => Err(error_reply(&e)),
                _ => Err(FleetReplyError::Unexpected(
                    "SET NX answered neither OK nor nil",
                )),
            };
        }
        Asked::Script { budgets } => i64::from(budgets),
    };
    let wait = |w: i64| (w > 0).then_some(w as u64);
    let verdict = match reply {
        Reply::Array(Some(a)) => match a.as_slice() {
            [Reply::Integer(0), Reply::Integer(0), Reply::Integer(0)] => Some(FleetVerdict::Replay),
            [Reply::Integer(1), Reply::Integer(0), Reply::Integer(0)] => Some(FleetVerdict::Admit),
            [Reply::Integer(2), Reply::Integer(w), Reply::Integer(0)] => {
                wait(*w).map(|wait_us| FleetVerdict::OverRate { wait_us })
            }
            [Reply::Integer(3), Reply::Integer(w), Reply::Integer(0)] => {
                wait(*w).map(|_| FleetVerdict::AtConcurrency)
            }
            [Reply::Integer(4), Reply::Integer(w), Reply::Integer(i)]
                if (0..budgets).contains(i) =>
            {
                wait(*w).map(|wait_us| FleetVerdict::OverBudget {
                    index: *i as u8,
                    wait_us,
                })
            }
            _ => None,
        },
        Reply::Error(e) => return Err(error_reply(&e)),
        _ => {
            return Err(FleetReplyError::Unexpected(
                "the script did not answer an array",
            ))
        }
    };
    verdict.ok_or(FleetReplyError::Unexpected(
        "the script's array is not {verdict, wait, budget}",
    ))
}

pub(super) fn error_reply(e: &[u8]) -> FleetReplyError {
    let text: String = String::from_utf8_lossy(&e[..e.len().min(120)])
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    FleetReplyError::ErrorReply(text)
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

    const S0: Asked = Asked::Script { budgets: 0 };

    #[test]
    fn encodes_the_script() {
        let c = FleetCheck {
            nonce: Some(("p:n:ab".into(), 65_000)),
            rate: Some((
                "p:r:alice".into(),
                Rate {
                    per_minute: 60,
                    burst: 5,
                },
            )),
            ..FleetCheck::default()
        };
        let b = c.encode();
        let text = String::from_utf8_lossy(&b);
        assert!(text.starts_with("*12\r\n$4\r\nEVAL\r\n"));
        assert!(text.ends_with(
            "$1\r\n3\r\n$6\r\np:n:ab\r\n$9\r\np:r:alice\r\n$0\r\n\r\n\
             $5\r\n65000\r\n$7\r\n1000000\r\n$7\r\n5000000\r\n$1\r\n0\r\n$0\r\n\r\n$1\r\n0\r\n"
        ));
        assert_eq!(c.asked(), S0);
    }

    #[test]
    fn encodes_slots_and_budgets_in_the_scripts_order() {
        let c = FleetCheck {
            slot: Some(SlotAsk {
                set: slot_set("p:", "bob"),
                limit: 2,
                member: "00ff".into(),
                lease_ms: 30_000,
            }),
            budgets: vec![
                BudgetAsk {
                    stem: budget_stem("p:", "bob", 3600),
                    window_s: 3600,
                    budget: 100,
                },
                BudgetAsk {
                    stem: budget_stem("p:", "bob", 86_400),
                    window_s: 86_400,
                    budget: 5000,
                },
            ],
            ..FleetCheck::default()
        };
        assert_eq!(c.asked(), Asked::Script { budgets: 2 });
        let args = resp::command_args(&c.encode());
        assert_eq!(args[0], "EVAL");
        assert_eq!(
            args[2..].to_vec(),
            [
                "5",
                "",
                "",
                "p:c:bob",
                "p:t:bob:3600",
                "p:t:bob:86400",
                "0",
                "0",
                "0",
                "2",
                "00ff",
                "30000",
                "3600",
                "100",
                "86400",
                "5000"
            ]
        );
    }

    #[test]
    fn reads_each_verdict() {
        let v = |b: &[u8], asked| read_verdict(b, asked);
        assert_eq!(
            v(b"*3\r\n:1\r\n:0\r\n:0\r\n", S0),
            Ok(Some(FleetVerdict::Admit))
        );
        assert_eq!(
            v(b"*3\r\n:0\r\n:0\r\n:0\r\n", S0),
            Ok(Some(FleetVerdict::Replay))
        );
        assert_eq!(
            v(b"*3\r\n:2\r\n:2500\r\n:0\r\n", S0),
            Ok(Some(FleetVerdict::OverRate { wait_us: 2500 }))
        );
        assert_eq!(
            v(b"*3\r\n:3\r\n:1000000\r\n:0\r\n", S0),
            Ok(Some(FleetVerdict::AtConcurrency))
        );
        assert_eq!(
            v(
                b"*3\r\n:4\r\n:7000000\r\n:1\r\n",
                Asked::Script { budgets: 2 }
            ),
            Ok(Some(FleetVerdict::OverBudget {
                index: 1,
                wait_us: 7_000_000
            }))
        );
        assert_eq!(v(b"*3\r\n:1", S0), Ok(None));
        assert_eq!(v(b"", S0), Ok(None));
    }

    #[test]
    fn a_nonce_alone_is_a_plain_set_nx() {
        let c = FleetCheck {
            nonce: Some(("p:n:ab".into(), 65_000)),
            ..FleetCheck::default()
        };
        assert_eq!(c.asked(), Asked::SetNx);
        assert_eq!(
            c.encode(),
            b"*6\r\n$3\r\nSET\r\n$6\r\np:n:ab\r\n$1\r\n1\r\n$2\r\nNX\r\n$2\r\nPX\r\n$5\r\n65000\r\n"
        );
        let v = |b: &[u8]| read_verdict(b, Asked::SetNx);
        assert_eq!(v(b"+OK\r\n"), Ok(Some(FleetVerdict::Admit)));
        assert_eq!(v(b"$-1\r\n"), Ok(Some(FleetVerdict::Replay)));
        assert_eq!(v(b"_\r\n"), Ok(Some(FleetVerdict::Replay)));
        assert_eq!(v(b"+OK"), Ok(None));
        assert!(v(b"*3\r\n:1\r\n:0\r\n:0\r\n").is_err());
        assert!(v(b"$2\r\nOK\r\n").is_err());
        assert!(v(b"+OK\r\n+OK\r\n").is_err());
        assert!(matches!(
            v(b"-OOM no\r\n"),
            Err(FleetReplyError::ErrorReply(_))
        ));
    }

    #[test]
    fn refuses_what_a_script_never_sends() {
        let bad: [&[u8]; 14] = [
            b"*3\r\n:2\r\n:-5\r\n:0\r\n",
            b"*3\r\n:2\r\n:0\r\n:0\r\n",
            b"*3\r\n:5\r\n:0\r\n:0\r\n",
            b"*3\r\n:1\r\n:0\r\n:1\r\n",
            b"*3\r\n:4\r\n:10\r\n:2\r\n",
            b"*3\r\n:4\r\n:10\r\n:-1\r\n",
            b"*3\r\n:3\r\n:0\r\n:0\r\n",
            b"*2\r\n:1\r\n:0\r\n",
            b"*1\r\n:1\r\n",
            b"$-1\r\n",
            b"+OK\r\n",
            b"*3\r\n:1\r\n:0\r\n:0\r\n+extra\r\n",
            b"*3\r\n$1\r\n1\r\n:0\r\n:0\r\n",
            b"*-1\r\n",
        ];
        for b in bad {
            assert!(
                read_verdict(b, Asked::Script { budgets: 2 }).is_err(),
                "{:?}",
                String::from_utf8_lossy(b)
            );
        }
        assert_eq!(
            read_verdict(b"-WRONGPASS invalid\r\n", S0),
            Err(FleetReplyError::ErrorReply("WRONGPASS invalid".into()))
        );
        assert!(matches!(
            read_verdict(b"-NOSCRIPT\x07\r\n", S0),
            Err(FleetReplyError::ErrorReply(s)) if s == "NOSCRIPT?"
        ));
    }
}

//! What a host tells the fleet's Redis after a request: the slot it held goes back, and the
//! tokens its response counted are charged to the key's budgets (one script, so a host that
//! dies between the two cannot leave one done without the other); and, while requests run,
//! that their slots are still held. These go on a worker's own connection (the request is
//! over, or not waiting), so every reply is only checked for being an answer, not an error.

use super::resp;

/// KEYS[1]: the slot set or ""; KEYS[2..]: the budgets' stems. ARGV[1]: the member; ARGV[2]:
/// the tokens to charge; ARGV[3..]: each stem's window (s). The window is the one holding
/// Redis's now, as the admission script reads it.
pub const SETTLE_SCRIPT: &str = "\
if KEYS[1] ~= '' then redis.call('ZREM', KEYS[1], ARGV[1]) end
local n = tonumber(ARGV[2])
if n > 0 and #KEYS > 1 then
  local secs = tonumber(redis.call('TIME')[1])
  for i = 2, #KEYS do
    local w = tonumber(ARGV[i + 1])
    local k = KEYS[i] .. ':' .. math.floor(secs / w)
    redis.call('INCRBY', k, n)
    redis.call('EXPIRE', k, w + 60)
  end
end
return 1";

/// KEYS: slot sets; ARGV[1]: the lease (ms); ARGV[2..]: each set's member. `XX`: a slot that
/// already expired (its host stalled for a whole lease) is not taken again behind the
/// limit's back.
pub const RENEW_SCRIPT: &str = "\
local t = redis.call('TIME')
local lease = tonumber(ARGV[1])
local expires = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + lease
for i = 1, #KEYS do
  redis.call('ZADD', KEYS[i], 'XX', string.format('%d', expires), ARGV[i + 1])
  redis.call('PEXPIRE', KEYS[i], 2 * lease)
end
return #KEYS";

/// One request's settlement.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settle {
    /// The slot set and this request's member, when the fleet gave it a slot.
    pub slot: Option<(String, String)>,
    /// Counted tokens of the response, and the budgets' stems and windows to charge them to.
    pub tokens: u64,
    pub budgets: Vec<(String, u64)>,
}

impl Settle {
    pub fn is_empty(&self) -> bool {
        self.slot.is_none() && (self.tokens == 0 || self.budgets.is_empty())
    }

    /// Appends the command (one reply).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let (set, member) = match &self.slot {
            Some((s, m)) => (s.as_str(), m.as_str()),
            None => ("", ""),
        };
        let nkeys = (1 + self.budgets.len()).to_string();
        let tokens = self.tokens.to_string();
        let windows: Vec<String> = self.budgets.iter().map(|(_, w)| w.to_string()).collect();
        let mut args: Vec<&[u8]> = vec![
            b"EVAL",
            SETTLE_SCRIPT.as_bytes(),
            nkeys.as_bytes(),
            set.as_bytes(),
        ];
        args.extend(self.budgets.iter().map(|(s, _)| s.as_bytes()));
        args.push(member.as_bytes());
        args.push(tokens.as_bytes());
        args.extend(windows.iter().map(|w| w.as_bytes()));
        resp::command(out, &args);
    }
}

/// Appends the renewal of `slots` (set, member) for another `lease_ms` (one reply).
pub fn encode_renew(out: &mut Vec<u8>, lease_ms: u64, slots: &[(&str, &str)]) {
    let nkeys = slots.len().to_string();
    let lease = lease_ms.to_string();
    let mut args: Vec<&[u8]> = vec![b"EVAL", RENEW_SCRIPT.as_bytes(), nkeys.as_bytes()];
    args.extend(slots.iter().map(|(s, _)| s.as_bytes()));
    args.push(lease.as_bytes());
    args.extend(slots.iter().map(|(_, m)| m.as_bytes()));
    resp::command(out, &args);
}

/// Appends `AUTH` (one reply, read as an acknowledgement: `+OK` or Redis's error).
pub fn encode_auth(out: &mut Vec<u8>, password: &[u8]) {
    resp::command(out, &[b"AUTH", password]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(bytes: &[u8]) -> Vec<String> {
        resp::command_args(bytes)
    }

    #[test]
    fn a_settle_names_the_slot_and_each_budget() {
        let s = Settle {
            slot: Some(("p:c:bob".into(), "00ff".into())),
            tokens: 60,
            budgets: vec![
                ("p:t:bob:3600".into(), 3600),
                ("p:t:bob:86400".into(), 86_400),
            ],
        };
        let mut out = Vec::new();
        s.encode(&mut out);
        assert_eq!(
            args(&out)[2..].to_vec(),
            [
                "3",
                "p:c:bob",
                "p:t:bob:3600",
                "p:t:bob:86400",
                "00ff",
                "60",
                "3600",
                "86400"
            ]
        );
        assert!(!s.is_empty());
        let tokens_only = Settle {
            slot: None,
            tokens: 0,
            budgets: s.budgets.clone(),
        };
        assert!(tokens_only.is_empty(), "nothing to charge, no slot");
        let mut out = Vec::new();
        Settle {
            slot: None,
            tokens: 9,
            budgets: vec![("p:t:a:60".into(), 60)],
        }
        .encode(&mut out);
        assert_eq!(
            args(&out)[2..].to_vec(),
            ["2", "", "p:t:a:60", "", "9", "60"]
        );
    }

    #[test]
    fn a_renewal_pairs_sets_and_members() {
        let mut out = Vec::new();
        encode_renew(&mut out, 30_000, &[("p:c:a", "01"), ("p:c:b", "02")]);
        assert_eq!(
            args(&out)[2..].to_vec(),
            ["2", "p:c:a", "p:c:b", "30000", "01", "02"]
        );
    }
}

//! What the `fleet_reply` fuzz target checks (and `cargo test` replays from its corpus).

use super::check::{read_verdict, Asked, FleetCheck};
use super::resp;
use super::settle::read_ack;

/// The fuzz target's promise: any bytes give a verdict, "incomplete" or an error — and a
/// verdict only for exactly the replies a script can send; read as the replies to
/// settlements (a worker's link reads them one after another), every reply consumes bytes
/// within the buffer, so the reader always moves on or stops.
pub fn check_fleet_reply(data: &[u8]) {
    let mut rest = data;
    while let Ok(Some((_, used))) = read_ack(rest) {
        assert!(used > 0 && used <= rest.len(), "an ack of {used} bytes");
        rest = &rest[used..];
    }
    for (password, asked) in [
        (false, Asked::Script { budgets: 0 }),
        (true, Asked::Script { budgets: 2 }),
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

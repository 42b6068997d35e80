//! What the `fleet_reply` fuzz target checks (and `cargo test` replays from its corpus).

use super::check::{read_verdict, Asked};
use super::replies::{read_next, Answer, Expect};
use super::resp;

/// The fuzz target's promise: any bytes give a verdict, "incomplete" or an error — and a
/// verdict only for exactly the replies a check can draw; read as a worker's link reads them
/// (one after another, each as its command expects), every reply consumes bytes within the
/// buffer, so the reader always moves on or stops, and a verdict comes only from the reply
/// kinds its command draws.
pub fn check_fleet_reply(data: &[u8]) {
    const EXPECTS: [Expect; 4] = [
        Expect::Ack,
        Expect::Verdict(Asked::SetNx),
        Expect::Verdict(Asked::Script { budgets: 0 }),
        Expect::Verdict(Asked::Script { budgets: 2 }),
    ];
    let mut rest = data;
    let mut i = 0;
    while let Ok(Some((answer, used))) = read_next(rest, EXPECTS[i % EXPECTS.len()]) {
        assert!(used > 0 && used <= rest.len(), "a reply of {used} bytes");
        if let (Answer::Verdict(_), Expect::Ack) = (&answer, EXPECTS[i % EXPECTS.len()]) {
            panic!("a verdict read as an acknowledgement");
        }
        rest = &rest[used..];
        i += 1;
    }
    for asked in [
        Asked::Script { budgets: 0 },
        Asked::Script { budgets: 2 },
        Asked::SetNx,
    ] {
        if let Ok(Some(v)) = read_verdict(data, asked) {
            let (_, used) = resp::parse(data)
                .expect("a verdict came from valid RESP")
                .expect("and complete");
            assert_eq!(used, data.len(), "{v:?} from trailing bytes");
        }
    }
}

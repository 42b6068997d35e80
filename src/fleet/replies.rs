//! The replies on a worker's link to one Redis server, read in the order its commands went
//! out: acknowledgements (`AUTH`, settlements, renewals), whose content does not matter, and
//! admissions, whose reply is a verdict.

use super::check::{error_reply, verdict_of, Asked, FleetReplyError, FleetVerdict};
use super::resp::{self, Reply};

/// What the next reply on a link answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// `AUTH`, a settlement or a renewal: any answer but an error.
    Ack,
    /// An admission, sent as `asked`.
    Verdict(Asked),
}

/// One reply, read as its command expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// An acknowledgement's reply that is no error.
    Done,
    /// Redis's error text (cut, control characters replaced): that command failed, the
    /// connection is in step and goes on.
    Refused(String),
    Verdict(FleetVerdict),
}

/// The next reply in `buf` and the bytes it took; `Ok(None)` while incomplete. An error is
/// bytes that are not RESP, or a verdict's reply of a kind its command never draws: either
/// way the connection is not the Redis this link asked, and nothing more on it is read.
pub fn read_next(buf: &[u8], expect: Expect) -> Result<Option<(Answer, usize)>, FleetReplyError> {
    let Some((reply, used)) = resp::parse(buf)? else {
        return Ok(None);
    };
    let answer = match (reply, expect) {
        (Reply::Error(e), _) => match error_reply(&e) {
            FleetReplyError::ErrorReply(text) => Answer::Refused(text),
            _ => Answer::Refused(String::new()),
        },
        (_, Expect::Ack) => Answer::Done,
        (reply, Expect::Verdict(asked)) => Answer::Verdict(verdict_of(reply, asked)?),
    };
    Ok(Some((answer, used)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S0: Expect = Expect::Verdict(Asked::Script { budgets: 0 });

    #[test]
    fn acks_are_any_answer_but_an_error() {
        let ack = |b: &[u8]| read_next(b, Expect::Ack);
        assert_eq!(ack(b":1\r\n"), Ok(Some((Answer::Done, 4))));
        assert_eq!(ack(b"+OK\r\n:1\r\n"), Ok(Some((Answer::Done, 5))));
        assert_eq!(
            ack(b"*3\r\n:1\r\n:0\r\n:0\r\n"),
            Ok(Some((Answer::Done, 16)))
        );
        assert_eq!(ack(b":1"), Ok(None));
        assert_eq!(
            ack(b"-NOAUTH Authentication required.\r\n:1\r\n"),
            Ok(Some((
                Answer::Refused("NOAUTH Authentication required.".into()),
                34
            )))
        );
        assert!(ack(b"?\r\n").is_err());
    }

    #[test]
    fn verdicts_in_a_pipeline_are_read_one_at_a_time() {
        let buf = b"+OK\r\n$-1\r\n*3\r\n:1\r\n:0\r\n:0\r\n";
        let set = Expect::Verdict(Asked::SetNx);
        assert_eq!(
            read_next(buf, set),
            Ok(Some((Answer::Verdict(FleetVerdict::Admit), 5)))
        );
        assert_eq!(
            read_next(&buf[5..], set),
            Ok(Some((Answer::Verdict(FleetVerdict::Replay), 5)))
        );
        assert_eq!(
            read_next(&buf[10..], S0),
            Ok(Some((Answer::Verdict(FleetVerdict::Admit), 16)))
        );
        assert_eq!(read_next(&buf[10..20], S0), Ok(None));
    }

    #[test]
    fn an_error_reply_fails_one_command_a_wrong_kind_the_link() {
        assert_eq!(
            read_next(b"-OOM command not allowed\r\n", S0),
            Ok(Some((
                Answer::Refused("OOM command not allowed".into()),
                26
            )))
        );
        assert!(matches!(
            read_next(b"+OK\r\n", S0),
            Err(FleetReplyError::Unexpected(_))
        ));
        assert!(matches!(
            read_next(b":1\r\n", Expect::Verdict(Asked::SetNx)),
            Err(FleetReplyError::Unexpected(_))
        ));
        assert!(read_next(b"$99999999\r\n", S0).is_err());
    }
}

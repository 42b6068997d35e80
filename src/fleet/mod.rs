//! A fleet of relays sharing one Redis (or Valkey): the nonce's fleet-wide `SET NX` and the
//! key's fleet-wide limits at admission, and the settlement after the response, as the bytes
//! sent and the replies read. Pure: the nginx side that carries them is `module::fleet`.

mod check;
mod fuzz_check;
mod replies;
pub mod resp;
mod settle;

pub use check::{
    budget_stem, nonce_key, rate_key, read_verdict, slot_set, Asked, BudgetAsk, FleetCheck,
    FleetFailure, FleetReplyError, FleetVerdict, SlotAsk, SCRIPT,
};
pub use fuzz_check::check_fleet_reply;
pub use replies::{read_next, Answer, Expect};
pub use settle::{encode_auth, encode_renew, Settle, RENEW_SCRIPT, SETTLE_SCRIPT};

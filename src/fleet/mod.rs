//! A fleet of relays sharing one Redis (or Valkey): the nonce's fleet-wide `SET NX` and the
//! key's fleet-wide rate, as the bytes sent and the replies read. Pure: the nginx upstream
//! that carries them is `module::fleet`.

mod check;
pub mod resp;

pub use check::{
    check_fleet_reply, nonce_key, rate_key, read_verdict, Asked, FleetCheck, FleetFailure,
    FleetReplyError, FleetVerdict, SCRIPT,
};

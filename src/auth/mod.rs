//! Request authentication: signatures, tokens, the keys file and the nonce store's policy.
//! Pure Rust: nothing here knows about nginx, so all of it runs under `cargo test`.

mod bounded_read;
pub mod canonical;
pub mod error_body;
#[doc(hidden)]
pub mod fuzz_checks;
pub mod headers;
pub mod keys;
mod keys_file;
pub mod nonce_table;
pub mod outcome;
pub mod token;
pub mod upstream_key;
pub mod verify;

#[cfg(test)]
mod vectors;

pub use bounded_read::read_bounded;
pub use outcome::Outcome;

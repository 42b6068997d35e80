//! The promises of src/auth's parsers, as checks over arbitrary input: one function per fuzz
//! target in src/fuzz, which the targets call and which `corpus.rs` replays over the checked-in
//! corpus under `cargo test`, so a fuzzer and the test suite test the same thing. Each check
//! panics (the fuzzer's signal) when a promise is broken. Not part of the module's API.

mod headers;
mod keys;
mod nonce_table;
mod token;
mod upstream_key;

#[cfg(test)]
mod corpus;

pub use headers::check_headers;
pub use keys::check_keys_file;
pub use nonce_table::check_nonce_table;
pub use token::check_token;
pub use upstream_key::check_upstream_key;

/// The fuzz targets, by name (src/fuzz/fuzz_targets/<name>.rs, corpus src/fuzz/corpus/<name>/).
/// A target's check: panics when the input shows a broken promise.
pub type Check = fn(&[u8]);

pub const TARGETS: [(&str, Check); 10] = [
    ("headers", check_headers),
    ("keys_file", check_keys_file),
    ("nonce_table", check_nonce_table),
    ("token", check_token),
    ("upstream_key", check_upstream_key),
    ("redact", crate::redact::check_fuzz_input),
    ("usage", crate::usage::check_fuzz_input),
    ("state_file", crate::limits::check_state_file),
    ("fleet_reply", crate::fleet::check_fleet_reply),
    ("prefilter", crate::redact::check_prefilter_fuzz_input),
];

/// Splits fuzz input into `n` fields at 0xff bytes (never in the ASCII the parsers accept), so
/// one input drives several arguments; missing fields are `None`.
fn fields<const N: usize>(data: &[u8]) -> [Option<&[u8]>; N] {
    let mut out = [None; N];
    for (slot, part) in out.iter_mut().zip(data.split(|&c| c == 0xff)) {
        *slot = Some(part);
    }
    out
}

//! See ngx_http_relay_guard_module::redact::check_fuzz_input for the input's shape and the
//! promises checked (no 12-byte window of a secret survives, masking is idempotent, the
//! prefilter changes nothing).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ngx_http_relay_guard_module::redact::check_fuzz_input(data);
});

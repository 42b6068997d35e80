//! See ngx_http_relay_guard_module::usage::check_fuzz_input for the promises checked (any
//! split gives the same usage, model, error type and outcome; on valid JSON the scanner reads
//! what serde_json reads, as a body and as each kind of SSE event).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ngx_http_relay_guard_module::usage::check_fuzz_input(data);
});

//! See ngx_http_relay_guard_module::limits::check_state_file for the promises checked (any
//! bytes are refused or read into in-range windows, and what was read round-trips).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ngx_http_relay_guard_module::limits::check_state_file(data);
});

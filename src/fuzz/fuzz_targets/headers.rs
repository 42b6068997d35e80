//! See ngx_http_relay_guard_module::auth::fuzz_checks::check_headers for the promises checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ngx_http_relay_guard_module::auth::fuzz_checks::check_headers(data);
});

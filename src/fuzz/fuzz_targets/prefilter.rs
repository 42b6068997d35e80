//! See ngx_http_relay_guard_module::redact::check_prefilter_fuzz_input for the input's shape and
//! the promises checked (the vector blocks mark exactly the reference's candidate positions, the
//! word blocks a superset; no version misses a candidate over a whole text or any slice of it).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ngx_http_relay_guard_module::redact::check_prefilter_fuzz_input(data);
});

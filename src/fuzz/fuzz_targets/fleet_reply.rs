//! See ngx_http_relay_guard_module::fleet::check_fleet_reply for the promises checked (any
//! bytes from Redis give a verdict, "incomplete" or an error, and a verdict only for exactly
//! the replies the script sends).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ngx_http_relay_guard_module::fleet::check_fleet_reply(data);
});

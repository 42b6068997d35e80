//! A seeded xorshift generator for the redaction tests: a leaf, so any test may use it without
//! tying the module files to the big test file.

pub(crate) fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

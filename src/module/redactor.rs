//! The redactor a location's configuration builds (at merge time, in the master).

use std::sync::{Arc, OnceLock};

use crate::redact::{RedactConfig, Redactor};

/// Keys the fingerprints in masked values. Random per nginx start (kept across reloads: the
/// module stays loaded), so fingerprints correlate within a run and reveal nothing offline.
fn fingerprint_key() -> [u8; 32] {
    *FINGERPRINT_KEY.get_or_init(|| {
        let mut k = [0u8; 32];
        // SAFETY: getrandom writes at most k.len() bytes into k.
        let n = unsafe { libc::getrandom(k.as_mut_ptr() as *mut core::ffi::c_void, k.len(), 0) };
        if n != k.len() as isize {
            // Without randomness fall back to a per-process value: still no offline guessing
            // of the secret, since the fingerprint is truncated and the key is not in the logs.
            k[..8].copy_from_slice(&(std::process::id() as u64).to_le_bytes());
        }
        k
    })
}
static FINGERPRINT_KEY: OnceLock<[u8; 32]> = OnceLock::new();

/// Builds the redactor for a location: defaults, the operator's additions, and the upstream
/// key as a literal wherever it appears.
pub fn build_redactor(
    headers: &[Vec<u8>],
    args: &[Vec<u8>],
    upstream_key: Option<&[u8]>,
) -> Arc<Redactor> {
    let mut cfg = RedactConfig::with_defaults();
    headers.iter().for_each(|h| cfg.add_header(h));
    args.iter().for_each(|a| cfg.add_arg(a));
    if let Some(k) = upstream_key {
        cfg.add_literal(k);
    }
    Arc::new(Redactor::new(&cfg, fingerprint_key()))
}

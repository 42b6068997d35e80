//! The redactor a location's configuration builds (at merge time, in the master).

use std::sync::{Arc, OnceLock};

use super::error::ConfError;
use super::ffi_util::random_32;
use crate::redact::{RedactConfig, Redactor};

/// Keys the fingerprints in masked values. Random per nginx start (kept across reloads: the
/// module stays loaded), so fingerprints correlate within a run and reveal nothing offline.
/// Without randomness there is no redactor (the configuration fails): a guessable key would
/// let anyone with the logs test guesses of a short secret against its fingerprint.
fn fingerprint_key() -> Result<[u8; 32], ConfError> {
    if let Some(k) = FINGERPRINT_KEY.get() {
        return Ok(*k);
    }
    let k = random_32().map_err(ConfError::Random)?;
    Ok(*FINGERPRINT_KEY.get_or_init(|| k))
}
static FINGERPRINT_KEY: OnceLock<[u8; 32]> = OnceLock::new();

/// Builds the redactor for a location: defaults, the operator's additions, and the upstream
/// key as a literal wherever it appears.
pub fn build_redactor(
    headers: &[Vec<u8>],
    args: &[Vec<u8>],
    upstream_key: Option<&[u8]>,
) -> Result<Arc<Redactor>, ConfError> {
    let mut cfg = RedactConfig::with_defaults();
    headers.iter().for_each(|h| cfg.add_header(h));
    args.iter().for_each(|a| cfg.add_arg(a));
    if let Some(k) = upstream_key {
        cfg.add_literal(k);
    }
    Ok(Arc::new(Redactor::new(&cfg, fingerprint_key()?)))
}

//! Configuration structures, their creation and merging.

use core::ffi::{c_char, c_void};
use core::ptr;
use std::sync::Arc;

use ngx::core::Pool;
use ngx::ffi::{ngx_conf_t, ngx_shm_zone_t, NGX_LOG_EMERG};
use ngx::http::{HttpModuleLocationConf, HttpModuleMainConf};

use super::error::ConfError;
use super::fleet::conf::{FailurePolicy, FleetConf};
use super::redactor::build_redactor;
use super::Module;
use crate::auth::keys::KeyRing;

/// `relay_guard off | signature | token | any`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Off,
    Signature,
    Token,
    Any,
}

impl Mode {
    pub fn parse(v: &[u8]) -> Option<Mode> {
        match v {
            b"off" => Some(Mode::Off),
            b"signature" => Some(Mode::Signature),
            b"token" => Some(Mode::Token),
            b"any" => Some(Mode::Any),
            _ => None,
        }
    }

    /// Modes that record nonces, and so need `relay_guard_zone`.
    pub fn uses_nonces(self) -> bool {
        matches!(self, Mode::Signature | Mode::Any)
    }
}

pub const DEFAULT_CLOCK_SKEW: u64 = 30;
pub const DEFAULT_TOKEN_MAX_TTL: u64 = 3600;

pub struct MainConf {
    pub zone: *mut ngx_shm_zone_t,
    /// "file:line" of the first directive that needs the zone (`relay_guard signature|any`,
    /// `relay_guard_metrics`), for the missing-zone error.
    pub zone_needed_at: Option<String>,
    /// `relay_guard_redact on` appears somewhere: error-log lines need the wrapper from the
    /// start of every request, before its location is known.
    pub redact_used: bool,
    /// `relay_guard_state_file PATH [INTERVAL]`.
    pub state_file: Option<StateFileConf>,
    /// `relay_guard_redis NAME ...`: the fleet's Redis.
    pub fleet: Option<FleetConf>,
}

pub struct StateFileConf {
    pub path: std::path::PathBuf,
    pub interval_ms: u64,
}

pub const DEFAULT_STATE_INTERVAL_MS: u64 = 10_000;

impl Default for MainConf {
    fn default() -> Self {
        MainConf {
            zone: ptr::null_mut(),
            zone_needed_at: None,
            redact_used: false,
            state_file: None,
            fleet: None,
        }
    }
}

/// Per-location settings; `None` means "not set here, inherit".
#[derive(Default)]
pub struct LocConf {
    pub mode: Option<Mode>,
    /// "file:line" where `relay_guard` was set, for errors found at merge time.
    pub mode_at: Option<String>,
    pub keys: Option<Arc<KeyRing>>,
    pub clock_skew: Option<u64>,
    pub dry_run: Option<bool>,
    pub token_max_ttl: Option<u64>,
    /// The real Anthropic API key, read by the master at configuration time.
    pub upstream_key: Option<Arc<Vec<u8>>>,
    /// This location serves the metrics (`relay_guard_metrics;`); not inherited.
    pub metrics_endpoint: bool,
    pub redact: Option<bool>,
    /// Extra header and argument names to mask (`relay_guard_redact_header`, `_arg`).
    pub redact_headers: Option<Vec<Vec<u8>>>,
    pub redact_args: Option<Vec<Vec<u8>>>,
    /// Built at merge time when redaction is on.
    pub redactor: Option<Arc<crate::redact::Redactor>>,
    /// `relay_guard_accounting`: read token usage from responses.
    pub accounting: Option<bool>,
    /// `relay_guard_limits`: enforce the keys' limits here.
    pub limits: Option<bool>,
    /// This location answers `relay_guard_usage;` (not inherited), and where it was set.
    pub usage_endpoint: Option<String>,
    /// `relay_guard_redis_failure`.
    pub redis_failure: Option<FailurePolicy>,
}

impl LocConf {
    pub fn mode(&self) -> Mode {
        self.mode.unwrap_or(Mode::Off)
    }
    pub fn clock_skew(&self) -> u64 {
        self.clock_skew.unwrap_or(DEFAULT_CLOCK_SKEW)
    }
    pub fn dry_run(&self) -> bool {
        self.dry_run.unwrap_or(false)
    }
    pub fn token_max_ttl(&self) -> u64 {
        self.token_max_ttl.unwrap_or(DEFAULT_TOKEN_MAX_TTL)
    }
    pub fn accounting(&self) -> bool {
        self.accounting.unwrap_or(true)
    }
    pub fn limits(&self) -> bool {
        self.limits.unwrap_or(true)
    }
    pub fn redis_failure(&self) -> FailurePolicy {
        self.redis_failure.unwrap_or(FailurePolicy::Closed)
    }

    fn merge(&mut self, prev: &LocConf) -> Result<(), ConfError> {
        if self.mode.is_none() {
            self.mode = prev.mode;
            self.mode_at.clone_from(&prev.mode_at);
        }
        if self.keys.is_none() {
            self.keys.clone_from(&prev.keys);
        }
        self.clock_skew = self.clock_skew.or(prev.clock_skew);
        self.dry_run = self.dry_run.or(prev.dry_run);
        self.token_max_ttl = self.token_max_ttl.or(prev.token_max_ttl);
        self.accounting = self.accounting.or(prev.accounting);
        self.limits = self.limits.or(prev.limits);
        self.redis_failure = self.redis_failure.or(prev.redis_failure);
        // Nothing redaction depends on was set here: the parent's redactor serves as is.
        let inherits_redactor = self.redact_headers.is_none()
            && self.redact_args.is_none()
            && self.upstream_key.is_none();
        if self.upstream_key.is_none() {
            self.upstream_key.clone_from(&prev.upstream_key);
        }
        self.redact = self.redact.or(prev.redact);
        if self.redact_headers.is_none() {
            self.redact_headers.clone_from(&prev.redact_headers);
        }
        if self.redact_args.is_none() {
            self.redact_args.clone_from(&prev.redact_args);
        }
        if self.redact == Some(true) {
            self.redactor = match (&prev.redactor, inherits_redactor) {
                (Some(r), true) => Some(r.clone()),
                _ => Some(build_redactor(
                    self.redact_headers.as_deref().unwrap_or_default(),
                    self.redact_args.as_deref().unwrap_or_default(),
                    self.upstream_key.as_deref().map(Vec::as_slice),
                )?),
            };
        }
        if self.mode() != Mode::Off && self.keys.is_none() {
            return Err(ConfError::NoKeys {
                at: self.mode_at.clone().unwrap_or_else(|| "?".into()),
            });
        }
        if let (Some(at), Mode::Off) = (&self.usage_endpoint, self.mode()) {
            return Err(ConfError::UsageUnauthenticated { at: at.clone() });
        }
        Ok(())
    }
}

// SAFETY: the configuration slots for this module hold these types: create_main_conf and
// create_loc_conf below allocate exactly them.
unsafe impl HttpModuleMainConf for Module {
    type MainConf = MainConf;
}
// SAFETY: as above.
unsafe impl HttpModuleLocationConf for Module {
    type LocationConf = LocConf;
}

pub unsafe extern "C" fn create_main_conf(cf: *mut ngx_conf_t) -> *mut c_void {
    // SAFETY: nginx calls this with a valid cf; the pool outlives the configuration and
    // `allocate` registers a cleanup that drops the value with it.
    let pool = unsafe { Pool::from_ngx_pool((*cf).pool) };
    pool.allocate(MainConf::default()) as *mut c_void
}

pub unsafe extern "C" fn create_loc_conf(cf: *mut ngx_conf_t) -> *mut c_void {
    // SAFETY: as in create_main_conf.
    let pool = unsafe { Pool::from_ngx_pool((*cf).pool) };
    pool.allocate(LocConf::default()) as *mut c_void
}

pub unsafe extern "C" fn merge_loc_conf(
    cf: *mut ngx_conf_t,
    prev: *mut c_void,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes the two LocConf values created by create_loc_conf.
    let (prev, conf) = unsafe { (&*(prev as *const LocConf), &mut *(conf as *mut LocConf)) };
    match conf.merge(prev) {
        Ok(()) => ptr::null_mut(),
        Err(e) => {
            // SAFETY: cf is valid during merging.
            ngx::ngx_log_error!(NGX_LOG_EMERG, unsafe { (*cf).log }, "{e}");
            ngx::core::NGX_CONF_ERROR
        }
    }
}

//! Configuration structures, their creation and merging, and postconfiguration checks.

use core::ffi::{c_char, c_void};
use core::ptr;
use std::sync::Arc;

use ngx::core::Pool;
use ngx::ffi::{
    ngx_array_push, ngx_conf_t, ngx_http_handler_pt, ngx_http_phases_NGX_HTTP_ACCESS_PHASE,
    ngx_http_phases_NGX_HTTP_LOG_PHASE, ngx_http_phases_NGX_HTTP_POST_READ_PHASE, ngx_int_t,
    ngx_shm_zone_t, NGX_ERROR, NGX_LOG_EMERG, NGX_OK,
};
use ngx::http::{HttpModuleLocationConf, HttpModuleMainConf, NgxHttpCoreModule};

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
}

impl Default for MainConf {
    fn default() -> Self {
        MainConf {
            zone: ptr::null_mut(),
            zone_needed_at: None,
            redact_used: false,
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

    fn merge(&mut self, prev: &LocConf) -> Result<(), String> {
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
                _ => Some(super::redact::build(
                    self.redact_headers.as_deref().unwrap_or_default(),
                    self.redact_args.as_deref().unwrap_or_default(),
                    self.upstream_key.as_deref().map(Vec::as_slice),
                )),
            };
        }
        if self.mode() != Mode::Off && self.keys.is_none() {
            let at = self.mode_at.as_deref().unwrap_or("?");
            return Err(format!(
                "\"relay_guard\" needs \"relay_guard_keys FILE;\" at the same level or above in {at}"
            ));
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
        Err(msg) => {
            // SAFETY: cf is valid during merging.
            ngx::ngx_log_error!(NGX_LOG_EMERG, unsafe { (*cf).log }, "{msg}");
            ngx::core::NGX_CONF_ERROR
        }
    }
}

pub unsafe fn postconfiguration(cf: *mut ngx_conf_t) -> ngx_int_t {
    // SAFETY: cf is valid during postconfiguration.
    let cf_ref = unsafe { &mut *cf };
    let Some(mcf) = Module::main_conf(cf_ref) else {
        return NGX_ERROR as ngx_int_t;
    };
    if let (Some(at), true) = (&mcf.zone_needed_at, mcf.zone.is_null()) {
        ngx::ngx_log_error!(
            NGX_LOG_EMERG,
            cf_ref.log,
            "\"relay_guard signature\", \"relay_guard any\" and \"relay_guard_metrics\" keep their state in shared memory: add \"relay_guard_zone NAME:SIZE;\" to the http block (needed by {at})"
        );
        return NGX_ERROR as ngx_int_t;
    }
    let Some(cmcf) = NgxHttpCoreModule::main_conf_mut(cf_ref) else {
        return NGX_ERROR as ngx_int_t;
    };
    let pushed = [
        (
            ngx_http_phases_NGX_HTTP_POST_READ_PHASE,
            super::redact::early_handler as Handler,
        ),
        (
            ngx_http_phases_NGX_HTTP_ACCESS_PHASE,
            super::access::access_handler as Handler,
        ),
        (
            ngx_http_phases_NGX_HTTP_LOG_PHASE,
            super::metrics::log_handler as Handler,
        ),
    ]
    .into_iter()
    // SAFETY: cmcf is the core module's main configuration, live during postconfiguration.
    .all(|(phase, h)| unsafe { push_phase_handler(cmcf, phase, h) });
    // nginx runs LOG handlers in array order and the access log module's is already there:
    // masking must come first, before any log line is formatted.
    // SAFETY: cmcf is the core module's main configuration, live during postconfiguration.
    let first = unsafe {
        push_phase_handler_first(
            cmcf,
            ngx_http_phases_NGX_HTTP_LOG_PHASE,
            super::redact::log_handler,
        )
    };
    if !pushed || !first {
        return NGX_ERROR as ngx_int_t;
    }
    // SAFETY: filters are chained during postconfiguration, before any request.
    unsafe { super::metrics::install_filters() };
    NGX_OK as ngx_int_t
}

/// Inserts `h` at the front of a phase's handler array.
unsafe fn push_phase_handler_first(
    cmcf: &mut ngx::ffi::ngx_http_core_main_conf_t,
    phase: u32,
    h: Handler,
) -> bool {
    // SAFETY: as in push_phase_handler; the array's elements are plain function pointers.
    unsafe {
        if !push_phase_handler(cmcf, phase, h) {
            return false;
        }
        let arr = &mut cmcf.phases[phase as usize].handlers;
        let elts = core::slice::from_raw_parts_mut(arr.elts as *mut ngx_http_handler_pt, arr.nelts);
        elts.rotate_right(1);
    }
    true
}

type Handler = unsafe extern "C" fn(*mut ngx::ffi::ngx_http_request_t) -> ngx_int_t;

/// Appends `h` to a phase's handler array.
unsafe fn push_phase_handler(
    cmcf: &mut ngx::ffi::ngx_http_core_main_conf_t,
    phase: u32,
    h: Handler,
) -> bool {
    // SAFETY: phases[] holds arrays of ngx_http_handler_pt, initialised by the core module.
    let slot = unsafe {
        ngx_array_push(&mut cmcf.phases[phase as usize].handlers) as *mut ngx_http_handler_pt
    };
    if slot.is_null() {
        return false;
    }
    // SAFETY: slot is a freshly pushed element of that array.
    unsafe { *slot = Some(h) };
    true
}

//! The nginx glue, wired in one place: this file registers the module, its configuration
//! hooks, every phase handler and every filter. Nothing here decides anything about requests;
//! each job lives in its own file:
//!
//! - `directives.rs` the command table; `conf.rs` the configuration structs and merging;
//!   `zone.rs` the shared zone; `redactor.rs` a location's redactor
//! - `req.rs` the request as each callback converts it; `ctx.rs` the per-request context
//! - `access.rs` (ACCESS phase), `redact.rs` (POST_READ and first LOG handler, error-log
//!   wrapper), `metrics.rs` (filters, LOG handler, metrics page), `variables.rs`
//! - `fleet/` (a fleet's Redis round trip, a waited subrequest into an nginx upstream)
//! - `body.rs`, `respond.rs`, `ffi_util.rs`, `error.rs`, `log.rs`: shared helpers

mod access;
mod body;
mod conf;
mod ctx;
mod directives;
mod error;
mod ffi_util;
mod fleet;
mod limits;
mod log;
mod metrics;
mod redact;
mod redactor;
mod req;
mod respond;
mod state_file;
mod state_saver;
mod usage_page;
mod variables;
mod watch;
mod zone;

use core::ptr::addr_of;

use ngx::core::Status;
use ngx::ffi::{
    ngx_array_push, ngx_conf_t, ngx_http_core_main_conf_t, ngx_http_handler_pt, ngx_http_module_t,
    ngx_http_phases, ngx_http_phases_NGX_HTTP_ACCESS_PHASE, ngx_http_phases_NGX_HTTP_LOG_PHASE,
    ngx_http_phases_NGX_HTTP_POST_READ_PHASE, ngx_http_request_t, ngx_int_t, ngx_module_t,
    NGX_HTTP_MODULE, NGX_LOG_EMERG,
};
use ngx::http::{HttpModule, HttpModuleMainConf, NgxHttpCoreModule};

pub(crate) struct Module;

impl HttpModule for Module {
    fn module() -> &'static ngx_module_t {
        // SAFETY: nginx only writes the module's index fields, during configuration, before any
        // request handler can read them; we hand out shared references only.
        unsafe { &*addr_of!(ngx_http_relay_guard_module) }
    }

    unsafe extern "C" fn preconfiguration(cf: *mut ngx_conf_t) -> ngx_int_t {
        // SAFETY: nginx calls this with the live configuration.
        unsafe { variables::register(cf) }.into()
    }

    unsafe extern "C" fn postconfiguration(cf: *mut ngx_conf_t) -> ngx_int_t {
        // SAFETY: nginx calls this with the live configuration, once, before any request.
        unsafe { postconfiguration(cf) }.into()
    }
}

type Handler = unsafe extern "C" fn(*mut ngx_http_request_t) -> ngx_int_t;

/// Phase handlers, in the order they are appended to each phase.
const PHASE_HANDLERS: [(ngx_http_phases, Handler); 3] = [
    (
        ngx_http_phases_NGX_HTTP_POST_READ_PHASE,
        redact::early_handler,
    ),
    (
        ngx_http_phases_NGX_HTTP_ACCESS_PHASE,
        access::access_handler,
    ),
    (ngx_http_phases_NGX_HTTP_LOG_PHASE, metrics::log_handler),
];

/// # Safety
/// `cf` is the live configuration in postconfiguration.
unsafe fn postconfiguration(cf: *mut ngx_conf_t) -> Status {
    // SAFETY: the caller's promise.
    let cf_ref = unsafe { &mut *cf };
    let Some(mcf) = Module::main_conf(cf_ref) else {
        return Status::NGX_ERROR;
    };
    if let (Some(at), true) = (&mcf.zone_needed_at, mcf.zone.is_null()) {
        ngx::ngx_log_error!(
            NGX_LOG_EMERG,
            cf_ref.log,
            "\"relay_guard signature\", \"relay_guard any\", \"relay_guard_metrics\" and keys with limits keep their state in shared memory: add \"relay_guard_zone NAME:SIZE;\" to the http block (needed by {at})"
        );
        return Status::NGX_ERROR;
    }
    if mcf.state_file.is_some() && mcf.zone.is_null() {
        ngx::ngx_log_error!(
            NGX_LOG_EMERG,
            cf_ref.log,
            "\"relay_guard_state_file\" saves the token budgets kept in the shared zone: add \"relay_guard_zone NAME:SIZE;\" to the http block"
        );
        return Status::NGX_ERROR;
    }
    // SAFETY: mcf.zone is null or made by relay_guard_zone; its context lives in the
    // configuration pool, as the main conf does.
    if let Some(z) = unsafe { zone::ctx_of_mut(mcf.zone) } {
        z.state_file = mcf.state_file.as_ref().map(|c| c as *const _);
    }
    let Some(cmcf) = NgxHttpCoreModule::main_conf_mut(cf_ref) else {
        return Status::NGX_ERROR;
    };
    let pushed = PHASE_HANDLERS
        .into_iter()
        .all(|(phase, h)| push_phase_handler(cmcf, phase, h));
    // nginx runs LOG handlers in array order and the access log module's is already there:
    // masking must come first, before any log line is formatted.
    let first = push_phase_handler_first(
        cmcf,
        ngx_http_phases_NGX_HTTP_LOG_PHASE,
        redact::log_handler,
    );
    if !pushed || !first {
        return Status::NGX_ERROR;
    }
    // SAFETY: postconfiguration, before any request: where nginx's filters chain themselves.
    unsafe { watch::install_filters() };
    Status::NGX_OK
}

/// Appends `h` to a phase's handler array.
fn push_phase_handler(
    cmcf: &mut ngx_http_core_main_conf_t,
    phase: ngx_http_phases,
    h: Handler,
) -> bool {
    // SAFETY: phases[] holds arrays of ngx_http_handler_pt, initialised by the core module;
    // ngx_array_push returns null or a fresh element of that array.
    let slot = unsafe {
        (ngx_array_push(&mut cmcf.phases[phase as usize].handlers) as *mut ngx_http_handler_pt)
            .as_mut()
    };
    slot.map(|s| *s = Some(h)).is_some()
}

/// Inserts `h` at the front of a phase's handler array.
fn push_phase_handler_first(
    cmcf: &mut ngx_http_core_main_conf_t,
    phase: ngx_http_phases,
    h: Handler,
) -> bool {
    if !push_phase_handler(cmcf, phase, h) {
        return false;
    }
    let arr = &mut cmcf.phases[phase as usize].handlers;
    // SAFETY: the array holds `nelts` plain function pointers, ours to reorder during
    // postconfiguration.
    let elts =
        unsafe { core::slice::from_raw_parts_mut(arr.elts as *mut ngx_http_handler_pt, arr.nelts) };
    elts.rotate_right(1);
    true
}

static MODULE_CTX: ngx_http_module_t = ngx_http_module_t {
    preconfiguration: Some(Module::preconfiguration),
    postconfiguration: Some(Module::postconfiguration),
    create_main_conf: Some(conf::create_main_conf),
    init_main_conf: None,
    create_srv_conf: None,
    merge_srv_conf: None,
    create_loc_conf: Some(conf::create_loc_conf),
    merge_loc_conf: Some(conf::merge_loc_conf),
};

ngx::ngx_modules!(ngx_http_relay_guard_module);

#[used]
#[allow(non_upper_case_globals)]
pub static mut ngx_http_relay_guard_module: ngx_module_t = ngx_module_t {
    ctx: addr_of!(MODULE_CTX) as _,
    // Only the address is taken; nginx reads the table during configuration.
    commands: addr_of!(directives::COMMANDS) as *mut _,
    type_: NGX_HTTP_MODULE as _,
    init_process: Some(state_saver::init_process),
    exit_process: Some(fleet::exit_process),
    exit_master: Some(state_saver::exit_master),
    ..ngx_module_t::default()
};

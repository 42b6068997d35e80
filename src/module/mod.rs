//! The nginx glue: module registration only. Each job lives in its own file; nothing here
//! decides anything about requests.

mod access;
mod body;
mod conf;
mod directives;
mod ffi_util;
mod metrics;
mod redact;
mod respond;
mod variables;
mod zone;

use core::ptr::addr_of;

use ngx::ffi::{ngx_http_module_t, ngx_module_t, NGX_HTTP_MODULE};
use ngx::http::HttpModule;

pub(crate) struct Module;

impl HttpModule for Module {
    fn module() -> &'static ngx_module_t {
        // SAFETY: nginx only writes the module's index fields, during configuration, before any
        // request handler can read them; we hand out shared references only.
        unsafe { &*addr_of!(ngx_http_relay_guard_module) }
    }

    unsafe extern "C" fn preconfiguration(cf: *mut ngx::ffi::ngx_conf_t) -> ngx::ffi::ngx_int_t {
        variables::register(cf)
    }

    unsafe extern "C" fn postconfiguration(cf: *mut ngx::ffi::ngx_conf_t) -> ngx::ffi::ngx_int_t {
        conf::postconfiguration(cf)
    }
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
    ..ngx_module_t::default()
};

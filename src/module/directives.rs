//! The directive table and its thin handlers: each parses its arguments, reports errors with
//! the file and line (ngx_conf_log_error adds them) and a hint, and stores the result.

use core::ffi::{c_char, c_void};
use core::ptr;
use std::sync::Arc;

use ngx::ffi::{
    ngx_command_t, ngx_conf_full_name, ngx_conf_t, ngx_parse_time, ngx_str_t, ngx_uint_t,
    NGX_CONF_1MORE, NGX_CONF_FLAG, NGX_CONF_NOARGS, NGX_CONF_TAKE1, NGX_CONF_TAKE12,
    NGX_HTTP_LOC_CONF, NGX_HTTP_LOC_CONF_OFFSET, NGX_HTTP_MAIN_CONF, NGX_HTTP_MAIN_CONF_OFFSET,
    NGX_HTTP_SRV_CONF, NGX_LOG_EMERG, NGX_LOG_WARN, NGX_OK,
};
use ngx::http::{HttpModuleLocationConf, HttpModuleMainConf, NgxHttpCoreModule};
use ngx::ngx_string;

use super::conf::{LocConf, MainConf, Mode};
use super::error::ZoneError;
use super::ffi_util::{bytes, conf_args};
use super::zone::ZoneSpec;
use super::Module;
use crate::auth::keys::KeyRing;

const ANY_LEVEL: u32 = NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF;

const fn command(
    name: ngx_str_t,
    type_: u32,
    set: unsafe extern "C" fn(*mut ngx_conf_t, *mut ngx_command_t, *mut c_void) -> *mut c_char,
    conf: usize,
) -> ngx_command_t {
    ngx_command_t {
        name,
        type_: type_ as ngx_uint_t,
        set: Some(set),
        conf,
        offset: 0,
        post: ptr::null_mut(),
    }
}

pub static mut COMMANDS: [ngx_command_t; 12] = [
    command(
        ngx_string!("relay_guard"),
        ANY_LEVEL | NGX_CONF_TAKE1,
        set_mode,
        NGX_HTTP_LOC_CONF_OFFSET,
    ),
    command(
        ngx_string!("relay_guard_zone"),
        NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE12,
        set_zone,
        NGX_HTTP_MAIN_CONF_OFFSET,
    ),
    command(
        ngx_string!("relay_guard_metrics"),
        NGX_HTTP_LOC_CONF | NGX_CONF_NOARGS,
        set_metrics,
        NGX_HTTP_LOC_CONF_OFFSET,
    ),
    command(
        ngx_string!("relay_guard_keys"),
        ANY_LEVEL | NGX_CONF_TAKE1,
        set_keys,
        NGX_HTTP_LOC_CONF_OFFSET,
    ),
    command(
        ngx_string!("relay_guard_clock_skew"),
        ANY_LEVEL | NGX_CONF_TAKE1,
        set_clock_skew,
        NGX_HTTP_LOC_CONF_OFFSET,
    ),
    command(
        ngx_string!("relay_guard_dry_run"),
        ANY_LEVEL | NGX_CONF_FLAG,
        set_dry_run,
        NGX_HTTP_LOC_CONF_OFFSET,
    ),
    command(
        ngx_string!("relay_guard_token_max_ttl"),
        ANY_LEVEL | NGX_CONF_TAKE1,
        set_token_max_ttl,
        NGX_HTTP_LOC_CONF_OFFSET,
    ),
    command(
        ngx_string!("relay_guard_upstream_key_file"),
        ANY_LEVEL | NGX_CONF_TAKE1,
        set_upstream_key_file,
        NGX_HTTP_LOC_CONF_OFFSET,
    ),
    command(
        ngx_string!("relay_guard_redact"),
        ANY_LEVEL | NGX_CONF_FLAG,
        set_redact,
        NGX_HTTP_LOC_CONF_OFFSET,
    ),
    command(
        ngx_string!("relay_guard_redact_header"),
        ANY_LEVEL | NGX_CONF_1MORE,
        set_redact_names,
        NGX_HTTP_LOC_CONF_OFFSET,
    ),
    command(
        ngx_string!("relay_guard_redact_arg"),
        ANY_LEVEL | NGX_CONF_1MORE,
        set_redact_names,
        NGX_HTTP_LOC_CONF_OFFSET,
    ),
    ngx_command_t::empty(),
];

/// Logs `msg` as an [emerg] naming the current file and line, and fails the configuration.
fn fail(cf: *mut ngx_conf_t, msg: &dyn core::fmt::Display) -> *mut c_char {
    ngx::ngx_conf_log_error!(NGX_LOG_EMERG, cf, "{msg}");
    ngx::core::NGX_CONF_ERROR
}

fn ok() -> *mut c_char {
    ngx::core::NGX_CONF_OK
}

/// "file:line" of the directive being parsed.
unsafe fn position(cf: *mut ngx_conf_t) -> String {
    // SAFETY: during parsing cf->conf_file is the file being read.
    unsafe {
        let f = (*cf).conf_file;
        if f.is_null() {
            return "?".into();
        }
        format!(
            "{}:{}",
            String::from_utf8_lossy(bytes(&(*f).file.name)),
            (*f).line
        )
    }
}

/// The single argument of a TAKE1 directive, and its name for messages.
unsafe fn arg1<'a>(cf: *mut ngx_conf_t) -> (&'a [u8], String, ngx_str_t) {
    // SAFETY: TAKE1 guarantees args[0] (name) and args[1].
    let args = unsafe { conf_args(cf) };
    let name = String::from_utf8_lossy(unsafe { bytes(&args[0]) }).into_owned();
    (unsafe { bytes(&args[1]) }, name, args[1])
}

fn show(v: &[u8]) -> String {
    String::from_utf8_lossy(v).into_owned()
}

unsafe extern "C" fn set_mode(
    cf: *mut ngx_conf_t,
    _: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: conf is this module's LocConf (NGX_HTTP_LOC_CONF_OFFSET).
    let lcf = unsafe { &mut *(conf as *mut LocConf) };
    let (v, name, _) = unsafe { arg1(cf) };
    if lcf.mode.is_some() {
        return fail(cf, &format!("\"{name}\" directive is duplicate"));
    }
    let Some(mode) = Mode::parse(v) else {
        return fail(cf, &format!(
            "invalid value \"{}\" in \"{name}\" directive, it must be \"off\", \"signature\", \"token\" or \"any\"",
            show(v)
        ));
    };
    // SAFETY: cf and conf are what nginx passes to a directive handler, live while it runs.
    let at = unsafe { position(cf) };
    if mode.uses_nonces() {
        // SAFETY: cf is valid; the http main conf exists in every http context.
        if let Some(mcf) = Module::main_conf_mut(unsafe { &*cf }) {
            mcf.zone_needed_at.get_or_insert_with(|| at.clone());
        }
    }
    lcf.mode = Some(mode);
    lcf.mode_at = Some(at);
    ok()
}

unsafe extern "C" fn set_zone(
    cf: *mut ngx_conf_t,
    _: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: conf is this module's MainConf (NGX_HTTP_MAIN_CONF_OFFSET).
    let mcf = unsafe { &mut *(conf as *mut MainConf) };
    // SAFETY: TAKE12: the name and one or two arguments, in the configuration pool.
    let args = unsafe { conf_args(cf) };
    let added = if mcf.zone.is_null() {
        // SAFETY: as above.
        let (spec, extra) = unsafe { (bytes(&args[1]), args.get(2).map(|a| bytes(a))) };
        // SAFETY: cf is the configuration being parsed.
        ZoneSpec::parse(spec, extra).and_then(|z| unsafe { z.add(cf) })
    } else {
        Err(ZoneError::Duplicate)
    };
    match added {
        Ok(shm) => {
            mcf.zone = shm;
            ok()
        }
        Err(e) => fail(cf, &e),
    }
}

unsafe extern "C" fn set_metrics(
    cf: *mut ngx_conf_t,
    _: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: conf is this module's LocConf.
    let lcf = unsafe { &mut *(conf as *mut LocConf) };
    if lcf.metrics_endpoint {
        return fail(cf, &"\"relay_guard_metrics\" directive is duplicate");
    }
    lcf.metrics_endpoint = true;
    // SAFETY: cf is the live configuration being parsed.
    let at = unsafe { position(cf) };
    // SAFETY: cf is valid; the http main conf exists in every http context.
    if let Some(mcf) = Module::main_conf_mut(unsafe { &*cf }) {
        mcf.zone_needed_at.get_or_insert(at);
    }
    // SAFETY: cf is valid; the core module's location configuration exists here.
    match NgxHttpCoreModule::location_conf_mut(unsafe { &*cf }) {
        Some(clcf) => {
            clcf.handler = Some(super::metrics::metrics_handler);
            ok()
        }
        None => ngx::core::NGX_CONF_ERROR,
    }
}

unsafe extern "C" fn set_keys(
    cf: *mut ngx_conf_t,
    _: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: conf is this module's LocConf.
    let lcf = unsafe { &mut *(conf as *mut LocConf) };
    // SAFETY: cf is the live configuration being parsed.
    let (name, path) = match unsafe { file_arg(cf, lcf.keys.is_some()) } {
        Ok(v) => v,
        Err(e) => return e,
    };
    match KeyRing::load(std::path::Path::new(&path)) {
        Ok(ring) => {
            if ring.is_empty() {
                ngx::ngx_conf_log_error!(
                    NGX_LOG_WARN,
                    cf,
                    "\"{name}\": {path} lists no keys: every request will be rejected"
                );
            }
            lcf.keys = Some(Arc::new(ring));
            ok()
        }
        Err(e) => fail(cf, &format!("\"{name}\": {e}")),
    }
}

/// The directive's name and its FILE argument resolved against the configuration prefix (as
/// nginx does for its own files); an error when the directive was already set at this level.
unsafe fn file_arg(
    cf: *mut ngx_conf_t,
    already_set: bool,
) -> Result<(String, String), *mut c_char> {
    // SAFETY: cf and conf are what nginx passes to a directive handler, live while it runs.
    let (_, name, mut raw) = unsafe { arg1(cf) };
    if already_set {
        return Err(fail(cf, &format!("\"{name}\" directive is duplicate")));
    }
    // SAFETY: cf->cycle is valid; ngx_conf_full_name allocates the result from its pool.
    if unsafe { ngx_conf_full_name((*cf).cycle, &mut raw, 1) } != NGX_OK as isize {
        return Err(ngx::core::NGX_CONF_ERROR);
    }
    // SAFETY: raw was filled by ngx_conf_full_name from the configuration pool.
    Ok((name, show(unsafe { bytes(&raw) })))
}

unsafe extern "C" fn set_upstream_key_file(
    cf: *mut ngx_conf_t,
    _: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: conf is this module's LocConf.
    let lcf = unsafe { &mut *(conf as *mut LocConf) };
    // SAFETY: cf is the live configuration being parsed.
    let (name, path) = match unsafe { file_arg(cf, lcf.upstream_key.is_some()) } {
        Ok(v) => v,
        Err(e) => return e,
    };
    match crate::auth::upstream_key::load(std::path::Path::new(&path)) {
        Ok(loaded) => {
            if let Some(warning) = loaded.warning {
                ngx::ngx_conf_log_error!(NGX_LOG_WARN, cf, "\"{name}\": {warning}");
            }
            lcf.upstream_key = Some(Arc::new(loaded.key));
            ok()
        }
        Err(e) => fail(cf, &format!("\"{name}\": {e}")),
    }
}

/// `relay_guard_redact_header NAME ...;` and `relay_guard_redact_arg NAME ...;`: names added to
/// the default sets. Repeating the directive adds more names.
unsafe extern "C" fn set_redact_names(
    cf: *mut ngx_conf_t,
    _: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: conf is this module's LocConf; 1MORE guarantees at least one argument.
    let lcf = unsafe { &mut *(conf as *mut LocConf) };
    let args = unsafe { conf_args(cf) };
    let directive = unsafe { bytes(&args[0]) };
    let list = if directive == b"relay_guard_redact_header" {
        lcf.redact_headers.get_or_insert_with(Vec::new)
    } else {
        lcf.redact_args.get_or_insert_with(Vec::new)
    };
    for a in &args[1..] {
        // SAFETY: the argument lives in the configuration pool.
        let n = unsafe { bytes(a) };
        let valid = !n.is_empty()
            && n.iter()
                .all(|&c| c.is_ascii_graphic() && c != b'=' && c != b'&' && c != b':');
        if !valid {
            return fail(
                cf,
                &format!(
                    "invalid name \"{}\" in \"{}\" directive",
                    show(n),
                    show(directive)
                ),
            );
        }
        list.push(n.to_ascii_lowercase());
    }
    ok()
}

/// A TAKE1 `on | off` directive stored in the LocConf field `field` picks.
unsafe fn set_flag(
    cf: *mut ngx_conf_t,
    conf: *mut c_void,
    field: fn(&mut LocConf) -> &mut Option<bool>,
) -> *mut c_char {
    // SAFETY: conf is this module's LocConf (NGX_HTTP_LOC_CONF_OFFSET).
    let slot = field(unsafe { &mut *(conf as *mut LocConf) });
    let (v, name, _) = unsafe { arg1(cf) };
    if slot.is_some() {
        return fail(cf, &format!("\"{name}\" directive is duplicate"));
    }
    let value = if v.eq_ignore_ascii_case(b"on") {
        true
    } else if v.eq_ignore_ascii_case(b"off") {
        false
    } else {
        return fail(
            cf,
            &format!(
                "invalid value \"{}\" in \"{name}\" directive, it must be \"on\" or \"off\"",
                show(v)
            ),
        );
    };
    *slot = Some(value);
    ok()
}

/// A TAKE1 time directive (`30s`, `1h`) stored, in seconds, in the field `field` picks.
unsafe fn set_seconds(
    cf: *mut ngx_conf_t,
    conf: *mut c_void,
    field: fn(&mut LocConf) -> &mut Option<u64>,
) -> Result<u64, *mut c_char> {
    // SAFETY: conf is this module's LocConf (NGX_HTTP_LOC_CONF_OFFSET).
    let slot = field(unsafe { &mut *(conf as *mut LocConf) });
    let (v, name, mut raw) = unsafe { arg1(cf) };
    if slot.is_some() {
        return Err(fail(cf, &format!("\"{name}\" directive is duplicate")));
    }
    // SAFETY: raw is the directive's argument.
    let secs = unsafe { ngx_parse_time(&mut raw, 1) };
    if secs < 0 {
        return Err(fail(
            cf,
            &format!(
                "invalid value \"{}\" in \"{name}\" directive, expected a time such as 30s or 1h",
                show(v)
            ),
        ));
    }
    *slot = Some(secs as u64);
    Ok(secs as u64)
}

unsafe extern "C" fn set_dry_run(
    cf: *mut ngx_conf_t,
    _: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: cf and conf are what nginx passes to a directive handler, live while it runs.
    unsafe { set_flag(cf, conf, |c| &mut c.dry_run) }
}

unsafe extern "C" fn set_redact(
    cf: *mut ngx_conf_t,
    _: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: cf and conf are what nginx passes to a directive handler, live while it runs.
    let rc = unsafe { set_flag(cf, conf, |c| &mut c.redact) };
    // SAFETY: conf is this module's LocConf; cf is valid and has the http main conf.
    if unsafe { (*(conf as *const LocConf)).redact } == Some(true) {
        if let Some(mcf) = Module::main_conf_mut(unsafe { &*cf }) {
            mcf.redact_used = true;
        }
    }
    rc
}

unsafe extern "C" fn set_token_max_ttl(
    cf: *mut ngx_conf_t,
    _: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: cf and conf are what nginx passes to a directive handler, live while it runs.
    match unsafe { set_seconds(cf, conf, |c| &mut c.token_max_ttl) } {
        Ok(_) => ok(),
        Err(e) => e,
    }
}

unsafe extern "C" fn set_clock_skew(
    cf: *mut ngx_conf_t,
    _: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: cf and conf are what nginx passes to a directive handler, live while it runs.
    match unsafe { set_seconds(cf, conf, |c| &mut c.clock_skew) } {
        Ok(secs) if secs > 300 => {
            ngx::ngx_conf_log_error!(NGX_LOG_WARN, cf, "\"relay_guard_clock_skew\" of {secs}s widens the replay window: the nonce zone must hold every nonce for {}s", 2 * secs);
            ok()
        }
        Ok(_) => ok(),
        Err(e) => e,
    }
}

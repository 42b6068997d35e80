//! The directive table and its thin handlers. Each `extern "C"` entry point is made by
//! `handler!`, which converts nginx's arguments once into a [`Directive`] and this module's
//! configuration struct; the handler itself is safe code that parses its arguments and stores
//! the result. Errors are a typed [`DirectiveError`], logged once as an `[emerg]` that names
//! the file and line (ngx_conf_log_error adds them) and the fix.

use core::ffi::{c_char, c_void};
use core::ptr;
use std::sync::Arc;

use std::borrow::Cow;

use ngx::ffi::{
    ngx_command_t, ngx_conf_full_name, ngx_conf_t, ngx_http_core_loc_conf_t, ngx_parse_time,
    ngx_str_t, ngx_uint_t, NGX_CONF_1MORE, NGX_CONF_FLAG, NGX_CONF_NOARGS, NGX_CONF_TAKE1,
    NGX_CONF_TAKE12, NGX_CONF_TAKE123, NGX_HTTP_LOC_CONF, NGX_HTTP_LOC_CONF_OFFSET,
    NGX_HTTP_MAIN_CONF, NGX_HTTP_MAIN_CONF_OFFSET, NGX_HTTP_SRV_CONF, NGX_LOG_EMERG, NGX_LOG_WARN,
    NGX_OK,
};
use ngx::http::{HttpModuleLocationConf, HttpModuleMainConf, NgxHttpCoreModule};
use ngx::ngx_string;

use super::conf::{LocConf, MainConf, Mode, StateFileConf, DEFAULT_STATE_INTERVAL_MS};
use super::error::{DirectiveError, ZoneError};
use super::ffi_util::{bytes, conf_args};
use super::fleet;
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

pub static mut COMMANDS: [ngx_command_t; 18] = [
    command(
        ngx_string!("relay_guard"),
        ANY_LEVEL | NGX_CONF_TAKE1,
        set_mode,
        NGX_HTTP_LOC_CONF_OFFSET,
    ),
    command(
        ngx_string!("relay_guard_zone"),
        NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE123,
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
    command(
        ngx_string!("relay_guard_accounting"),
        ANY_LEVEL | NGX_CONF_FLAG,
        set_accounting,
        NGX_HTTP_LOC_CONF_OFFSET,
    ),
    command(
        ngx_string!("relay_guard_limits"),
        ANY_LEVEL | NGX_CONF_FLAG,
        set_limits,
        NGX_HTTP_LOC_CONF_OFFSET,
    ),
    command(
        ngx_string!("relay_guard_usage"),
        NGX_HTTP_LOC_CONF | NGX_CONF_NOARGS,
        set_usage,
        NGX_HTTP_LOC_CONF_OFFSET,
    ),
    command(
        ngx_string!("relay_guard_state_file"),
        NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE12,
        set_state_file,
        NGX_HTTP_MAIN_CONF_OFFSET,
    ),
    command(
        ngx_string!("relay_guard_redis"),
        NGX_HTTP_MAIN_CONF | NGX_CONF_1MORE,
        set_redis,
        NGX_HTTP_MAIN_CONF_OFFSET,
    ),
    command(
        ngx_string!("relay_guard_redis_failure"),
        ANY_LEVEL | NGX_CONF_TAKE1,
        set_redis_failure,
        NGX_HTTP_LOC_CONF_OFFSET,
    ),
    ngx_command_t::empty(),
];

/// The directive being parsed, as a handler sees it.
struct Directive<'c> {
    cf: *mut ngx_conf_t,
    /// The directive's name, then its arguments (as many as its type allows).
    args: &'c [ngx_str_t],
}

impl<'c> Directive<'c> {
    /// # Safety
    /// `cf` is the configuration nginx passed to a directive handler, for this call.
    unsafe fn new(cf: *mut ngx_conf_t) -> Self {
        // SAFETY: during a directive handler cf->args is the array of the directive's words,
        // in the configuration pool.
        let args = unsafe { conf_args(cf) };
        Directive { cf, args }
    }

    fn name(&self) -> Cow<'c, str> {
        String::from_utf8_lossy(self.word(0))
    }

    /// Word `i` (0 is the name), empty when absent.
    fn word(&self, i: usize) -> &'c [u8] {
        // SAFETY: the words live in the configuration pool, which outlives the handler.
        self.args.get(i).map_or(&[], |a| unsafe { bytes(a) })
    }

    /// The arguments after the name.
    fn params(&self) -> impl Iterator<Item = &'c [u8]> + '_ {
        (1..self.args.len()).map(|i| self.word(i))
    }

    /// "file:line" of the directive.
    fn position(&self) -> String {
        // SAFETY: while a directive is parsed cf->conf_file is null or the file being read.
        let Some(f) = (unsafe { (*self.cf).conf_file.as_ref() }) else {
            return "?".into();
        };
        // SAFETY: the file name lives in the configuration pool.
        let file = unsafe { bytes(&f.file.name) };
        format!("{}:{}", String::from_utf8_lossy(file), f.line)
    }

    fn main_conf(&self) -> Option<&'c mut MainConf> {
        // SAFETY: cf is the configuration being parsed; the http main conf exists in every
        // http context, and configuration is single-threaded.
        Module::main_conf_mut(unsafe { &*self.cf })
    }

    fn core_loc_conf(&self) -> Option<&'c mut ngx_http_core_loc_conf_t> {
        // SAFETY: as in main_conf; the core module's location configuration exists here.
        NgxHttpCoreModule::location_conf_mut(unsafe { &*self.cf })
    }

    fn warn(&self, msg: &dyn core::fmt::Display) {
        ngx::ngx_conf_log_error!(NGX_LOG_WARN, self.cf, "{msg}");
    }

    /// Argument 1 as a path resolved against the configuration prefix, as nginx does for its
    /// own files.
    fn file_arg(&self) -> Result<String, DirectiveError> {
        self.path_arg(true)
    }

    /// Argument 1 as a path resolved against the configuration prefix (`conf_prefix`) or
    /// nginx's prefix (where it keeps state such as the pid file).
    fn path_arg(&self, conf_prefix: bool) -> Result<String, DirectiveError> {
        self.full_path(self.word(1), conf_prefix)
    }

    /// `path` resolved as [`path_arg`](Self::path_arg) resolves argument 1.
    fn full_path(&self, path: &[u8], conf_prefix: bool) -> Result<String, DirectiveError> {
        if let Some(why) = crate::conf_text::path_problem(path) {
            return Err(self.invalid(path, why));
        }
        let mut raw = ngx_str_t {
            len: path.len(),
            data: path.as_ptr() as *mut u8,
        };
        // SAFETY: cf->cycle is valid while parsing; ngx_conf_full_name only reads `path`
        // and replaces raw with a copy allocated from the cycle's pool.
        let rc = unsafe {
            ngx_conf_full_name((*self.cf).cycle, &mut raw, ngx_uint_t::from(conf_prefix))
        };
        if rc != NGX_OK as isize {
            return Err(DirectiveError::Logged);
        }
        // SAFETY: raw now points at that copy (UTF-8: path_problem checked the name, and the
        // prefix nginx adds comes from its own command line or build).
        Ok(String::from_utf8_lossy(unsafe { bytes(&raw) }).into_owned())
    }

    fn duplicate(&self) -> DirectiveError {
        DirectiveError::Duplicate(self.name().into_owned())
    }

    fn invalid(&self, value: &[u8], expected: &'static str) -> DirectiveError {
        DirectiveError::Invalid {
            name: self.name().into_owned(),
            value: show(value),
            expected,
        }
    }
}

/// A value from nginx.conf as a message quotes it: escaped and bounded.
fn show(v: &[u8]) -> String {
    crate::conf_text::show(v)
}

/// Makes the `extern "C"` entry point `$entry` for the safe handler `$handler`, which takes
/// the directive and the configuration struct of type `$conf` its command's offset selects.
macro_rules! handler {
    ($entry:ident, $conf:ty, $handler:ident) => {
        unsafe extern "C" fn $entry(
            cf: *mut ngx_conf_t,
            _: *mut ngx_command_t,
            conf: *mut c_void,
        ) -> *mut c_char {
            // SAFETY: nginx calls directive handlers with the configuration being parsed and,
            // for the command's conf offset, the struct this module's create_*_conf made: the
            // table below pairs each entry point with that struct's type.
            let (d, conf) = unsafe { (Directive::new(cf), &mut *(conf as *mut $conf)) };
            match $handler(&d, conf) {
                Ok(()) => ngx::core::NGX_CONF_OK,
                Err(DirectiveError::Logged) => ngx::core::NGX_CONF_ERROR,
                Err(e) => {
                    ngx::ngx_conf_log_error!(NGX_LOG_EMERG, cf, "{e}");
                    ngx::core::NGX_CONF_ERROR
                }
            }
        }
    };
}

handler!(set_mode, LocConf, mode);
handler!(set_zone, MainConf, zone);
handler!(set_metrics, LocConf, metrics);
handler!(set_keys, LocConf, keys);
handler!(set_upstream_key_file, LocConf, upstream_key_file);
handler!(set_redact_names, LocConf, redact_names);
handler!(set_dry_run, LocConf, dry_run);
handler!(set_redact, LocConf, redact);
handler!(set_token_max_ttl, LocConf, token_max_ttl);
handler!(set_clock_skew, LocConf, clock_skew);
handler!(set_accounting, LocConf, accounting);
handler!(set_limits, LocConf, limits);
handler!(set_usage, LocConf, usage);
handler!(set_state_file, MainConf, state_file);
handler!(set_redis, MainConf, redis);
handler!(set_redis_failure, LocConf, redis_failure);

fn mode(d: &Directive<'_>, lcf: &mut LocConf) -> Result<(), DirectiveError> {
    if lcf.mode.is_some() {
        return Err(d.duplicate());
    }
    let v = d.word(1);
    let mode = Mode::parse(v)
        .ok_or_else(|| d.invalid(v, "it must be \"off\", \"signature\", \"token\" or \"any\""))?;
    let at = d.position();
    if mode.uses_nonces() {
        if let Some(mcf) = d.main_conf() {
            mcf.zone_needed_at.get_or_insert_with(|| at.clone());
        }
    }
    lcf.mode = Some(mode);
    lcf.mode_at = Some(at);
    Ok(())
}

fn zone(d: &Directive<'_>, mcf: &mut MainConf) -> Result<(), DirectiveError> {
    if !mcf.zone.is_null() {
        return Err(ZoneError::Duplicate.into());
    }
    let spec = ZoneSpec::parse(d.word(1), d.params().skip(1))?;
    // SAFETY: d.cf is the configuration being parsed, in this directive's handler.
    mcf.zone = unsafe { spec.add(d.cf) }?;
    Ok(())
}

fn metrics(d: &Directive<'_>, lcf: &mut LocConf) -> Result<(), DirectiveError> {
    if lcf.metrics_endpoint {
        return Err(d.duplicate());
    }
    if lcf.usage_endpoint.is_some() {
        return Err(DirectiveError::Conflict {
            name: d.name().into_owned(),
            other: "relay_guard_usage",
        });
    }
    lcf.metrics_endpoint = true;
    if let Some(mcf) = d.main_conf() {
        mcf.zone_needed_at.get_or_insert(d.position());
    }
    let clcf = d.core_loc_conf().ok_or(DirectiveError::Logged)?;
    clcf.handler = Some(super::metrics::metrics_handler);
    Ok(())
}

fn keys(d: &Directive<'_>, lcf: &mut LocConf) -> Result<(), DirectiveError> {
    if lcf.keys.is_some() {
        return Err(d.duplicate());
    }
    let path = d.file_arg()?;
    let ring = KeyRing::load(std::path::Path::new(&path)).map_err(|e| DirectiveError::File {
        name: d.name().into_owned(),
        error: Box::new(e),
    })?;
    if ring.has_limits() {
        if let Some(mcf) = d.main_conf() {
            mcf.zone_needed_at.get_or_insert(d.position());
        }
    }
    if ring.is_empty() {
        d.warn(&format_args!(
            "\"{}\": {path} lists no keys: every request will be rejected",
            d.name()
        ));
    }
    lcf.keys = Some(Arc::new(ring));
    Ok(())
}

fn upstream_key_file(d: &Directive<'_>, lcf: &mut LocConf) -> Result<(), DirectiveError> {
    if lcf.upstream_key.is_some() {
        return Err(d.duplicate());
    }
    let path = d.file_arg()?;
    let loaded = crate::auth::upstream_key::load(std::path::Path::new(&path)).map_err(|e| {
        DirectiveError::File {
            name: d.name().into_owned(),
            error: Box::new(e),
        }
    })?;
    if let Some(warning) = loaded.warning {
        d.warn(&format_args!("\"{}\": {warning}", d.name()));
    }
    lcf.upstream_key = Some(Arc::new(loaded.key));
    Ok(())
}

/// `relay_guard_redact_header NAME ...;` and `relay_guard_redact_arg NAME ...;`: names added to
/// the default sets. Repeating the directive adds more names.
fn redact_names(d: &Directive<'_>, lcf: &mut LocConf) -> Result<(), DirectiveError> {
    let list = if d.word(0) == b"relay_guard_redact_header" {
        lcf.redact_headers.get_or_insert_with(Vec::new)
    } else {
        lcf.redact_args.get_or_insert_with(Vec::new)
    };
    for n in d.params() {
        let valid = !n.is_empty()
            && n.iter()
                .all(|&c| c.is_ascii_graphic() && c != b'=' && c != b'&' && c != b':');
        if !valid {
            return Err(DirectiveError::Name {
                name: d.name().into_owned(),
                value: show(n),
            });
        }
        list.push(n.to_ascii_lowercase());
    }
    Ok(())
}

/// An `on | off` argument stored in `slot`.
fn flag(d: &Directive<'_>, slot: &mut Option<bool>) -> Result<bool, DirectiveError> {
    if slot.is_some() {
        return Err(d.duplicate());
    }
    let v = d.word(1);
    let value = if v.eq_ignore_ascii_case(b"on") {
        true
    } else if v.eq_ignore_ascii_case(b"off") {
        false
    } else {
        return Err(d.invalid(v, "it must be \"on\" or \"off\""));
    };
    *slot = Some(value);
    Ok(value)
}

/// A time argument (`30s`, `1h`) stored, in seconds, in `slot`.
fn seconds(d: &Directive<'_>, slot: &mut Option<u64>) -> Result<u64, DirectiveError> {
    if slot.is_some() {
        return Err(d.duplicate());
    }
    let v = d.word(1);
    let mut raw = ngx_str_t {
        len: v.len(),
        data: v.as_ptr() as *mut u8,
    };
    // SAFETY: ngx_parse_time only reads raw's bytes, which `v` borrows.
    let secs = unsafe { ngx_parse_time(&mut raw, 1) };
    if secs < 0 {
        return Err(d.invalid(v, "expected a time such as 30s or 1h"));
    }
    if secs == 0 {
        // 0 would refuse every signed request or short-lived token.
        return Err(d.invalid(v, "expected a time of at least 1s, such as 30s or 1h"));
    }
    *slot = Some(secs as u64);
    Ok(secs as u64)
}

fn dry_run(d: &Directive<'_>, lcf: &mut LocConf) -> Result<(), DirectiveError> {
    flag(d, &mut lcf.dry_run).map(drop)
}

fn accounting(d: &Directive<'_>, lcf: &mut LocConf) -> Result<(), DirectiveError> {
    flag(d, &mut lcf.accounting).map(drop)
}

fn limits(d: &Directive<'_>, lcf: &mut LocConf) -> Result<(), DirectiveError> {
    flag(d, &mut lcf.limits).map(drop)
}

fn usage(d: &Directive<'_>, lcf: &mut LocConf) -> Result<(), DirectiveError> {
    if lcf.usage_endpoint.is_some() {
        return Err(d.duplicate());
    }
    if lcf.metrics_endpoint {
        return Err(DirectiveError::Conflict {
            name: d.name().into_owned(),
            other: "relay_guard_metrics",
        });
    }
    lcf.usage_endpoint = Some(d.position());
    let clcf = d.core_loc_conf().ok_or(DirectiveError::Logged)?;
    clcf.handler = Some(super::usage_page::usage_handler);
    Ok(())
}

/// `relay_guard_state_file PATH [INTERVAL];`
fn state_file(d: &Directive<'_>, mcf: &mut MainConf) -> Result<(), DirectiveError> {
    if mcf.state_file.is_some() {
        return Err(d.duplicate());
    }
    let path = d.path_arg(false)?;
    // A warning, not an error: like a bad state file at start, a bad path never stops nginx.
    if let Some(p) = crate::limits::check_state_path(std::path::Path::new(&path)) {
        d.warn(&format_args!("\"{}\": {p}", d.name()));
    }
    let interval_ms = match d.args.get(2) {
        None => DEFAULT_STATE_INTERVAL_MS,
        Some(_) => {
            let v = d.word(2);
            let mut raw = ngx_str_t {
                len: v.len(),
                data: v.as_ptr() as *mut u8,
            };
            // SAFETY: ngx_parse_time only reads raw's bytes, which `v` borrows.
            let secs = unsafe { ngx_parse_time(&mut raw, 1) };
            if !(1..=86_400).contains(&secs) {
                return Err(d.invalid(v, "expected an interval from 1s to 1d, such as 10s"));
            }
            secs as u64 * 1000
        }
    };
    mcf.state_file = Some(StateFileConf {
        path: path.into(),
        interval_ms,
    });
    Ok(())
}

fn redact(d: &Directive<'_>, lcf: &mut LocConf) -> Result<(), DirectiveError> {
    if flag(d, &mut lcf.redact)? {
        if let Some(mcf) = d.main_conf() {
            mcf.redact_used = true;
        }
    }
    Ok(())
}

fn token_max_ttl(d: &Directive<'_>, lcf: &mut LocConf) -> Result<(), DirectiveError> {
    seconds(d, &mut lcf.token_max_ttl).map(drop)
}

fn clock_skew(d: &Directive<'_>, lcf: &mut LocConf) -> Result<(), DirectiveError> {
    let secs = seconds(d, &mut lcf.clock_skew)?;
    if secs > 300 {
        d.warn(&format_args!("\"relay_guard_clock_skew\" of {secs}s widens the replay window: the nonce zone must hold every nonce for {}s", 2 * secs));
    }
    Ok(())
}

/// `relay_guard_redis NAME [prefix=P] [password_file=FILE] [timeout=T] [lease=T];`
fn redis(d: &Directive<'_>, mcf: &mut MainConf) -> Result<(), DirectiveError> {
    if mcf.fleet.is_some() {
        return Err(d.duplicate());
    }
    let name = d.word(1);
    if name.is_empty() || name.iter().any(|&c| c <= b' ' || c == 0x7f) {
        return Err(d.invalid(
            name,
            "expected the name of an upstream block (or host:port) of the Redis servers",
        ));
    }
    let mut prefix = fleet::DEFAULT_PREFIX.to_owned();
    let mut password = None;
    let mut timeout_ms = fleet::DEFAULT_TIMEOUT_MS;
    let mut lease_ms = fleet::DEFAULT_LEASE_MS;
    for p in d.params().skip(1) {
        if let Some(v) = p.strip_prefix(b"prefix=") {
            // Printable ASCII without spaces: it starts every key name in Redis.
            if v.is_empty() || v.len() > 64 || !v.iter().all(|c| c.is_ascii_graphic()) {
                return Err(d.invalid(p, "prefix= takes 1 to 64 printable characters without spaces, such as prefix=relay-guard:"));
            }
            prefix = show(v);
        } else if let Some(v) = p.strip_prefix(b"password_file=") {
            let path = d.full_path(v, true)?;
            password = Some(read_password(d, &path)?);
        } else if let Some(v) = p.strip_prefix(b"timeout=") {
            let mut raw = ngx_str_t {
                len: v.len(),
                data: v.as_ptr() as *mut u8,
            };
            // SAFETY: ngx_parse_time only reads raw's bytes, which `v` borrows.
            let ms = unsafe { ngx_parse_time(&mut raw, 0) };
            if !(1..=fleet::MAX_TIMEOUT_MS as isize).contains(&ms) {
                return Err(d.invalid(p, "timeout= takes 1ms to 10s, such as timeout=50ms (a Redis round trip on a good network takes well under 1ms)"));
            }
            timeout_ms = ms as u64;
        } else if let Some(v) = p.strip_prefix(b"lease=") {
            let mut raw = ngx_str_t {
                len: v.len(),
                data: v.as_ptr() as *mut u8,
            };
            // SAFETY: ngx_parse_time only reads raw's bytes, which `v` borrows.
            let ms = unsafe { ngx_parse_time(&mut raw, 0) };
            if !(1000..=fleet::MAX_LEASE_MS as isize).contains(&ms) {
                return Err(d.invalid(p, "lease= takes 1s to 1h, such as lease=30s (how long a fleet-wide concurrency slot outlives a host that died holding it)"));
            }
            lease_ms = ms as u64;
        } else {
            return Err(d.invalid(
                p,
                "expected prefix=P, password_file=FILE, timeout=T or lease=T",
            ));
        }
    }
    // SAFETY: a directive handler's configuration.
    let upstream = unsafe { fleet::upstream_servers(d.cf, name) }.ok_or(DirectiveError::Logged)?;
    mcf.fleet = Some(fleet::FleetConf {
        upstream,
        prefix,
        password,
        timeout_ms,
        lease_ms,
    });
    Ok(())
}

/// The Redis password: one line, at most 512 bytes, never echoed in an error.
fn read_password(d: &Directive<'_>, path: &str) -> Result<Vec<u8>, DirectiveError> {
    let file_error = |why: String| DirectiveError::File {
        name: d.name().into_owned(),
        error: why.into(),
    };
    let raw = crate::auth::read_bounded(std::path::Path::new(path), 4096)
        .map_err(|e| file_error(format!("cannot read password_file \"{path}\": {e}")))?;
    let line = raw.strip_suffix(b"\n").unwrap_or(&raw);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() || line.len() > 512 || line.iter().any(|&c| c < b' ' || c == 0x7f) {
        return Err(file_error(format!("password_file \"{path}\" must hold the password on one line (1 to 512 bytes, no control characters)")));
    }
    Ok(line.to_vec())
}

fn redis_failure(d: &Directive<'_>, lcf: &mut LocConf) -> Result<(), DirectiveError> {
    if lcf.redis_failure.is_some() {
        return Err(d.duplicate());
    }
    let v = d.word(1);
    lcf.redis_failure = Some(
        fleet::FailurePolicy::parse(v)
            .ok_or_else(|| d.invalid(v, "it must be \"closed\" or \"local\""))?,
    );
    Ok(())
}

//! Logging through nginx's own logs, with the module's `relay_guard: ` prefix in one place.
//!
//! Both macros check the level before formatting anything (as nginx's `ngx_log_error` does),
//! so a debug line costs one comparison when debug logging is off.

/// An error-log line at `level` (`NGX_LOG_INFO`, `NGX_LOG_WARN`, ...) on `log`.
macro_rules! rg_log {
    ($level:expr, $log:expr, $($arg:tt)+) => {
        ngx::ngx_log_error!($level, $log, "relay_guard: {}", format_args!($($arg)+))
    };
}

/// A debug line on the request's log (`debug_http`; needs nginx built `--with-debug`).
macro_rules! rg_debug {
    ($req:expr, $($arg:tt)+) => {
        ngx::ngx_log_debug!(
            mask: ngx::log::DebugMask::Http,
            $req.log(),
            "relay_guard: {}",
            format_args!($($arg)+)
        )
    };
}

pub(crate) use {rg_debug, rg_log};

//! `relay_guard_state_file`: token-budget windows written to a file every interval (by worker
//! 0) and when nginx stops (by the master), and read back when the zone is created, so a
//! restart does not hand every key a fresh budget. A file that cannot be read or is not ours
//! is logged and ignored: the relay starts with empty windows rather than not at all.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use ngx::ffi::{
    ngx_add_timer, ngx_cycle_t, ngx_event_t, ngx_exiting, ngx_int_t, ngx_log_t, ngx_pcalloc,
    ngx_process, ngx_quit, ngx_terminate, ngx_worker, NGX_LOG_NOTICE, NGX_LOG_WARN,
    NGX_PROCESS_SINGLE, NGX_PROCESS_WORKER,
};
use ngx::http::HttpModuleMainConf;

use super::conf::StateFileConf;
use super::limits::now_ms;
use super::log::rg_log;
use super::{zone, Module};
use crate::limits::state::{self, StateError, MAX_FILE_BYTES};
use crate::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
enum FileError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("not a regular file")]
    NotRegular,
    #[error("larger than {MAX_FILE_BYTES} bytes")]
    TooLarge,
    #[error("{0}")]
    State(#[from] StateError),
}

fn read(path: &Path) -> Result<state::Saved, FileError> {
    let f = std::fs::File::open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(FileError::NotRegular);
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(FileError::TooLarge);
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    f.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(FileError::TooLarge);
    }
    Ok(state::decode(&bytes)?)
}

/// At zone creation (the master, before any worker): puts the saved windows back.
pub fn restore(metrics: &Metrics, conf: &StateFileConf, log: *mut ngx_log_t) {
    let path = conf.path.display();
    match read(&conf.path) {
        Ok(saved) => {
            let n = metrics.restore_limits(&saved.keys, now_ms() / 1000);
            rg_log!(
                NGX_LOG_NOTICE,
                log,
                "relay_guard_state_file {path}: restored {n} token-budget windows of {} keys (saved at {})",
                saved.keys.len(),
                crate::limits::utc_iso(saved.saved_at)
            );
        }
        Err(FileError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            rg_log!(
                NGX_LOG_NOTICE,
                log,
                "relay_guard_state_file {path}: not there yet, starting with empty windows"
            );
        }
        Err(e) => {
            rg_log!(
                NGX_LOG_WARN,
                log,
                "relay_guard_state_file {path}: {e}; ignoring it and starting with empty windows (it is replaced at the next save)"
            );
        }
    }
}

/// Writes the file whole or not at all: a temp file beside it, fsync, rename.
fn write(metrics: &Metrics, path: &Path) -> std::io::Result<()> {
    let now_s = now_ms() / 1000;
    let bytes = state::encode(now_s, &metrics.limits_state(now_s));
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp.{}", std::process::id()));
    let tmp = std::path::PathBuf::from(tmp);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Whether the last save failed: a failing disk is logged when it starts failing and when it
/// recovers, not every interval.
static FAILING: AtomicBool = AtomicBool::new(false);

fn save(metrics: &Metrics, conf: &StateFileConf, log: *mut ngx_log_t) {
    let path = conf.path.display();
    match write(metrics, &conf.path) {
        Ok(()) => {
            if FAILING.swap(false, Ordering::Relaxed) {
                rg_log!(
                    NGX_LOG_NOTICE,
                    log,
                    "relay_guard_state_file {path}: saving again"
                );
            }
        }
        Err(e) => {
            if !FAILING.swap(true, Ordering::Relaxed) {
                rg_log!(
                    NGX_LOG_WARN,
                    log,
                    "relay_guard_state_file {path}: cannot save ({e}); its directory must be writable by nginx's worker user"
                );
            }
        }
    }
}

/// The zone's metrics and the state file's settings of `cycle`, if both are configured.
///
/// # Safety
/// `cycle` is the live cycle nginx passed to a module hook.
unsafe fn configured<'a>(cycle: *mut ngx_cycle_t) -> Option<(&'a Metrics, &'a StateFileConf)> {
    // SAFETY: the caller's promise; the http main conf lives as long as the cycle.
    let mcf = Module::main_conf(unsafe { &*cycle })?;
    let conf = mcf.state_file.as_ref()?;
    // SAFETY: mcf.zone is null or a zone made by relay_guard_zone.
    let metrics = unsafe { zone::ctx_of(mcf.zone) }?.metrics.as_ref()?;
    Some((metrics, conf))
}

/// `init_process`: worker 0 (or the single process) saves every interval.
pub unsafe extern "C" fn init_process(cycle: *mut ngx_cycle_t) -> ngx_int_t {
    // SAFETY: nginx's process globals, set before init_process runs.
    let (process, worker) = unsafe { (ngx_process, ngx_worker) };
    let saver = process == NGX_PROCESS_SINGLE as usize
        || (process == NGX_PROCESS_WORKER as usize && worker == 0);
    // SAFETY: nginx passes the live cycle.
    let Some((_, conf)) = (unsafe { configured(cycle) }).filter(|_| saver) else {
        return ngx::core::Status::NGX_OK.into();
    };
    // SAFETY: the cycle pool lives as long as this process's cycle; zeroed memory is a valid
    // idle event.
    let ev = unsafe { ngx_pcalloc((*cycle).pool, core::mem::size_of::<ngx_event_t>()) }
        as *mut ngx_event_t;
    // SAFETY: ev is null or fresh, exclusively ours until handed to the timer tree.
    let Some(e) = (unsafe { ev.as_mut() }) else {
        return ngx::core::Status::NGX_ERROR.into();
    };
    e.handler = Some(on_timer);
    e.data = cycle.cast();
    // SAFETY: the cycle's log lives as long as the cycle.
    e.log = unsafe { (*cycle).log };
    // A pending save must not hold up a graceful shutdown; the master saves at exit.
    e.set_cancelable(1);
    // SAFETY: ev is a valid event of this process, added once.
    unsafe { ngx_add_timer(ev, conf.interval_ms as ngx::ffi::ngx_msec_t) };
    ngx::core::Status::NGX_OK.into()
}

unsafe extern "C" fn on_timer(ev: *mut ngx_event_t) {
    // SAFETY: nginx calls the handler with the event init_process added; its data is the
    // cycle, which outlives it.
    let (cycle, log) = unsafe { ((*ev).data as *mut ngx_cycle_t, (*ev).log) };
    // SAFETY: the live cycle.
    let Some((metrics, conf)) = (unsafe { configured(cycle) }) else {
        return;
    };
    save(metrics, conf, log);
    // SAFETY: nginx's signal flags, read by value.
    let stopping = unsafe { ngx_exiting != 0 || ngx_quit != 0 || ngx_terminate != 0 };
    if !stopping {
        // SAFETY: the same event, not in the timer tree while its handler runs.
        unsafe { ngx_add_timer(ev, conf.interval_ms as ngx::ffi::ngx_msec_t) };
    }
}

/// `exit_master`: the last save, after every worker has finished.
pub unsafe extern "C" fn exit_master(cycle: *mut ngx_cycle_t) {
    // SAFETY: nginx passes the live cycle.
    if let Some((metrics, conf)) = unsafe { configured(cycle) } {
        // SAFETY: the cycle's log lives as long as the cycle.
        save(metrics, conf, unsafe { (*cycle).log });
    }
}

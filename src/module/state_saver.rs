//! When the state file is written: every interval by worker 0 (or the single process), and
//! once more by the master when nginx stops. What is written is `state_file.rs`.

use ngx::ffi::{
    ngx_add_timer, ngx_cycle_t, ngx_event_t, ngx_exiting, ngx_int_t, ngx_pcalloc, ngx_process,
    ngx_quit, ngx_terminate, ngx_worker, NGX_PROCESS_SINGLE, NGX_PROCESS_WORKER,
};
use ngx::http::HttpModuleMainConf;

use super::conf::StateFileConf;
use super::state_file::save;
use super::{zone, Module};
use crate::metrics::Metrics;

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

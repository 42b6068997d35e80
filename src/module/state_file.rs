//! `relay_guard_state_file`: token-budget windows written to a file (when, is
//! `state_saver.rs`) and read back when the zone is created, so a restart does not hand
//! every key a fresh budget. A file that cannot be read or is not ours
//! is logged and ignored: the relay starts with empty windows rather than not at all.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use ngx::ffi::{ngx_log_t, NGX_LOG_NOTICE, NGX_LOG_WARN};

use super::conf::StateFileConf;
use super::ffi_util::now_ms;
use super::log::rg_log;
use crate::limits::state::{self, StateError, MAX_FILE_BYTES};
use crate::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
enum FileError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    State(#[from] StateError),
}

fn read(path: &Path) -> Result<state::Saved, FileError> {
    let bytes = crate::auth::read_bounded(path, MAX_FILE_BYTES)?;
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

pub fn save(metrics: &Metrics, conf: &StateFileConf, log: *mut ngx_log_t) {
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

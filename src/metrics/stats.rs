//! The counters of one key slot: the atomic block in shared memory and its plain copy.

use std::mem::size_of;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::histogram::{AtomicHistogram, Histogram};
use super::sample::{class_index, exact_index, is_error, AuthOutcome, Sample};
use crate::usage::{ErrorType, StreamOutcome};

pub const ERROR_SOURCES: [&str; 2] = ["upstream", "relay"];
pub const STREAM_OUTCOMES: [&str; 4] = StreamOutcome::LABELS;
pub const HIST_REQUEST: usize = 0;
pub const HIST_CONNECT: usize = 1;
pub const HIST_HEADER: usize = 2;

const N_AUTH: usize = AuthOutcome::COUNT;
const N_ERROR_TYPES: usize = ErrorType::ALL.len();

/// Per-key counters. Padded to whole cache lines so two hot keys never share one.
#[repr(C)]
pub(crate) struct StatsBlock {
    class: [AtomicU64; 6],
    exact: [AtomicU64; 6],
    errors: [AtomicU64; 2],
    auth: [AtomicU64; N_AUTH],
    streams: [AtomicU64; 4],
    /// `event: error` streams by `error.type` (`ErrorType::index`).
    stream_errors: [AtomicU64; N_ERROR_TYPES],
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    hist: [AtomicHistogram; 3],
    _pad: [u64; 6],
}

const _: () = assert!(size_of::<StatsBlock>() % 64 == 0);

impl StatsBlock {
    /// Relaxed everywhere: counters are independent and only need to be eventually visible.
    #[inline]
    pub fn apply(&self, s: &Sample<'_>) {
        self.class[class_index(s.status)].fetch_add(1, Relaxed);
        if let Some(i) = exact_index(s.status) {
            self.exact[i].fetch_add(1, Relaxed);
        }
        if is_error(s.status) {
            // The upstream produced the error only if the client got exactly what it sent.
            let relay = s.upstream_status != Some(s.status);
            self.errors[usize::from(relay)].fetch_add(1, Relaxed);
        }
        self.auth[s.auth.index()].fetch_add(1, Relaxed);
        if let Some(i) = s.stream.index() {
            self.streams[i].fetch_add(1, Relaxed);
        }
        if let Some(t) = s.stream_error {
            self.stream_errors[t.index()].fetch_add(1, Relaxed);
        }
        if s.bytes_in != 0 {
            self.bytes_in.fetch_add(s.bytes_in, Relaxed);
        }
        if s.bytes_out != 0 {
            self.bytes_out.fetch_add(s.bytes_out, Relaxed);
        }
        self.hist[HIST_REQUEST].observe(s.request_ms);
        if let Some(ms) = s.upstream_connect_ms {
            self.hist[HIST_CONNECT].observe(ms);
        }
        if let Some(ms) = s.upstream_header_ms {
            self.hist[HIST_HEADER].observe(ms);
        }
    }

    pub fn load(&self) -> SlotStats {
        SlotStats {
            class: std::array::from_fn(|i| self.class[i].load(Relaxed)),
            exact: std::array::from_fn(|i| self.exact[i].load(Relaxed)),
            errors: std::array::from_fn(|i| self.errors[i].load(Relaxed)),
            auth: std::array::from_fn(|i| self.auth[i].load(Relaxed)),
            streams: std::array::from_fn(|i| self.streams[i].load(Relaxed)),
            stream_errors: std::array::from_fn(|i| self.stream_errors[i].load(Relaxed)),
            bytes_in: self.bytes_in.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            hist: std::array::from_fn(|i| self.hist[i].load()),
            limited: [0; 3],
        }
    }
}

/// Plain copy of one slot. Index meanings: `class` by [`CLASS_LABELS`](super::CLASS_LABELS),
/// `exact` by [`EXACT_STATUSES`](super::EXACT_STATUSES), `errors` by [`ERROR_SOURCES`],
/// `auth` by `AuthOutcome::index`, `streams` by [`STREAM_OUTCOMES`], `hist` by `HIST_*`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlotStats {
    pub class: [u64; 6],
    pub exact: [u64; 6],
    pub errors: [u64; 2],
    pub auth: [u64; N_AUTH],
    pub streams: [u64; 4],
    pub stream_errors: [u64; N_ERROR_TYPES],
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub hist: [Histogram; 3],
    /// Requests a limit refused, by `LimitKind::index` (kept in the key's limit block).
    pub limited: [u64; 3],
}

impl SlotStats {
    pub fn requests(&self) -> u64 {
        self.class.iter().sum()
    }
    pub fn errors_total(&self) -> u64 {
        self.errors.iter().sum()
    }
    pub fn streams_started(&self) -> u64 {
        self.streams.iter().sum()
    }
    pub fn auth(&self, o: AuthOutcome) -> u64 {
        self.auth[o.index()]
    }
    pub fn status(&self, status: u16) -> Option<u64> {
        exact_index(status).map(|i| self.exact[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block() -> Box<StatsBlock> {
        // SAFETY: all-zero bytes are a valid StatsBlock (atomics and integers of 0).
        unsafe { Box::new(std::mem::zeroed()) }
    }

    fn sample(status: u16, upstream: Option<u16>) -> Sample<'static> {
        Sample {
            key_id: b"k",
            status,
            upstream_status: upstream,
            auth: AuthOutcome::of(crate::auth::Outcome::Ok),
            request_ms: 1200,
            upstream_connect_ms: Some(3),
            upstream_header_ms: None,
            bytes_in: 100,
            bytes_out: 0,
            stream: StreamOutcome::Completed,
            stream_error: None,
            model: b"",
            usage: None,
        }
    }

    #[test]
    fn error_source_attribution() {
        let b = block();
        b.apply(&sample(529, Some(529))); // Anthropic overloaded: upstream
        b.apply(&sample(502, None)); // no upstream answered: relay
        b.apply(&sample(502, Some(200))); // relay broke a good response: relay
        b.apply(&sample(429, None)); // relay's own limiter
        b.apply(&sample(404, Some(404))); // not an error
        let s = b.load();
        assert_eq!(s.errors, [1, 3]);
        assert_eq!(s.status(502), Some(2));
        assert_eq!(s.status(529), Some(1));
        assert_eq!(s.class, [0, 0, 0, 2, 3, 0]);
        assert_eq!(s.requests(), 5);
        assert_eq!(s.bytes_in, 500);
        assert_eq!(s.bytes_out, 0);
        assert_eq!(s.streams, [5, 0, 0, 0]);
        assert_eq!(s.auth(AuthOutcome::of(crate::auth::Outcome::Ok)), 5);
        assert_eq!(s.hist[HIST_REQUEST].count(), 5);
        assert_eq!(s.hist[HIST_REQUEST].buckets[7], 5); // 1.2 s <= 2.5 s
        assert_eq!(s.hist[HIST_CONNECT].buckets[0], 5);
        assert_eq!(s.hist[HIST_HEADER].count(), 0);
    }
}

//! Typed errors of the glue. Each is rendered once, where it reaches nginx's log.

use crate::metrics::MetricsError;

/// Reading a buffer chain (a request body, a response) back from nginx.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error("pread() of a temp file failed: {0}")]
    Read(#[source] std::io::Error),
    #[error("temp file ended at {at}, expected {end}")]
    Short { at: i64, end: i64 },
}

/// A request-time failure that ends in a 500.
#[derive(Debug, thiserror::Error)]
pub enum GlueError {
    #[error("request body: {0}")]
    Body(#[from] ChainError),
    #[error("the shared zone is not initialised (relay_guard_zone)")]
    NoZone,
    #[error("out of memory in the request pool")]
    NoMemory,
    #[error("no random bytes for the request's fleet-wide concurrency slot (getrandom: {0})")]
    Random(#[source] std::io::Error),
}

/// `relay_guard_zone` from parsing to initialisation.
#[derive(Debug, thiserror::Error)]
pub enum ZoneError {
    #[error(
        "invalid zone \"{0}\" in \"relay_guard_zone\", expected NAME:SIZE such as relay_guard:10m"
    )]
    NameSize(String),
    #[error("invalid zone name \"{0}\" in \"relay_guard_zone\", expected printable ASCII without spaces, such as relay_guard")]
    Name(String),
    #[error("invalid zone size \"{0}\" in \"relay_guard_zone\", expected NAME:SIZE such as relay_guard:10m")]
    Size(String),
    #[error("invalid parameter \"{0}\" in \"relay_guard_zone\", expected keys=N (1..{max_keys}: key ids with their own metrics series) or models=N (1..{max_models}: model names with their own token series), each at most once", max_keys = crate::metrics::MAX_MAX_KEYS, max_models = crate::metrics::MAX_MAX_MODELS)]
    Param(String),
    #[error("zone \"{name}\" is too small: it needs at least {min_kib}k (metrics for keys={keys} models={models} plus nonce slots)")]
    TooSmall {
        name: String,
        min_kib: usize,
        keys: u32,
        models: u32,
    },
    #[error("zone \"{0}\" is already declared")]
    Declared(String),
    #[error("\"relay_guard_zone\" directive is duplicate: one zone serves the whole http block")]
    Duplicate,
    #[error("{0}")]
    Metrics(#[from] MetricsError),
    #[error("out of memory")]
    NoMemory,
    #[error("the zone was created by an incompatible relay-guard version; rename the zone or restart nginx")]
    Incompatible,
    #[error("keys={new} differs from the running keys={old}; the zone is kept across reloads, so use a new zone name (or restart nginx) to change it")]
    KeysChanged { new: u32, old: u32 },
    #[error("models={new} differs from the running models={old}; the zone is kept across reloads, so use a new zone name (or restart nginx) to change it")]
    ModelsChanged { new: u32, old: u32 },
    #[error("zone too small for its header")]
    NoRoomForHeader,
    #[error("zone too small for metrics of {0} keys")]
    NoRoomForMetrics(u32),
    #[error("cannot allocate {0} nonce slots")]
    NoRoomForNonces(usize),
    #[error("no random bytes for the nonce fingerprint key (getrandom: {0})")]
    Random(#[source] std::io::Error),
}

/// A configuration that parses but cannot work, found when locations are merged.
#[derive(Debug, thiserror::Error)]
pub enum ConfError {
    #[error("\"relay_guard\" needs \"relay_guard_keys FILE;\" at the same level or above in {at}")]
    NoKeys { at: String },
    #[error("relay_guard_redact: no random bytes for the fingerprint key (getrandom: {0}); refusing to mask with a guessable key")]
    Random(#[source] std::io::Error),
    #[error("\"relay_guard_usage\" answers each client about its own key, so it needs \"relay_guard signature|token|any;\" in its location or above ({at})")]
    UsageUnauthenticated { at: String },
}

/// A directive the configuration cannot take.
#[derive(Debug, thiserror::Error)]
pub enum DirectiveError {
    #[error("\"{0}\" directive is duplicate")]
    Duplicate(String),
    #[error("invalid value \"{value}\" in \"{name}\" directive, {expected}")]
    Invalid {
        name: String,
        value: String,
        expected: &'static str,
    },
    #[error("invalid name \"{value}\" in \"{name}\" directive, expected printable ASCII without spaces, \"=\", \"&\" or \":\"")]
    Name { name: String, value: String },
    #[error(
        "\"{name}\" and \"{other}\" cannot share a location: each is the location's whole answer"
    )]
    Conflict { name: String, other: &'static str },
    /// A file the directive names could not be used; the error says which and why.
    #[error("\"{name}\": {error}")]
    File {
        name: String,
        error: Box<dyn std::error::Error>,
    },
    #[error(transparent)]
    Zone(#[from] ZoneError),
    /// nginx has logged the reason already (e.g. an allocation failure).
    #[error("")]
    Logged,
}

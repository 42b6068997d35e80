//! The state file's promise as a check over arbitrary bytes (fuzz target `state_file`, also
//! replayed over its corpus by `cargo test`): anything is refused with an error or read into
//! windows that are all in range, and what was read encodes and reads back the same.

use super::spec::{MAX_BUDGET, MAX_BUDGETS};
use super::state::{decode, encode};
use super::window::Window;

pub fn check_state_file(data: &[u8]) {
    let Ok(saved) = decode(data) else {
        return;
    };
    for (id, windows) in &saved.keys {
        assert!(crate::auth::headers::is_key_id(id.as_bytes()), "{id:?}");
        assert!(windows.len() <= MAX_BUDGETS);
        for w in windows {
            assert!(Window::from_secs(w.per_s).is_some());
            assert!(w.used <= MAX_BUDGET);
        }
    }
    let again = decode(&encode(saved.saved_at, &saved.keys)).expect("our own file reads back");
    let kept: Vec<_> = saved
        .keys
        .iter()
        .filter(|(_, w)| !w.is_empty())
        .cloned()
        .collect();
    assert_eq!(again.keys, kept);
    assert_eq!(again.saved_at, saved.saved_at);
}

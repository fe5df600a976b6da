//! Faults that only tests can cause, compiled in with the `fault-injection`
//! feature (which the integration tests' crate turns on) and armed by an
//! environment variable: a release build of `boulder` alone has neither.

use std::sync::OnceLock;

/// A group that holds a message containing this variable's value panics while
/// it is processed.
pub const PANIC_ON: &str = "BOULDER_TEST_PANIC_ON";

/// Panics if one of the messages' `payloads` holds the text [`PANIC_ON`] names.
pub fn panic_if_asked<'a>(payloads: impl IntoIterator<Item = &'a [u8]>) {
    static MARKER: OnceLock<Option<String>> = OnceLock::new();
    let marker = MARKER.get_or_init(|| std::env::var(PANIC_ON).ok().filter(|m| !m.is_empty()));
    let Some(marker) = marker else {
        return;
    };
    for payload in payloads {
        if memchr::memmem::find(payload, marker.as_bytes()).is_some() {
            panic!("injected by a test: a message holds {marker:?}");
        }
    }
}

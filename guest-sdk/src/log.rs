//! Logging to the host, the one capability a guest has.
//!
//! Lines go to Boulder's log tagged with the tenant, stage and component. The host
//! rate-limits each instance, so log per batch or on rare events, never per point.
//! Natively (in `cargo test`) lines go to stderr.

/// How serious a log line is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Very detailed tracing.
    Trace,
    /// Diagnostic detail.
    Debug,
    /// Normal operation worth recording.
    Info,
    /// Something unexpected that the transform recovered from.
    Warn,
    /// Something failed.
    Error,
}

/// Writes one line to the host's log.
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    {
        use crate::__private::bindings::boulder::transform::log as host;
        let level = match level {
            Level::Trace => host::Level::Trace,
            Level::Debug => host::Level::Debug,
            Level::Info => host::Level::Info,
            Level::Warn => host::Level::Warn,
            Level::Error => host::Level::Error,
        };
        host::log(level, message);
    }
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[{level:?}] {message}");
}

/// Logs at [`Level::Info`].
pub fn info(message: &str) {
    log(Level::Info, message)
}

/// Logs at [`Level::Warn`].
pub fn warn(message: &str) {
    log(Level::Warn, message)
}

/// Logs at [`Level::Error`].
pub fn error(message: &str) {
    log(Level::Error, message)
}

/// The prefix of the log line that reports a panic; the host looks for it to say
/// why a guest trapped. Only used in wasm builds.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
pub(crate) const PANIC_PREFIX: &str = "panic: ";

/// Reports panics through the host's log before the guest aborts, so the host can
/// say what went wrong instead of "unreachable instruction executed".
pub(crate) fn install_panic_hook() {
    #[cfg(target_arch = "wasm32")]
    {
        static INSTALLED: std::sync::Once = std::sync::Once::new();
        INSTALLED.call_once(|| {
            std::panic::set_hook(Box::new(|info| {
                let message = info
                    .payload_as_str()
                    .unwrap_or("(a non-text panic payload)");
                let location = info
                    .location()
                    .map(|l| format!(" at {}:{}", l.file(), l.line()))
                    .unwrap_or_default();
                error(&format!("{PANIC_PREFIX}{message}{location}"));
            }))
        });
    }
}

//! Tasks whose panic ends the process. A writer or the dead-letter sender that
//! died would hold its messages' acks for ever: their partitions would stop
//! committing, and nothing would say so. Exiting instead lets the process's
//! supervisor restart it, and what was not committed is consumed again.
//! (A panic while a group of messages is processed is caught per group by the
//! pipeline instead, which dead-letters the group.)

use futures::FutureExt;
use std::future::Future;
use std::panic::AssertUnwindSafe;

/// The exit status after such a panic (sysexits' EX_SOFTWARE).
pub const EXIT_STATUS: i32 = 70;

/// Spawns `task` on the runtime; if it panics, logs `what` and exits the process.
pub fn spawn<F>(what: &'static str, task: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(exit_on_panic(what, task))
}

/// `task`, but a panic in it logs `what` and exits the process.
pub async fn exit_on_panic<F: Future>(what: &'static str, task: F) -> F::Output {
    match AssertUnwindSafe(task).catch_unwind().await {
        Ok(output) => output,
        Err(_) => {
            // The panic's message was printed by the panic hook.
            tracing::error!(task = what, status = EXIT_STATUS, "a task panicked; exiting so that the process is restarted (what was not committed is consumed again)");
            std::process::exit(EXIT_STATUS);
        }
    }
}

//! Stopping: the first SIGINT or SIGTERM stops consumption and lets what is in
//! flight finish; a second one, or `pipeline.shutdown_timeout` passing, exits at
//! once. Offsets stored so far were committed by librdkafka; the rest is consumed
//! again by the next process (at-least-once). SIGHUP reloads the config
//! (`reconfigure`).

use anyhow::{Context, Result};
use std::time::Duration;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// SIGINT and SIGTERM, caught from the moment they are installed.
pub(super) struct Signals {
    interrupt: Signal,
    terminate: Signal,
}

impl Signals {
    pub(super) fn install() -> Result<Signals> {
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt()).context("installing a SIGINT handler")?,
            terminate: signal(SignalKind::terminate()).context("installing a SIGTERM handler")?,
        })
    }

    /// SIGHUPs, caught from now on (instead of their default action, exiting).
    pub(super) fn hangups() -> Result<Signal> {
        signal(SignalKind::hangup()).context("installing a SIGHUP handler")
    }

    /// The next SIGINT or SIGTERM.
    async fn next(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }

    /// First signal: cancels `stop_consuming`. Second signal, or `deadline` passing
    /// after the first: exits the process at once (status 130).
    pub(super) async fn stop_on_signal(
        mut self,
        stop_consuming: CancellationToken,
        deadline: Duration,
    ) {
        self.next().await;
        tracing::info!(deadline = ?deadline, "stopping: finishing what is in flight (a second signal exits at once)");
        stop_consuming.cancel();
        tokio::select! {
            _ = self.next() => {
                tracing::warn!("second signal: exiting now; unfinished messages will be consumed again");
            }
            _ = tokio::time::sleep(deadline) => {
                tracing::error!(deadline = ?deadline, "shutdown deadline passed: exiting now; unfinished messages will be consumed again");
            }
        }
        std::process::exit(130);
    }
}

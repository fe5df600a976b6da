//! The status endpoint: `/metrics` (Prometheus text), `/health` (liveness: 500
//! once a worker has panicked, since only a restart clears what a bug left behind)
//! and `/ready` (consuming, with every output and the dead-letter queue writable).

use crate::dlq;
use crate::metrics::Metrics;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What the endpoint reports on.
#[derive(Debug, Default)]
pub struct Status {
    /// The process's metrics.
    pub metrics: Arc<Metrics>,
    /// True while the consumer loop runs (false before start and while stopping).
    pub consuming: AtomicBool,
    /// The dead-letter queue's state, once its producer exists.
    pub dead_letter_queue: OnceLock<Arc<dlq::Health>>,
    /// The message of the last panic a worker caught, if any.
    last_panic: Mutex<Option<String>>,
}

impl Status {
    /// The status of a process that reports `metrics`, not consuming yet.
    pub fn new(metrics: Arc<Metrics>) -> Status {
        Status {
            metrics,
            ..Status::default()
        }
    }

    /// A worker caught a panic while it processed a group of messages (and
    /// dead-lettered them): `/health` reports it from now on.
    pub fn worker_panicked(&self, message: String) {
        *self.last_panic.lock().expect("poisoned") = Some(message);
    }

    /// Why the process should be restarted, if it should: a panic means a bug
    /// left some state unknown, even though the process went on.
    pub fn faults(&self) -> Option<String> {
        let last = self.last_panic.lock().expect("poisoned").clone()?;
        Some(format!(
            "{} groups of messages panicked in a worker (the last: {last}); their messages \
             were dead-lettered with class boulder.internal; restart the process",
            self.metrics.worker_panics.get()
        ))
    }

    /// Why the process is not ready, if it is not.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !self.consuming.load(Ordering::Relaxed) {
            problems.push("not consuming".to_owned());
        }
        if let Some(problem) = self.dead_letter_queue.get().and_then(|d| d.problem()) {
            problems.push(problem);
        }
        problems.extend(self.metrics.holds());
        let stalled = self.metrics.outputs_stalled.get();
        if stalled > 0 {
            problems.push(format!("{stalled} outputs are failing and being retried"));
        }
        problems
    }
}

/// Serves the endpoint on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, status: Arc<Status>, shutdown: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else { continue };
        let status = status.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| respond(request, status.clone()));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn respond(
    request: Request<Incoming>,
    status: Arc<Status>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (code, content_type, body) = match request.uri().path() {
        "/metrics" => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            status.metrics.encode(),
        ),
        "/health" => match status.faults() {
            // Alive, but a restart is what would mend it.
            Some(fault) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain; charset=utf-8",
                format!("unhealthy: {fault}\n"),
            ),
            // Alive as long as it answers; problems are reported, not fatal: a
            // restart would not make a broken dead-letter queue writable.
            None => {
                let problems = status.problems();
                let body = if problems.is_empty() {
                    "ok\n".to_owned()
                } else {
                    format!("ok, but: {}\n", problems.join("; "))
                };
                (StatusCode::OK, "text/plain; charset=utf-8", body)
            }
        },
        "/ready" => {
            let problems = status.problems();
            if problems.is_empty() {
                (
                    StatusCode::OK,
                    "text/plain; charset=utf-8",
                    "ready\n".to_owned(),
                )
            } else {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain; charset=utf-8",
                    format!("not ready: {}\n", problems.join("; ")),
                )
            }
        }
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found: try /metrics, /health or /ready\n".to_owned(),
        ),
    };
    let response = Response::builder()
        .status(code)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response");
    Ok(response)
}

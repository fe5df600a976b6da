//! `boulder run`: the main job. Consume, decode, route, transform, write; what is
//! not written is dead-lettered; offsets are committed only behind both.

use super::ConfigArg;
use anyhow::{bail, Context, Result};
use boulder::config::Config;
use boulder::dlq::{DeadLetter, Dlq};
use boulder::kafka::{self, ack::Tracker, Inputs};
use boulder::metrics::Metrics;
use boulder::pipeline::{Pipeline, Tenant};
use boulder::runtime::{Chain, Router, Runtime, RuntimeSettings};
use boulder::sink::{self, http::Endpoint, Budget};
use boulder::status::{self, Status};
use rdkafka::consumer::Consumer;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Dead letters queued from the pipeline before it waits.
const DEAD_LETTER_QUEUE: usize = 1024;

pub fn run(args: ConfigArg) -> Result<()> {
    let config = Config::load(&args.config)?;
    config.check_runnable()?;
    let workers = config
        .pipeline
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let runtime = Arc::new(Runtime::new(RuntimeSettings::from_config(&config))?);
    let router = Router::load(&runtime, &config)?;
    let mut chains = Vec::new();
    for tenant in &config.tenants {
        chains.push(Chain::load(&runtime, &config, tenant)?);
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("boulder-io")
        .build()?
        .block_on(serve(Arc::new(config), runtime, router, chains, workers))
}

async fn serve(
    config: Arc<Config>,
    runtime: Arc<Runtime>,
    router: Option<Router>,
    chains: Vec<Chain>,
    workers: usize,
) -> Result<()> {
    let metrics = Arc::new(Metrics::new());
    let status = Arc::new(Status {
        metrics: metrics.clone(),
        ..Status::default()
    });
    let shutdown = CancellationToken::new();
    if config.http.enabled {
        let listener = tokio::net::TcpListener::bind(config.http.listen)
            .await
            .with_context(|| format!("http.listen: cannot listen on {}", config.http.listen))?;
        tracing::info!(addr = %listener.local_addr()?, "status endpoint listening: /metrics /health /ready");
        tokio::spawn(status::serve(listener, status.clone(), shutdown.clone()));
    }
    let kafka_config = config.kafka.as_ref().expect("checked");
    let running = Running::start(&config, router, chains, metrics.clone()).await?;
    let pipeline = running.pipeline.clone();
    let dead_letter_queue = running.dlq.health();
    let _ = status.dead_letter_queue.set(dead_letter_queue.clone());
    boulder::reload::spawn_watcher(Arc::downgrade(&pipeline), runtime, config.clone());

    let inputs = Arc::new(Inputs::new(&config.inputs).map_err(anyhow::Error::msg)?);
    let consumer = Arc::new(
        kafka::consumer(kafka_config, &inputs, metrics.clone())
            .context("creating the Kafka consumer")?,
    );
    let storing = Arc::downgrade(&consumer);
    let tracker = Tracker::with_gauge(
        Box::new(move |topic, partition, offset| {
            if let Some(consumer) = storing.upgrade() {
                if let Err(e) = consumer.store_offset(topic, partition, offset) {
                    tracing::warn!(topic, partition, offset, error = %e, "cannot store offset");
                }
            }
        }),
        metrics.messages_in_flight.clone(),
    );

    consumer.context().set_tracker(tracker.clone());
    let stop_consuming = CancellationToken::new();
    // The handlers are in place before "boulder running" is said, so a signal
    // from then on is a clean stop, never the default action.
    let signals = Signals::install()?;
    tokio::spawn(stop_on_signal(
        signals,
        stop_consuming.clone(),
        config.pipeline.shutdown_timeout,
    ));
    tracing::info!(
        brokers = %kafka_config.brokers,
        group = %kafka_config.group_id,
        topics = ?inputs.subscription(),
        workers,
        "boulder running"
    );
    status.consuming.store(true, Ordering::Relaxed);
    kafka::consume(
        consumer.clone(),
        inputs,
        tracker.clone(),
        pipeline.clone(),
        metrics.clone(),
        &config.pipeline,
        workers,
        dead_letter_queue,
        stop_consuming,
    )
    .await;
    status.consuming.store(false, Ordering::Relaxed);

    // In-flight groups are handed off; let the writers and the dead-letter queue
    // finish, then commit what they confirmed.
    drop(pipeline);
    running.finish().await;
    kafka::commit(&consumer);
    shutdown.cancel();
    if tracker.pending() > 0 {
        bail!(
            "{} messages were not finished and will be consumed again",
            tracker.pending()
        );
    }
    tracing::info!("boulder stopped");
    Ok(())
}

/// The pipeline with its writers and dead-letter sender running: what `run` and
/// `replay` share.
pub(super) struct Running {
    pub(super) pipeline: Arc<Pipeline>,
    pub(super) dlq: Arc<Dlq>,
    writers: Vec<tokio::task::JoinHandle<()>>,
    dead_letter_task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Makes sure the dead-letter topic exists, starts a writer per output and the
    /// dead-letter sender, and builds the pipeline.
    pub(super) async fn start(
        config: &Config,
        router: Option<Router>,
        chains: Vec<Chain>,
        metrics: Arc<Metrics>,
    ) -> Result<Running> {
        let kafka_config = config.kafka.as_ref().expect("checked");
        let dlq_config = config.dlq.as_ref().expect("checked");
        if let Err(e) = Dlq::ensure_topic(kafka_config, dlq_config).await {
            // Not a reason to exit: the first dead letter will wait (and consumption
            // with it) until the topic can be written, and say so.
            tracing::error!(topic = %dlq_config.topic, error = %e, "the dead-letter topic is not usable; dead letters will be retried until it is");
        }
        let dlq = Arc::new(
            Dlq::new(kafka_config, dlq_config, metrics.clone())
                .context("creating the dead-letter producer")?,
        );
        let client = sink::http::client().context("loading the system's CA certificates")?;

        let mut writers = Vec::new();
        let mut tenants = Vec::new();
        for (tenant_config, chain) in config.tenants.iter().zip(chains) {
            let mut outputs = Vec::new();
            for (i, output) in tenant_config.outputs.iter().enumerate() {
                let name = output
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("{}-{}", tenant_config.name, i + 1));
                let token = match &output.token_env {
                    Some(var) => Some(std::env::var(var).with_context(|| {
                        format!(
                            "tenant {:?} output {name:?}: token_env {var:?} is not set",
                            tenant_config.name
                        )
                    })?),
                    None => None,
                };
                let endpoint =
                    Endpoint::new(output, token.as_deref()).map_err(anyhow::Error::msg)?;
                let (handle, task) = sink::spawn(
                    &tenant_config.name,
                    name,
                    output,
                    endpoint,
                    client.clone(),
                    dlq.clone(),
                    metrics.clone(),
                );
                outputs.push(handle);
                writers.push(task);
            }
            tenants.push(Tenant::new(
                chain,
                outputs,
                tenant_config.limits.quarantine_after,
            ));
        }

        let (dead_letters, dead_letter_rx) = mpsc::channel::<DeadLetter>(DEAD_LETTER_QUEUE);
        let dead_letter_task = tokio::spawn(send_dead_letters(dlq.clone(), dead_letter_rx));
        let pipeline = Arc::new(Pipeline::new(
            router,
            tenants,
            dead_letters,
            metrics.clone(),
            Budget::new(
                config.pipeline.max_in_flight_points,
                metrics.points_in_flight.clone(),
            ),
        ));
        Ok(Running {
            pipeline,
            dlq,
            writers,
            dead_letter_task,
        })
    }

    /// Waits for every writer and the dead-letter sender to finish what they hold;
    /// call once every other handle of the pipeline is dropped.
    pub(super) async fn finish(self) {
        drop(self.pipeline);
        for w in self.writers {
            let _ = w.await;
        }
        let _ = self.dead_letter_task.await;
    }
}

async fn send_dead_letters(dlq: Arc<Dlq>, mut rx: mpsc::Receiver<DeadLetter>) {
    let mut sending = tokio::task::JoinSet::new();
    while let Some(letter) = rx.recv().await {
        // A bounded number in flight: the channel fills and the pipeline waits.
        while sending.len() >= 64 {
            sending.join_next().await;
        }
        let dlq = dlq.clone();
        sending.spawn(async move { dlq.send(letter).await });
    }
    while sending.join_next().await.is_some() {}
}

/// First signal: stop consuming and finish what is in flight. Second signal, or
/// `pipeline.shutdown_timeout` passing: exit at once. Offsets stored so far were
/// committed by librdkafka; the rest is consumed again (at-least-once).
async fn stop_on_signal(
    mut signals: Signals,
    shutdown: CancellationToken,
    deadline: std::time::Duration,
) {
    signals.next().await;
    tracing::info!(deadline = ?deadline, "stopping: finishing what is in flight (a second signal exits at once)");
    shutdown.cancel();
    tokio::select! {
        _ = signals.next() => {
            tracing::warn!("second signal: exiting now; unfinished messages will be consumed again");
        }
        _ = tokio::time::sleep(deadline) => {
            tracing::error!(deadline = ?deadline, "shutdown deadline passed: exiting now; unfinished messages will be consumed again");
        }
    }
    std::process::exit(130);
}

/// SIGINT and SIGTERM, caught from the moment they are installed.
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt()).context("installing a SIGINT handler")?,
            terminate: signal(SignalKind::terminate()).context("installing a SIGTERM handler")?,
        })
    }

    /// The next SIGINT or SIGTERM.
    async fn next(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

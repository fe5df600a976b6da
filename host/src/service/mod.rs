//! The service that `boulder run` is: the pieces assembled ([`Service`]: a writer
//! per output, the dead-letter sender, the pipeline), the consumer loop that feeds
//! them (`consume`: grouping, dispatch to workers, pause and resume), the status
//! endpoint, and the signals that stop it all (`signals`).
//!
//! `boulder replay` assembles the same [`Service`] and feeds it from the
//! dead-letter topic instead.

mod consume;
mod reconfigure;
mod signals;

use crate::ack::Tracker;
use crate::config::{Config, TenantConfig};
use crate::dlq::{DeadLetter, Dlq};
use crate::kafka::{self, Inputs};
use crate::metrics::Metrics;
use crate::pipeline::{Pipeline, Routing, Tenant};
use crate::runtime::{Chain, Router, Runtime};
use crate::sink::http::{Endpoint, HttpClient};
use crate::sink::{self, Budget, OutputHandle};
use crate::status::{self, Status};
use anyhow::{bail, Context, Result};
use consume::Consumption;
use rdkafka::consumer::Consumer;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Dead letters queued from the pipeline before it waits.
const DEAD_LETTER_QUEUE: usize = 1024;
/// Dead letters being written at once.
const DEAD_LETTERS_IN_FLIGHT: usize = 64;

/// Consumes the config's inputs until a signal stops it, then lets the writers and
/// the dead-letter queue finish and commits what they confirmed. Fails if it
/// cannot start, or if messages were left unfinished.
pub async fn run(
    config: Arc<Config>,
    runtime: Arc<Runtime>,
    router: Option<Router>,
    chains: Vec<Chain>,
    workers: usize,
) -> Result<()> {
    let metrics = Arc::new(Metrics::new());
    let status = Arc::new(Status::new(metrics.clone()));
    let stop_serving = CancellationToken::new();
    if config.http.enabled {
        let listener = tokio::net::TcpListener::bind(config.http.listen)
            .await
            .with_context(|| format!("http.listen: cannot listen on {}", config.http.listen))?;
        tracing::info!(addr = %listener.local_addr()?, "status endpoint listening: /metrics /health /ready");
        tokio::spawn(status::serve(
            listener,
            status.clone(),
            stop_serving.clone(),
        ));
    }
    let kafka_config = config.kafka.as_ref().expect("checked");
    let service = Service::start(&config, router, chains, metrics.clone()).await?;
    let _ = status.dead_letter_queue.set(service.dlq.health());
    crate::reload::spawn_watcher(Arc::downgrade(&service.pipeline), runtime.clone());

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
    let signals = signals::Signals::install()?;
    tokio::spawn(signals.stop_on_signal(stop_consuming.clone(), config.pipeline.shutdown_timeout));
    let reloads = tokio::spawn(reconfigure::reload_on_hangup(
        signals::Signals::hangups()?,
        config.path.clone(),
        Arc::downgrade(&service.pipeline),
        runtime.clone(),
        service.writers.clone(),
    ));
    tracing::info!(
        brokers = %kafka_config.brokers,
        group = %kafka_config.group_id,
        topics = ?inputs.subscription(),
        workers,
        "boulder running"
    );
    status.consuming.store(true, Ordering::Relaxed);
    let consumption = Consumption {
        consumer: consumer.clone(),
        inputs,
        tracker: tracker.clone(),
        pipeline: service.pipeline.clone(),
        metrics,
        status: status.clone(),
        config: config.pipeline.clone(),
        workers,
        dead_letter_queue: service.dlq.health(),
    };
    consumption.run(stop_consuming).await;
    status.consuming.store(false, Ordering::Relaxed);
    // No reload from here on: the routing stays as the last groups left it.
    reloads.abort();

    // Every group is handed off; let the writers and the dead-letter queue finish,
    // then commit what they confirmed.
    service.finish().await;
    kafka::commit(&consumer);
    stop_serving.cancel();
    if tracker.pending() > 0 {
        bail!(
            "{} messages were not finished and will be consumed again",
            tracker.pending()
        );
    }
    tracing::info!("boulder stopped");
    Ok(())
}

/// The pipeline with its writers and dead-letter sender running.
pub struct Service {
    /// Where groups of messages go.
    pub pipeline: Arc<Pipeline>,
    /// The dead-letter producer.
    pub dlq: Arc<Dlq>,
    /// The outputs' writers, which a config reload adds to.
    pub writers: Arc<Writers>,
    dead_letter_task: tokio::task::JoinHandle<()>,
}

impl Service {
    /// Makes sure the dead-letter topic exists, starts a writer per output and the
    /// dead-letter sender, and builds the pipeline.
    pub async fn start(
        config: &Arc<Config>,
        router: Option<Router>,
        chains: Vec<Chain>,
        metrics: Arc<Metrics>,
    ) -> Result<Service> {
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
        let writers = Arc::new(Writers {
            client: sink::http::client().context("loading the system's CA certificates")?,
            dlq: dlq.clone(),
            metrics: metrics.clone(),
            tasks: Mutex::default(),
        });
        let mut tenants = Vec::new();
        for (tenant_config, chain) in config.tenants.iter().zip(chains) {
            let outputs = writers.outputs(tenant_config, None)?;
            tenants.push(Arc::new(Tenant::new(chain, outputs, &tenant_config.limits)));
        }

        let (dead_letters, dead_letter_rx) = mpsc::channel::<DeadLetter>(DEAD_LETTER_QUEUE);
        let dead_letter_task = crate::fatal::spawn(
            "dead-letter sender",
            send_dead_letters(dlq.clone(), dead_letter_rx),
        );
        let pipeline = Arc::new(Pipeline::new(
            Routing::new(config.clone(), router.map(Arc::new), tenants),
            dead_letters,
            metrics.clone(),
            Budget::new(
                config.pipeline.max_in_flight_points,
                metrics.points_in_flight.clone(),
            ),
            &config.pipeline,
        ));
        Ok(Service {
            pipeline,
            dlq,
            writers,
            dead_letter_task,
        })
    }

    /// Waits for every writer and the dead-letter sender to finish what they hold;
    /// call once every other handle of the pipeline is dropped.
    pub async fn finish(self) {
        drop(self.pipeline);
        let tasks = std::mem::take(&mut *self.writers.tasks.lock().expect("poisoned"));
        for task in tasks {
            let _ = task.await;
        }
        let _ = self.dead_letter_task.await;
    }
}

/// Starts the writers of tenants' outputs, at start and on a config reload, and
/// keeps their tasks so that a stop waits for what they hold. A writer stops once
/// no routing has its output any more and it wrote (or dead-lettered) the rest.
pub struct Writers {
    client: HttpClient,
    dlq: Arc<Dlq>,
    metrics: Arc<Metrics>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Writers {
    /// The writers of `tenant`'s outputs: the running one of `was` (the tenant as it
    /// was configured and runs) for each output whose config is unchanged, a new
    /// one for each other. Fails if an output's token variable is not set.
    pub fn outputs(
        &self,
        tenant: &TenantConfig,
        was: Option<(&TenantConfig, &Tenant)>,
    ) -> Result<Vec<OutputHandle>> {
        let mut outputs = Vec::new();
        for (i, output) in tenant.outputs.iter().enumerate() {
            let name = tenant.output_name(i);
            let running = was.and_then(|(config, running)| {
                let j = (0..config.outputs.len()).find(|&j| config.output_name(j) == name)?;
                let handle = running.outputs.iter().find(|h| *h.name == *name)?;
                (config.outputs[j] == *output).then(|| handle.clone())
            });
            if let Some(handle) = running {
                outputs.push(handle);
                continue;
            }
            let token = match &output.token_env {
                Some(var) => Some(std::env::var(var).with_context(|| {
                    format!(
                        "tenant {:?} output {name:?}: token_env {var:?} is not set",
                        tenant.name
                    )
                })?),
                None => None,
            };
            let endpoint = Endpoint::new(output, token.as_deref()).map_err(anyhow::Error::msg)?;
            let (handle, task) = sink::spawn(
                &tenant.name,
                name,
                output,
                endpoint,
                self.client.clone(),
                self.dlq.clone(),
                self.metrics.clone(),
            );
            outputs.push(handle);
            let mut tasks = self.tasks.lock().expect("poisoned");
            tasks.retain(|t| !t.is_finished());
            tasks.push(task);
        }
        Ok(outputs)
    }
}

async fn send_dead_letters(dlq: Arc<Dlq>, mut rx: mpsc::Receiver<DeadLetter>) {
    let mut sending = tokio::task::JoinSet::new();
    while let Some(letter) = rx.recv().await {
        // A bounded number in flight: the channel fills and the pipeline waits.
        while sending.len() >= DEAD_LETTERS_IN_FLIGHT {
            sending.join_next().await;
        }
        let dlq = dlq.clone();
        sending.spawn(crate::fatal::exit_on_panic(
            "dead-letter sender",
            async move { dlq.send(letter).await },
        ));
    }
    while sending.join_next().await.is_some() {}
}

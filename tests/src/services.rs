//! The real services the end-to-end tests run against, started by
//! `scripts/services.sh` (never assumed): a Kafka-protocol broker and two
//! VictoriaMetrics instances. Also the tests' own Kafka producer and the
//! `boulder run` child process.

use crate::{boulder_bin, poll, root};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The broker, `host:port`.
pub fn kafka() -> String {
    std::env::var("BOULDER_KAFKA").unwrap_or_else(|_| "127.0.0.1:19092".into())
}

/// The first VictoriaMetrics, `http://host:port`.
pub fn vm_a() -> String {
    std::env::var("BOULDER_VM_A").unwrap_or_else(|_| "http://127.0.0.1:18428".into())
}

/// The second VictoriaMetrics.
pub fn vm_b() -> String {
    std::env::var("BOULDER_VM_B").unwrap_or_else(|_| "http://127.0.0.1:18429".into())
}

/// Panics with what to do unless every service answers, quoting the end of the
/// service's log (written by `scripts/services.sh`) so that a CI log says why.
pub fn require_services() {
    for (name, addr) in [
        ("kafka", kafka()),
        ("vm-a", host_port(&vm_a())),
        ("vm-b", host_port(&vm_b())),
    ] {
        let up =
            TcpStream::connect_timeout(&addr.parse().expect("an address"), Duration::from_secs(2))
                .is_ok();
        if !up {
            let state = std::env::var_os("BOULDER_SERVICES_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| root().join("target/services"));
            let log = state.join(format!("{name}.log"));
            let tail = std::fs::read_to_string(&log)
                .map(|text| {
                    let lines: Vec<&str> = text.lines().collect();
                    lines[lines.len().saturating_sub(20)..].join("\n")
                })
                .unwrap_or_else(|e| format!("(no log at {}: {e})", log.display()));
            panic!(
                "{name} is not running at {addr}: start the services with \
                 `scripts/services.sh start` (scripts/test.sh does). The end of its log:\n{tail}"
            );
        }
    }
}

fn host_port(url: &str) -> String {
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned()
}

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{prefix}-{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        nanos % 1_000_000_000
    )
}

/// Now, in milliseconds since the epoch, rounded to a whole second (VictoriaMetrics
/// keeps milliseconds; recent data keeps it from opening old partitions).
pub fn now_ms() -> i64 {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    ms - ms % 1000
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// Creates a topic.
pub fn create_topic(name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", kafka())
        .create()
        .expect("admin client");
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let results =
        block_on(admin.create_topics([&topic], &AdminOptions::new())).expect("create_topics");
    for r in results {
        r.unwrap_or_else(|(t, e)| panic!("creating topic {t}: {e}"));
    }
}

/// Produces messages (key, value) to a topic, in order, spread over partitions by key.
pub fn produce<K: AsRef<str>>(topic: &str, messages: &[(K, Vec<u8>)]) {
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka())
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.max.bytes", "16777216")
        .create()
        .expect("producer");
    let confirm = |delivery: rdkafka::producer::DeliveryFuture| async move {
        delivery
            .await
            .expect("the producer is alive")
            .unwrap_or_else(|(e, _)| panic!("producing to {topic}: {e}"));
    };
    block_on(async {
        // Queued all at once and confirmed after (the idempotent producer keeps
        // their order): large backlogs are produced in a second, not one round
        // trip per message.
        let mut pending = std::collections::VecDeque::new();
        for (key, value) in messages {
            let mut record = FutureRecord::to(topic).key(key.as_ref()).payload(value);
            loop {
                match producer.send_result(record) {
                    Ok(delivery) => break pending.push_back(delivery),
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r))
                        if !pending.is_empty() =>
                    {
                        record = r;
                        confirm(pending.pop_front().expect("not empty")).await;
                    }
                    Err((e, _)) => panic!("producing to {topic}: {e}"),
                }
            }
        }
        for delivery in pending {
            confirm(delivery).await;
        }
    });
}

/// Produces messages like [`produce`], each in a record batch of its own (every
/// send confirmed before the next). Tansu 0.6.0 serves a fetch that starts inside
/// a record batch from the next batch on, skipping the rest of the first (seen
/// 2026-12-06: batches at offsets 0, 10 and 20, a fetch at 11 got 20-29). A
/// consumer that takes over a partition or restarts fetches from the committed
/// offset, which may lie inside a batch, so a test whose consumers do that needs
/// a batch per message to lose nothing on Tansu. Kafka serves such a fetch from
/// the batch that holds the offset.
pub fn produce_each<K: AsRef<str>>(topic: &str, messages: &[(K, Vec<u8>)]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka())
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "0")
        .create()
        .expect("producer");
    block_on(async {
        for (key, value) in messages {
            let record = FutureRecord::to(topic).key(key.as_ref()).payload(value);
            producer
                .send(record, Duration::from_secs(30))
                .await
                .unwrap_or_else(|(e, _)| panic!("producing to {topic}: {e}"));
        }
    });
}

/// The offset a consumer group has committed for a partition (the next one it
/// will read), if any.
pub fn committed_offset(group: &str, topic: &str, partition: i32) -> Option<i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Offset, TopicPartitionList};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka())
        .set("group.id", group)
        .create()
        .expect("consumer");
    let mut wanted = TopicPartitionList::new();
    wanted.add_partition(topic, partition);
    let committed = consumer
        .committed_offsets(wanted, Duration::from_secs(10))
        .expect("reading committed offsets");
    let offset = committed
        .find_partition(topic, partition)
        .map(|p| p.offset());
    match offset {
        Some(Offset::Offset(o)) => Some(o),
        _ => None,
    }
}

/// The headers of a record, as UTF-8 strings.
pub fn headers(m: &rdkafka::message::OwnedMessage) -> BTreeMap<String, String> {
    boulder::dlq::headers_of(m)
}

/// Consumes every record of a topic from the start (for reading the dead-letter queue).
pub fn consume_all(
    topic: &str,
    expect: usize,
    within: Duration,
) -> Vec<rdkafka::message::OwnedMessage> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka())
        .set("group.id", unique("reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        // The topic may not exist yet: notice it when it does.
        .set("topic.metadata.refresh.interval.ms", "500")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let deadline = Instant::now() + within;
    let mut records = Vec::new();
    while records.len() < expect && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            records.push(m.detach());
        }
    }
    records
}

/// Dead letters in the order of the messages they came from (partition, then
/// offset, from their Connect headers): letters are sent concurrently, so the
/// queue may hold them in another order.
pub fn by_source(
    mut letters: Vec<rdkafka::message::OwnedMessage>,
) -> Vec<rdkafka::message::OwnedMessage> {
    letters.sort_by_key(|m| {
        let h = headers(m);
        let number = |key: &str| h.get(key).and_then(|v| v.parse::<i64>().ok()).unwrap_or(-1);
        (
            number("__connect.errors.partition"),
            number("__connect.errors.offset"),
        )
    });
    letters
}

/// The config every end-to-end test shares: the built components and a shared
/// compile cache, the broker with consumer group `name` and `kafka_options`
/// (inside the braces of an inline table), dead letters to `<name>-dlq`, the
/// status endpoint on a free port; `rest` adds inputs, router and tenants.
pub fn base_config(name: &str, kafka_options: &str, rest: &str) -> String {
    base_config_with_dlq(name, kafka_options, "", rest)
}

/// [`base_config`] with one input: topic `name`, in Influx line protocol.
pub fn influx_config(name: &str, rest: &str) -> String {
    let input = format!("[[inputs]]\ntopics = [\"{name}\"]\nformat = \"influx-line\"\n");
    base_config(name, "", &format!("{input}{rest}"))
}

/// [`influx_config`] for several tenants (`tenants`, TOML): the built-in router
/// sends each point to the tenant its tag `tenant` names, and groups are handed on
/// quickly.
pub fn routed_by_tag(name: &str, tenants: &str) -> String {
    influx_config(
        name,
        &format!(
            r#"
            [pipeline]
            linger = "10ms"

            [router]
            component = "route"
            params = {{ rules = [{{ tag = "tenant" }}] }}

            {tenants}
            "#
        ),
    )
}

/// [`base_config`] with more keys for the `[dlq]` table (`dlq_extra`, e.g.
/// `create = false`).
pub fn base_config_with_dlq(
    name: &str,
    kafka_options: &str,
    dlq_extra: &str,
    rest: &str,
) -> String {
    format!(
        r#"
        [runtime]
        components_dir = {components:?}
        cache_dir = {cache:?}

        [kafka]
        brokers = "{kafka}"
        group_id = "{name}"
        options = {{ {kafka_options} }}

        [dlq]
        topic = "{name}-dlq"
        {dlq_extra}

        [http]
        listen = "127.0.0.1:0"

        {rest}
        "#,
        components = crate::components().display().to_string(),
        cache = root().join("target/test-cache").display().to_string(),
        kafka = kafka(),
    )
}

/// Runs `boulder replay` with `config` (TOML text, written to a file named after
/// `name`) and `args`; returns its summary (stderr), panicking if it fails.
pub fn replay(name: &str, config: &str, args: &[&str]) -> String {
    let path = root().join(format!("target/test-run/{name}-replay.toml"));
    std::fs::create_dir_all(path.parent().expect("a folder")).unwrap();
    std::fs::write(&path, config).unwrap();
    let out = Command::new(boulder_bin())
        .args(["replay", "--config", path.to_str().unwrap()])
        .args(args)
        .env("XDG_CACHE_HOME", root().join("target/test-cache-home"))
        .output()
        .expect("running boulder replay");
    let summary = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "boulder replay failed:\n{summary}");
    summary
}

/// A `boulder run` child process, stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Boulder {
    child: Child,
    /// Its stderr.
    pub log: PathBuf,
    /// Its config file.
    pub config: PathBuf,
}

impl Boulder {
    /// Writes `config` to a file and starts `boulder run` on it.
    pub fn run(name: &str, config: &str) -> Boulder {
        Boulder::run_with_env(name, config, &[])
    }

    /// [`Boulder::run`] with extra environment variables.
    pub fn run_with_env(name: &str, config: &str, env: &[(&str, &str)]) -> Boulder {
        let dir = root().join("target/test-run");
        std::fs::create_dir_all(&dir).unwrap();
        let config_path = dir.join(format!("{name}.toml"));
        std::fs::write(&config_path, config).unwrap();
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(boulder_bin())
            .args(["run", "--config", config_path.to_str().unwrap()])
            .env("XDG_CACHE_HOME", root().join("target/test-cache-home"))
            .env("BOULDER_LOG", "info,boulder=debug")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting boulder run");
        Boulder {
            child,
            log,
            config: config_path,
        }
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The address of its status endpoint, from its log (configs in tests listen on
    /// port 0).
    pub fn status_addr(&self) -> String {
        poll(Duration::from_secs(30), Duration::from_millis(50), || {
            let log = self.log();
            let line = log
                .lines()
                .find(|l| l.contains("status endpoint listening"))
                .ok_or_else(|| format!("no status endpoint in the log:\n{log}"))?;
            let addr = line.split("addr=").nth(1).expect("addr= in the line");
            Ok(addr.split_whitespace().next().unwrap().to_owned())
        })
    }

    /// GETs a path of its status endpoint: `(status code, body)`.
    pub fn status(&self, path: &str) -> (u16, String) {
        http_get(&self.status_addr(), path)
    }

    /// The value of one sample of its `/metrics` (see [`metric`]).
    pub fn metric(&self, series: &str) -> Option<f64> {
        metric(&self.status("/metrics").1, series)
    }

    /// Waits until its log contains `text`, or panics after `within`.
    pub fn wait_log(&self, text: &str, within: Duration) {
        crate::wait_until(text, within, || self.log(), || self.log().contains(text));
    }

    /// Waits until one sample of its `/metrics` reads `value`, or panics after `within`.
    pub fn wait_metric(&self, series: &str, value: f64, within: Duration) {
        poll(within, Duration::from_millis(100), || {
            let (_, text) = self.status("/metrics");
            match metric(&text, series) == Some(value) {
                true => Ok(()),
                false => Err(format!("{series} is not {value}:\n{text}\n{}", self.log())),
            }
        })
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Its resident set size (`VmRSS` in `/proc/<pid>/status`), in bytes.
    pub fn rss_bytes(&self) -> u64 {
        let path = format!("/proc/{}/status", self.child.id());
        let status = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no VmRSS in {path}:\n{status}"));
        kib * 1024
    }

    /// Waits for the process to exit by itself (within 60 s).
    pub fn wait(&mut self) -> std::process::ExitStatus {
        self.exit_within(Duration::from_secs(60))
    }

    fn exit_within(&mut self, within: Duration) -> std::process::ExitStatus {
        poll(within, Duration::from_millis(50), || {
            let status = self.child.try_wait().unwrap();
            status.ok_or_else(|| format!("boulder did not exit:\n{}", self.log()))
        })
    }

    /// Kills the process at once (SIGKILL): nothing is flushed or committed.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits until it has started consuming (its signal handlers are installed).
    pub fn wait_running(&mut self) {
        poll(Duration::from_secs(60), Duration::from_millis(50), || {
            if self.log().contains("boulder running") {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("boulder exited ({status}) before running:\n{}", self.log());
            }
            Err(format!("boulder did not start:\n{}", self.log()))
        })
    }

    /// Replaces its config file with `config` (by rename, so that it is never
    /// read half-written) and sends SIGHUP, once it is running.
    pub fn reload(&self, config: &str) {
        self.wait_log("boulder running", Duration::from_secs(60));
        let new = self.config.with_extension("new");
        std::fs::write(&new, config).unwrap();
        std::fs::rename(&new, &self.config).unwrap();
        let sent = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    }

    /// Sends SIGTERM (once it is running) and waits for a clean exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        self.wait_running();
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.exit_within(Duration::from_secs(30))
    }
}

impl Drop for Boulder {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One series from VictoriaMetrics' `/api/v1/export`.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Labels, `__name__` included.
    pub labels: BTreeMap<String, String>,
    /// Samples as (timestamp ms, value), in time order.
    pub samples: Vec<(i64, f64)>,
}

/// Raw samples of every series matching a selector.
pub fn export(vm: &str, selector: &str) -> Vec<Series> {
    let body = format!("match[]={}", urlencode(selector));
    let text = http_post(vm, "/api/v1/export", &body);
    let mut series: Vec<Series> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            let labels = v["metric"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                .collect();
            let ts = v["timestamps"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_i64().unwrap());
            let vals = v["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap_or(f64::NAN));
            let mut samples: Vec<(i64, f64)> = ts.zip(vals).collect();
            samples.sort_by_key(|s| s.0);
            Series { labels, samples }
        })
        .collect();
    series.sort_by(|a, b| a.labels.cmp(&b.labels));
    series
}

/// Distinct (series, timestamp) pairs in `series`: what at-least-once must deliver
/// in full, duplicates aside.
pub fn distinct_samples(series: &[Series]) -> usize {
    let mut seen = std::collections::HashSet::new();
    for s in series {
        for (t, _) in &s.samples {
            seen.insert((format!("{:?}", s.labels), *t));
        }
    }
    seen.len()
}

/// Polls until VictoriaMetrics holds `want` distinct (series, timestamp) pairs.
pub fn wait_for_distinct(
    vm: &str,
    selector: &str,
    want: usize,
    within: Duration,
    log: impl Fn() -> String,
) {
    let n = poll(within, Duration::from_millis(500), || {
        let n = distinct_samples(&export(vm, selector));
        match n >= want {
            true => Ok(n),
            false => Err(format!(
                "{vm} holds {n} of {want} distinct samples for {selector}\n{}",
                log()
            )),
        }
    });
    assert_eq!(n, want, "more distinct samples than sent");
}

/// Polls `export` until it holds `samples` samples in all, or panics after `within`.
pub fn wait_for_samples(
    vm: &str,
    selector: &str,
    samples: usize,
    within: Duration,
    log: impl Fn() -> String,
) -> Vec<Series> {
    poll(within, Duration::from_millis(250), || {
        let series = export(vm, selector);
        let n: usize = series.iter().map(|s| s.samples.len()).sum();
        match n >= samples {
            true => Ok(series),
            false => Err(format!(
                "{vm} holds {n} of {samples} samples for {selector}: {series:#?}\nboulder log:\n{}",
                log()
            )),
        }
    })
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A minimal HTTP/1.0 GET: `(status code, body)`.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("{addr}: {e}"));
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status code");
    (code, body.to_owned())
}

/// The value of one sample in Prometheus text, e.g. `boulder_points_written_total{tenant="ops",output="ops-1"}`.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// A minimal HTTP/1.0 POST (no chunking, connection closes): enough for loopback.
fn http_post(base: &str, path: &str, form: &str) -> String {
    let addr = host_port(base);
    let mut stream = TcpStream::connect(&addr).unwrap_or_else(|e| panic!("{addr}: {e}"));
    write!(
        stream,
        "POST {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
        form.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(
        head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"),
        "{head}\n{body}"
    );
    body.to_owned()
}

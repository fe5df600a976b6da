//! The config file: one TOML file that describes the whole deployment.
//!
//! Every table rejects unknown keys, every default is documented on its field, and
//! [`Config::load`] checks the values that serde cannot (ranges, duplicates), naming
//! the file and the key. `boulder.example.toml` at the top of the repository is the
//! commented reference.

use crate::decode::Precision;
use boulder_batch::Format;
use bytesize::ByteSize;
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A config problem, naming the file and what is wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config {path}: cannot read: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or a key or value does not fit the schema. The
    /// message from `toml` carries the line, column and key.
    #[error("config {path}: {message}")]
    Parse {
        /// The config file.
        path: PathBuf,
        /// What `toml` said, with the line and a snippet.
        message: String,
    },
    /// A value is well-formed but not acceptable.
    #[error("config {path}: {key}: {message}")]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// The dotted key, e.g. `tenants[1].limits.memory`.
        key: String,
        /// What is wrong and what is expected.
        message: String,
    },
}

/// The whole config file.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The WebAssembly runtime, shared by every tenant.
    #[serde(default)]
    pub runtime: RuntimeConfig,
    /// The router: assigns each point to its tenant(s). Optional for
    /// `boulder transform`, which can run a tenant's chain alone.
    pub router: Option<StageConfig>,
    /// The tenants, each with its chain of transforms and its outputs.
    #[serde(default)]
    pub tenants: Vec<TenantConfig>,
    /// The Kafka cluster to consume from (required by `boulder run`).
    pub kafka: Option<KafkaConfig>,
    /// What to consume, and how to decode it (at least one for `boulder run`).
    #[serde(default)]
    pub inputs: Vec<InputConfig>,
    /// Where failures go (required by `boulder run`: nothing is dropped silently).
    pub dlq: Option<DlqConfig>,
    /// How messages are grouped into batches and how many run at once.
    #[serde(default)]
    pub pipeline: PipelineConfig,
    /// The status endpoint: `/metrics`, `/health`, `/ready`.
    #[serde(default)]
    pub http: HttpConfig,
    /// The folder of the config file, against which relative paths are resolved.
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// The path the config was read from, for messages.
    #[serde(skip)]
    pub path: PathBuf,
}

/// `[runtime]`: the WebAssembly engine, one per process.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Where built-in components (`component = "validate"`) are found. Default:
    /// `$BOULDER_COMPONENTS_DIR`, else `components/` beside the `boulder` binary or
    /// one folder up (where `scripts/build-guests.sh` puts them in a checkout).
    pub components_dir: Option<PathBuf>,
    /// Where compiled components are cached, keyed by content hash and wasmtime
    /// version. Default: `$XDG_CACHE_HOME/boulder`, else `~/.cache/boulder` (with
    /// neither variable set, no cache). It must be the user's own folder, not
    /// writable by its group or others: what it holds runs as native code.
    pub cache_dir: Option<PathBuf>,
    /// Whether to cache compiled components on disk at all. Default: true.
    #[serde(default = "default_true")]
    pub cache: bool,
    /// Largest WebAssembly stack a guest may use. Default: 512 KiB. wasmtime sets
    /// this per engine, so it applies to every tenant alike.
    #[serde(default = "default_max_wasm_stack")]
    pub max_wasm_stack: ByteSize,
    /// Most guest instances alive at once, idle ones included, across all
    /// tenants. A stage short of a slot gives up other stages' idle instances, or
    /// waits (up to 5 s) for a running call to give one back. Default: 1000.
    #[serde(default = "default_max_instances")]
    pub max_instances: u32,
    /// Run the built-in transforms (`validate`, `normalize`, `flip-single-fields`,
    /// `route`) as native code compiled into `boulder`, outside the sandbox and its
    /// limits. For measuring what the sandbox costs (`scripts/bench.sh`), not for
    /// production. Tenants' own components always run sandboxed. Default: false.
    #[serde(default)]
    pub native_builtins: bool,
}

impl Default for RuntimeConfig {
    fn default() -> RuntimeConfig {
        RuntimeConfig {
            components_dir: None,
            cache_dir: None,
            cache: true,
            max_wasm_stack: default_max_wasm_stack(),
            max_instances: default_max_instances(),
            native_builtins: false,
        }
    }
}

/// One transform: a component and its parameters.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StageConfig {
    /// A built-in name (`validate`, `normalize`, `flip-single-fields`, `route`) or
    /// the path of a `.wasm` component, relative to the config file.
    pub component: String,
    /// Passed to the component's `init` as a JSON object. Default: empty.
    #[serde(default)]
    pub params: toml::Table,
    /// Limits for the router (`[router]` only; a tenant's stages share the
    /// tenant's `limits`). Default: see [`Limits`].
    #[serde(default)]
    pub limits: Option<Limits>,
}

/// `[[tenants]]`: one tenant.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// The tenant's name: what the router answers, and a label in metrics and
    /// dead letters. Letters, digits, `_`, `-` and `.`.
    pub name: String,
    /// The stages every point of this tenant goes through, in order. May be empty.
    #[serde(default)]
    pub chain: Vec<StageConfig>,
    /// Sandbox limits for every stage of the chain.
    #[serde(default)]
    pub limits: Limits,
    /// Where the tenant's points are written (at least one for `boulder run`).
    #[serde(default)]
    pub outputs: Vec<OutputConfig>,
}

impl TenantConfig {
    /// The name of output `i`: its own, or `<tenant>-<i + 1>`.
    pub fn output_name(&self, i: usize) -> String {
        self.outputs[i]
            .name
            .clone()
            .unwrap_or_else(|| format!("{}-{}", self.name, i + 1))
    }
}

/// `[kafka]`: the cluster, the consumer group, and librdkafka options.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port[,host:port...]`.
    pub brokers: String,
    /// The consumer group. Run more `boulder` processes in one group to scale out.
    #[serde(default = "default_group_id")]
    pub group_id: String,
    /// Passed to librdkafka as they are, for the consumer and the dead-letter
    /// producer alike: TLS (`security.protocol`, `ssl.ca.location`, ...), SASL
    /// (`sasl.mechanism`, `sasl.username`, ...), `auto.offset.reset`, timeouts.
    /// Boulder sets `enable.auto.offset.store = false` itself (offsets are stored
    /// only once points are written or dead-lettered) and refuses an override.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

/// `[[inputs]]`: topics of one format.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InputConfig {
    /// Topic names, or regexes when they start with `^` (librdkafka's syntax);
    /// topics that match and are created later are picked up.
    pub topics: Vec<String>,
    /// How messages are encoded.
    pub format: InputFormat,
    /// Unit of timestamps, for `influx-line` (default `ns`) and `influx-json`
    /// (default `s`, Telegraf's default `json_timestamp_units`). The other formats
    /// say their unit themselves.
    pub precision: Option<Precision>,
}

impl InputConfig {
    /// The precision in force for this input.
    pub fn precision(&self) -> Precision {
        self.precision.unwrap_or(match self.format {
            InputFormat::InfluxJson => Precision::S,
            _ => Precision::Ns,
        })
    }
}

/// The wire formats Boulder decodes.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum InputFormat {
    /// InfluxDB line protocol, many lines per message.
    InfluxLine,
    /// Telegraf's JSON serializer, one metric or a batch.
    InfluxJson,
    /// prometheus-kafka-adapter's JSON.
    PrometheusJson,
    /// OpenTSDB's put JSON, one object or an array.
    OpentsdbJson,
}

impl InputFormat {
    /// The name used in the config.
    pub fn name(self) -> &'static str {
        Format::from(self).name()
    }
}

impl From<InputFormat> for Format {
    fn from(f: InputFormat) -> Format {
        match f {
            InputFormat::InfluxLine => Format::InfluxLine,
            InputFormat::InfluxJson => Format::InfluxJson,
            InputFormat::PrometheusJson => Format::PrometheusJson,
            InputFormat::OpentsdbJson => Format::OpentsdbJson,
        }
    }
}

/// One InfluxDB-v2-compatible endpoint of a tenant.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    /// A name for logs, metrics and dead letters. Default: `<tenant>-<n>` (from 1).
    pub name: Option<String>,
    /// The write endpoint, e.g. `http://127.0.0.1:8428/api/v2/write`
    /// (`https://` uses the system's CA certificates). It may have a query, which
    /// is sent as it is before the `org`, `bucket` and `precision` that Boulder
    /// adds (e.g. VictoriaMetrics's `?extra_label=env=prod`), but it may not set
    /// those three.
    pub url: String,
    /// The `org` query parameter. Default: empty.
    #[serde(default)]
    pub org: String,
    /// The `bucket` query parameter. InfluxDB writes to this bucket; VictoriaMetrics
    /// 1.79 (Debian's) ignores it.
    #[serde(default)]
    pub bucket: String,
    /// Environment variable holding the API token, sent as `Authorization: Token ...`.
    /// `boulder run` refuses to start when it is named but not set.
    pub token_env: Option<String>,
    /// Gzip request bodies. Default: true.
    #[serde(default = "default_true")]
    pub gzip: bool,
    /// Gzip level, 0-9. Default: 1, compressed with ISA-L's igzip (the fastest here,
    /// and smaller than zlib's level 1); the other levels use zlib. Level 6 took six
    /// times as long as level 1 in the pipeline bench (1,508 against 235 µs per
    /// 1,000 points, encoding included).
    #[serde(default = "default_gzip_level")]
    pub gzip_level: u32,
    /// A write is sent when it holds this many points... Default: 10000.
    #[serde(default = "default_batch_points")]
    pub batch_points: usize,
    /// ...or when its oldest point has waited this long. Default: 1s.
    #[serde(default = "default_batch_age", with = "humantime_serde")]
    pub batch_age: Duration,
    /// Deadline for one HTTP request, response included. Default: 10s.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// How long to keep retrying connection errors, timeouts, 429 and 5xx before
    /// dead-lettering the batch. Default: 1h.
    #[serde(default = "default_max_retry_time", with = "humantime_serde")]
    pub max_retry_time: Duration,
    /// Statuses that mean the output itself is wrong (its token, org, bucket or
    /// URL), not its points: the output holds its points and keeps retrying, with
    /// backoff and without `max_retry_time`'s limit, until the answer changes,
    /// while `/ready` names it. Other 4xx answers (but 408, 413 and 429) refuse
    /// the points: Boulder splits the batch to find the ones refused and
    /// dead-letters only those. Default: `[401, 403, 404]`.
    #[serde(default = "default_hold_on")]
    pub hold_on: Vec<u16>,
}

/// `[dlq]`: the dead-letter topic.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DlqConfig {
    /// The topic dead letters are produced to (same cluster as `[kafka]`).
    pub topic: String,
    /// Create the topic at start if it does not exist. Default: true. A topic that
    /// is missing (or cannot be created) does not stop Boulder: the first dead
    /// letter waits, and consumption with it, until the topic can be written.
    #[serde(default = "default_true")]
    pub create: bool,
    /// Partitions of a created topic. Default: 1.
    #[serde(default = "default_dlq_partitions")]
    pub partitions: i32,
    /// Replication factor of a created topic; -1 takes the broker's default. Default: -1.
    #[serde(default = "default_dlq_replication")]
    pub replication: i32,
}

/// `[http]`: the status endpoint.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Serve the endpoint at all. Default: true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Address to listen on. Default: `127.0.0.1:9107`. Port 0 picks a free port
    /// (logged at start).
    #[serde(default = "default_listen")]
    pub listen: std::net::SocketAddr,
}

impl Default for HttpConfig {
    fn default() -> HttpConfig {
        HttpConfig {
            enabled: true,
            listen: default_listen(),
        }
    }
}

fn default_listen() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], 9107))
}

/// `[pipeline]`: batching between Kafka and the runtime.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// How long a stop (SIGINT/SIGTERM) may take to flush and commit before Boulder
    /// exits anyway; what was not finished is consumed again. Default: 30s.
    #[serde(default = "default_shutdown_timeout", with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Points decoded and not yet written or dead-lettered, across all tenants and
    /// outputs, at most; the budget that bounds memory. A stalled output keeps its
    /// points in flight, so the other tenants carry on until it holds the whole
    /// budget, then consumption waits for everyone (their points share
    /// partitions). Default: 200000 (some tens of MB).
    #[serde(default = "default_max_in_flight_points")]
    pub max_in_flight_points: u32,
    /// Messages decoded and transformed together, at most. Default: 1000. A group
    /// closes at `batch_messages` or `batch_bytes`, whichever comes first.
    #[serde(default = "default_batch_messages")]
    pub batch_messages: usize,
    /// Message bytes (payloads) decoded and transformed together, at most (one
    /// message larger than this is a group of its own). Default: 64KiB, some 500
    /// points of line protocol, whatever the number of points per message. Every
    /// guest instance's memory grows to the largest batch it has seen and keeps
    /// that size: `scripts/bench.sh` peaked at 131 MiB with 64 KiB groups against
    /// 157 MiB with the former default of 20 messages (2,000 points), for the same
    /// CPU (docs/PERFORMANCE.md).
    #[serde(default = "default_batch_bytes")]
    pub batch_bytes: ByteSize,
    /// Points handed to one guest call, at most: a group holding more (a large
    /// message, say) goes through the router and the chains in chunks of this
    /// many, so that a guest's memory does not grow with the size of a message.
    /// Default: 10000, a few MB of guest memory with points of typical size,
    /// well inside the default 64 MiB limit.
    #[serde(default = "default_max_points_per_call")]
    pub max_points_per_call: usize,
    /// How long a batch waits for more messages. Default: 20ms.
    #[serde(default = "default_linger", with = "humantime_serde")]
    pub linger: Duration,
    /// Batches transformed at once (threads running guests). Default: the number
    /// of cores.
    pub workers: Option<usize>,
}

impl Default for PipelineConfig {
    fn default() -> PipelineConfig {
        PipelineConfig {
            max_in_flight_points: default_max_in_flight_points(),
            shutdown_timeout: default_shutdown_timeout(),
            batch_messages: default_batch_messages(),
            batch_bytes: default_batch_bytes(),
            max_points_per_call: default_max_points_per_call(),
            linger: default_linger(),
            workers: None,
        }
    }
}

/// Sandbox limits for a guest instance.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Most linear memory one instance may have. Default: 64 MiB. At most 4 GiB.
    #[serde(default = "default_memory")]
    pub memory: ByteSize,
    /// Deadline for one call of a stage (one chunk of points through one
    /// component), in wall-clock time, not CPU time: a guest is stopped once it
    /// has run this long, whatever else the machine was doing. E.g. `"50ms"`.
    /// Default: 1s. Measured with epoch ticks of 5 ms. `cpu_per_batch`, its
    /// former name, is still read.
    #[serde(
        default = "default_deadline_per_call",
        alias = "cpu_per_batch",
        with = "humantime_serde"
    )]
    pub deadline_per_call: Duration,
    /// An output batch may be at most this many times the size of its input (plus
    /// 64 KiB), so a guest cannot flood what comes after it. Default: 8.
    #[serde(default = "default_max_output_ratio")]
    pub max_output_ratio: u32,
    /// After this many calls of the chain in a row fail in a guest (trap,
    /// deadline, out-of-memory, malformed output), the tenant is quarantined (a
    /// failed call narrowed down to some of its messages while the rest passed
    /// does not count, nor does the host's own shortage): its points go
    /// straight to the dead-letter queue until a component file of its chain is
    /// replaced (see [`crate::reload`]) or Boulder restarts. 0 never quarantines.
    /// Default: 5.
    #[serde(default = "default_quarantine_after")]
    pub quarantine_after: u32,
    /// Ingestion rate a tenant may send, in points per second, counted after the
    /// router and before the chain (a tenant's own code cannot opt out). A token
    /// bucket: up to `burst` points at once, refilled at this rate. Default: none.
    pub points_per_second: Option<u32>,
    /// The token bucket's size. Default: `points_per_second` (one second's worth).
    pub burst: Option<u32>,
    /// Most active series (measurement and tags, as the router left them) the
    /// tenant may have: a point of a series not seen within `series_window` is
    /// refused once this many are active; known series flow on. Kept as 64-bit
    /// hashes, at most ~40 bytes per series. Default: none.
    pub max_series: Option<u32>,
    /// How long a series stays active after its last point. Default: 1h.
    #[serde(default = "default_series_window", with = "humantime_serde")]
    pub series_window: Duration,
    /// What happens to points over a limit: `dead-letter` (stage `limit`, class
    /// `boulder.limit.rate` or `boulder.limit.series`) or `drop`; both are
    /// counted in `boulder_points_limited_total`. Default: `dead-letter`.
    #[serde(default)]
    pub over_limit: OverLimit,
}

/// What happens to a tenant's points over one of its ingestion limits.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum OverLimit {
    /// To the dead-letter queue, for replay once the limit is raised.
    #[default]
    DeadLetter,
    /// Dropped, and counted.
    Drop,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            memory: default_memory(),
            deadline_per_call: default_deadline_per_call(),
            max_output_ratio: default_max_output_ratio(),
            quarantine_after: default_quarantine_after(),
            points_per_second: None,
            burst: None,
            max_series: None,
            series_window: default_series_window(),
            over_limit: OverLimit::default(),
        }
    }
}

fn default_series_window() -> Duration {
    Duration::from_secs(3600)
}

fn default_dlq_partitions() -> i32 {
    1
}
fn default_dlq_replication() -> i32 {
    -1
}
fn default_group_id() -> String {
    "boulder".to_owned()
}
fn default_gzip_level() -> u32 {
    1
}
fn default_batch_points() -> usize {
    10_000
}
fn default_batch_age() -> Duration {
    Duration::from_secs(1)
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_hold_on() -> Vec<u16> {
    vec![401, 403, 404]
}
fn default_max_retry_time() -> Duration {
    Duration::from_secs(3600)
}
fn default_max_in_flight_points() -> u32 {
    200_000
}
fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_batch_messages() -> usize {
    1000
}
fn default_batch_bytes() -> ByteSize {
    ByteSize::kib(64)
}
fn default_max_points_per_call() -> usize {
    10_000
}
fn default_linger() -> Duration {
    Duration::from_millis(20)
}
fn default_true() -> bool {
    true
}
fn default_max_wasm_stack() -> ByteSize {
    ByteSize::kib(512)
}
fn default_max_instances() -> u32 {
    1000
}
fn default_memory() -> ByteSize {
    ByteSize::mib(64)
}
fn default_deadline_per_call() -> Duration {
    Duration::from_secs(1)
}
fn default_quarantine_after() -> u32 {
    5
}
fn default_max_output_ratio() -> u32 {
    8
}

/// The largest memory cap a tenant may ask for: wasm32's address space.
pub const MAX_MEMORY: ByteSize = ByteSize::gib(4);

impl Config {
    /// Reads, parses and checks a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses and checks config text; `path` is used for messages and for resolving
    /// relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        config.path = path.to_owned();
        config.base_dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        config.check()?;
        Ok(config)
    }

    fn invalid(&self, key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.clone(),
            key: key.into(),
            message: message.into(),
        }
    }

    fn check(&self) -> Result<(), ConfigError> {
        let stack = self.runtime.max_wasm_stack.as_u64();
        if !(64 * 1024..=64 * 1024 * 1024).contains(&stack) {
            return Err(self.invalid(
                "runtime.max_wasm_stack",
                format!("{} is outside 64 KiB..=64 MiB", self.runtime.max_wasm_stack),
            ));
        }
        if self.runtime.max_instances == 0 {
            return Err(self.invalid("runtime.max_instances", "must be at least 1"));
        }
        if let Some(router) = &self.router {
            self.check_stage("router", router)?;
            if let Some(limits) = &router.limits {
                self.check_limits("router.limits", limits)?;
            }
        }
        let mut names = HashSet::new();
        for (i, tenant) in self.tenants.iter().enumerate() {
            let key = format!("tenants[{i}]");
            let valid = |c: char| c.is_ascii_alphanumeric() || "_-.".contains(c);
            if tenant.name.is_empty() || !tenant.name.chars().all(valid) {
                return Err(self.invalid(
                    format!("{key}.name"),
                    format!(
                        "{:?} is not a tenant name: use letters, digits, '_', '-' and '.'",
                        tenant.name
                    ),
                ));
            }
            if !names.insert(tenant.name.as_str()) {
                return Err(self.invalid(
                    format!("{key}.name"),
                    format!("tenant {:?} is defined twice", tenant.name),
                ));
            }
            for (j, stage) in tenant.chain.iter().enumerate() {
                self.check_stage(&format!("{key}.chain[{j}]"), stage)?;
                if stage.limits.is_some() {
                    return Err(self.invalid(
                        format!("{key}.chain[{j}].limits"),
                        "a tenant's stages share the tenant's `limits`; set them there",
                    ));
                }
            }
            self.check_limits(&format!("{key}.limits"), &tenant.limits)?;
            for (j, output) in tenant.outputs.iter().enumerate() {
                self.check_output(&format!("{key}.outputs[{j}]"), output)?;
            }
        }
        for (i, input) in self.inputs.iter().enumerate() {
            if input.topics.is_empty() || input.topics.iter().any(|t| t.trim().is_empty()) {
                return Err(self.invalid(
                    format!("inputs[{i}].topics"),
                    "needs one or more non-empty topic names",
                ));
            }
            let precision_applies = matches!(
                input.format,
                InputFormat::InfluxLine | InputFormat::InfluxJson
            );
            if input.precision.is_some() && !precision_applies {
                return Err(self.invalid(
                    format!("inputs[{i}].precision"),
                    "only influx-line and influx-json take a precision; the other formats carry their unit",
                ));
            }
        }
        if let Some(kafka) = &self.kafka {
            if kafka.brokers.trim().is_empty() {
                return Err(self.invalid("kafka.brokers", "is empty"));
            }
            if kafka.options.contains_key("enable.auto.offset.store") {
                return Err(self.invalid(
                    "kafka.options.enable.auto.offset.store",
                    "Boulder stores offsets itself, only after points are written or dead-lettered",
                ));
            }
        }
        if self.pipeline.batch_messages == 0 {
            return Err(self.invalid("pipeline.batch_messages", "must be at least 1"));
        }
        if self.pipeline.batch_bytes.as_u64() == 0 {
            return Err(self.invalid("pipeline.batch_bytes", "must be at least 1 byte"));
        }
        if self.pipeline.max_points_per_call == 0 {
            return Err(self.invalid("pipeline.max_points_per_call", "must be at least 1"));
        }
        if self.pipeline.max_in_flight_points == 0 {
            return Err(self.invalid("pipeline.max_in_flight_points", "must be at least 1"));
        }
        if self.pipeline.workers == Some(0) {
            return Err(self.invalid("pipeline.workers", "must be at least 1"));
        }
        Ok(())
    }

    fn check_output(&self, key: &str, output: &OutputConfig) -> Result<(), ConfigError> {
        let uri: hyper::Uri = output.url.parse().map_err(|e| {
            self.invalid(
                format!("{key}.url"),
                format!("{:?} is not a URL: {e}", output.url),
            )
        })?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(self.invalid(
                format!("{key}.url"),
                format!(
                    "{:?} must be an http:// or https:// URL with a host",
                    output.url
                ),
            ));
        }
        // A query may carry what a database reads beyond the v2 API, such as
        // VictoriaMetrics's `extra_label`; the three parameters Boulder sets itself
        // would be sent twice, and which one a database heeds is its own choice.
        let query = uri.query().unwrap_or_default();
        if let Some((name, _)) = form_urlencoded::parse(query.as_bytes())
            .find(|(name, _)| matches!(name.as_ref(), "org" | "bucket" | "precision"))
        {
            return Err(self.invalid(
                format!("{key}.url"),
                format!(
                    "its query sets `{name}`, which Boulder sets itself: use the output's \
                     org and bucket keys (precision is always ns)"
                ),
            ));
        }
        if output.gzip_level > 9 {
            return Err(self.invalid(format!("{key}.gzip_level"), "must be 0-9"));
        }
        if output.batch_points == 0 {
            return Err(self.invalid(format!("{key}.batch_points"), "must be at least 1"));
        }
        if let Some(status) = output.hold_on.iter().find(|s| !(400..=599).contains(*s)) {
            return Err(self.invalid(
                format!("{key}.hold_on"),
                format!("{status} is not an error status (400-599)"),
            ));
        }
        if output.timeout.is_zero() {
            return Err(self.invalid(format!("{key}.timeout"), "must be more than 0s"));
        }
        Ok(())
    }

    /// Checks what `boulder run` needs beyond a valid file: Kafka, inputs, a
    /// dead-letter topic, and an output for every tenant.
    pub fn check_runnable(&self) -> Result<(), ConfigError> {
        if self.kafka.is_none() {
            return Err(self.invalid("kafka", "`boulder run` needs a [kafka] table"));
        }
        if self.inputs.is_empty() {
            return Err(self.invalid("inputs", "`boulder run` needs at least one [[inputs]]"));
        }
        if self.dlq.is_none() {
            return Err(self.invalid(
                "dlq",
                "`boulder run` needs a [dlq] topic: failures are never dropped",
            ));
        }
        if self.tenants.is_empty() {
            return Err(self.invalid("tenants", "`boulder run` needs at least one tenant"));
        }
        if self.router.is_none() && self.tenants.len() > 1 {
            return Err(self.invalid(
                "router",
                "several tenants need a [router] to choose between them",
            ));
        }
        for (i, tenant) in self.tenants.iter().enumerate() {
            if tenant.outputs.is_empty() {
                return Err(self.invalid(
                    format!("tenants[{i}].outputs"),
                    format!("tenant {:?} has no outputs", tenant.name),
                ));
            }
        }
        Ok(())
    }

    fn check_stage(&self, key: &str, stage: &StageConfig) -> Result<(), ConfigError> {
        if stage.component.trim().is_empty() {
            return Err(self.invalid(
                format!("{key}.component"),
                "is empty: name a built-in or a .wasm path",
            ));
        }
        Ok(())
    }

    fn check_limits(&self, key: &str, limits: &Limits) -> Result<(), ConfigError> {
        if limits.memory < ByteSize::mib(1) || limits.memory > MAX_MEMORY {
            return Err(self.invalid(
                format!("{key}.memory"),
                format!("{} is outside 1 MiB..=4 GiB", limits.memory),
            ));
        }
        if limits.deadline_per_call < Duration::from_millis(1) {
            return Err(self.invalid(format!("{key}.deadline_per_call"), "must be at least 1ms"));
        }
        if limits.max_output_ratio == 0 {
            return Err(self.invalid(format!("{key}.max_output_ratio"), "must be at least 1"));
        }
        let ingestion = [
            ("points_per_second", limits.points_per_second),
            ("burst", limits.burst),
            ("max_series", limits.max_series),
        ];
        for (name, value) in ingestion {
            match value {
                Some(_) if key == "router.limits" => {
                    return Err(self.invalid(
                        format!("{key}.{name}"),
                        "ingestion limits are per tenant: set them in [tenants.limits]",
                    ))
                }
                Some(0) => return Err(self.invalid(format!("{key}.{name}"), "must be at least 1")),
                _ => {}
            }
        }
        if limits.burst.is_some() && limits.points_per_second.is_none() {
            return Err(self.invalid(
                format!("{key}.burst"),
                "is the bucket of points_per_second, which is not set",
            ));
        }
        if limits.series_window < Duration::from_secs(1) {
            return Err(self.invalid(format!("{key}.series_window"), "must be at least 1s"));
        }
        Ok(())
    }

    /// The tenant with this name.
    pub fn tenant(&self, name: &str) -> Option<&TenantConfig> {
        self.tenants.iter().find(|t| t.name == name)
    }

    /// The largest memory cap of any guest, which sizes the engine's memory pool.
    pub fn largest_memory_limit(&self) -> ByteSize {
        let router = self
            .router
            .iter()
            .map(|r| r.limits.unwrap_or_default().memory);
        let tenants = self.tenants.iter().map(|t| t.limits.memory);
        router.chain(tenants).max().unwrap_or_else(default_memory)
    }
}

/// A stage's `params` table as the JSON object its `init` receives.
pub fn params_json(params: &toml::Table) -> String {
    serde_json::to_string(params).expect("a TOML table is always valid JSON")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/boulder/boulder.toml"))
    }

    #[test]
    fn parses_a_full_config_with_defaults() {
        let c = parse(
            r#"
            [router]
            component = "route"
            params = { default = "ops", rules = [{ tag = "tenant" }] }

            [[tenants]]
            name = "ops"
            chain = [{ component = "validate" }, { component = "guests/x.wasm", params = { env = "prod" } }]
            limits = { memory = "32MiB", deadline_per_call = "50ms" }
            "#,
        )
        .unwrap();
        assert_eq!(c.base_dir, Path::new("/etc/boulder"));
        let ops = c.tenant("ops").unwrap();
        assert_eq!(ops.limits.memory, ByteSize::mib(32));
        assert_eq!(ops.limits.deadline_per_call, Duration::from_millis(50));
        assert_eq!(ops.limits.max_output_ratio, 8);
        assert_eq!(params_json(&ops.chain[1].params), r#"{"env":"prod"}"#);
        assert_eq!(
            params_json(&c.router.as_ref().unwrap().params),
            r#"{"default":"ops","rules":[{"tag":"tenant"}]}"#
        );
        assert_eq!(c.runtime.max_wasm_stack, ByteSize::kib(512));
        assert_eq!(c.pipeline.batch_bytes, ByteSize::kib(64));
        assert_eq!(c.pipeline.batch_messages, 1000);
        assert_eq!(c.pipeline.max_points_per_call, 10_000);
    }

    #[test]
    fn the_deadlines_former_name_is_still_read() {
        let c = parse("[[tenants]]\nname = \"a\"\nlimits = { cpu_per_batch = \"70ms\" }").unwrap();
        assert_eq!(
            c.tenants[0].limits.deadline_per_call,
            Duration::from_millis(70)
        );
    }

    #[test]
    fn an_unknown_key_names_the_file_line_and_key() {
        let err = parse("[[tenants]]\nname = \"a\"\nlimit = {}\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("config /etc/boulder/boulder.toml:"),
            "{err}"
        );
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("unknown field `limit`"), "{err}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            ("[[tenants]]\nname = \"a b\"", "tenants[0].name"),
            (
                "[[tenants]]\nname = \"a\"\n[[tenants]]\nname = \"a\"",
                "defined twice",
            ),
            (
                "[[tenants]]\nname = \"a\"\nlimits = { memory = \"8GiB\" }",
                "tenants[0].limits.memory: 8.0 GiB is outside",
            ),
            (
                "[[tenants]]\nname = \"a\"\nlimits = { deadline_per_call = \"0s\" }",
                "tenants[0].limits.deadline_per_call",
            ),
            ("[router]\ncomponent = \" \"", "router.component: is empty"),
            (
                "[[tenants]]\nname = \"a\"\nchain = [{ component = \"v\", limits = {} }]",
                "tenants[0].chain[0].limits",
            ),
            (
                "[runtime]\nmax_wasm_stack = \"1KiB\"",
                "runtime.max_wasm_stack",
            ),
            (
                "[pipeline]\nbatch_bytes = \"0B\"",
                "pipeline.batch_bytes: must be at least 1 byte",
            ),
            (
                "[[tenants]]\nname = \"a\"\noutputs = [{ url = \"http://h/w?a=1&bucket=b\" }]",
                "tenants[0].outputs[0].url: its query sets `bucket`",
            ),
            (
                "[[tenants]]\nname = \"a\"\noutputs = [{ url = \"http://h/w\", hold_on = [401, 204] }]",
                "tenants[0].outputs[0].hold_on: 204 is not an error status (400-599)",
            ),
            (
                "[router]\ncomponent = \"route\"\nlimits = { points_per_second = 10 }",
                "router.limits.points_per_second: ingestion limits are per tenant",
            ),
            (
                "[[tenants]]\nname = \"a\"\nlimits = { max_series = 0 }",
                "tenants[0].limits.max_series: must be at least 1",
            ),
            (
                "[[tenants]]\nname = \"a\"\nlimits = { burst = 10 }",
                "tenants[0].limits.burst: is the bucket of points_per_second, which is not set",
            ),
            (
                "[[tenants]]\nname = \"a\"\nlimits = { max_series = 9, series_window = \"10ms\" }",
                "tenants[0].limits.series_window: must be at least 1s",
            ),
            (
                "[[tenants]]\nname = \"a\"\nlimits = { over_limit = \"ignore\" }",
                "unknown variant `ignore`, expected `dead-letter` or `drop`",
            ),
        ];
        for (text, want) in cases {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn a_bad_duration_is_a_parse_error_with_its_line() {
        let err =
            parse("[[tenants]]\nname = \"a\"\n\n[tenants.limits]\ncpu_per_batch = \"fast\"\n")
                .unwrap_err()
                .to_string();
        assert!(err.contains("line 5"), "{err}");
    }
}

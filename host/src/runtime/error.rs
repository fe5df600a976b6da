//! What can go wrong loading a component and running a batch through it.

use bytesize::ByteSize;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Which stage: the router, or stage N of a tenant's chain, and its component.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageId {
    /// The tenant, or `None` for the router.
    pub tenant: Option<String>,
    /// Position in the tenant's chain, from 1 (0 for the router).
    pub position: usize,
    /// The component as the config names it (`validate`, `guests/x.wasm`).
    pub component: String,
}

impl StageId {
    /// The router running `component`.
    pub fn router(component: &str) -> StageId {
        StageId {
            tenant: None,
            position: 0,
            component: component.to_owned(),
        }
    }

    /// Stage `position` (from 1) of `tenant`'s chain.
    pub fn stage(tenant: &str, position: usize, component: &str) -> StageId {
        StageId {
            tenant: Some(tenant.to_owned()),
            position,
            component: component.to_owned(),
        }
    }
}

impl fmt::Display for StageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.tenant {
            None => write!(f, "router ({})", self.component),
            Some(t) => write!(
                f,
                "tenant '{t}' stage {} ({})",
                self.position, self.component
            ),
        }
    }
}

/// A component that cannot be used. Raised at load, before any point flows.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The engine could not be configured.
    #[error("cannot start the WebAssembly engine: {0}")]
    Engine(String),
    /// The folder of compiled components is one that others could write to: what
    /// it holds would run as Boulder's own native code.
    #[error(
        "runtime.cache_dir {dir}: {problem}; compiled code loaded from it runs as Boulder, \
         so it must be a folder of this user's that no one else can write: \
         `chmod go-w` it, point runtime.cache_dir elsewhere, or set runtime.cache = false"
    )]
    UnsafeCache {
        /// The folder.
        dir: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// A built-in name that is in no components folder.
    #[error(
        "component '{name}' is neither a built-in found in {searched} nor a .wasm path; \
         build the built-ins with scripts/build-guests.sh or set runtime.components_dir"
    )]
    NotFound {
        /// The name from the config.
        name: String,
        /// The folders looked in.
        searched: String,
    },
    /// The file could not be read.
    #[error("component '{name}': cannot read {path}: {source}")]
    Read {
        /// The name from the config.
        name: String,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not a valid WebAssembly component.
    #[error("component '{name}' ({path}) is not a valid WebAssembly component: {reason}")]
    Invalid {
        /// The name from the config.
        name: String,
        /// The file.
        path: PathBuf,
        /// What wasmtime said.
        reason: String,
    },
    /// Imports something other than the contract's `log`, e.g. WASI.
    #[error(
        "component '{name}' imports {imports}; a Boulder transform may import only {allowed} \
         (no WASI: build for wasm32-unknown-unknown)"
    )]
    ForbiddenImports {
        /// The name from the config.
        name: String,
        /// Everything it imports, comma-separated.
        imports: String,
        /// What is allowed.
        allowed: String,
    },
    /// Built against another version of the contract.
    #[error("component '{name}' was built for {found}; this Boulder runs {expected}")]
    WrongVersion {
        /// The name from the config.
        name: String,
        /// What the component exports.
        found: String,
        /// What the host needs.
        expected: String,
    },
    /// Does not export the stage interface at all.
    #[error("component '{name}' does not export {expected} (it exports: {exports})")]
    MissingExport {
        /// The name from the config.
        name: String,
        /// What it exports.
        exports: String,
        /// What the host needs.
        expected: String,
    },
    /// `init` refused the stage's params.
    #[error("{stage}: params refused: {message}")]
    Params {
        /// The stage.
        stage: StageId,
        /// The guest's message.
        message: String,
    },
    /// Instantiating or calling `init` failed (a trap or a limit).
    #[error("{stage}: cannot start an instance: {reason}")]
    Instantiate {
        /// The stage.
        stage: StageId,
        /// Why.
        reason: Failure,
    },
}

/// Why a batch failed in a stage. The batch goes to the dead-letter queue with this;
/// the instance that failed is thrown away.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Failure {
    /// The call ran past `limits.deadline_per_call` (wall-clock time).
    Deadline(Duration),
    /// The guest needed more than `limits.memory`.
    OutOfMemory(ByteSize),
    /// The guest panicked, with its message.
    Panic(String),
    /// The guest used more stack than `runtime.max_wasm_stack`.
    StackOverflow,
    /// Any other trap.
    Trap(String),
    /// The guest returned an error for the batch.
    Guest(String),
    /// The guest's answer is not a valid output for its input.
    MalformedOutput(String),
    /// The host had no instance slot free for the call (every one of
    /// `runtime.max_instances` in use for as long as it waited): the host's
    /// shortage, never the tenant's fault.
    NoInstance {
        /// `runtime.max_instances`.
        max_instances: u32,
        /// How long it waited for a slot.
        waited: Duration,
    },
    /// The guest's output batch is too large for its input.
    OutputTooLarge {
        /// Output bytes.
        output: usize,
        /// Input bytes.
        input: usize,
        /// `limits.max_output_ratio`.
        ratio: u32,
    },
}

impl Failure {
    /// A short, bounded-cardinality code for metrics and dead-letter headers.
    pub fn code(&self) -> &'static str {
        match self {
            Failure::Deadline(_) => "deadline",
            Failure::OutOfMemory(_) => "out_of_memory",
            Failure::Panic(_) => "panic",
            Failure::StackOverflow => "stack_overflow",
            Failure::Trap(_) => "trap",
            Failure::Guest(_) => "guest_error",
            Failure::MalformedOutput(_) => "malformed_output",
            Failure::OutputTooLarge { .. } => "output_too_large",
            Failure::NoInstance { .. } => "instances",
        }
    }

    /// Whether the host, not the guest, failed the call: such a failure says
    /// nothing about the tenant's component (no quarantine, no narrowing down).
    pub fn is_host(&self) -> bool {
        matches!(self, Failure::NoInstance { .. })
    }

    /// The dead-letter class: `boulder.host.<code>` for the host's own failures,
    /// `boulder.guest.<code>` for the guest's.
    pub fn class(&self) -> String {
        let who = if self.is_host() { "host" } else { "guest" };
        format!("boulder.{who}.{}", self.code())
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Deadline(d) => write!(
                f,
                "ran past its deadline of {} per call (limits.deadline_per_call, wall-clock time)",
                humantime::format_duration(*d)
            ),
            Failure::OutOfMemory(m) => write!(f, "ran out of memory (limit {m})"),
            Failure::Panic(m) => write!(f, "panicked: {m}"),
            Failure::StackOverflow => write!(f, "overflowed its stack (runtime.max_wasm_stack)"),
            Failure::Trap(t) => write!(f, "trapped: {t}"),
            Failure::Guest(e) => write!(f, "returned an error: {e}"),
            Failure::MalformedOutput(e) => write!(f, "returned a malformed output: {e}"),
            Failure::NoInstance {
                max_instances,
                waited,
            } => write!(
                f,
                "could not run: all {max_instances} instance slots (runtime.max_instances) \
                 were in use for {}; the host's shortage, not the guest's fault",
                humantime::format_duration(*waited)
            ),
            Failure::OutputTooLarge {
                output,
                input,
                ratio,
            } => write!(
                f,
                "returned {output} bytes for {input} bytes of input, more than {ratio}x \
                 (limits.max_output_ratio) plus 64 KiB"
            ),
        }
    }
}

/// A batch failed in a stage.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{stage}: {}{failure}", if failure.is_host() { "" } else { "guest " })]
pub struct StageError {
    /// Which stage.
    pub stage: StageId,
    /// What happened.
    pub failure: Failure,
}

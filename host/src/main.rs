//! The `boulder` command. Each subcommand lives in `cli/`; this file only parses
//! arguments, sets up logging and reports errors.

mod cli;

use clap::Parser;
use std::process::ExitCode;

// Batches are allocated and freed by the hundred thousand per second, many larger
// than glibc's mmap threshold: with glibc's allocator every such batch costs fresh
// zeroed pages from the kernel (a tenth of the time in profiles); mimalloc reuses them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = cli::Args::parse();
    cli::init_logging();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("boulder: {e:#}");
            ExitCode::FAILURE
        }
    }
}

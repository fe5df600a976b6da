//! The `boulder` command. Each subcommand lives in `cli/`; this file only parses
//! arguments, sets up logging and reports errors.

mod cli;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    boulder::allocator::keep_freed_memory();
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

//! The `nismooth` command: the allocator set for large images, the command
//! line parsed, the subcommand run (`app`), its exit code returned.

#![deny(
    unsafe_op_in_unsafe_fn,
    clippy::undocumented_unsafe_blocks,
    clippy::missing_safety_doc
)]

use std::process::ExitCode;

use clap::FromArgMatches;

mod app;

fn main() -> ExitCode {
    nismooth::metrics::mark_start();
    nismooth::metrics::fixed_mmap_threshold();
    let matches = app::shell::command().get_matches();
    let cli = app::cli::Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    ExitCode::from(app::dispatch(cli))
}

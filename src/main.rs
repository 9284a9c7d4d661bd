//! The `nismooth` command: the library's command line (`app::main`: the
//! allocator set for large images, the arguments parsed, the subcommand
//! run), its exit code returned.

#![deny(
    unsafe_op_in_unsafe_fn,
    clippy::undocumented_unsafe_blocks,
    clippy::missing_safety_doc
)]

use std::process::ExitCode;

fn main() -> ExitCode {
    ExitCode::from(nismooth::app::main(std::env::args_os()))
}

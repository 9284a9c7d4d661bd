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
    fixed_mmap_threshold();
    let matches = app::shell::command().get_matches();
    let cli = app::cli::Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    app::dispatch(cli)
}

/// Image buffers are tens of MiB. glibc raises its mmap threshold after the
/// first such buffer is freed, and later ones then come from the heap and stay
/// resident: RSS would grow with the number of images. A fixed threshold keeps
/// every large buffer in its own mapping, returned to the OS when dropped.
fn fixed_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        // Fixing the mmap threshold also pins the trim threshold at 128 KiB:
        // the filter's per-thread scratch (a few hundred KiB, freed after each
        // pass) would then be returned to the OS and faulted in again every time.
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
}

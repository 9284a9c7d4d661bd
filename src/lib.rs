//! nismooth: exact, fast Gaussian denoising of NIfTI image collections.
//!
//! The flow follows the data: `plan` turns what the user named into tasks,
//! `driver` shares them over processes (`driver::comm`) and runs each through
//! `io` → `filter` → `io`, and `report` exports what was measured. `config`
//! holds a run's settings as plain data, `resources` the memory model and the
//! room left, `slurm` what a job's environment says and the scripts, arrays
//! and time limits a job needs, `study` scaling studies and estimates,
//! `generate` phantoms. The command line is `app` (feature `cli`, on by
//! default): the only module that knows clap, above everything else, with
//! one entry, `app::main`, that the binary and the Python module's
//! `nismooth` command both call. Without the feature the library has no
//! clap at all.
// Every unsafe block says why it is sound, and every public unsafe fn states
// its contract (CI denies both).
#![deny(
    unsafe_op_in_unsafe_fn,
    clippy::undocumented_unsafe_blocks,
    clippy::missing_safety_doc
)]

#[cfg(feature = "cli")]
pub mod app;
pub mod bids;
pub mod choice;
pub mod config;
pub mod driver;
pub mod error;
pub mod filter;
pub mod generate;
pub mod io;
pub mod metrics;
pub mod plan;
#[cfg(feature = "python")]
pub mod python;
pub mod report;
pub mod resources;
pub mod slurm;
pub mod study;
pub mod volume;

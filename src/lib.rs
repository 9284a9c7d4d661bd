//! nismooth: exact, fast Gaussian denoising of NIfTI image collections.
//!
//! The flow follows the data: `plan` turns what the user named into tasks,
//! `driver` shares them over processes (`driver::comm`) and runs each through
//! `io` → `filter` → `io`, and `report` exports what was measured. `config`
//! holds a run's settings as plain data, `resources` the memory model and the
//! room left, `slurm` what a job's environment says and the scripts, arrays
//! and time limits a job needs, `study` scaling studies and estimates,
//! `generate` phantoms. The command line lives in the binary (`src/app/`);
//! this library takes no clap type. With the `python` feature alone, the
//! Python module also compiles `src/app/` inside it, so that the wheel's
//! `nismooth` command is the same program as the binary.
// Every unsafe block says why it is sound, and every public unsafe fn states
// its contract (CI denies both).
#![deny(
    unsafe_op_in_unsafe_fn,
    clippy::undocumented_unsafe_blocks,
    clippy::missing_safety_doc
)]

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
// `src/app/` names this library `nismooth`, as the binary sees it.
#[cfg(feature = "python")]
extern crate self as nismooth;
pub mod report;
pub mod resources;
pub mod slurm;
pub mod study;
pub mod volume;

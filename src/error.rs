//! Errors that stop a run before any image is touched (exit code 2).
//!
//! Per-image problems are not here: they are `io::ReadError`/`WriteError`,
//! recorded against the image, and the run goes on.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    /// No input files after expanding directories and the list file.
    #[error("no input images (give files, directories holding *.nii/*.nii.gz, or --list)")]
    NoInputs,
    /// An input named on the command line does not exist (a typo: nothing runs).
    #[error("input {0} does not exist")]
    MissingInput(PathBuf),
    /// The output directory is the directory of an input: outputs would replace inputs.
    #[error("output directory {outdir} holds input {input}; choose another directory so inputs are never overwritten")]
    OutdirHoldsInput { outdir: PathBuf, input: PathBuf },
    /// An output folder that lies outside the output directory once
    /// symlinks and `..` are resolved.
    #[error("output folder {folder} lies outside the output directory {outdir} (through a symbolic link or '..'): nothing is written outside it")]
    OutsideOutdir { folder: PathBuf, outdir: PathBuf },
    /// Two inputs share a file name, so their outputs would collide.
    #[error("inputs {first} and {second} would both write {name} in the output directory")]
    DuplicateOutput {
        first: PathBuf,
        second: PathBuf,
        name: String,
    },
    /// A directory or list file could not be read.
    #[error("cannot read {path}: {source}")]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The output directory could not be created.
    #[error("cannot create output directory {path}: {source}")]
    Outdir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The output directory exists but a file cannot be written in it
    /// (read-only file system, permissions, no space left).
    #[error("output directory {path} is not writable: {source}")]
    NotWritable {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A `--report`/`--csv` file that would land on an input, an output, the
    /// other report, or in a folder that is missing or not writable.
    #[error("{flag} {path}: refused, {why}")]
    Report {
        flag: String,
        path: PathBuf,
        why: String,
    },
    /// Another run holds the output directory.
    #[error(transparent)]
    Locked(#[from] crate::plan::lock::LockError),
    /// `--resume` over outputs made with other settings.
    #[error("--resume: {0}")]
    Resume(String),
    /// A kernel longer than nismooth computes (the filter would be a constant long before).
    #[error(transparent)]
    Kernel(#[from] crate::filter::KernelError),
    /// Root refused the run (one of the refusals above, seen on root); every
    /// rank receives root's message and exits with the same code.
    #[error("{0}")]
    Refused(String),
    /// An option's value outside its domain.
    #[error("{option} '{value}': {expected}")]
    BadValue {
        option: &'static str,
        value: String,
        expected: String,
    },
    /// Settings that exclude each other, or one that needs what is absent.
    #[error("{0}")]
    Conflict(&'static str),
    /// A start nismooth cannot run under: srun without PMIx, an MPI launch
    /// of a build without MPI, MPI initialised twice.
    #[error("{0}")]
    Launch(String),
    /// A BIDS dataset that is not one, or a query it cannot answer.
    #[error("{0}")]
    Bids(String),
    /// A job-array task that cannot take a share of the list.
    #[error("{0}")]
    Array(String),
}

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
    /// `-o` names an output file (as fslmaths takes it), but the run has
    /// several images, or none can go there.
    #[error("-o {output} names an output file (it ends in .nii or .nii.gz), which holds one image, but the run has {images}; give a folder (one not ending in .nii/.nii.gz) for several")]
    OutputNamesAFile { output: PathBuf, images: usize },
    /// `-o` names the input itself.
    #[error("-o {0} is the input itself: nismooth never writes over an input")]
    OutputIsInput(PathBuf),
    /// `-o` names a file in a folder that does not exist (never created for a file's name).
    #[error("-o {output}: its folder {folder} does not exist")]
    NoOutputFolder { output: PathBuf, folder: PathBuf },
    /// The output directory is the directory of an input: outputs would replace inputs.
    #[error("output directory {outdir} holds input {input}; choose another directory so inputs are never overwritten")]
    OutdirHoldsInput { outdir: PathBuf, input: PathBuf },
    /// An output folder that lies outside the output directory once
    /// symlinks and `..` are resolved.
    #[error("output folder {folder} lies outside the output directory {outdir} (through a symbolic link or '..'): nothing is written outside it")]
    OutsideOutdir { folder: PathBuf, outdir: PathBuf },
    /// A FIFO, device, socket or folder stands where an output would go: a
    /// rename would replace it with a file.
    #[error("output {output}: {what} is at this name; nismooth replaces only files (remove it, or choose another output directory)")]
    SpecialOutput { output: PathBuf, what: &'static str },
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
    Locked(#[from] LockError),
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
    #[error(transparent)]
    Array(#[from] ArrayError),
}

/// Why the folder could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("output directory {outdir} is locked by another nismooth run ({holder}; lock file {file}). Wait for it to end; if it is gone (another host, a crashed node), remove {file}")]
    Held {
        outdir: PathBuf,
        holder: String,
        file: PathBuf,
    },
    #[error("output directory {outdir} is inside, or holds, {other}, which another nismooth run writes now ({holder}; lock file {file}): its outputs and temp files would be this run's too. Wait for it to end; if it is gone (another host, a crashed node), remove {file}")]
    Nested {
        outdir: PathBuf,
        other: PathBuf,
        holder: String,
        file: PathBuf,
    },
    #[error("cannot lock output directory {outdir} ({file}): {source}")]
    Io {
        outdir: PathBuf,
        file: PathBuf,
        source: std::io::Error,
    },
}

/// An array that would skip images, idle tasks, or exceed `MaxArraySize`;
/// a task that is not on its array's grid; `--array` outside an array.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ArrayError {
    #[error(
        "SLURM_ARRAY_TASK_ID is set but neither SLURM_ARRAY_TASK_COUNT nor SLURM_ARRAY_TASK_MAX is"
    )]
    NoCount,
    /// Ids that are not evenly spaced (`--array=0,3,4,6`) have no grid:
    /// every task must refuse, or the ids off it leave their images out.
    #[error(
        "the array's ids are not evenly spaced (min {min}, max {max}, step {step}, {count} tasks); \
         nismooth shares images over ids such as --array=0-99 or 1-100:1"
    )]
    Uneven {
        min: u64,
        max: u64,
        step: u64,
        count: u64,
    },
    #[error(
        "array task {id} is not on the array's grid (min {min}, step {step}, {count} tasks); \
         nismooth shares images over evenly spaced ids such as --array=0-99 or 1-100:1"
    )]
    OffGrid {
        id: u64,
        min: u64,
        step: u64,
        count: u64,
    },
    #[error(
        "--array: not inside a Slurm job (SLURM_JOB_ID is not set); submit with sbatch --array"
    )]
    NotInJob,
    #[error("--array: SLURM_ARRAY_TASK_ID is not set (submit with sbatch --array)")]
    NotInArray,
    #[error(
        "--array-chunk {chunk} × {tasks} array tasks leaves the last {uncovered} of {units} images to no task: \
         submit --array=0-{last} or a larger chunk"
    )]
    Short {
        chunk: usize,
        tasks: usize,
        uncovered: usize,
        units: usize,
        last: usize,
    },
    #[error("the run has no images to share over an array")]
    NoImages,
    #[error(
        "--array-chunk {chunk} × {tasks} task(s) covers {} of {images} images: the rest would go to \
         no task; {need} tasks cover them (omit --array-tasks to get that)",
        chunk * tasks
    )]
    Uncovered {
        chunk: usize,
        tasks: usize,
        images: usize,
        need: usize,
    },
    #[error(
        "--array-tasks {tasks} with --array-chunk {chunk}: {images} images need only {need} task(s), \
         the others would have none"
    )]
    Idle {
        chunk: usize,
        tasks: usize,
        images: usize,
        need: usize,
    },
    #[error("--array-tasks {tasks} for {images} images: {} task(s) would have none", tasks - images)]
    MoreTasksThanImages { tasks: usize, images: usize },
    #[error(
        "--array-chunk {chunk} needs {need} tasks, beyond this cluster's MaxArraySize {max}: \
         use --array-chunk {fits} or more"
    )]
    BeyondMax {
        chunk: usize,
        need: usize,
        max: usize,
        fits: usize,
    },
}

//! Command-line definitions only; `run` and the other subcommands turn them
//! into the library's settings.

use std::path::PathBuf;

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::choice::{Choice, UnknownChoice};

use super::help;

pub use crate::config::ProgressChoice;
use crate::filter::Mode;
pub use crate::filter::{BackendChoice, Compat, Units};
pub use crate::generate::NoiseChoice;
pub use crate::plan::schedule::{Schedule, Split};
pub use crate::slurm::script::Model;

/// `nismooth --version`: the version and the features built in, so that
/// `sbatch` (and a person) can tell whether a binary runs MPI or CUDA.
#[cfg(all(feature = "mpi", feature = "cuda"))]
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (features: cpu, mpi, cuda)");
#[cfg(all(feature = "mpi", not(feature = "cuda")))]
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (features: cpu, mpi)");
#[cfg(all(not(feature = "mpi"), feature = "cuda"))]
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (features: cpu, cuda)");
#[cfg(all(not(feature = "mpi"), not(feature = "cuda")))]
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (features: cpu)");

#[derive(Parser, Debug)]
#[command(
    name = "nismooth",
    version = VERSION,
    about = "Exact, fast Gaussian smoothing of NIfTI image collections (scipy.ndimage.gaussian_filter, bit for bit)",
    after_help = help::TOP
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Warnings and errors only on standard error (no progress, no info lines).
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// More on standard error: -v debug, -vv trace. Without either, RUST_LOG
    /// (env_logger's syntax, e.g. RUST_LOG=nismooth::driver=debug) is honoured.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Smooth every input image and write the results to OUTDIR.
    #[command(after_help = help::RUN)]
    Run(RunArgs),
    /// Smooth a BIDS dataset into a BIDS derivatives dataset (a BIDS App:
    /// BIDS_DIR OUTPUT_DIR participant).
    #[command(after_help = help::BIDS)]
    Bids(Box<BidsArgs>),
    /// Write deterministic synthetic T1-like phantoms.
    #[command(after_help = help::GENERATE)]
    Generate(GenerateArgs),
    /// Show reports (one or more JSON files), or merge them (`report merge`).
    #[command(after_help = help::REPORT)]
    Report(ReportArgs),
    /// How a run in OUTDIR stands, from its journals: from any node, while it runs or after.
    #[command(after_help = help::STATUS)]
    Status(StatusArgs),
    /// Print a ready-to-submit sbatch script for a parallel model.
    #[command(after_help = help::SBATCH)]
    Sbatch(Box<SbatchArgs>),
    /// Run a scaling study: ranks × threads × image counts, each point a real run.
    #[command(after_help = help::STUDY)]
    Study(StudyArgs),
    /// Predict time and memory for a target workload from a study, with the Slurm request.
    #[command(after_help = help::ESTIMATE)]
    Estimate(EstimateArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(CompletionsArgs),
    /// Print the man page (roff), every subcommand included.
    Man,
    /// Print the Gaussian taps nismooth uses (one per line, full precision).
    #[command(hide = true)]
    Weights(WeightsArgs),
    /// Times the filter alone on one image in memory (for scripts/bench.py).
    #[command(hide = true, name = "bench-filter")]
    BenchFilter(BenchFilterArgs),
}

#[derive(Args, Debug)]
#[command(
    after_help = "Install, e.g.:\n  nismooth completions bash > ~/.local/share/bash-completion/completions/nismooth\n  nismooth completions zsh > ~/.zfunc/_nismooth\n  nismooth completions fish > ~/.config/fish/completions/nismooth.fish"
)]
pub struct CompletionsArgs {
    /// The shell.
    pub shell: clap_complete::Shell,
}

/// A count that must be at least 1 (nodes, ranks, CPUs, tasks): 0 would
/// write a job Slurm rejects or a plan with nothing to run.
fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// A workload's image count: 1 to a billion (more is a typo, and its
/// time would overflow any job limit).
fn image_count(text: &str) -> Result<usize, String> {
    match at_least_one(text)? {
        n if n > 1_000_000_000 => Err("must be at most 1000000000 images".into()),
        n => Ok(n),
    }
}

/// A rate in bytes per second: `2GB/s`, `800MB/s`, `1.5GiB/s`, `500M`;
/// a bare number is bytes per second. Decimal units (GB = 10^9) unless
/// written with an i (GiB = 2^30).
pub fn byte_rate(text: &str) -> Result<f64, String> {
    let t = text.trim().trim_end_matches("/s");
    let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let scale = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => {
            return Err(format!(
                "'{text}': a rate is a number and a unit, e.g. 2GB/s or 800MB/s"
            ))
        }
    };
    match num.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v * scale < 1e18 => Ok(v * scale),
        _ => Err(format!(
            "'{text}': a rate is a positive number and a unit, e.g. 2GB/s"
        )),
    }
}

/// A margin on a request: at least 1 (a margin below 1 asks for less than
/// the estimate itself).
fn margin(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(m) if (1.0..=100.0).contains(&m) => Ok(m),
        Ok(_) => Err("must be between 1 (no margin) and 100".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// A number of seconds between 0.1 and a day.
fn positive_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if (0.1..=86_400.0).contains(&s) => Ok(s),
        Ok(_) => Err("must be between 0.1 and 86400 seconds".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// A `--time` Slurm reads, kept as written.
fn slurm_time(text: &str) -> Result<String, crate::slurm::time::BadTime> {
    crate::slurm::time::parse(text).map(|_| text.to_string())
}

/// `nismooth run`'s options given as words after `--` (sbatch's and
/// estimate's run arguments), read by the same definitions as `run` itself.
pub fn parse_run_args(words: &[String]) -> Result<RunArgs, clap::Error> {
    #[derive(Parser)]
    #[command(name = "nismooth run")]
    struct Words {
        #[command(flatten)]
        run: RunArgs,
    }
    let argv = std::iter::once("nismooth run".to_string()).chain(words.iter().cloned());
    Words::try_parse_from(argv).map(|w| w.run)
}

/// `nismooth bids`: the BIDS-Apps form, with `run`'s options.
#[derive(Args, Debug, Clone)]
pub struct BidsArgs {
    /// The BIDS dataset: raw, or derivatives (fMRIPrep-style names with space-/desc-).
    pub bids_dir: PathBuf,
    /// Where the derivatives dataset goes (created if missing): sub-X/[ses-Y/]<datatype>/,
    /// a JSON sidecar per image, dataset_description.json.
    pub output_dir: PathBuf,
    /// participant: smooth each participant's images; group: nothing to do
    /// (accepted, as BIDS Apps do).
    #[arg(value_parser = ["participant", "group"])]
    pub analysis_level: String,
    /// Participants to smooth (labels, with or without sub-) [default: all].
    #[arg(long, num_args = 1.., value_name = "LABEL")]
    pub participant_label: Vec<String>,
    /// Sessions to smooth (labels, with or without ses-) [default: all, and
    /// the images of participants without sessions].
    #[arg(long, num_args = 1.., value_name = "LABEL")]
    pub session_label: Vec<String>,
    /// Datatype folders to search.
    #[arg(long, num_args = 1.., default_values = ["anat", "func"])]
    pub datatype: Vec<String>,
    /// Suffixes of the images to smooth (masks and segmentations are not smoothed unless named).
    #[arg(long, num_args = 1.., default_values = ["T1w", "T2w", "bold"])]
    pub suffix: Vec<String>,
    /// The outputs' desc- label (letters and digits) [default: from the
    /// kernel: smooth6mm for --fwhm 6, smoothsigma2vox for --sigma 2].
    #[arg(long, value_name = "LABEL")]
    pub desc: Option<String>,
    #[command(flatten)]
    pub options: RunOptions,
}

/// `nismooth bids`'s arguments given as words (after sbatch's `-- bids`).
pub fn parse_bids_args(words: &[String]) -> Result<BidsArgs, clap::Error> {
    #[derive(Parser)]
    #[command(name = "nismooth bids")]
    struct Words {
        #[command(flatten)]
        bids: BidsArgs,
    }
    let argv = std::iter::once("nismooth bids".to_string()).chain(words.iter().cloned());
    Words::try_parse_from(argv).map(|w| w.bids)
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Input files, or directories (every *.nii / *.nii.gz inside, sorted;
    /// with -r every one below). A file that does not exist is refused.
    pub inputs: Vec<PathBuf>,
    /// Search folders to the bottom; each output goes to the same place
    /// below OUTDIR as its input below the folder named (hidden folders, a
    /// `derivatives` folder and OUTDIR itself are skipped).
    #[arg(short, long)]
    pub recursive: bool,
    /// A file listing inputs, one path a line, relative to the working
    /// directory ('#' starts a comment line; `-` reads standard input).
    /// Listed files that do not exist are named in the log and fail as images.
    #[arg(long, value_name = "FILE|-")]
    pub list: Option<PathBuf>,
    /// Output directory (created if missing); must not hold any input. With
    /// one image, a name ending in .nii or .nii.gz (not an existing folder)
    /// is the output file itself, as fslmaths takes it.
    #[arg(short, long)]
    pub output: PathBuf,
    #[command(flatten)]
    pub options: RunOptions,
}

/// A run's options apart from what it reads and where it writes: shared by
/// `run` and `bids`.
impl std::ops::Deref for RunArgs {
    type Target = RunOptions;
    fn deref(&self) -> &RunOptions {
        &self.options
    }
}

#[derive(Args, Debug, Clone)]
pub struct RunOptions {
    /// Gaussian sigma: one value, or three comma-separated (x,y,z).
    #[arg(long, default_value = "2")]
    pub sigma: String,
    /// Units of sigma: voxels (as scipy), or mm (divided by the voxel size, pixdim).
    #[arg(long, value_parser = choice::<Units>(), default_value_t = Units::Voxel)]
    pub units: Units,
    /// The kernel as a full width at half maximum in mm, one value or three
    /// (x,y,z), instead of --sigma: σ = FWHM / √(8 ln 2) mm, divided by
    /// each image's voxel size (nilearn's and SPM's way to say it).
    #[arg(long, value_name = "MM", conflicts_with_all = ["sigma", "units"])]
    pub fwhm: Option<String>,
    /// Kernel radius in sigmas: radius = int(truncate * sigma + 0.5).
    #[arg(long, default_value_t = 4.0)]
    pub truncate: f64,
    /// Boundary mode, as scipy.ndimage.
    #[arg(long, default_value = "reflect", value_parser = choice::<Mode>())]
    pub mode: Mode,
    /// Value outside the image for --mode constant (negative values may follow a space: --cval -7.5).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub cval: f64,
    /// Output dtype: input (as nibabel presents the data), float32 or float64
    /// [default: input; float32 with --compat fsl].
    #[arg(long, value_enum)]
    pub dtype: Option<DtypeChoice>,
    /// Whose semantics to reproduce: scipy.ndimage.gaussian_filter (σ in
    /// voxels unless --units mm), `fslmaths -s` (σ in mm, edge
    /// renormalisation instead of a boundary mode, single precision), or
    /// nilearn.image.smooth_img(img, fwhm) (with --fwhm: voxel sizes from
    /// the affine, integers smoothed as float32, NaN and Inf set to 0).
    #[arg(long, value_parser = choice::<Compat>(), default_value_t = Compat::Scipy)]
    pub compat: Compat,
    /// Filter threads per rank (default: SLURM_CPUS_PER_TASK when set, else the
    /// node's cores divided by the ranks on the node).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Images read and inflated at once per rank (default: 2 when the rank
    /// has 2 or more threads, else 1). Each reader holds one more image in
    /// memory; inflating one image cannot be split, so with many threads per
    /// rank more readers keep the cores busy.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub readers: Option<u64>,
    /// How images are shared among MPI ranks.
    #[arg(long, value_parser = choice::<Schedule>(), default_value_t = Schedule::Balanced)]
    pub schedule: Schedule,
    /// Whether one image may be shared by several MPI ranks: each rank then
    /// reads, filters and writes its cut of it (a series by volumes, a 3-D
    /// image by z-slices with a halo), and the output is the single
    /// process's bytes. `auto` shares images when the run has fewer images
    /// than ranks.
    #[arg(long, value_parser = choice::<Split>(), default_value_t = Split::Auto)]
    pub split: Split,
    /// Take this Slurm array task's share of the list (automatic when
    /// SLURM_ARRAY_TASK_ID is set and there is one process; with this flag
    /// also inside an MPI world, whose ranks then split the share).
    #[arg(long)]
    pub array: bool,
    /// With an array: K consecutive images per array task instead of cyclic shares.
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u64).range(1..))]
    pub array_chunk: Option<u64>,
    /// Filter backend: cpu, cuda, or auto (the GPU when a CUDA driver and device are present).
    #[arg(long, value_parser = choice::<BackendChoice>(), default_value_t = BackendChoice::Auto)]
    pub backend: BackendChoice,
    /// gzip level 0..9 for .nii.gz outputs (1 is what nibabel writes).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=9))]
    pub compression_level: u32,
    /// Output container (default: the same as each input's).
    #[arg(long, value_enum)]
    pub format: Option<FormatChoice>,
    /// Write the full report (configuration, per-image records, totals) as JSON.
    /// %j, %A and %a expand to the Slurm job, array job and array task ids,
    /// %r to the job's restart count (0, then 1 after a requeue, …).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Write one CSV row per image (%j, %A, %a expand as for --report).
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Write the run's timeline (every read, filter and write of every image,
    /// per rank) in the Chrome trace format that Perfetto opens
    /// (%j, %A, %a expand as for --report).
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// Skip images whose output already exists (not checked; see --resume).
    #[arg(long)]
    pub skip_existing: bool,
    /// Go on after a killed run: skip images whose output exists and is
    /// complete (a journal line vouches for it: same settings, same input,
    /// the file as written), redo the rest, and remove the temp files the
    /// killed run left. Refused if the outputs were made with other settings.
    #[arg(long, conflicts_with = "skip_existing")]
    pub resume: bool,
    /// Do not sync outputs to disk before renaming them: still atomic against
    /// a kill, not against a node crash; saves the disk's write time
    /// (docs/reliability.md) on scratch data.
    #[arg(long)]
    pub no_sync: bool,
    /// Progress on standard error, over every rank: images done of the
    /// total, images/s, MB/s read, elapsed time and ETA. `auto`: a bar on a
    /// terminal, log lines otherwise (a batch job's output file).
    #[arg(long, value_parser = choice::<ProgressChoice>(), default_value_t = ProgressChoice::Auto)]
    pub progress: ProgressChoice,
    /// Seconds between progress log lines (`--progress log`, and `auto` off a terminal).
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0, value_parser = positive_seconds)]
    pub progress_interval: f64,
    /// A signal that drains the run (by name or number; repeatable): no new
    /// image starts, images in flight get --grace, the report is written and
    /// the exit code is 3. A second signal (a second or more later) abandons
    /// the images in flight.
    /// `none` leaves every signal's default action [default: TERM, INT, USR1].
    #[arg(long, value_name = "SIGNAL")]
    pub drain_signal: Vec<String>,
    /// Seconds that images in flight may take to finish once draining;
    /// later they are abandoned (no output, no temp file). Keep it under
    /// Slurm's KillWait (30 s by default).
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 10.0,
        allow_negative_numbers = true
    )]
    pub grace: f64,
    /// Start no image that would end after this: a duration from now (90s,
    /// 55m, 1h30m, HH:MM:SS) or a local clock time (2026-12-03T04:00). Inside
    /// a Slurm job the default is the job's end time less --deadline-margin.
    /// Images left are `not_started`; the exit code is 3.
    #[arg(long, value_name = "DURATION|TIME")]
    pub deadline: Option<String>,
    /// With the job's end time as the deadline: how long before it to stop
    /// starting images (time for the images in flight, the report and the
    /// exit). `auto`: a minute, but at most a tenth of the job's limit.
    #[arg(long, value_name = "DURATION", default_value = "auto")]
    pub deadline_margin: String,
    /// Inside Slurm, ignore the job's end time (no deadline unless --deadline).
    #[arg(long, conflicts_with = "deadline")]
    pub no_deadline: bool,
}

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ReportArgs {
    #[command(subcommand)]
    pub action: Option<ReportAction>,
    /// Reports to show (JSON files written by --report).
    pub files: Vec<PathBuf>,
    /// Memory requested per rank (e.g. 2G), for the memory-efficiency line.
    #[arg(long, value_name = "SIZE")]
    pub mem_request: Option<String>,
    /// A finished Slurm job (an array by its base id): sacct's accounting beside
    /// nismooth's own report (WorkDir/nismooth-ID.json), as seff would judge it.
    #[arg(long, value_name = "JOBID", conflicts_with = "files")]
    pub job: Option<String>,
    /// Write the report's timeline in the Chrome trace format (Perfetto,
    /// chrome://tracing) to FILE (one report file).
    #[arg(long, value_name = "FILE", conflicts_with = "job")]
    pub trace: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// The run's output folder (its journals are in OUTDIR/.nismooth).
    pub outdir: PathBuf,
    /// The run to show (its id, as the journals' names give it); default: the latest.
    #[arg(long, value_name = "ID")]
    pub run: Option<String>,
    /// Print the status as JSON (one object; with --watch, one per line).
    #[arg(long)]
    pub json: bool,
    /// Refresh every SECONDS until the run ends (Ctrl-C stops watching, not the run).
    #[arg(long, value_name = "SECONDS")]
    pub watch: Option<f64>,
}

#[derive(Args, Debug)]
pub struct StudyArgs {
    /// Ranks to try (comma-separated).
    #[arg(long, default_value = "1,2", value_delimiter = ',')]
    pub ranks: Vec<usize>,
    /// Threads per rank to try.
    #[arg(long, default_value = "1", value_delimiter = ',')]
    pub threads: Vec<usize>,
    /// Image counts to try; each point uses the first N images of the data set.
    #[arg(long, default_value = "1,4,8,16", value_delimiter = ',')]
    pub tasks: Vec<usize>,
    /// How each point's images are shared among its ranks (as `run --schedule`).
    #[arg(long, value_parser = choice::<Schedule>(), default_value_t = Schedule::Balanced)]
    pub schedule: Schedule,
    /// What starts each point's ranks.
    #[arg(long, value_parser = choice::<crate::study::Launcher>(), default_value_t = crate::study::Launcher::Auto)]
    pub launcher: crate::study::Launcher,
    /// Repetitions of every point (interleaved). The estimate fits each
    /// point's median and takes its high end from the slowest: with fewer
    /// than 3 the study's noise is unknown (and the estimate says so).
    #[arg(long, default_value_t = 3, value_parser = at_least_one)]
    pub reps: usize,
    /// The data set: files or directories (default: generate one).
    #[arg(long, num_args = 1..)]
    pub data: Vec<PathBuf>,
    /// When generating: the image shape x,y,z.
    #[arg(long, default_value = "256,256,128")]
    pub shape: String,
    /// When generating: the voxel type (float32, int16, uint8, …).
    #[arg(long, default_value = "float32")]
    pub dtype: String,
    /// When generating: each image's shape within ±50% of --shape.
    #[arg(long)]
    pub vary_size: bool,
    /// Study directory: study.json/.csv/.md, plots, per-point reports.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Extra `nismooth run` arguments for every point, after `--`.
    #[arg(last = true)]
    pub run_args: Vec<String>,
}

#[derive(Args, Debug)]
pub struct EstimateArgs {
    /// The study (study.json); repeat to pool several studies of the same
    /// data and machine (e.g. made at different times, to average out drift).
    #[arg(long, required = true)]
    pub from: Vec<PathBuf>,
    /// Images in the target workload.
    #[arg(long, value_parser = image_count)]
    pub tasks: usize,
    /// Ranks on one node (or use --nodes and --ntasks-per-node).
    #[arg(long, value_parser = at_least_one, conflicts_with_all = ["nodes", "ntasks_per_node"])]
    pub ranks: Option<usize>,
    /// Nodes (Slurm's --nodes), with --ntasks-per-node ranks on each.
    #[arg(long, value_parser = at_least_one)]
    pub nodes: Option<usize>,
    /// MPI ranks per node (Slurm's --ntasks-per-node).
    #[arg(long, value_parser = at_least_one)]
    pub ntasks_per_node: Option<usize>,
    /// Threads per rank (default: the study's).
    #[arg(long, value_parser = at_least_one)]
    pub threads: Option<usize>,
    /// The parallel model (default: serial, threads, mpi or hybrid, from the
    /// ranks and threads); `array` predicts a job array: each task, the
    /// array's span under --array-limit, its CPU-hours.
    #[arg(long, value_parser = choice::<Model>())]
    pub model: Option<Model>,
    /// Array: number of tasks (default: one per image, in chunks beyond
    /// the cluster's MaxArraySize, as `nismooth sbatch` plans it).
    #[arg(long, value_parser = at_least_one)]
    pub array_tasks: Option<usize>,
    /// Array: at most this many tasks at once (%N).
    #[arg(long, value_parser = at_least_one)]
    pub array_limit: Option<usize>,
    /// The memory one node has, e.g. 64G (Slurm's RealMemory: `scontrol
    /// show node`): the request is checked against it.
    #[arg(long, value_name = "SIZE", alias = "mem-per-node")]
    pub node_memory: Option<String>,
    /// The target's images (one path a line): their sizes replace the study's.
    #[arg(long)]
    pub list: Option<PathBuf>,
    /// Safety margin on time and memory in the request (1.25 = +25%).
    #[arg(long, default_value_t = 1.25, value_parser = margin)]
    pub margin: f64,
    /// The Slurm partition for the script (--partition).
    #[arg(long)]
    pub partition: Option<String>,
    /// Write the estimate as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write an sbatch script with the estimated request.
    #[arg(long)]
    pub sbatch: Option<PathBuf>,
    /// What the cluster's file system carries for all ranks together, e.g.
    /// 2GB/s or 800MB/s: a target that would move its bytes faster is
    /// warned about and its time raised to what the file system allows.
    #[arg(long, value_name = "RATE", value_parser = byte_rate)]
    pub fs_bandwidth: Option<f64>,
    /// The run's inputs exist only on the cluster: do not read them here
    /// (the study's image sizes stand in for theirs; a warning says so).
    #[arg(long)]
    pub no_check_inputs: bool,
    /// `nismooth run` arguments for the script (inputs, -o OUTDIR), after `--`.
    #[arg(last = true)]
    pub run_args: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum ReportAction {
    /// Combine reports (e.g. one per array task) into one.
    Merge {
        /// Reports to merge (JSON reports, or journals: OUTDIR/.nismooth/*.jsonl).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Where to write the merged JSON report.
        #[arg(short, long)]
        output: PathBuf,
        /// Also write the merged per-image CSV.
        #[arg(long)]
        csv: Option<PathBuf>,
    },
}

#[derive(Args, Debug)]
pub struct SbatchArgs {
    /// The parallel model.
    #[arg(long, value_parser = choice::<Model>())]
    pub model: Model,
    /// The job's name (--job-name); the report is nismooth-JOBID.json either way.
    #[arg(long, default_value = "nismooth")]
    pub job_name: String,
    /// The Slurm partition (--partition).
    #[arg(long)]
    pub partition: Option<String>,
    /// Account to charge (--account).
    #[arg(long)]
    pub account: Option<String>,
    /// Quality of service (--qos).
    #[arg(long)]
    pub qos: Option<String>,
    /// Node features the job needs (--constraint), e.g. avx512.
    #[arg(long)]
    pub constraint: Option<String>,
    /// When Slurm mails (--mail-type), e.g. END,FAIL.
    #[arg(long)]
    pub mail_type: Option<String>,
    /// Where Slurm mails (--mail-user).
    #[arg(long)]
    pub mail_user: Option<String>,
    /// A `module load NAME` line before the run (repeatable).
    #[arg(long = "module", value_name = "NAME")]
    pub modules: Vec<String>,
    /// A shell line run before the run, as written (repeatable), e.g. 'source env.sh'.
    #[arg(long = "setup", value_name = "LINE")]
    pub setup: Vec<String>,
    /// Wall-time limit, as Slurm reads it: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS.
    #[arg(long, default_value = "01:00:00", value_parser = slurm_time)]
    pub time: String,
    /// Nodes (--nodes; mpi, hybrid and gpu models).
    #[arg(long, value_parser = at_least_one, default_value_t = 1)]
    pub nodes: usize,
    /// MPI ranks per node (mpi, hybrid; gpu: one per GPU).
    #[arg(long, value_parser = at_least_one, default_value_t = 1)]
    pub ntasks_per_node: usize,
    /// CPUs (filter threads) per task; default by model: serial and mpi 1, array 2, gpu and hybrid 4, threads 8.
    #[arg(long, value_parser = at_least_one)]
    pub cpus_per_task: Option<usize>,
    /// Memory to request per node (--mem), e.g. 4G (default: from the largest input image).
    #[arg(long, value_name = "SIZE", conflicts_with = "mem_per_cpu")]
    pub mem: Option<String>,
    /// Memory to request per allocated CPU (--mem-per-cpu), e.g. 1500M.
    #[arg(long, value_name = "SIZE")]
    pub mem_per_cpu: Option<String>,
    /// GPUs per node (--gpus-per-node; gpu model).
    #[arg(long, default_value_t = 1)]
    pub gpus_per_node: usize,
    /// Array: number of tasks (default: one per image, in chunks beyond the cluster's MaxArraySize).
    #[arg(long, value_parser = at_least_one)]
    pub array_tasks: Option<usize>,
    /// Array: at most this many tasks at once (%L).
    #[arg(long, value_parser = at_least_one)]
    pub array_limit: Option<usize>,
    /// Array: K consecutive images per task instead of cyclic shares.
    #[arg(long, value_parser = at_least_one)]
    pub array_chunk: Option<usize>,
    /// Requeue a job that runs out of time: Slurm signals the script
    /// --requeue-lead seconds before the limit, the run drains and exits 3,
    /// the job requeues itself (up to --max-requeues times) and the next
    /// attempt resumes where this one stopped.
    #[arg(long)]
    pub requeue: bool,
    /// With --requeue: how many times the job may requeue itself.
    #[arg(long, value_parser = at_least_one, default_value_t = 3, requires = "requeue")]
    pub max_requeues: usize,
    /// With --requeue: seconds before the time limit that Slurm signals the
    /// script (--signal=B:USR1@N; Slurm may send it up to a minute earlier).
    #[arg(long, value_parser = at_least_one, default_value_t = 90, requires = "requeue")]
    pub requeue_lead: usize,
    /// The nismooth binary the job runs (default: `nismooth` on PATH when
    /// it can run the model, else this one; the script's notes say which).
    #[arg(long)]
    pub binary: Option<PathBuf>,
    /// Write the script here instead of printing it.
    #[arg(long)]
    pub write: Option<PathBuf>,
    /// Arguments of `nismooth run` (inputs, -o OUTDIR, options), after `--`.
    #[arg(last = true, required = true)]
    pub run_args: Vec<String>,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum DtypeChoice {
    Input,
    Float32,
    Float64,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum FormatChoice {
    #[value(name = "nii")]
    Nii,
    #[value(name = "nii.gz")]
    NiiGz,
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// Output directory.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Number of images.
    #[arg(short = 'n', long, default_value_t = 4)]
    pub count: usize,
    /// Image shape x,y,z (or x,y,z,t for 4-D).
    #[arg(long, default_value = "256,256,128")]
    pub shape: String,
    /// Voxel type: float32, int16 or uint8 (or any numpy integer/float name).
    #[arg(long, default_value = "float32")]
    pub dtype: String,
    /// Random seed; the same seed gives the same files.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Draw each image's shape within ±50% of --shape (for load-balancing studies).
    #[arg(long)]
    pub vary_size: bool,
    /// Noise model.
    #[arg(long, value_parser = choice::<NoiseChoice>(), default_value_t = NoiseChoice::Rician)]
    pub noise: NoiseChoice,
    /// Output container.
    #[arg(long, value_enum, default_value_t = FormatChoice::NiiGz)]
    pub format: FormatChoice,
}

#[derive(Args, Debug)]
pub struct WeightsArgs {
    #[arg(long)]
    pub sigma: f64,
    #[arg(long, default_value_t = 4.0)]
    pub truncate: f64,
}

#[derive(Args, Debug)]
pub struct BenchFilterArgs {
    /// A NIfTI image to smooth in memory.
    pub input: PathBuf,
    /// Sigma in voxels: one value, or x,y,z.
    #[arg(long, default_value = "2")]
    pub sigma: String,
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Timed repetitions; the best and the median are printed.
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// Also write the last result here (raw little-endian voxels) for checking.
    #[arg(long)]
    pub dump: Option<PathBuf>,
    /// Boundary mode, as scipy.ndimage.
    #[arg(long, default_value = "reflect", value_parser = choice::<Mode>())]
    pub mode: Mode,
    /// Filter backend: cpu, or cuda (whose kernels are also timed alone, by CUDA events).
    #[arg(long, value_parser = choice::<BackendChoice>(), default_value_t = BackendChoice::Cpu)]
    pub backend: BackendChoice,
}

/// A library `Choice` as clap's possible values (names and help), parsed
/// back into the enum.
fn choice<T: Choice + Clone>() -> impl TypedValueParser<Value = T> {
    PossibleValuesParser::new(T::ALL.iter().map(|&(_, name, help)| {
        let value = PossibleValue::new(name);
        if help.is_empty() {
            value
        } else {
            value.help(help)
        }
    }))
    .try_map(|s| T::parse(&s).map_err(|e: UnknownChoice| e.to_string()))
}

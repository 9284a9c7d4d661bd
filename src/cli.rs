//! Command-line definitions only; `config` turns them into validated settings.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use crate::plan::schedule::Schedule;

#[derive(Parser, Debug)]
#[command(
    name = "nismooth",
    version,
    about = "Exact, fast Gaussian smoothing of NIfTI image collections (scipy.ndimage.gaussian_filter, bit for bit)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Smooth every input image and write the results to OUTDIR.
    Run(RunArgs),
    /// Write deterministic synthetic T1-like phantoms.
    Generate(GenerateArgs),
    /// Print the Gaussian taps nismooth uses (one per line, full precision).
    #[command(hide = true)]
    Weights(WeightsArgs),
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Input files, or directories (every *.nii / *.nii.gz inside, sorted).
    pub inputs: Vec<PathBuf>,
    /// A file listing inputs, one path a line ('#' starts a comment).
    #[arg(long)]
    pub list: Option<PathBuf>,
    /// Output directory (created if missing); must not hold any input.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Gaussian sigma: one value, or three comma-separated (x,y,z).
    #[arg(long, default_value = "2")]
    pub sigma: String,
    /// Units of sigma: voxels (as scipy), or mm (divided by the voxel size, pixdim).
    #[arg(long, value_enum, default_value_t = Units::Voxel)]
    pub units: Units,
    /// Kernel radius in sigmas: radius = int(truncate * sigma + 0.5).
    #[arg(long, default_value_t = 4.0)]
    pub truncate: f64,
    /// Boundary mode, as scipy.ndimage.
    #[arg(long, default_value = "reflect")]
    pub mode: String,
    /// Value outside the image for --mode constant.
    #[arg(long, default_value_t = 0.0)]
    pub cval: f64,
    /// Output dtype: input (as nibabel presents the data), float32 or float64.
    #[arg(long, value_enum, default_value_t = DtypeChoice::Input)]
    pub dtype: DtypeChoice,
    /// Filter threads per rank (default: SLURM_CPUS_PER_TASK when set, else the
    /// node's cores divided by the ranks on the node).
    #[arg(long)]
    pub threads: Option<usize>,
    /// How images are shared among MPI ranks.
    #[arg(long, value_enum, default_value_t = Schedule::Balanced)]
    pub schedule: Schedule,
    /// gzip level 0..9 for .nii.gz outputs (1 is what nibabel writes).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=9))]
    pub compression_level: u32,
    /// Output container (default: the same as each input's).
    #[arg(long, value_enum)]
    pub format: Option<FormatChoice>,
    /// Write the full report (configuration, per-image records, totals) as JSON.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Write one CSV row per image.
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Skip images whose output already exists.
    #[arg(long)]
    pub skip_existing: bool,
    /// Progress display: a bar on a terminal, log lines otherwise.
    #[arg(long, value_enum, default_value_t = ProgressChoice::Auto)]
    pub progress: ProgressChoice,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Units {
    Voxel,
    Mm,
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

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProgressChoice {
    Auto,
    Bar,
    Log,
    None,
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
    #[arg(long, value_enum, default_value_t = NoiseChoice::Rician)]
    pub noise: NoiseChoice,
    /// Output container.
    #[arg(long, value_enum, default_value_t = FormatChoice::NiiGz)]
    pub format: FormatChoice,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum NoiseChoice {
    Rician,
    Gaussian,
}

#[derive(Args, Debug)]
pub struct WeightsArgs {
    #[arg(long)]
    pub sigma: f64,
    #[arg(long, default_value_t = 4.0)]
    pub truncate: f64,
}

//! `nismooth run`: options into a `RunConfig`, the backend started on every
//! rank, the driver run, the report shown and exported, the exit code.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::choice::Choice;
use crate::config::{self, RunConfig, Selection, StopSettings};
use crate::driver;
use crate::driver::comm::Comm;
use crate::driver::stop;
use crate::error::UsageError;
use crate::filter::cuda::{self, CudaBackend};
use crate::filter::{cpu::CpuBackend, Backend, BackendChoice, Compat, FilterError, Units};
use crate::io::OutputFormat;
use crate::report::{self, Exporter};
use crate::resources::default_readers;
use crate::slurm::deadline;
use crate::slurm::{expand_pattern, SlurmContext};
use crate::volume::DType;

use super::cli::{DtypeChoice, FormatChoice, ProgressChoice, RunArgs};
use super::{logging, EXIT_FAILED_IMAGES, EXIT_OK, EXIT_REPORT_LOST, EXIT_STOPPED, EXIT_USAGE};

/// What a subcommand that runs images (`run`, `bids`) adds to the run:
/// which images, and root's work once the images are done. (Refusals are
/// root's planning, in the driver, so that every rank hears them once.)
pub trait Route {
    /// The images, given the kernel the options name (parsed once: `bids`
    /// names its outputs after it).
    fn select(&self, kernel: &Kernel) -> anyhow::Result<Selection>;

    /// Root's work with the report before it is shown (`bids`: the
    /// derivatives' metadata).
    fn after(&self, _report: &report::Report, _cfg: &RunConfig) -> anyhow::Result<()> {
        Ok(())
    }
}

/// The kernel's values, and the units they are in.
pub struct Kernel {
    pub values: [f64; 3],
    pub units: Units,
}

/// `nismooth run`: the inputs its arguments name.
struct Named<'a>(&'a RunArgs);

impl Route for Named<'_> {
    fn select(&self, _: &Kernel) -> anyhow::Result<Selection> {
        Ok(Selection::Named(sources(self.0)))
    }
}

/// The whole job, on however many ranks the launcher started.
pub fn run(args: &RunArgs) -> anyhow::Result<u8> {
    run_with(args, &Named(args))
}

/// A run over the images `route` selects, with its checks and its work after.
pub fn run_with(args: &RunArgs, route: &dyn Route) -> anyhow::Result<u8> {
    // Drain signals first: one that comes while MPI starts or squeue
    // answers must not kill the process with nothing written.
    stop::install(&signal_settings(args)?).context("watching the drain signals")?;
    crate::resources::check_start_room().map_err(anyhow::Error::msg)?;
    let comm = driver::connect()?;
    logging::init(comm.rank(), comm.size());
    let cfg = match run_config(args, route, comm.size(), comm.node_size(), comm.is_root()) {
        Ok(cfg) => cfg,
        Err(e) => {
            // Every rank has the refusal; one line says it.
            if comm.is_root() {
                eprintln!("nismooth: error: {}", super::error_text(&e));
            }
            return Ok(EXIT_USAGE);
        }
    };
    let mut backend = backend(&cfg, comm.as_ref())?;
    let command = super::command_line();

    let outcome = match driver::run(&cfg, comm.as_ref(), backend.as_mut(), command) {
        Ok(o) => o,
        Err(e) => {
            // Every rank has the refusal; one line says it.
            if comm.is_root() {
                eprintln!(
                    "nismooth: refused: {}",
                    report::printable_value(&e.to_string())
                );
            }
            return Ok(EXIT_USAGE);
        }
    };
    let written = outcome.report.as_ref().map_or(Ok(()), |r| {
        route.after(r, &cfg).and_then(|()| show_and_export(r, &cfg))
    });
    // Every rank waits here for root's report: a launcher that ends a step
    // when one rank exits non-zero (srun --kill-on-bad-exit) must not kill
    // root while it writes. Root reaches it even when writing failed.
    comm.sum_u64(0);
    // What the images came to decides the code: a run stopped early (3, so
    // that a job script requeues it) or with failed images (1) says so even
    // when its report was lost too; 4 is for work all done, report lost.
    let images = if outcome.undone > 0 {
        EXIT_STOPPED
    } else if outcome.failed > 0 {
        EXIT_FAILED_IMAGES
    } else {
        EXIT_OK
    };
    if let Err(e) = &written {
        if comm.is_root() {
            let what = match images {
                EXIT_OK => "the images themselves were written (the journal in OUTDIR/.nismooth vouches for each)",
                _ => "the images' own outcome follows (the journal in OUTDIR/.nismooth holds each one's)",
            };
            eprintln!("nismooth: error: {}; {what}", super::error_text(e));
        }
    }
    if images == EXIT_STOPPED && comm.is_root() {
        eprintln!(
            "nismooth: stopped early: {} image(s) left; {}",
            outcome.undone,
            what_finishes_them()
        );
    }
    if images == EXIT_FAILED_IMAGES && written.is_err() && comm.is_root() {
        eprintln!("nismooth: {} image(s) failed", outcome.failed);
    }
    Ok(match (images, written) {
        (EXIT_OK, Err(_)) => EXIT_REPORT_LOST,
        (code, _) => code,
    })
}

/// Who finishes the images a stopped run left: the job script that
/// requeues itself (`nismooth sbatch --requeue` exports how many requeues
/// it has left), else the user, with `--resume`.
fn what_finishes_them() -> String {
    let left = std::env::var("NISMOOTH_REQUEUES_LEFT")
        .ok()
        .and_then(|v| v.trim().parse::<i64>().ok());
    match left {
        Some(n) if n > 0 => format!(
            "this job script now requeues the job, and its next attempt resumes ({n} requeue(s) left)"
        ),
        Some(_) => "no requeue is left: submit the job script again (it resumes), or run again with --resume".into(),
        None => "run again with --resume to finish them".into(),
    }
}

/// The summary table, and the report and CSV where asked for.
fn show_and_export(report: &report::Report, cfg: &RunConfig) -> anyhow::Result<()> {
    // The files first: a standard output that cannot be written (a full
    // disk, a closed pipe) must not cost the report.
    if let Some(path) = &cfg.report {
        report::export_to(&report::Json, report, path).context("writing --report")?;
    }
    if let Some(path) = &cfg.csv {
        report::export_to(&report::Csv, report, path).context("writing --csv")?;
    }
    if let Some(path) = &cfg.trace {
        report::export_to(&report::Trace, report, path).context("writing --trace")?;
    }
    // The result, on standard output (logs and progress are on stderr).
    super::say(&report::Table.render(report)?)
}

/// The inputs these options name, as the run will discover them.
pub fn sources(a: &RunArgs) -> crate::plan::Sources {
    crate::plan::Sources {
        paths: a.inputs.clone(),
        list: a.list.clone(),
        recursive: a.recursive,
        outdir: Some(a.output.clone()),
        written: Some(crate::report::journal::written),
    }
}

/// The kernel the options name: `--fwhm` in mm, else `--sigma` in `--units`
/// (mm under `--compat fsl`).
pub fn kernel(a: &RunArgs) -> Result<Kernel, UsageError> {
    Ok(match &a.fwhm {
        Some(f) => Kernel {
            values: config::parse_axes("--fwhm", f)?,
            units: Units::FwhmMm,
        },
        None => Kernel {
            values: config::parse_sigma(&a.sigma)?,
            units: if a.compat == Compat::Fsl {
                Units::Mm
            } else {
                a.units
            },
        },
    })
}

/// The readers a run with these options gets when it has `threads` threads:
/// `--readers`, else the default.
pub fn readers(a: &RunArgs, threads: usize) -> usize {
    a.readers.map_or(default_readers(threads), |n| {
        n.min(MAX_READERS as u64) as usize
    })
}

/// The most readers a rank starts: each holds an image in memory and a
/// thread, and past a few the file system, not the count, decides (30 000
/// readers aborted on their threads' guard pages, u64::MAX overflowed).
pub const MAX_READERS: usize = 64;

/// `--threads N` up to the CPUs this process may run on: more only share
/// them, and a huge count spent minutes starting threads that a drain
/// signal could not stop (capped, with a warning on root).
pub(super) fn cap_threads(n: usize, root: bool) -> (usize, String) {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if n <= cpus {
        return (n, "--threads".into());
    }
    if root {
        log::warn!(
            "--threads {n} is more than the {cpus} CPU(s) this process may run on: {cpus} used"
        );
    }
    (cpus, format!("--threads {n}, capped to the CPUs"))
}

/// The run's settings from its options and its place in the job: `ranks`
/// processes in the run, `node_ranks` of them on this node (for the
/// default threads), the Slurm context from the environment.
fn run_config(
    a: &RunArgs,
    route: &dyn Route,
    ranks: usize,
    node_ranks: usize,
    root: bool,
) -> anyhow::Result<RunConfig> {
    if a.compat == Compat::Fsl && a.units == Units::Mm {
        return Err(UsageError::Conflict(
            "--compat fsl takes σ in mm already: --units does not apply",
        )
        .into());
    }
    let kernel = kernel(a)?;
    let selection = route.select(&kernel)?;
    let bids = matches!(selection, Selection::Bids(_));
    if a.output
        .components()
        .any(|c| c.as_os_str() == crate::plan::STATE_DIR)
    {
        anyhow::bail!(
            "-o {}: refused, it is inside a run's {} folder (its journals and lock)",
            a.output.display(),
            crate::plan::STATE_DIR
        );
    }
    let (outdir, output_name) = output_target(&a.output, a.format.map(output_format), bids)?;
    let (threads, threads_from) = match a.threads {
        Some(n) => cap_threads(n, root),
        None => config::default_threads(node_ranks),
    };
    if root && a.threads.is_none() && threads_from.contains("capped") {
        log::warn!("{threads_from}");
    }
    if root && a.readers.is_some_and(|n| n > MAX_READERS as u64) {
        log::warn!("--readers is more than {MAX_READERS}: {MAX_READERS} used");
    }
    let slurm = SlurmContext::from_env();
    let slot = slurm
        .as_ref()
        .map(|c| c.array_slot())
        .transpose()?
        .flatten();
    let array = crate::plan::array::slot_for_run(a.array, slurm.is_some(), slot, ranks)?;
    let stop = stop_settings(a, slurm.as_ref(), root)?;
    let resume = a.resume || restarted(a, slurm.as_ref());
    let expand = |p: &Option<PathBuf>| p.as_deref().map(|p| expand_pattern(p, slurm.as_ref()));
    let cfg = RunConfig {
        sigma: kernel.values,
        units: kernel.units,
        compat: a.compat,
        truncate: a.truncate,
        mode: a.mode,
        cval: a.cval,
        dtype: match (a.dtype, a.compat) {
            (None, Compat::Scipy | Compat::Nilearn) | (Some(DtypeChoice::Input), _) => None,
            (None, Compat::Fsl) | (Some(DtypeChoice::Float32), _) => Some(DType::F32),
            (Some(DtypeChoice::Float64), _) => Some(DType::F64),
        },
        readers: readers(a, threads),
        threads,
        threads_from,
        schedule: a.schedule,
        split: a.split,
        compression_level: a.compression_level,
        format: a.format.map(output_format),
        output_name,
        report: expand(&a.report),
        csv: expand(&a.csv),
        trace: expand(&a.trace),
        slurm,
        array,
        array_chunk: a.array_chunk.map(|k| k as usize),
        backend: a.backend,
        skip_existing: a.skip_existing,
        resume,
        sync: !a.no_sync,
        progress: if super::logging::quiet() {
            ProgressChoice::None
        } else {
            a.progress
        },
        progress_every: std::time::Duration::from_secs_f64(a.progress_interval),
        stop,
        ..RunConfig::of(selection, outdir)
    };
    cfg.check()?;
    Ok(cfg)
}

/// Where outputs go: `-o` is a folder, unless it ends in `.nii`/`.nii.gz`
/// and is not an existing folder, as fslmaths and niimath take it: then it
/// names the one output file (its folder, and its name).
fn output_target(
    output: &Path,
    format: Option<OutputFormat>,
    bids: bool,
) -> Result<(PathBuf, Option<std::ffi::OsString>), UsageError> {
    // `.nii` and `.nii.gz` only: a `.hdr` name would be a pair's header
    // without its `.img`, which nibabel and FSL would look for.
    let lower = output.to_string_lossy().to_lowercase();
    let single_file = lower.ends_with(".nii") || lower.ends_with(".nii.gz");
    if bids || output.is_dir() {
        return Ok((output.to_path_buf(), None));
    }
    if [".hdr", ".hdr.gz", ".img", ".img.gz"]
        .iter()
        .any(|x| lower.ends_with(x))
    {
        return Err(UsageError::Conflict(
            "-o names a .hdr/.img pair: nismooth writes a pair's output as one .nii or .nii.gz file; \
             name the output file .nii or .nii.gz, or give a folder",
        ));
    }
    if !single_file {
        return Ok((output.to_path_buf(), None));
    }
    let named = if crate::plan::is_gz_name(output) {
        OutputFormat::NiiGz
    } else {
        OutputFormat::Nii
    };
    if format.is_some_and(|f| f != named) {
        return Err(UsageError::Conflict(
            "--format and the extension of the output file -o names disagree",
        ));
    }
    let folder = output.parent().unwrap_or(Path::new("")).to_path_buf();
    Ok((folder, output.file_name().map(ToOwned::to_owned)))
}

/// Whether Slurm restarted this job (a requeue after a drain, a node
/// failure): then the run resumes by itself, unless told --skip-existing.
fn restarted(a: &RunArgs, slurm: Option<&SlurmContext>) -> bool {
    let count = slurm.and_then(|c| c.restart_count).unwrap_or(0);
    let resume = count > 0 && !a.skip_existing && !a.resume;
    if resume {
        log::info!("this job was restarted (SLURM_RESTART_COUNT={count}): resuming (--resume)");
    }
    resume
}

fn bad(option: &'static str, value: &str, expected: &str) -> UsageError {
    UsageError::BadValue {
        option,
        value: value.into(),
        expected: expected.into(),
    }
}

/// The drain signals and the grace from the options.
fn signal_settings(a: &RunArgs) -> Result<StopSettings, UsageError> {
    let mut s = StopSettings::default();
    if a.drain_signal.iter().any(|v| v == "none") {
        s.signals = Vec::new();
    } else if !a.drain_signal.is_empty() {
        s.signals = a
            .drain_signal
            .iter()
            .map(|v| {
                stop::parse_signal(v).ok_or_else(|| {
                    bad(
                        "--drain-signal",
                        v,
                        "one of TERM, INT, USR1, USR2, HUP, QUIT, or none",
                    )
                })
            })
            .collect::<Result<_, _>>()?;
    }
    if !(a.grace.is_finite() && a.grace >= 0.0) {
        return Err(bad("--grace", &a.grace.to_string(), "seconds, 0 or more"));
    }
    s.grace_s = a.grace;
    Ok(s)
}

/// Signals, grace and deadline: `--deadline`, or inside Slurm the job's
/// end time less the margin. Only root asks Slurm (one `squeue` a job, not
/// one a rank); the driver gives every rank root's deadline.
fn stop_settings(
    a: &RunArgs,
    slurm: Option<&SlurmContext>,
    root: bool,
) -> Result<StopSettings, UsageError> {
    let mut s = signal_settings(a)?;
    let now = stop::unix_now();
    let margin = match a.deadline_margin.as_str() {
        "auto" => None,
        text => Some(
            deadline::parse_duration(text)
                .map_err(|_| bad("--deadline-margin", text, deadline::FORMS))?,
        ),
    };
    if let Some(text) = &a.deadline {
        let at = deadline::parse_deadline(text, now)
            .map_err(|_| bad("--deadline", text, deadline::FORMS))?;
        (s.deadline_unix, s.deadline_from) = (Some(at), Some(format!("--deadline {text}")));
    } else if let (Some(ctx), false, true) = (slurm, a.no_deadline, root) {
        if let Some(window) = deadline::job_window(ctx) {
            let keep = margin.unwrap_or_else(|| window.auto_margin());
            s.deadline_unix = Some(window.end - keep);
            s.deadline_from = Some(format!("the job's end ({}) less {keep:.0} s", window.from));
        }
    }
    if let (Some(d), Some(from), true) = (s.deadline_unix, &s.deadline_from, root) {
        if d <= now {
            log::warn!("deadline: {from} has passed: no image will start");
        } else {
            log::info!("deadline: {from}, {:.0} s from now", d - now);
        }
    }
    Ok(s)
}

/// The container `--format` names.
pub fn output_format(f: FormatChoice) -> OutputFormat {
    match f {
        FormatChoice::Nii => OutputFormat::Nii,
        FormatChoice::NiiGz => OutputFormat::NiiGz,
    }
}

/// The filter backend `--backend` asks for, started on every rank. Ranks
/// agree before going on: if one cannot start its backend (no GPU on its
/// node, say), all stop together instead of leaving the others waiting in
/// the first collective.
fn backend(cfg: &RunConfig, comm: &dyn Comm) -> anyhow::Result<Box<dyn Backend>> {
    let local = cuda::local_rank(comm.node_rank(), comm.size());
    let mine = start_backend(
        cfg.backend,
        cfg.compat,
        cfg.threads,
        local,
        comm.node_size(),
    );
    let failed = comm.sum_u64(mine.is_err() as u64);
    match mine {
        Err(e) => anyhow::bail!("--backend {}: {e}", cfg.backend.name()),
        Ok(_) if failed > 0 => anyhow::bail!(
            "--backend {}: {failed} other rank(s) could not start it",
            cfg.backend.name()
        ),
        Ok(b) => Ok(b),
    }
}

/// The backend `choice` names, with `threads` CPU threads (or host threads
/// beside a GPU): `auto` takes CUDA where it starts, else the CPU.
pub fn start_backend(
    choice: BackendChoice,
    compat: Compat,
    threads: usize,
    local_rank: usize,
    node_ranks: usize,
) -> Result<Box<dyn Backend>, FilterError> {
    let cpu =
        || -> Result<Box<dyn Backend>, FilterError> { Ok(Box::new(CpuBackend::new(threads)?)) };
    let gpu = || -> Result<Box<dyn Backend>, FilterError> {
        let b = CudaBackend::new(threads, local_rank, node_ranks)?;
        log::info!("backend cuda: {}", b.describe());
        Ok(Box::new(b))
    };
    match choice {
        BackendChoice::Cpu => cpu(),
        BackendChoice::Cuda if compat == Compat::Fsl => {
            Err(FilterError::Unavailable(cuda::FSL_ON_CPU_ONLY.into()))
        }
        BackendChoice::Cuda => gpu(),
        BackendChoice::Auto if compat == Compat::Fsl => {
            log::debug!("backend auto: cpu (--compat fsl runs on the CPU)");
            cpu()
        }
        BackendChoice::Auto => gpu().or_else(|e| {
            // A CUDA build that finds no usable GPU is worth a line; a build
            // without CUDA falling back is the expected case.
            if cfg!(feature = "cuda") {
                log::info!("backend auto: cpu ({e})");
            } else {
                log::debug!("backend auto: cpu ({e})");
            }
            cpu()
        }),
    }
}

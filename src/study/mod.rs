//! Scaling studies: ranks × threads × image counts, each a real run, in one command.
//!
//! A study sweeps ranks × threads × image counts over one data set; each point
//! is a real `nismooth run` through the chosen launcher (none, mpirun, srun),
//! and its report becomes one row of the study's table. `fit` turns a study
//! into predictions for a target workload (`nismooth estimate`), `plot` draws
//! it, `tables` writes it as Markdown and CSV.

pub mod fit;
pub mod plot;
pub mod tables;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::plan::schedule::Schedule;
use crate::report::{ImageRecord, Report, Status};
use crate::resources::{default_readers, pipeline_images};

/// Why a study or an estimate could not be made.
#[derive(Debug, thiserror::Error)]
pub enum StudyError {
    #[error("--launcher none cannot start {0} ranks")]
    Launcher(usize),
    #[error("--tasks asks for {asked} images but the data set has {have}")]
    TooFewImages { asked: usize, have: usize },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("starting point {point}: {source}")]
    Start {
        point: String,
        source: std::io::Error,
    },
    #[error("point {point} wrote no report ({status}); see {log}")]
    NoReport {
        point: String,
        status: String,
        log: PathBuf,
    },
    #[error(transparent)]
    Write(#[from] crate::io::WriteError),
    #[error(transparent)]
    Report(#[from] crate::report::merge::MergeError),
    #[error("plotting {path}: {message}")]
    Plot { path: PathBuf, message: String },
    #[error("the study has no successful points")]
    NoPoints,
    #[error("the study has no timed images at {0} thread(s) to fit time = a + b × voxels")]
    NoTimedImages(usize),
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> StudyError + '_ {
    move |source| StudyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub const STUDY_SCHEMA: &str = "nismooth-study";

#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Launcher {
    /// srun inside a Slurm allocation, else mpirun; none for one rank.
    Auto,
    None,
    Mpirun,
    Srun,
}

crate::choice::named_choices!(Launcher {
    Auto => "auto": "srun inside a Slurm allocation, else mpirun; none for one rank",
    None => "none": "one process per point (ranks must be 1)",
    Mpirun => "mpirun": "mpirun -n RANKS (OpenMPI's or MPICH's, as the binary links)",
    Srun => "srun": "srun --mpi=pmix -n RANKS -c THREADS, inside an allocation",
});

/// What to sweep and on what.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StudySpec {
    pub ranks: Vec<usize>,
    pub threads: Vec<usize>,
    pub tasks: Vec<usize>,
    pub schedule: Schedule,
    pub launcher: Launcher,
    pub reps: usize,
    /// The images, in order; a point with `tasks = k` uses the first k.
    #[serde(skip)]
    pub images: Vec<PathBuf>,
    /// Extra `nismooth run` arguments (sigma, mode, ...).
    pub run_args: Vec<String>,
}

/// One row of the study's table: a run at (ranks, threads, tasks).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StudyPoint {
    pub ranks: usize,
    pub threads: usize,
    pub tasks: usize,
    pub rep: usize,
    /// The slowest rank's wall, from the report (process start to last image).
    pub wall_s: f64,
    /// The whole command, launcher included, timed from outside.
    pub outer_wall_s: f64,
    pub peak_rss_max_bytes: u64,
    pub peak_rss_total_bytes: u64,
    pub read_s: f64,
    pub filter_s: f64,
    pub write_s: f64,
    pub read_per_task_s: f64,
    pub filter_per_task_s: f64,
    pub write_per_task_s: f64,
    pub cpu_efficiency: f64,
    pub wtime_over_ptime: f64,
    /// Total peak memory over tasks (the "memory per task" column).
    pub mem_per_task_bytes: f64,
    /// Voxels on the busiest rank (the makespan's driver).
    pub max_rank_voxels: u64,
    /// Images on the busiest rank (0 in studies made before it was kept:
    /// read as ⌈tasks / ranks⌉).
    #[serde(default)]
    pub max_rank_images: usize,
    /// The input voxel types the point's images had (sorted, each once).
    #[serde(default)]
    pub dtypes: Vec<String>,
    /// Each rank's images in the order they finished, as (voxels, seconds
    /// since the process started): the per-image and per-voxel costs come
    /// from the steps between them, which start-up noise does not tilt.
    #[serde(default)]
    pub finishes: Vec<Vec<(u64, f64)>>,
    /// The most image bytes one rank held at once: the largest sum over
    /// `pipeline_images` consecutive images of a rank, in the order it
    /// read them (0 in older studies).
    #[serde(default)]
    pub in_flight_bytes: u64,
    /// Read + filter + write of the busiest rank, seconds.
    #[serde(default)]
    pub max_rank_busy_s: f64,
    pub total_voxels: u64,
    /// Bytes read and written by the point's images (files in + files out):
    /// what the file system carried (0 in older studies).
    #[serde(default)]
    pub bytes_moved: u64,
    /// The largest image's in-memory size (voxels × bytes per voxel as read).
    pub largest_image_bytes: u64,
    pub load_imbalance: f64,
    pub failed: usize,
    pub report: PathBuf,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Study {
    pub schema: String,
    pub nismooth_version: String,
    pub host: String,
    pub cpu: String,
    pub cores: usize,
    /// The study's real folder, where its `data/`, `runs/` and `work/`
    /// are: an estimate from a copy of `study.json` elsewhere still guards
    /// them (absent in older studies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder: Option<PathBuf>,
    pub spec: StudySpec,
    pub points: Vec<StudyPoint>,
}

fn bytes_per_voxel(dtype: Option<&str>) -> u64 {
    match dtype.unwrap_or("float32") {
        "uint8" | "int8" => 1,
        "int16" | "uint16" => 2,
        "int32" | "uint32" | "float32" => 4,
        _ => 8,
    }
}

/// The report's successful images, grouped by rank in one pass.
fn by_rank(r: &Report) -> Vec<Vec<&ImageRecord>> {
    let mut ranks = vec![Vec::new(); r.processes.len()];
    for i in r.images.iter().filter(|i| i.status == Status::Ok) {
        if let Some(mine) = ranks.get_mut(i.rank) {
            mine.push(i);
        }
    }
    ranks
}

/// The most image bytes one rank held at once: its images in the order it
/// started them, `pipeline_images` at a time.
fn in_flight(ranks: &[Vec<&ImageRecord>], threads: usize) -> u64 {
    let depth = pipeline_images(default_readers(threads));
    ranks
        .iter()
        .map(|mine| {
            let mut mine = mine.clone();
            mine.sort_by(|a, b| a.started_s.total_cmp(&b.started_s));
            let sizes: Vec<u64> = mine.iter().map(|i| held(i)).collect();
            fit::in_flight_bytes(&sizes, depth)
        })
        .max()
        .unwrap_or(0)
}

/// What a rank's pipeline held of an image at once: the whole of a 3-D
/// image, a part of a series (`resources::held_bytes`; a record's shape
/// ends with its volumes when it has several).
fn held(i: &ImageRecord) -> u64 {
    let bytes = i.voxels * bytes_per_voxel(i.dtype_in.as_deref());
    let volumes = if i.shape.len() == 4 { i.shape[3] } else { 1 };
    crate::resources::held_bytes(bytes, volumes)
}

/// Each rank's images as (voxels, finished_s), in the order they finished.
fn finishes(ranks: &[Vec<&ImageRecord>]) -> Vec<Vec<(u64, f64)>> {
    ranks
        .iter()
        .map(|mine| {
            let mut done: Vec<(u64, f64)> = mine.iter().map(|i| (i.voxels, i.finished_s)).collect();
            done.sort_by(|x, y| x.1.total_cmp(&y.1));
            done
        })
        .collect()
}

/// The row of a study from one run's report.
pub fn point_from_report(
    r: &Report,
    ranks: usize,
    threads: usize,
    rep: usize,
    outer: f64,
    path: &Path,
) -> StudyPoint {
    let s = &r.summary;
    let peak_max = r
        .processes
        .iter()
        .map(|p| p.peak_rss_bytes)
        .max()
        .unwrap_or(0);
    let peak_total: u64 = r.processes.iter().map(|p| p.peak_rss_bytes).sum();
    let largest = r
        .images
        .iter()
        .filter(|i| i.status == Status::Ok)
        .map(held)
        .max()
        .unwrap_or(0);
    let busiest = r.processes.iter().max_by_key(|p| p.voxels);
    let grouped = by_rank(r);
    let finishes = finishes(&grouped);
    let in_flight_bytes = in_flight(&grouped, threads);
    let bytes_moved = r
        .images
        .iter()
        .filter(|i| i.status == Status::Ok)
        .map(|i| i.bytes_in + i.bytes_out)
        .sum();
    let mut dtypes: Vec<String> = r.images.iter().filter_map(|i| i.dtype_in.clone()).collect();
    dtypes.sort();
    dtypes.dedup();
    StudyPoint {
        ranks,
        threads,
        tasks: r.images.len(),
        rep,
        wall_s: s.wall_s,
        outer_wall_s: outer,
        peak_rss_max_bytes: peak_max,
        peak_rss_total_bytes: peak_total,
        read_s: s.read_s,
        filter_s: s.filter_s,
        write_s: s.write_s,
        read_per_task_s: s.read_per_task_s,
        filter_per_task_s: s.filter_per_task_s,
        write_per_task_s: s.write_per_task_s,
        cpu_efficiency: s.cpu_efficiency,
        wtime_over_ptime: s.wtime_over_ptime,
        mem_per_task_bytes: peak_total as f64 / r.images.len().max(1) as f64,
        max_rank_voxels: busiest.map_or(0, |p| p.voxels),
        max_rank_images: busiest.map_or(0, |p| p.images),
        dtypes,
        finishes,
        in_flight_bytes,
        max_rank_busy_s: r.processes.iter().map(|p| p.busy_s).fold(0.0, f64::max),
        total_voxels: r.images.iter().map(|i| i.voxels).sum(),
        bytes_moved,
        largest_image_bytes: largest,
        load_imbalance: s.load_imbalance,
        failed: s.failed,
        report: path.to_path_buf(),
    }
}

fn resolve_launcher(l: Launcher, ranks: usize) -> Result<Launcher, StudyError> {
    Ok(match (l, ranks) {
        (_, 1) if l != Launcher::Srun => Launcher::None,
        (Launcher::None, r) => return Err(StudyError::Launcher(r)),
        (Launcher::Auto, _) if std::env::var_os("SLURM_JOB_ID").is_some() => Launcher::Srun,
        (Launcher::Auto, _) => Launcher::Mpirun,
        (other, _) => other,
    })
}

/// Whether `mpirun` is MPICH's Hydra: the binary's own MPI says which
/// launcher belongs to it.
fn mpich_launcher() -> bool {
    #[cfg(feature = "mpi")]
    return crate::driver::mpi::library_is_mpich();
    #[cfg(not(feature = "mpi"))]
    false
}

/// The command for one point.
fn point_command(binary: &Path, launcher: Launcher, ranks: usize, threads: usize) -> Command {
    match launcher {
        Launcher::Mpirun => {
            let mut c = Command::new("mpirun");
            c.args(["-n", &ranks.to_string()]);
            // Threads need more than the one core OpenMPI binds each rank to;
            // MPICH's Hydra neither binds nor limits ranks to cores by default,
            // and refuses OpenMPI's flags.
            if !mpich_launcher() {
                c.args(["--oversubscribe", "--bind-to", "none"]);
            }
            // SAFETY: geteuid only reads this process's user id.
            if unsafe { libc::geteuid() } == 0 {
                c.env("OMPI_ALLOW_RUN_AS_ROOT", "1")
                    .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
            }
            c.arg(binary);
            c
        }
        Launcher::Srun => {
            let mut c = Command::new("srun");
            c.args([
                "--mpi=pmix",
                "-n",
                &ranks.to_string(),
                "-c",
                &threads.to_string(),
            ]);
            c.arg(binary);
            c
        }
        _ => Command::new(binary),
    }
}

/// Runs every point (reps interleaved, so drift spreads evenly) and collects the rows.
pub fn run(spec: &StudySpec, dir: &Path, binary: &Path) -> Result<Vec<StudyPoint>, StudyError> {
    let max_tasks = spec.tasks.iter().copied().max().unwrap_or(0);
    if max_tasks > spec.images.len() {
        return Err(StudyError::TooFewImages {
            asked: max_tasks,
            have: spec.images.len(),
        });
    }
    let runs = dir.join("runs");
    std::fs::create_dir_all(&runs).map_err(io_error(&runs))?;
    let mut grid = Vec::new();
    for rep in 0..spec.reps {
        for &r in &spec.ranks {
            for &t in &spec.threads {
                for &k in &spec.tasks {
                    grid.push((rep, r, t, k));
                }
            }
        }
    }
    let mut points = Vec::new();
    for (n, &(rep, ranks, threads, tasks)) in grid.iter().enumerate() {
        let p = run_point(spec, dir, binary, (rep, ranks, threads, tasks))?;
        eprintln!(
            "[{}/{}] {ranks} rank(s) × {threads} thread(s) × {tasks} task(s): wall {:.2} s, peak {:.1} MiB/rank, CPU eff {:.0}%{}",
            n + 1,
            grid.len(),
            p.wall_s,
            crate::metrics::mib(p.peak_rss_max_bytes as f64),
            100.0 * p.cpu_efficiency,
            if p.failed > 0 { format!(", {} FAILED", p.failed) } else { String::new() }
        );
        points.push(p);
    }
    Ok(points)
}

/// One point (rep, ranks, threads, tasks): its list, its run under the
/// launcher with its log, and its row from the run's report.
fn run_point(
    spec: &StudySpec,
    dir: &Path,
    binary: &Path,
    (rep, ranks, threads, tasks): (usize, usize, usize, usize),
) -> Result<StudyPoint, StudyError> {
    let runs = dir.join("runs");
    let launcher = resolve_launcher(spec.launcher, ranks)?;
    let name = point_name(ranks, threads, tasks, rep);
    let list = runs.join(format!("{name}.list"));
    // A list's relative lines are read from the list's folder: absolute
    // paths keep a study started with relative ones working. Written as
    // bytes: a name that is not UTF-8 is a name (`display` would mangle it).
    let text: Vec<u8> = spec.images[..tasks]
        .iter()
        .flat_map(|p| {
            let abs = std::path::absolute(p).unwrap_or(p.clone());
            let mut line = std::os::unix::ffi::OsStrExt::as_bytes(abs.as_os_str()).to_vec();
            line.push(b'\n');
            line
        })
        .collect();
    // Replaced, never rewritten in place: a copy of the study made with
    // hard links (`cp -al`) keeps its own lists and logs.
    crate::io::write_file_atomic(&list, &text)?;
    let out = dir.join("work").join(&name);
    let _ = std::fs::remove_dir_all(&out);
    let report = runs.join(format!("{name}.json"));
    let mut cmd = point_command(binary, launcher, ranks, threads);
    cmd.arg("run")
        .arg("--list")
        .arg(&list)
        .arg("-o")
        .arg(&out)
        .args(["--threads", &threads.to_string()])
        .args(["--schedule", &format!("{:?}", spec.schedule).to_lowercase()])
        .args(["--progress", "none", "--report"])
        .arg(&report)
        .args(&spec.run_args)
        .env("RUST_LOG", "warn");
    // Inside a job, a point keeps no deadline of its own (one squeue and
    // a header read an image would be timed with it), unless asked.
    if !spec.run_args.iter().any(|a| a.starts_with("--deadline")) {
        cmd.arg("--no-deadline");
    }
    // Each point's own output (its table, any error) goes to its log.
    let log_path = runs.join(format!("{name}.log"));
    let log = fresh_file(&log_path)?;
    cmd.stdout(log.try_clone().map_err(io_error(&log_path))?)
        .stderr(log);
    // Flush the previous point's writes, so no point pays for another's.
    // SAFETY: sync has no arguments and cannot fail.
    unsafe { libc::sync() };
    let t0 = Instant::now();
    let status = cmd.status().map_err(|source| StudyError::Start {
        point: format!("{name} ({launcher:?})"),
        source,
    })?;
    let outer = t0.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&out);
    if !report.exists() {
        return Err(StudyError::NoReport {
            point: name,
            status: status.to_string(),
            log: log_path,
        });
    }
    let r = crate::report::merge::load(&report)?;
    Ok(point_from_report(&r, ranks, threads, rep, outer, &report))
}

/// An empty file that replaced whatever was at `path`, open for writing.
fn fresh_file(path: &Path) -> Result<std::fs::File, StudyError> {
    crate::io::write_file_atomic(path, b"")?;
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(io_error(path))
}

/// A point's name: its runs/ files are NAME.list, NAME.json and NAME.log.
pub fn point_name(ranks: usize, threads: usize, tasks: usize, rep: usize) -> String {
    format!("r{ranks}-t{threads}-n{tasks}-rep{rep}")
}

impl StudyPoint {
    pub fn name(&self) -> String {
        point_name(self.ranks, self.threads, self.tasks, self.rep)
    }

    /// The most image bytes a rank held at once (for older studies: the
    /// largest image times the images a rank holds at once).
    pub fn in_flight(&self) -> f64 {
        match self.in_flight_bytes {
            0 => {
                let depth = pipeline_images(default_readers(self.threads));
                (self.largest_image_bytes * self.busiest_images().min(depth) as u64) as f64
            }
            b => b as f64,
        }
    }

    /// Images on the busiest rank (⌈tasks / ranks⌉ for older studies).
    pub fn busiest_images(&self) -> usize {
        match self.max_rank_images {
            0 => self.tasks.div_ceil(self.ranks.max(1)),
            n => n,
        }
    }
}

/// A study point for the tests: `wall` seconds, `peak` bytes, 1000 voxels per image.
#[cfg(test)]
pub(crate) fn test_point(ranks: usize, tasks: usize, wall: f64, peak: u64) -> StudyPoint {
    StudyPoint {
        ranks,
        threads: 1,
        tasks,
        rep: 0,
        wall_s: wall,
        outer_wall_s: wall,
        peak_rss_max_bytes: peak,
        peak_rss_total_bytes: peak * ranks as u64,
        // Stages far below the walls' cost per image: the stage floor
        // (fit::time::stage_floor) stays out of the tests that do not set it.
        read_s: 2e-4 * tasks as f64,
        filter_s: 1e-4 * tasks as f64,
        write_s: 7e-4 * tasks as f64,
        read_per_task_s: 2e-4,
        filter_per_task_s: 1e-4,
        write_per_task_s: 7e-4,
        cpu_efficiency: 0.9,
        wtime_over_ptime: 1.0,
        mem_per_task_bytes: 0.0,
        max_rank_voxels: (tasks.div_ceil(ranks) * 1000) as u64,
        max_rank_images: tasks.div_ceil(ranks),
        dtypes: vec!["int16".into()],
        finishes: Vec::new(),
        in_flight_bytes: 0,
        max_rank_busy_s: wall - 0.3,
        total_voxels: (tasks * 1000) as u64,
        bytes_moved: (tasks * 3000) as u64,
        largest_image_bytes: 4000,
        load_imbalance: 1.0,
        failed: 0,
        report: "r.json".into(),
    }
}

/// The CPU's model name, for the study's header.
pub fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.into())
}

//! `nismooth estimate`: a study in, the target's time, memory and Slurm
//! request out (as text, JSON and an sbatch script).

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::metrics::MIB;
use crate::plan::Sources;
use crate::slurm::script::{self, per_cpu_mib, JobSpec, Memory, Model};
use crate::study::fit::{self, Estimate, Target};
use crate::study::{Study, STUDY_SCHEMA};

use super::cli::EstimateArgs;
use super::study::write;

mod array;

/// What the estimate needs of the target's images: each one's voxels and
/// size in memory (list order), and the voxel types.
struct TargetImages {
    voxels: Vec<u64>,
    bytes: Vec<u64>,
    dtypes: Vec<String>,
}

/// Reads the headers of the images `sources` name.
fn target_images(sources: &Sources) -> anyhow::Result<TargetImages> {
    let paths = sources.paths()?;
    anyhow::ensure!(!paths.is_empty(), "the target names no images");
    let mut t = TargetImages {
        voxels: Vec::new(),
        bytes: Vec::new(),
        dtypes: Vec::new(),
    };
    for p in &paths {
        let h =
            crate::io::read_header_info(p).with_context(|| format!("reading {}", p.display()))?;
        t.voxels.push(h.voxels());
        t.bytes.push(crate::resources::held_bytes(
            h.memory_bytes(),
            h.shape.volumes,
        ));
        t.dtypes.push(h.presented().to_string());
    }
    t.dtypes.sort();
    t.dtypes.dedup();
    Ok(t)
}

/// A predicted time: seconds (ms under one) under two minutes, else H:MM:SS.
fn span(s: f64) -> String {
    if s < 1.0 {
        format!("{s:.3} s")
    } else if s < 120.0 {
        format!("{s:.1} s")
    } else {
        crate::metrics::hms(s)
    }
}

/// A study's record, checked to be one.
fn read_study(path: &Path) -> anyhow::Result<Study> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let study: Study = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not a study", path.display()))?;
    anyhow::ensure!(
        study.schema == STUDY_SCHEMA,
        "{} is not a nismooth study",
        path.display()
    );
    // A wall that no run can have (edited, or a broken clock) would fit a
    // model that predicts nothing: 0.0 s for 40 000 images.
    for p in &study.points {
        let times = [
            ("wall_s", p.wall_s),
            ("outer_wall_s", p.outer_wall_s),
            ("read_s", p.read_s),
            ("filter_s", p.filter_s),
            ("write_s", p.write_s),
            ("read_per_task_s", p.read_per_task_s),
            ("filter_per_task_s", p.filter_per_task_s),
            ("write_per_task_s", p.write_per_task_s),
            ("max_rank_busy_s", p.max_rank_busy_s),
        ];
        // Walls of a microsecond or less are no run either (a denormal, an edit).
        let impossible = times.iter().find(|(name, t)| {
            let wall = name.contains("wall");
            !(t.is_finite() && *t >= 0.0 && *t < 1e9) || (wall && *t < 1e-6)
        });
        // A stage's time per task is its total over the tasks, which every
        // rank's threads (and the readers beside them) spent within the
        // wall: more is an edit, and the estimate's floor would take it.
        let most = 8.0 * p.wall_s * (p.ranks * p.threads.max(1)) as f64 + 1e-3;
        let stages = [
            (("read_s", p.read_s), ("read_per_task_s", p.read_per_task_s)),
            (
                ("filter_s", p.filter_s),
                ("filter_per_task_s", p.filter_per_task_s),
            ),
            (
                ("write_s", p.write_s),
                ("write_per_task_s", p.write_per_task_s),
            ),
        ];
        let beyond = stages.into_iter().find_map(|(total, per)| {
            (total.1 > most)
                .then_some(total)
                .or((per.1 > total.1 * (1.0 + 1e-9) + 1e-12).then_some(per))
        });
        let impossible = impossible.copied().or(beyond);
        if let Some((name, t)) = impossible {
            let t = if t.abs() < 1e9 {
                t.to_string()
            } else {
                format!("{t:e}")
            };
            anyhow::bail!(
                "{}: the point at {} rank(s) × {} thread(s), {} task(s) has a time no run can have \
                 ({name} {t} s): run the study again",
                path.display(),
                p.ranks,
                p.threads,
                p.tasks,
            );
        }
    }
    Ok(study)
}

/// The studies an estimate comes from, as the text names them.
fn sources(args: &EstimateArgs) -> String {
    let names: Vec<String> = args.from.iter().map(|p| p.display().to_string()).collect();
    names.join(" + ")
}

pub fn estimate(args: &EstimateArgs) -> anyhow::Result<()> {
    let studies = args
        .from
        .iter()
        .map(|p| read_study(p))
        .collect::<anyhow::Result<Vec<Study>>>()?;
    let points: Vec<_> = studies.iter().flat_map(|s| s.points.clone()).collect();
    let shape = Shape::of(args, &studies[0])?;
    let images = images(args)?;
    let target = shape.target(args.tasks, images);
    if shape.model == Model::Array {
        return array::estimate(args, &studies, &points, target);
    }
    let mut e = fit::estimate(&points, target, args.fs_bandwidth)?;
    e.warnings.extend(unread_inputs(args));
    let request = Request::from(&e, shape.model, args.margin);
    super::say(&render(&e, &request, args))?;
    if let Some(avail) = &args.node_memory {
        let avail = crate::slurm::parse_mib(avail).context("--node-memory")? as f64;
        let (per_node, threads) = (shape.per_node, shape.threads);
        let need = request.mem_per_cpu_mib as f64 * (per_node * threads) as f64;
        if need > avail {
            super::say(&format!(
                "  ! {per_node} ranks × {threads} CPU(s) × {} MiB = {need:.0} MiB exceeds the node's {avail:.0} MiB: use at most {} ranks per node.\n",
                request.mem_per_cpu_mib,
                (avail / (request.mem_per_cpu_mib as f64 * threads as f64)).floor()
            ))?;
        }
    }
    let script = match args.sbatch {
        Some(_) => Some(job_script(args, &e, &request)?),
        None => None,
    };
    let json = serde_json::json!({ "estimate": e, "request": request });
    write_files(args, &studies, &json, script)
}

/// `--json` and `--sbatch`, both checked before either is written: never
/// the run's inputs or a NIfTI name in its OUTDIR, the study (`--from`),
/// the list, nor each other.
fn write_files(
    args: &EstimateArgs,
    studies: &[Study],
    json: &serde_json::Value,
    script: Option<String>,
) -> anyhow::Result<()> {
    let mut guard = crate::plan::Guard::default();
    // What the studies hold: their generated images, runs and work
    // folders, and the reports their points name.
    for (s, from) in studies.iter().zip(&args.from) {
        // The study's real folder: `--from` through a link named another.
        let real = std::fs::canonicalize(from).unwrap_or_else(|_| from.clone());
        let here = real.parent().unwrap_or(Path::new("")).to_path_buf();
        // And the folder it was made in, for a copy of its study.json.
        for folder in std::iter::once(here).chain(s.folder.clone()) {
            for sub in ["data", "runs", "work"] {
                guard.trees.push(("a study's folder", folder.join(sub)));
            }
            let own = crate::study::plot::own_files();
            guard
                .read
                .extend(own.iter().map(|n| ("a study's own file", folder.join(n))));
        }
        let reports = s
            .points
            .iter()
            .map(|p| ("a study's run report", p.report.clone()));
        guard.read.extend(reports);
    }
    guard
        .read
        .extend(args.from.iter().map(|p| ("--from", p.clone())));
    guard
        .read
        .extend(args.list.iter().map(|p| ("--list", p.clone())));
    let run = match args.run_args.is_empty() {
        true => None,
        false => Some(super::sbatch::parsed_run(&args.run_args)?),
    };
    if let Some(run) = &run {
        guard.read.extend(super::sbatch::run_guard(run).read);
    }
    // The run's images as they are here: named, or found (a folder's, a
    // list's); under --no-check-inputs, whatever of them exists here.
    let mut inputs = match &run {
        Some(_) if !args.no_check_inputs => super::sbatch::checked_run(&args.run_args)?.1,
        Some(run) => {
            let found = super::run::sources(run).discover().unwrap_or_default();
            let found = found.into_iter().map(|i| i.path);
            run.inputs.iter().cloned().chain(found).collect()
        }
        None => Vec::new(),
    };
    // And the images of estimate's own --list, whose headers it read.
    if let Some(list) = &args.list {
        let listed = Sources {
            list: Some(list.clone()),
            ..Sources::default()
        };
        inputs.extend(listed.paths().unwrap_or_default());
    }
    let targets: Vec<(&str, &PathBuf)> = [("--json", &args.json), ("--sbatch", &args.sbatch)]
        .into_iter()
        .filter_map(|(flag, p)| p.as_ref().map(|p| (flag, p)))
        .collect();
    if let [(_, a), (_, b)] = targets[..] {
        let same = crate::plan::identity::Place::of(a).same(&crate::plan::identity::Place::of(b));
        anyhow::ensure!(!same, "--json and --sbatch name one file: {}", a.display());
    }
    let outdir = run.as_ref().map(|r| r.output.as_path());
    for (flag, path) in &targets {
        super::sbatch::script_target(flag, path, &inputs, outdir, &guard)?;
    }
    if let Some(p) = &args.json {
        write(p, &serde_json::to_string_pretty(json)?)?;
    }
    if let (Some(p), Some(text)) = (&args.sbatch, script) {
        write(p, &text)?;
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}

/// The warning an estimate from unread inputs carries.
fn unread_inputs(args: &EstimateArgs) -> Option<String> {
    args.no_check_inputs.then(|| {
        "--no-check-inputs: the target's images were not read here; the study's image sizes and types stand in for theirs, and the run's arguments are checked only when the job starts.".into()
    })
}

/// Where the target runs: the model, nodes × ranks per node × threads.
struct Shape {
    model: Model,
    nodes: usize,
    per_node: usize,
    threads: usize,
}

impl Shape {
    /// The shape the options ask for; `--model` must agree with the ranks
    /// and threads (an array's tasks are single processes).
    fn of(args: &EstimateArgs, study: &Study) -> anyhow::Result<Shape> {
        let (nodes, per_node) = match (args.ranks, args.nodes, args.ntasks_per_node) {
            (Some(r), _, _) => (1, r),
            (None, n, m) => (n.unwrap_or(1), m.unwrap_or(1)),
        };
        let threads = args.threads.unwrap_or_else(|| study.spec.threads[0]);
        // Beyond a million ranks or cores no cluster has: a product that
        // overflowed came out as 0 ranks and a one-minute request.
        let cores = nodes
            .checked_mul(per_node)
            .and_then(|r| r.checked_mul(threads.max(1)));
        anyhow::ensure!(
            cores.is_some_and(|c| c <= 1 << 30),
            "--nodes × --ntasks-per-node × --threads ({nodes} × {per_node} × {threads}) is beyond any cluster (at most 2^30 cores)"
        );
        let ranks_given = args.ranks.or(args.nodes).or(args.ntasks_per_node).is_some();
        let array_given = args.array_tasks.or(args.array_limit).is_some();
        let by_shape = match (nodes * per_node, threads) {
            (1, 1) => Model::Serial,
            (1, _) => Model::Threads,
            (_, 1) => Model::Mpi,
            _ => Model::Hybrid,
        };
        let model = match args.model {
            Some(Model::Array) => {
                anyhow::ensure!(
                    !ranks_given,
                    "--model array: each task is one process; give --threads, --array-tasks and --array-limit, not ranks or nodes"
                );
                Model::Array
            }
            Some(Model::Gpu) => anyhow::bail!(
                "--model gpu: a study measures the CPU filter, so it cannot predict the GPU's; estimate --model mpi or hybrid, or time a GPU run"
            ),
            Some(m) if m != by_shape => anyhow::bail!(
                "--model {m}: {nodes} node(s) × {per_node} rank(s) × {threads} thread(s) is the {by_shape} model"
            ),
            _ => {
                anyhow::ensure!(
                    !array_given,
                    "--array-tasks and --array-limit are for --model array"
                );
                by_shape
            }
        };
        Ok(Shape {
            model,
            nodes,
            per_node,
            threads,
        })
    }

    /// The fit's target for `tasks` images, sized from `images` when read.
    fn target(&self, tasks: usize, images: Option<TargetImages>) -> Target {
        let ranks = self.nodes * self.per_node;
        Target {
            tasks,
            nodes: self.nodes,
            ranks_per_node: self.per_node,
            threads: self.threads,
            mean_voxels: images
                .as_ref()
                .map(|i| i.voxels.iter().sum::<u64>() as f64 / i.voxels.len() as f64),
            largest_image_bytes: images.as_ref().and_then(|i| i.bytes.iter().max().copied()),
            in_flight_bytes: images
                .as_ref()
                .map(|i| fit::planned_in_flight(&i.voxels, &i.bytes, ranks, self.threads)),
            dtypes: images.map(|i| i.dtypes),
        }
    }
}

/// The target's images: --list, else the run arguments' inputs (None when
/// neither, or under --no-check-inputs).
fn images(args: &EstimateArgs) -> anyhow::Result<Option<TargetImages>> {
    let images = match (&args.list, args.run_args.is_empty()) {
        _ if args.no_check_inputs => None,
        (Some(list), _) => Some(target_images(&Sources {
            list: Some(list.clone()),
            ..Sources::default()
        })?),
        (None, false) => Some(target_images(&Sources::new(
            super::sbatch::checked_run(&args.run_args)?.1,
        ))?),
        (None, true) => None,
    };
    if let Some(i) = images.as_ref().filter(|i| i.voxels.len() != args.tasks) {
        log::warn!(
            "the target names {} images but --tasks is {}",
            i.voxels.len(),
            args.tasks
        );
    }
    Ok(images)
}

/// The job script that asks for the estimate's request.
fn job_script(args: &EstimateArgs, e: &Estimate, request: &Request) -> anyhow::Result<String> {
    script_run(args)?;
    let t = &e.target;
    let model = request.model;
    let (binary, notes) = script_notes(args, model, format!(
        "From {}: {} images predicted to take {} (interval {} to {}) and {:.0} MiB per rank; request with a {:.0}% margin.",
        sources(args),
        args.tasks,
        span(e.wall_s.value),
        span(e.wall_s.low),
        span(e.wall_s.high),
        e.peak_rss_per_rank_bytes.value / MIB,
        100.0 * (args.margin - 1.0)
    ))?;
    let spec = JobSpec {
        time: request.time.clone(),
        partition: args.partition.clone(),
        nodes: t.nodes,
        ntasks_per_node: t.ranks_per_node,
        cpus_per_task: t.threads,
        memory: request.memory,
        notes,
        ..JobSpec::new(model, binary.display().to_string(), args.run_args.clone())
    }
    .shape();
    Ok(script::render(&spec))
}

/// The script's binary and its notes: where the request comes from first,
/// and that the inputs were not read, when they were not.
fn script_notes(
    args: &EstimateArgs,
    model: Model,
    first: String,
) -> anyhow::Result<(PathBuf, Vec<String>)> {
    let (binary, mut notes) = super::sbatch::job_binary(None, model)?;
    notes.insert(0, first);
    if args.no_check_inputs {
        notes.push("Inputs: not read where this script was written (--no-check-inputs): the study's image sizes stood in for theirs.".into());
    }
    Ok((binary, notes))
}

/// The run a script is written for: checked as `run` checks it, or only
/// parsed under --no-check-inputs.
fn script_run(args: &EstimateArgs) -> anyhow::Result<super::cli::RunArgs> {
    anyhow::ensure!(
        !args.run_args.is_empty(),
        "--sbatch needs the run arguments after `--` (inputs, -o OUTDIR)"
    );
    if args.no_check_inputs {
        super::sbatch::parsed_run(&args.run_args)
    } else {
        Ok(super::sbatch::checked_run(&args.run_args)?.0)
    }
}

/// How sure the estimate is, in one line: how the repetitions were used
/// and where the interval comes from.
fn confidence(e: &Estimate) -> String {
    let n = &e.noise;
    let how = if n.reps >= 2 {
        format!(
            "each point's median of {} runs (repeats differ by up to {:.0}%); the high end from the slowest runs",
            n.reps,
            100.0 * n.worst_spread
        )
    } else {
        "one run per point: the noise is unknown".to_string()
    };
    format!(
        "  confidence     {how}; the interval ±{:.0}%/+{:.0}% around the value\n",
        100.0 * (1.0 - e.wall_s.low / e.wall_s.value.max(1e-12)),
        100.0 * (e.wall_s.high / e.wall_s.value.max(1e-12) - 1.0)
    )
}

/// The Slurm request: the interval's high end times the margin.
#[derive(serde::Serialize)]
struct Request {
    time: String,
    time_s: f64,
    mem_per_cpu_mib: u64,
    /// The job's shape and its memory request, as the script writes it.
    #[serde(skip)]
    model: Model,
    #[serde(skip)]
    memory: Memory,
}

impl Request {
    /// The request for `e` under `model` (an array's is per task).
    fn from(e: &Estimate, model: Model, margin: f64) -> Request {
        let t = &e.target;
        let time_s = e.wall_s.high * margin;
        let rank_mib = e.peak_rss_per_rank_bytes.high * margin / MIB;
        Request {
            time: crate::slurm::time::format(time_s),
            time_s,
            mem_per_cpu_mib: per_cpu_mib(rank_mib, t.threads),
            model,
            memory: Memory::for_ranks(model, rank_mib, t.threads),
        }
    }
}

fn render(e: &Estimate, r: &Request, args: &EstimateArgs) -> String {
    let t = &e.target;
    let mut o = format!(
        "Estimate for {} images on {} node(s) × {} rank(s) × {} thread(s), from {}:\n",
        t.tasks,
        t.nodes,
        t.ranks_per_node,
        t.threads,
        sources(args)
    );
    o += &wall_line("wall time", e);
    o += &format!(
        "  peak memory    {:.0} MiB per rank (interval {:.0} to {:.0}), {:.0} MiB per node\n",
        e.peak_rss_per_rank_bytes.value / MIB,
        e.peak_rss_per_rank_bytes.low / MIB,
        e.peak_rss_per_rank_bytes.high / MIB,
        e.peak_rss_per_rank_bytes.value * t.ranks_per_node as f64 / MIB
    );
    o += &format!(
        "Slurm request (interval's high end + {:.0}% margin):\n  --nodes={} --ntasks-per-node={} --cpus-per-task={} {} --time={}\n",
        100.0 * (args.margin - 1.0),
        t.nodes,
        t.ranks_per_node,
        t.threads,
        r.memory.option(),
        r.time
    );
    o += &confidence(e);
    o += &e
        .file_system
        .as_ref()
        .map_or(String::new(), |fs| file_system_line(fs, "all ranks"));
    o + &warnings_and_advice(&e.warnings, &e.advice)
}

/// The predicted wall of one run, launch to exit, and the model's terms.
fn wall_line(label: &str, e: &Estimate) -> String {
    let t = &e.target;
    format!(
        "  {label:<14} {} (interval {} to {}), launch to exit\n                 = {:.2} s launcher + {:.2} s per process + {:.2e} s × {:.0} images + {:.3e} s × {:.3e} voxels on the busiest rank; serial fraction {:.3}\n",
        span(e.wall_s.value),
        span(e.wall_s.low),
        span(e.wall_s.high),
        e.launcher_s,
        e.fixed_s,
        e.seconds_per_image,
        (t.tasks as f64 / t.ranks() as f64).ceil(),
        e.seconds_per_voxel,
        e.busiest_voxels,
        e.serial_fraction
    )
}

/// What the target reads and writes, and the rate `who` together ask.
fn file_system_line(fs: &fit::FileSystem, who: &str) -> String {
    format!(
        "  file system    {:.1} GB read and written, {:.2} GB/s for {who} together over the wall{}\n",
        fs.bytes / 1e9,
        fs.bytes_per_s / 1e9,
        fs.limit_bytes_per_s.map_or(
            " (a shared file system may not give that: say what it gives with --fs-bandwidth)".to_string(),
            |l| format!(" (--fs-bandwidth {:.2} GB/s)", l / 1e9)
        )
    )
}

fn warnings_and_advice(warnings: &[String], advice: &[String]) -> String {
    let mut o = String::new();
    if !warnings.is_empty() {
        o += "Warnings (the study cannot fully support this target):\n";
        for w in warnings {
            o += &format!("  ! {w}\n");
        }
    }
    o += "Advice:\n";
    for a in advice {
        o += &format!("  - {a}\n");
    }
    o
}

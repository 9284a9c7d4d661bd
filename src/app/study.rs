//! `nismooth study` and `nismooth estimate`: arguments in, files and advice out.

use std::path::Path;

use anyhow::Context;

use crate::generate::{self, PhantomSpec};
use crate::io::OutputFormat;
use crate::metrics::MIB;
use crate::plan::Sources;
use crate::slurm::script::{self, per_cpu_mib, JobSpec, Memory, Model};
use crate::study::fit::{self, Estimate, Target};
use crate::study::{plot, tables, Study, StudySpec, STUDY_SCHEMA};

use super::cli::{EstimateArgs, StudyArgs};
use super::{EXIT_FAILED_IMAGES, EXIT_OK};

/// A study's or an estimate's file: replaced atomically, or written into
/// a device or a FIFO (one nobody reads is an error, not a hang).
fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    crate::io::write_report_file(path, text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

pub fn study(args: &StudyArgs) -> anyhow::Result<u8> {
    anyhow::ensure!(args.reps > 0, "--reps must be ≥ 1");
    anyhow::ensure!(
        [&args.ranks, &args.threads, &args.tasks]
            .iter()
            .all(|v| !v.is_empty() && v.iter().all(|&x| x > 0)),
        "--ranks, --threads and --tasks need positive values"
    );
    let shape = generate::parse_shape(&args.shape).context("--shape")?;
    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("creating {}", args.output.display()))?;
    let spec = StudySpec {
        ranks: args.ranks.clone(),
        threads: args.threads.clone(),
        tasks: args.tasks.clone(),
        schedule: args.schedule,
        launcher: args.launcher,
        reps: args.reps,
        images: study_images(args, shape)?,
        run_args: args.run_args.clone(),
    };
    let binary = std::env::current_exe().context("locating this nismooth binary")?;
    let points = crate::study::run(&spec, &args.output, &binary)?;
    let study = Study {
        schema: STUDY_SCHEMA.into(),
        nismooth_version: env!("CARGO_PKG_VERSION").into(),
        host: crate::metrics::hostname(),
        cpu: crate::study::cpu_name(),
        cores: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        spec,
        points,
    };
    let out = &args.output;
    write(
        &out.join("study.json"),
        &serde_json::to_string_pretty(&study)?,
    )?;
    let failed = failed_points(&study, out);
    if !failed.is_empty() {
        remove_stale_tables(out);
        eprintln!(
            "nismooth: study: {} of {} point(s) failed, so no table, plot or estimate is made from it:",
            failed.len(),
            study.points.len()
        );
        for f in &failed {
            eprintln!("  {f}");
        }
        return Ok(EXIT_FAILED_IMAGES);
    }
    write(&out.join("study.csv"), &tables::csv(&study))?;
    let md = tables::markdown(&study);
    write(&out.join("study.md"), &md)?;
    let plots = plot::write_all(&study, out)?;
    super::say(&md)?;
    eprintln!(
        "study written to {}: study.json, study.csv, study.md, {} plot file(s)",
        out.display(),
        plots.len()
    );
    Ok(EXIT_OK)
}

/// The study's images: `--data`'s, or as many phantoms as the largest
/// point needs, generated under OUTPUT/data.
fn study_images(args: &StudyArgs, shape: Vec<usize>) -> anyhow::Result<Vec<std::path::PathBuf>> {
    if !args.data.is_empty() {
        return Ok(crate::plan::Sources::new(args.data.clone()).paths()?);
    }
    let max_tasks = *args.tasks.iter().max().unwrap();
    let dir = args.output.join("data");
    let spec = PhantomSpec {
        shape,
        dtype: args.dtype.parse().context("--dtype")?,
        seed: 1,
        vary_size: args.vary_size,
        noise: crate::generate::NoiseChoice::Rician,
        format: OutputFormat::NiiGz,
    };
    eprintln!("generating {max_tasks} image(s) in {}", dir.display());
    Ok(generate::generate(&dir, max_tasks, &spec)?)
}

/// The points with a failed image, each with its log: such a point measured
/// something else than the study asks, so no table, plot or estimate is
/// made from the study.
fn failed_points(study: &Study, out: &Path) -> Vec<String> {
    study
        .points
        .iter()
        .filter(|p| p.failed > 0)
        .map(|p| {
            let log = out.join("runs").join(format!("{}.log", p.name()));
            format!(
                "{}: {} of {} images failed (see {})",
                p.name(),
                p.failed,
                p.tasks,
                log.display()
            )
        })
        .collect()
}

/// No table or plot of an earlier study may stand beside a failed one's
/// record.
fn remove_stale_tables(out: &Path) {
    let stale = ["study.md".to_string(), "study.csv".to_string()]
        .into_iter()
        .chain(
            plot::CHARTS
                .iter()
                .flat_map(|c| [format!("{c}.svg"), format!("{c}.png")]),
        );
    for name in stale {
        let _ = std::fs::remove_file(out.join(name));
    }
}

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

/// A predicted time: seconds under two minutes, else H:MM:SS.
fn span(s: f64) -> String {
    if s < 120.0 {
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
        ];
        // Walls of a microsecond or less are no run either (a denormal, an edit).
        let impossible = times.iter().find(|(name, t)| {
            let wall = name.contains("wall");
            !(t.is_finite() && *t >= 0.0 && *t < 1e9) || (wall && *t < 1e-6)
        });
        if let Some((name, t)) = impossible {
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
    let study = &studies[0];
    let points: Vec<_> = studies.iter().flat_map(|s| s.points.clone()).collect();
    let (nodes, per_node) = match (args.ranks, args.nodes, args.ntasks_per_node) {
        (Some(r), _, _) => (1, r),
        (None, n, m) => (n.unwrap_or(1), m.unwrap_or(1)),
    };
    anyhow::ensure!(
        nodes > 0 && per_node > 0 && args.tasks > 0,
        "ranks, nodes and tasks must be ≥ 1"
    );
    let threads = args.threads.unwrap_or_else(|| study.spec.threads[0]);
    // The target's images: --list, else the run arguments' inputs.
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
    let ranks = nodes * per_node;
    let target = Target {
        tasks: args.tasks,
        nodes,
        ranks_per_node: per_node,
        threads,
        mean_voxels: images
            .as_ref()
            .map(|i| i.voxels.iter().sum::<u64>() as f64 / i.voxels.len() as f64),
        largest_image_bytes: images.as_ref().and_then(|i| i.bytes.iter().max().copied()),
        in_flight_bytes: images
            .as_ref()
            .map(|i| fit::planned_in_flight(&i.voxels, &i.bytes, ranks, threads)),
        dtypes: images.map(|i| i.dtypes),
    };
    let mut e = fit::estimate(&points, target, args.fs_bandwidth)?;
    if args.no_check_inputs {
        e.warnings.push(
            "--no-check-inputs: the target's images were not read here; the study's image sizes and types stand in for theirs, and the run's arguments are checked only when the job starts.".into(),
        );
    }
    let request = Request::from(&e, args.margin);
    let text = render(&e, &request, args);
    super::say(&text)?;
    if let Some(avail) = &args.node_memory {
        let avail = crate::slurm::parse_mib(avail).context("--node-memory")? as f64;
        let need = request.mem_per_cpu_mib as f64 * (per_node * threads) as f64;
        if need > avail {
            super::say(&format!(
                "  ! {per_node} ranks × {threads} CPU(s) × {} MiB = {need:.0} MiB exceeds the node's {avail:.0} MiB: use at most {} ranks per node.\n",
                request.mem_per_cpu_mib,
                (avail / (request.mem_per_cpu_mib as f64 * threads as f64)).floor()
            ))?;
        }
    }
    if let Some(p) = &args.json {
        write(
            p,
            &serde_json::to_string_pretty(
                &serde_json::json!({ "estimate": e, "request": request }),
            )?,
        )?;
    }
    if let Some(p) = &args.sbatch {
        write(p, &job_script(args, &e, &request)?)?;
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}

/// The job script that asks for the estimate's request.
fn job_script(args: &EstimateArgs, e: &Estimate, request: &Request) -> anyhow::Result<String> {
    anyhow::ensure!(
        !args.run_args.is_empty(),
        "--sbatch needs the run arguments after `--` (inputs, -o OUTDIR)"
    );
    if args.no_check_inputs {
        super::sbatch::parsed_run(&args.run_args)?;
    } else {
        super::sbatch::checked_run(&args.run_args)?;
    }
    let t = &e.target;
    let model = request.model;
    let (binary, mut notes) = super::sbatch::job_binary(None, model)?;
    notes.insert(0, format!(
        "From {}: {} images predicted to take {} (interval {} to {}) and {:.0} MiB per rank; request with a {:.0}% margin.",
        sources(args),
        args.tasks,
        span(e.wall_s.value),
        span(e.wall_s.low),
        span(e.wall_s.high),
        e.peak_rss_per_rank_bytes.value / MIB,
        100.0 * (args.margin - 1.0)
    ));
    if args.no_check_inputs {
        notes.push("Inputs: not read where this script was written (--no-check-inputs): the study's image sizes stood in for theirs.".into());
    }
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
    fn from(e: &Estimate, margin: f64) -> Request {
        let t = &e.target;
        let model = match (t.nodes * t.ranks_per_node, t.threads) {
            (1, 1) => Model::Serial,
            (1, _) => Model::Threads,
            (_, 1) => Model::Mpi,
            _ => Model::Hybrid,
        };
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
    o += &format!(
        "  wall time      {} (interval {} to {}), launch to exit\n                 = {:.2} s launcher + {:.2} s per process + {:.2e} s × {:.0} images + {:.3e} s × {:.3e} voxels on the busiest rank; serial fraction {:.3}\n",
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
    );
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
    if let Some(fs) = &e.file_system {
        o += &format!(
            "  file system    {:.1} GB read and written, {:.2} GB/s for all ranks together over the wall{}\n",
            fs.bytes / 1e9,
            fs.bytes_per_s / 1e9,
            fs.limit_bytes_per_s.map_or(
                " (a shared file system may not give that: say what it gives with --fs-bandwidth)".to_string(),
                |l| format!(" (--fs-bandwidth {:.2} GB/s)", l / 1e9)
            )
        );
    }
    if !e.warnings.is_empty() {
        o += "Warnings (the study cannot fully support this target):\n";
        for w in &e.warnings {
            o += &format!("  ! {w}\n");
        }
    }
    o += "Advice:\n";
    for a in &e.advice {
        o += &format!("  - {a}\n");
    }
    o
}

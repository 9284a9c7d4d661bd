//! The `nismooth` command: parse → plan → execute → report.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use nismooth::choice::Choice;
use nismooth::cli::{
    BackendChoice, BenchFilterArgs, Cli, Command, Compat, GenerateArgs, ReportAction, ReportArgs,
    RunArgs, SbatchArgs, WeightsArgs,
};
use nismooth::config::RunConfig;
use nismooth::driver;
use nismooth::driver::comm::Comm;
use nismooth::filter::cuda::{self, CudaBackend};
use nismooth::filter::{cpu::CpuBackend, Backend, ExpFlavour, FilterError, Kernel1d};
use nismooth::generate::{self, PhantomSpec};
use nismooth::io::OutputFormat;
use nismooth::report::{self, Exporter};
use nismooth::slurm::parse_mib;
use nismooth::slurm::script::{self, JobSpec, Memory, Model};

/// Exit codes: every image done, some image failed, the command was refused.
const EXIT_OK: u8 = 0;
const EXIT_FAILED_IMAGES: u8 = 1;
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    driver::metrics::mark_start();
    fixed_mmap_threshold();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(&args),
        Command::Generate(args) => {
            init_logging(0, 1);
            generate(&args)
        }
        Command::Report(args) => {
            init_logging(0, 1);
            report_cmd(&args)
        }
        Command::Sbatch(args) => {
            init_logging(0, 1);
            sbatch(&args)
        }
        Command::Study(args) => {
            init_logging(0, 1);
            nismooth::study::command::study(&args).map(|_| EXIT_OK)
        }
        Command::Estimate(args) => {
            init_logging(0, 1);
            nismooth::study::command::estimate(&args).map(|_| EXIT_OK)
        }
        Command::Weights(args) => weights(&args),
        Command::BenchFilter(args) => bench_filter(&args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("nismooth: error: {e:#}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// Image buffers are tens of MiB. glibc raises its mmap threshold after the
/// first such buffer is freed, and later ones then come from the heap and stay
/// resident: RSS would grow with the number of images. A fixed threshold keeps
/// every large buffer in its own mapping, returned to the OS when dropped.
fn fixed_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        // Fixing the mmap threshold also pins the trim threshold at 128 KiB:
        // the filter's per-thread scratch (a few hundred KiB, freed after each
        // pass) would then be returned to the OS and faulted in again every time.
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
}

/// Log lines go to stderr. With several ranks each line names its rank, and
/// only root speaks at `info` unless RUST_LOG says otherwise: N ranks would
/// otherwise repeat every line N times in the job's output file.
fn init_logging(rank: usize, size: usize) {
    let default = if rank == 0 { "info" } else { "warn" };
    let mut b =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default));
    b.format_timestamp_secs();
    if size > 1 {
        use std::io::Write;
        b.format(move |f, rec| {
            writeln!(
                f,
                "[{} {} rank {rank}/{size}] {}",
                f.timestamp_seconds(),
                rec.level(),
                rec.args()
            )
        });
    }
    b.init();
}

/// `nismooth run`: the whole job, on however many ranks the launcher started.
fn run(args: &RunArgs) -> anyhow::Result<u8> {
    let comm = driver::connect()?;
    init_logging(comm.rank(), comm.size());
    let cfg = RunConfig::from_args(args, comm.size(), comm.node_size())?;
    let mut backend = backend(&cfg, comm.as_ref())?;
    let command: Vec<String> = std::env::args().collect();

    let outcome = match driver::run(&cfg, comm.as_ref(), backend.as_mut(), command) {
        Ok(o) => o,
        Err(e) => {
            // Every rank has the refusal; one line says it.
            if comm.is_root() {
                eprintln!("nismooth: refused: {e}");
            }
            return Ok(EXIT_USAGE);
        }
    };
    if let Some(report) = &outcome.report {
        eprint!("{}", report::Table.render(report)?);
        if let Some(path) = &cfg.report {
            report::export_to(&report::Json, report, path).context("writing --report")?;
        }
        if let Some(path) = &cfg.csv {
            report::export_to(&report::Csv, report, path).context("writing --csv")?;
        }
    }
    Ok(if outcome.failed > 0 {
        EXIT_FAILED_IMAGES
    } else {
        EXIT_OK
    })
}

/// The filter backend `--backend` asks for, started on every rank. Ranks
/// agree before going on: if one cannot start its backend (no GPU on its
/// node, say), all stop together instead of leaving the others waiting in
/// the first collective.
fn backend(cfg: &RunConfig, comm: &dyn Comm) -> anyhow::Result<Box<dyn Backend>> {
    let local = cuda::local_rank(comm.node_rank(), comm.size());
    let mine = start_backend(cfg, local, comm.node_size());
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

fn start_backend(
    cfg: &RunConfig,
    local_rank: usize,
    node_ranks: usize,
) -> Result<Box<dyn Backend>, FilterError> {
    let cpu =
        || -> Result<Box<dyn Backend>, FilterError> { Ok(Box::new(CpuBackend::new(cfg.threads)?)) };
    let gpu = || -> Result<Box<dyn Backend>, FilterError> {
        let b = CudaBackend::new(cfg.threads, local_rank, node_ranks)?;
        log::info!("backend cuda: {}", b.describe());
        Ok(Box::new(b))
    };
    match cfg.backend {
        BackendChoice::Cpu => cpu(),
        BackendChoice::Cuda if cfg.compat == Compat::Fsl => {
            Err(FilterError::Unavailable(cuda::FSL_ON_CPU_ONLY.into()))
        }
        BackendChoice::Cuda => gpu(),
        BackendChoice::Auto if cfg.compat == Compat::Fsl => {
            log::info!("backend auto: cpu (--compat fsl runs on the CPU)");
            cpu()
        }
        BackendChoice::Auto => gpu().or_else(|e| {
            log::info!("backend auto: cpu ({e})");
            cpu()
        }),
    }
}

/// `nismooth report`: show reports, or merge them.
fn report_cmd(args: &ReportArgs) -> anyhow::Result<u8> {
    match &args.action {
        Some(ReportAction::Merge { files, output, csv }) => {
            let merged = report::merge::merge(files)?;
            report::export_to(&report::Json, &merged, output)
                .context("writing the merged report")?;
            if let Some(csv) = csv {
                report::export_to(&report::Csv, &merged, csv).context("writing the merged CSV")?;
            }
            eprint!("{}", report::Table.render(&merged)?);
            log::info!("merged {} report(s) into {}", files.len(), output.display());
            Ok(if merged.summary.failed > 0 {
                EXIT_FAILED_IMAGES
            } else {
                EXIT_OK
            })
        }
        None => {
            anyhow::ensure!(
                !args.files.is_empty(),
                "give report files to show, or `report merge`"
            );
            let request = args
                .mem_request
                .as_deref()
                .map(parse_mib)
                .transpose()
                .map_err(anyhow::Error::msg)?;
            for f in &args.files {
                let r = report::merge::load(f)?;
                println!("== {}", f.display());
                print!("{}", report::Table.render(&r)?);
                print!("{}", seff_lines(&r, request));
            }
            Ok(EXIT_OK)
        }
    }
}

/// seff-style verdicts on a report: CPU efficiency, memory against the request, balance.
fn seff_lines(r: &report::Report, mem_request_mib: Option<u64>) -> String {
    let s = &r.summary;
    let mut o = format!(
        "  seff: CPU efficiency {:.1}% of {} process(es) × {} thread(s) × wall\n",
        100.0 * s.cpu_efficiency,
        s.processes,
        s.threads_per_process
    );
    let peak_mib = s.peak_rss_bytes as f64 / 1048576.0;
    if let Some(req) = mem_request_mib {
        o += &format!(
            "  seff: memory efficiency {:.1}% ({peak_mib:.1} MiB peak of {req} MiB requested per rank){}\n",
            100.0 * peak_mib / req as f64,
            if peak_mib > req as f64 {
                ": over the request, the job would be killed"
            } else if peak_mib < 0.25 * req as f64 {
                ": ask for less"
            } else {
                ""
            }
        );
    }
    if s.processes > 1 {
        o += &format!(
            "  seff: load imbalance {:.3} (max/mean busy); parallel efficiency {:.1}%\n",
            s.load_imbalance,
            100.0 * s.parallel_efficiency
        );
    }
    o
}

/// `nismooth sbatch`: a job script for one parallel model.
fn sbatch(args: &SbatchArgs) -> anyhow::Result<u8> {
    let binary = match &args.binary {
        Some(b) => b.clone(),
        None => std::env::current_exe().context("locating this nismooth binary")?,
    };
    let mut notes = Vec::new();
    let memory = match (&args.mem, &args.mem_per_cpu) {
        (Some(m), _) => Memory::PerNode {
            mib: parse_mib(m).map_err(anyhow::Error::msg)?,
        },
        (None, Some(m)) => Memory::PerCpu {
            mib: parse_mib(m).map_err(anyhow::Error::msg)?,
        },
        (None, None) => {
            let per_rank = default_rank_memory_mib(&args.run_args, args.cpus_per_task, &mut notes);
            match args.model {
                Model::Mpi | Model::Hybrid | Model::Gpu => Memory::PerCpu {
                    mib: round_up(
                        per_rank.div_ceil(args.cpus_per_task.max(1) as u64).max(256),
                        256,
                    ),
                },
                _ => Memory::PerNode {
                    mib: round_up(per_rank, 256),
                },
            }
        }
    };
    notes.push(format!(
        "Time limit {}: a guess until measured; `nismooth estimate` predicts it from a study.",
        args.time
    ));
    let spec = JobSpec {
        model: args.model,
        job_name: args.job_name.clone(),
        partition: args.partition.clone(),
        time: args.time.clone(),
        nodes: args.nodes,
        ntasks_per_node: args.ntasks_per_node,
        cpus_per_task: args.cpus_per_task,
        memory,
        gpus_per_node: args.gpus_per_node,
        array_tasks: args.array_tasks,
        array_limit: args.array_limit,
        array_chunk: args.array_chunk,
        binary: binary.display().to_string(),
        run_args: args.run_args.clone(),
        notes,
    }
    .shape();
    let text = script::render(&spec);
    match &args.write {
        Some(p) => std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))?,
        None => print!("{text}"),
    }
    Ok(EXIT_OK)
}

fn round_up(v: u64, to: u64) -> u64 {
    v.div_ceil(to) * to
}

/// Memory per rank from the largest input image. A rank's pipeline holds
/// one image per reader plus those being filtered and written; measured
/// flat at (readers + 1) × the decompressed image + about 48 MiB
/// (docs/performance.md). The request asks (readers + 2) × + 64 MiB, then a
/// 1.5× margin.
fn default_rank_memory_mib(run_args: &[String], threads: usize, notes: &mut Vec<String>) -> u64 {
    let argv = ["nismooth", "run"]
        .into_iter()
        .map(String::from)
        .chain(run_args.iter().cloned());
    let run = Cli::try_parse_from(argv)
        .ok()
        .and_then(|cli| match cli.command {
            Command::Run(a) => Some(a),
            _ => None,
        });
    // The run's own --threads, if it sets one, decides the default readers.
    let readers = match &run {
        Some(a) => nismooth::config::readers(a, a.threads.unwrap_or(threads)),
        None => nismooth::config::default_readers(threads),
    };
    let largest = run
        .and_then(|a| nismooth::plan::discover(&a.inputs, a.list.as_deref()).ok())
        .and_then(|inputs| {
            inputs
                .iter()
                .filter_map(|p| nismooth::io::read_header_info(p).ok())
                .map(|h| h.memory_bytes())
                .max()
        });
    match largest {
        Some(bytes) => {
            let images = readers as u64 + 2;
            let mib = (images * bytes).div_ceil(1 << 20) + 64;
            notes.push(format!(
                "Memory: largest input image {:.1} MiB decompressed; per rank with {readers} reader(s) {images}× that + 64 MiB = {mib} MiB, requested with a 1.5× margin.",
                bytes as f64 / (1 << 20) as f64
            ));
            mib * 3 / 2
        }
        None => {
            notes.push(
                "Memory: a default (the inputs could not be read here); measure with a study."
                    .into(),
            );
            2048
        }
    }
}

/// `nismooth generate`: synthetic phantoms.
fn generate(args: &GenerateArgs) -> anyhow::Result<u8> {
    let shape: Vec<usize> = args
        .shape
        .split(',')
        .map(|v| v.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("--shape '{}': expected comma-separated sizes", args.shape))?;
    anyhow::ensure!(
        (1..=7).contains(&shape.len()) && shape.iter().all(|&n| (1..=32767).contains(&n)),
        "--shape '{}': 1 to 7 sizes, each 1..32767",
        args.shape
    );
    let dtype = args.dtype.parse().map_err(anyhow::Error::msg)?;
    let spec = PhantomSpec {
        shape,
        dtype,
        seed: args.seed,
        vary_size: args.vary_size,
        noise: args.noise,
        format: match args.format {
            nismooth::cli::FormatChoice::Nii => OutputFormat::Nii,
            nismooth::cli::FormatChoice::NiiGz => OutputFormat::NiiGz,
        },
    };
    let paths = generate::generate(&args.output, args.count, &spec)?;
    log::info!(
        "wrote {} phantom(s) to {}",
        paths.len(),
        args.output.display()
    );
    Ok(EXIT_OK)
}

/// `nismooth weights`: the taps, for checking against scipy.
fn weights(args: &WeightsArgs) -> anyhow::Result<u8> {
    let k = Kernel1d::gaussian(args.sigma, args.truncate, ExpFlavour::detect());
    for w in k.half.iter().rev().chain(k.half.iter().skip(1)) {
        println!("{w:e}");
    }
    Ok(EXIT_OK)
}

/// `nismooth bench-filter`: the filter alone on one image already in memory,
/// timed like scipy's call in scripts/bench.py. Prints one JSON object; with
/// `--backend cuda` also the passes' GPU time and the bandwidth they reach.
fn bench_filter(args: &BenchFilterArgs) -> anyhow::Result<u8> {
    use nismooth::filter::{FilterSpec, Semantics};
    let img = nismooth::io::read_image(&args.input)
        .with_context(|| format!("{}", args.input.display()))?;
    let spec = FilterSpec {
        sigma: nismooth::config::parse_sigma(&args.sigma)?,
        truncate: 4.0,
        mode: args.mode.parse().map_err(anyhow::Error::msg)?,
        cval: 0.0,
        exp: ExpFlavour::detect(),
        semantics: Semantics::Scipy,
    };
    let mut backend: Box<dyn Backend> = match args.backend {
        BackendChoice::Cpu => Box::new(CpuBackend::new(args.threads)?),
        _ => {
            let b = CudaBackend::new(args.threads, cuda::local_rank(0, 1), 1)?;
            eprintln!("bench-filter: cuda on {}", b.describe());
            Box::new(b)
        }
    };
    let dtype = img.voxels.dtype();
    let mut times = Vec::new();
    let mut kernel = Vec::new();
    let mut last = None;
    for _ in 0..args.reps.max(1) {
        let input = img.voxels.clone();
        let t = std::time::Instant::now();
        let out = backend.smooth(input, img.shape, &spec, dtype)?;
        times.push(t.elapsed().as_secs_f64());
        kernel.extend(backend.device_time_s());
        last = Some(out);
    }
    if let (Some(path), Some(out)) = (&args.dump, &last) {
        std::fs::write(path, out.as_bytes())?;
    }
    times.sort_by(f64::total_cmp);
    kernel.sort_by(f64::total_cmp);
    let voxels = img.shape.len();
    let passes = spec
        .kernels(img.shape.spatial_ndim)
        .iter()
        .flatten()
        .count();
    let mut json = serde_json::json!({
        "backend": args.backend.name(),
        // The CPU backend's vector code (NISMOOTH_SIMD caps it).
        "simd": format!("{:?}", nismooth::filter::simd::level()).to_lowercase(),
        "voxels": voxels,
        "threads": args.threads.max(1),
        "best_s": times[0],
        "median_s": times[times.len() / 2],
    });
    if let Some(&best) = kernel.first() {
        // Each pass reads and writes the image once at best (the roofline).
        let bytes = (passes * voxels * 2 * dtype.size()) as f64;
        json["kernel_best_s"] = best.into();
        json["kernel_median_s"] = kernel[kernel.len() / 2].into();
        json["gvox_per_s"] = (voxels as f64 / best / 1e9).into();
        json["effective_gb_per_s"] = (bytes / best / 1e9).into();
    }
    println!("{json}");
    Ok(EXIT_OK)
}

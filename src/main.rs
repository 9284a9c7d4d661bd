//! The `nismooth` command: parse → plan → execute → report.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use nismooth::cli::{Cli, Command, GenerateArgs, RunArgs, WeightsArgs};
use nismooth::config::RunConfig;
use nismooth::driver;
use nismooth::filter::{cpu::CpuBackend, ExpFlavour, Kernel1d};
use nismooth::generate::{self, PhantomSpec};
use nismooth::io::OutputFormat;
use nismooth::report::{self, Exporter};

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
        Command::Weights(args) => weights(&args),
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
    let cfg = RunConfig::from_args(args, comm.node_size())?;
    let mut backend = CpuBackend::new(cfg.threads)?;
    let command: Vec<String> = std::env::args().collect();

    let outcome = match driver::run(&cfg, comm.as_ref(), &mut backend, command) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("nismooth: refused: {e}");
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

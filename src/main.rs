//! The `nismooth` command: parse → plan → execute → report.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use nismooth::cli::{Cli, Command, GenerateArgs, RunArgs, WeightsArgs};
use nismooth::config::RunConfig;
use nismooth::driver::{self, comm::Single};
use nismooth::filter::{cpu::CpuBackend, ExpFlavour, Kernel1d};
use nismooth::generate::{self, PhantomSpec};
use nismooth::io::OutputFormat;
use nismooth::report::{self, Exporter};

/// Exit codes: every image done, some image failed, the command was refused.
const EXIT_OK: u8 = 0;
const EXIT_FAILED_IMAGES: u8 = 1;
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    fixed_mmap_threshold();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_secs()
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(&args),
        Command::Generate(args) => generate(&args),
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

/// `nismooth run`: the whole job.
fn run(args: &RunArgs) -> anyhow::Result<u8> {
    let cfg = RunConfig::from_args(args)?;
    let comm = Single;
    let mut backend = CpuBackend::new(cfg.threads)?;
    let command: Vec<String> = std::env::args().collect();

    let outcome = match driver::run(&cfg, &comm, &mut backend, command) {
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

//! `nismooth generate`: synthetic phantoms for tests, studies and demos.

use anyhow::Context;

use nismooth::generate::{self, PhantomSpec};

use super::cli::GenerateArgs;
use super::EXIT_OK;

/// `nismooth generate`: synthetic phantoms.
pub fn generate(args: &GenerateArgs) -> anyhow::Result<u8> {
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
        format: super::run::output_format(args.format),
    };
    let paths = generate::generate(&args.output, args.count, &spec)?;
    log::info!(
        "wrote {} phantom(s) to {}",
        paths.len(),
        args.output.display()
    );
    Ok(EXIT_OK)
}

//! `nismooth generate`: synthetic phantoms for tests, studies and demos.

use anyhow::Context;

use crate::generate::{self, PhantomSpec};

use super::cli::GenerateArgs;
use super::EXIT_OK;

/// `nismooth generate`: synthetic phantoms.
pub fn generate(args: &GenerateArgs) -> anyhow::Result<u8> {
    let shape = generate::parse_shape(&args.shape).context("--shape")?;
    let dtype = args.dtype.parse().context("--dtype")?;
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

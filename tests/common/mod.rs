//! Helpers shared by the driver's test binaries.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use clap::Parser;
use nismooth::cli::{Cli, Command};
use nismooth::config::RunConfig;
use nismooth::generate::{self, PhantomSpec};
use nismooth::volume::DType;

/// The run configuration that `nismooth run ARGS` would build, one rank.
pub fn config(args: &[&str]) -> RunConfig {
    let mut argv = vec!["nismooth", "run", "--progress", "none"];
    argv.extend_from_slice(args);
    match Cli::parse_from(argv).command {
        Command::Run(a) => RunConfig::from_args(&a, 1, 1).expect("valid options"),
        _ => unreachable!(),
    }
}

/// `n` small float32 `.nii.gz` phantoms of varying size in `dir`.
pub fn phantoms(dir: &Path, n: usize) -> Vec<PathBuf> {
    let spec = PhantomSpec {
        shape: vec![14, 12, 9],
        dtype: DType::F32,
        seed: 11,
        vary_size: true,
        noise: nismooth::cli::NoiseChoice::Rician,
        format: nismooth::io::OutputFormat::NiiGz,
    };
    generate::generate(dir, n, &spec).expect("phantoms")
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

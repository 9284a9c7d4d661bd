//! Helpers shared by the driver's test binaries.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use nismooth::config::{ProgressChoice, RunConfig};
use nismooth::generate::{self, PhantomSpec};
use nismooth::volume::DType;

/// The run configuration of `nismooth run INPUT -o OUT --progress none`,
/// one rank; tests change what they vary with `RunConfig { .., ..config() }`.
pub fn config(input: &Path, out: &Path) -> RunConfig {
    RunConfig {
        progress: ProgressChoice::None,
        ..RunConfig::new(vec![input.to_path_buf()], out.to_path_buf())
    }
}

/// `n` small float32 `.nii.gz` phantoms of varying size in `dir`.
pub fn phantoms(dir: &Path, n: usize) -> Vec<PathBuf> {
    let spec = PhantomSpec {
        shape: vec![14, 12, 9],
        dtype: DType::F32,
        seed: 11,
        vary_size: true,
        noise: nismooth::generate::NoiseChoice::Rician,
        format: nismooth::io::OutputFormat::NiiGz,
    };
    generate::generate(dir, n, &spec).expect("phantoms")
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

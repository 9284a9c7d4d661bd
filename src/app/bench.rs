//! `nismooth weights` and `nismooth bench-filter`: the taps, for checking
//! against scipy, and the filter alone on one image in memory, timed like
//! scipy's call in scripts/bench.py.

use anyhow::Context;

use crate::choice::Choice;
use crate::filter::cuda;
use crate::filter::{Compat, ExpFlavour, FilterSpec, Kernel1d, Semantics};

use super::cli::{BenchFilterArgs, WeightsArgs};
use super::EXIT_OK;

/// `nismooth weights`: the taps, for checking against scipy.
pub fn weights(args: &WeightsArgs) -> anyhow::Result<u8> {
    let k = Kernel1d::gaussian(args.sigma, args.truncate, ExpFlavour::detect());
    for w in k.half.iter().rev().chain(k.half.iter().skip(1)) {
        super::say(&format!("{w:e}\n"))?;
    }
    Ok(EXIT_OK)
}

/// `nismooth bench-filter`: the filter alone on one image already in memory,
/// timed like scipy's call in scripts/bench.py. Prints one JSON object; with
/// `--backend cuda` also the passes' GPU time and the bandwidth they reach.
pub fn bench_filter(args: &BenchFilterArgs) -> anyhow::Result<u8> {
    // Everything a run would refuse is refused before the image is read:
    // a kernel beyond the bound (it would abort allocating), a dump over
    // the input or into a folder.
    let spec = FilterSpec {
        sigma: crate::config::parse_sigma(&args.sigma)?,
        truncate: 4.0,
        mode: args.mode,
        cval: 0.0,
        exp: ExpFlavour::detect(),
        semantics: Semantics::Scipy,
    };
    spec.check_radius(3, crate::filter::MAX_RADIUS, "")?;
    if let Some(dump) = &args.dump {
        crate::io::report_target(dump).with_context(|| format!("--dump {}", dump.display()))?;
        let input = std::slice::from_ref(&args.input);
        if crate::plan::identity::Place::among(dump, input).is_some() {
            anyhow::bail!("--dump {}: refused, it is the input", dump.display());
        }
    }
    let (threads, _) = super::run::cap_threads(args.threads, true);
    let img =
        crate::io::read_image(&args.input).with_context(|| format!("{}", args.input.display()))?;
    let mut backend = super::run::start_backend(
        args.backend,
        Compat::Scipy,
        threads,
        cuda::local_rank(0, 1),
        1,
    )?;
    eprintln!("bench-filter: {}", backend.name());
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
        crate::io::write_report_file(path, out.as_bytes())
            .with_context(|| format!("--dump {}", path.display()))?;
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
        "simd": format!("{:?}", crate::filter::simd::level()).to_lowercase(),
        "voxels": voxels,
        "threads": threads.max(1),
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
    super::say(&format!("{json}\n"))?;
    Ok(EXIT_OK)
}

//! From a study to predictions for a target workload.
//!
//! Time, launch to exit (what a job's `--time` must cover):
//!
//!   wall = launcher + a + c · n + b(M) · v
//!
//! - launcher: `mpirun`/`srun` start-up and tear-down around the processes,
//!   measured per point from outside (outer wall − the report's wall);
//! - a: the per-process fixed cost (start-up, planning, the last gather);
//! - c: the per-image fixed cost (open, header, create and rename the output),
//!   n the images on the busiest rank;
//! - b: the per-voxel cost (read, filter, write), v the voxels on the busiest
//!   rank, so uneven image sizes count as they cost. The study measures b
//!   for its data's voxel type; a target of another type is warned about.
//!
//! Each (ranks, threads) group of points is fitted by least squares: c and b
//! apart when the study's images differ in size enough to tell them apart,
//! else b alone (c is then part of b, which is exact for images of the
//! study's size). Ranks on one node contend for memory bandwidth and the
//! disk, so the per-rank work grows with the ranks per node M as
//! (1 + f·(M−1)): Amdahl's law, S(M) = M / (1 + f·(M−1)), with f read off the
//! speed-up curve. Nodes add ranks without adding contention.
//!
//! Memory: peak RSS per rank = base + k · (largest image), k the images a
//! rank holds at once (the pipeline's depth, with the working copies), fitted
//! when the study saw images of different sizes, else the observed peak
//! scaled by the largest image's growth.
//!
//! Every prediction has an interval from the fit's residuals, and the
//! estimate says loudly (`warnings`) where the study cannot support the
//! target: runs too short to measure, one rank count only, another thread
//! count or voxel type, images or shares far beyond the study's.

mod advice;
mod memory;
#[cfg(test)]
mod tests;
mod time;

use serde::Serialize;

use super::{StudyError, StudyPoint};
use advice::{advice, warnings};
pub use memory::{in_flight_bytes, planned_in_flight};
use memory::{memory_growth, memory_model};
use time::time_model;

/// Where the target runs.
#[derive(Clone, Debug, Serialize)]
pub struct Target {
    pub tasks: usize,
    pub nodes: usize,
    pub ranks_per_node: usize,
    pub threads: usize,
    /// Mean voxels per image of the target list (None: the study's mean).
    pub mean_voxels: Option<f64>,
    /// The target's largest image in memory, bytes (None: the study's largest).
    pub largest_image_bytes: Option<u64>,
    /// The target's voxel types, as read (None: the study's).
    pub dtypes: Option<Vec<String>>,
    /// The most image bytes a rank of the target will hold at once, from
    /// its planned shares (None: the images a rank holds at once × the
    /// largest image).
    pub in_flight_bytes: Option<u64>,
}

impl Target {
    pub fn ranks(&self) -> usize {
        self.nodes * self.ranks_per_node
    }
}

/// A value with its interval.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Interval {
    pub value: f64,
    pub low: f64,
    pub high: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Estimate {
    pub target: Target,
    pub wall_s: Interval,
    pub peak_rss_per_rank_bytes: Interval,
    /// The launcher's start-up and tear-down (mpirun, srun) around the run:
    /// the median of the study's points launched like the target (one rank
    /// or several). `wall_s` includes it: a job's `--time` must cover the
    /// whole launch, not only the processes' own lives.
    pub launcher_s: f64,
    /// Fixed cost per run (start-up, planning), seconds per image and per
    /// voxel on the busiest rank, at the ranks per node of the fit used
    /// (the fewest studied when the target's were not).
    pub fixed_s: f64,
    pub seconds_per_image: f64,
    pub seconds_per_voxel: f64,
    /// Voxels on the target's busiest rank (its even share of the images).
    pub busiest_voxels: f64,
    /// Amdahl's serial fraction from the speed-up over ranks on one node.
    pub serial_fraction: f64,
    pub memory_base_bytes: f64,
    pub memory_per_image_byte: f64,
    /// Whether peak memory per rank stayed flat as the image count grew.
    pub memory_flat: bool,
    pub memory_growth_over_study: f64,
    /// Where the study cannot support the target: read these first.
    pub warnings: Vec<String>,
    pub advice: Vec<String>,
}

/// Ordinary least squares y = a + b·x; None without two distinct x.
pub(super) fn ols(xs: &[f64], ys: &[f64]) -> Option<(f64, f64)> {
    let n = xs.len() as f64;
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let sxx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
    if xs.len() < 2 || sxx <= 1e-12 * mx.abs().max(1.0).powi(2) {
        return None;
    }
    let sxy: f64 = xs.iter().zip(ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let b = sxy / sxx;
    Some((my - b * mx, b))
}

/// The median of `v` (0 when empty).
pub(super) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Bytes as text: "123 MiB".
pub(super) fn mib_text(b: f64) -> String {
    format!("{:.0} MiB", crate::metrics::mib(b))
}

/// Predicts the target from the study's points: the time model, the
/// memory model, whether memory grows with the images, and advice.
pub fn estimate(points: &[StudyPoint], target: Target) -> Result<Estimate, StudyError> {
    let ok: Vec<StudyPoint> = points
        .iter()
        .filter(|p| p.failed == 0 && p.tasks > 0)
        .cloned()
        .collect();
    if ok.is_empty() {
        return Err(StudyError::NoPoints);
    }
    let time = time_model(&ok, &target)?;
    let memory = memory_model(&ok, &target);
    let growth = memory_growth(&ok, &time, &memory);
    let warnings = warnings(&ok, &target, &time, &memory);
    let advice = advice(&ok, &target, &time, &memory, growth);
    Ok(Estimate {
        wall_s: time.wall_s,
        peak_rss_per_rank_bytes: memory.peak_rss,
        launcher_s: time.launcher_s,
        fixed_s: time.used.a,
        seconds_per_image: time.used.c,
        seconds_per_voxel: time.used.b,
        busiest_voxels: time.busiest_images * time.mean_voxels,
        serial_fraction: time.serial_fraction,
        memory_base_bytes: memory.base,
        memory_per_image_byte: memory.k,
        memory_flat: growth < 0.10,
        memory_growth_over_study: growth,
        warnings,
        advice,
        target,
    })
}

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
mod array;
mod memory;
#[cfg(test)]
mod tests;
mod time;

use serde::Serialize;

use super::{StudyError, StudyPoint};
use advice::{advice, warnings};
pub use array::{estimate_array, ArrayEstimate, ArrayShape};
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

/// How the study's repetitions were used, and how far they disagree.
///
/// Why: on a shared machine a repetition can take twice another's time
/// (another job on the cores, the file system's cache), and one noisy point
/// tilts the fit: two studies of the same data five minutes apart gave
/// estimates 6.5× apart. So the fit uses each point's median repetition
/// (one disturbed run of three moves nothing; the minimum, as benchmarkers
/// take it, was tried and is too hopeful for short points: a run under a
/// second escapes a busy spell more often than a long one, and 64-image
/// runs then came out 40% above the estimate), and the interval's high end
/// is what the slowest repetitions predict: the time if the machine stays
/// as busy as it was at its worst.
#[derive(Clone, Debug, Serialize)]
pub struct Noise {
    /// The fewest repetitions any point had.
    pub reps: usize,
    /// The largest spread of one point's repetitions, (slowest − fastest) / fastest.
    pub worst_spread: f64,
    /// That point: "R rank(s) × T thread(s) × N images: a–b s".
    pub worst_point: Option<String>,
    /// The wall the slowest repetitions predict (None with one repetition).
    pub slowest_wall_s: Option<f64>,
}

/// Repeats of one point whose walls differ by more than this are noise.
pub const NOISY_SPREAD: f64 = 0.20;

/// What the target's images move through the file system: read and
/// written bytes, and the rate that is over the predicted wall.
#[derive(Clone, Debug, Serialize)]
pub struct FileSystem {
    pub bytes: f64,
    pub bytes_per_s: f64,
    /// The rate the user said the file system gives (`--fs-bandwidth`).
    pub limit_bytes_per_s: Option<f64>,
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
    pub noise: Noise,
    /// None in studies made before bytes were kept.
    pub file_system: Option<FileSystem>,
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

/// Which of a point's repetitions stands for it.
#[derive(Clone, Copy, PartialEq)]
enum Pick {
    Fastest,
    Median,
    Slowest,
}

/// One repetition per (ranks, threads, images), in the study's order:
/// the fastest, the median (the upper one of an even count) or the slowest
/// by wall.
fn one_per_point(ok: &[StudyPoint], pick: Pick) -> Vec<StudyPoint> {
    let key = |q: &StudyPoint| (q.ranks, q.threads, q.tasks);
    let mut keys: Vec<(usize, usize, usize)> = Vec::new();
    for p in ok {
        if !keys.contains(&key(p)) {
            keys.push(key(p));
        }
    }
    keys.iter()
        .map(|k| {
            let mut reps: Vec<&StudyPoint> = ok.iter().filter(|p| key(p) == *k).collect();
            reps.sort_by(|a, b| a.wall_s.total_cmp(&b.wall_s));
            let i = match pick {
                Pick::Fastest => 0,
                Pick::Median => reps.len() / 2,
                Pick::Slowest => reps.len() - 1,
            };
            reps[i].clone()
        })
        .collect()
}

/// The repetitions' count and spread, point by point.
fn noise(ok: &[StudyPoint], slowest_wall_s: Option<f64>) -> Noise {
    let fastest = one_per_point(ok, Pick::Fastest);
    let slowest = one_per_point(ok, Pick::Slowest);
    let mut noise = Noise {
        reps: usize::MAX,
        worst_spread: 0.0,
        worst_point: None,
        slowest_wall_s,
    };
    for (f, s) in fastest.iter().zip(&slowest) {
        let reps = ok
            .iter()
            .filter(|p| (p.ranks, p.threads, p.tasks) == (f.ranks, f.threads, f.tasks))
            .count();
        noise.reps = noise.reps.min(reps);
        let spread = s.wall_s / f.wall_s.max(1e-9) - 1.0;
        if spread > noise.worst_spread {
            noise.worst_spread = spread;
            noise.worst_point = Some(format!(
                "{} rank(s) × {} thread(s) × {} images: {:.2}–{:.2} s",
                f.ranks, f.threads, f.tasks, f.wall_s, s.wall_s
            ));
        }
    }
    noise.reps = noise.reps.min(ok.len()).max(1);
    noise
}

/// The bytes the target moves, from the study's bytes per voxel, and the
/// rate over `wall_s`.
fn file_system(
    ok: &[StudyPoint],
    target: &Target,
    mean_voxels: f64,
    wall_s: f64,
    limit: Option<f64>,
) -> Option<FileSystem> {
    let (bytes, voxels) = ok
        .iter()
        .filter(|p| p.bytes_moved > 0)
        .fold((0.0, 0.0), |(b, v), p| {
            (b + p.bytes_moved as f64, v + p.total_voxels as f64)
        });
    (bytes > 0.0 && voxels > 0.0).then(|| {
        let bytes = target.tasks as f64 * mean_voxels * bytes / voxels;
        FileSystem {
            bytes,
            bytes_per_s: bytes / wall_s.max(1e-9),
            limit_bytes_per_s: limit,
        }
    })
}

/// Predicts the target from the study's points: the time model on each
/// point's median repetition (its high end from the slowest ones), the
/// memory model, whether memory grows with the images, what the file
/// system carries, and advice. `fs_limit`: the file system's rate in bytes
/// per second, when the user knows it; a wall that needs more is raised to
/// what the file system allows.
pub fn estimate(
    points: &[StudyPoint],
    target: Target,
    fs_limit: Option<f64>,
) -> Result<Estimate, StudyError> {
    let ok: Vec<StudyPoint> = points
        .iter()
        .filter(|p| p.failed == 0 && p.tasks > 0)
        .cloned()
        .collect();
    if ok.is_empty() {
        return Err(StudyError::NoPoints);
    }
    let median = one_per_point(&ok, Pick::Median);
    let mut time = time_model(&median, &target)?;
    let slowest = (median.len() < ok.len())
        .then(|| time_model(&one_per_point(&ok, Pick::Slowest), &target).ok())
        .flatten()
        .map(|t| t.wall_s.value);
    if let Some(w) = slowest {
        let above = time.wall_s.high / time.wall_s.value.max(1e-12);
        time.wall_s.high = time.wall_s.high.max(w * above);
    }
    let noise = noise(&ok, slowest);
    let mut fs = file_system(&ok, &target, time.mean_voxels, time.wall_s.value, fs_limit);
    let bound = fs.as_ref().and_then(|f| {
        let limit = f.limit_bytes_per_s?;
        (f.bytes_per_s > limit).then(|| time.launcher_s + time.used.a + f.bytes / limit)
    });
    if let Some(b) = bound {
        let scale = b / time.wall_s.value;
        time.wall_s = Interval {
            value: b,
            low: time.wall_s.low * scale,
            high: time.wall_s.high.max(time.wall_s.high * scale),
        };
    }
    if let Some(f) = fs.as_mut() {
        f.bytes_per_s = f.bytes / time.wall_s.value.max(1e-9);
    }
    let memory = memory_model(&ok, &target);
    let growth = memory_growth(&median, &time, &memory);
    let mut warnings = warnings(&median, &target, &time, &memory);
    warnings.extend(advice::noise_warnings(&noise, &time));
    warnings
        .extend(bound.map(|_| advice::bandwidth_warning(fs.as_ref().expect("a bound has a rate"))));
    let advice = advice(&median, &target, &time, &memory, growth);
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
        noise,
        file_system: fs,
        warnings,
        advice,
        target,
    })
}

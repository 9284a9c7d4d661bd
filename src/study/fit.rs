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

use serde::Serialize;

use super::{StudyError, StudyPoint};
use crate::plan::schedule::{partition, Schedule};
use crate::resources::{default_readers, pipeline_images};

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
fn ols(xs: &[f64], ys: &[f64]) -> Option<(f64, f64)> {
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

/// One (ranks, threads) group's fit: seconds = a + c·images + b·voxels on
/// the busiest rank.
#[derive(Clone, Copy, Debug)]
struct TimeFit {
    ranks: usize,
    a: f64,
    c: f64,
    b: f64,
}

impl TimeFit {
    /// The per-rank work (a excluded) for `n` images of `v` voxels in all.
    fn work(&self, n: f64, v: f64) -> f64 {
        self.c * n + self.b * v
    }

    fn predict(&self, p: &StudyPoint) -> f64 {
        self.a + self.work(p.busiest_images() as f64, p.max_rank_voxels as f64)
    }
}

/// The steps of a run's ranks in their steady state: the times between one
/// image's finish and the next on a rank, as (the later image's voxels, seconds), without the
/// last `pipeline_images` − 1. Those come after the reader has read the last
/// image (and, under MPI, often after the other ranks have finished), so
/// they are cheaper, and they are a large part of a short run: counted, they
/// put the per-image cost of 8-image runs 15–25% below that of 32-image runs
/// on this VM. Their saving is a fixed amount per run, so it stays in a.
fn steady_steps(p: &StudyPoint) -> impl Iterator<Item = (f64, f64)> + '_ {
    let tail = pipeline_images(default_readers(p.threads)) - 1;
    p.finishes.iter().flat_map(move |rank| {
        let steps = rank.len().saturating_sub(1);
        rank.windows(2)
            .take(steps.saturating_sub(tail))
            .map(|w| (w[1].0 as f64, w[1].1 - w[0].1))
    })
}

/// The per-image and per-voxel costs (c, b) from the group's runs seen from
/// inside: on every rank, a steady step is c + b·v, v the later
/// image's voxels. Steps leave out each run's start-up, whose noise dwarfs a
/// few small images' costs and tilted the walls' slope. c and b apart when
/// the sizes vary by more than 10%, else b alone (c is then part of it).
/// None without a steady step in any run.
fn rates(g: &[&StudyPoint]) -> Option<(f64, f64)> {
    let steps: Vec<(f64, f64)> = g.iter().flat_map(|p| steady_steps(p)).collect();
    let vs: Vec<f64> = steps.iter().map(|s| s.0).collect();
    let dts: Vec<f64> = steps.iter().map(|s| s.1).collect();
    let total_v: f64 = vs.iter().sum();
    if total_v <= 0.0 {
        return None;
    }
    let mean_v = total_v / vs.len() as f64;
    let sd_v = (vs.iter().map(|v| (v - mean_v).powi(2)).sum::<f64>() / vs.len() as f64).sqrt();
    if sd_v > 0.1 * mean_v {
        if let Some((c, b)) = ols(&vs, &dts).filter(|&(c, b)| c >= 0.0 && b > 0.0) {
            return Some((c, b));
        }
    }
    Some((0.0, (dts.iter().sum::<f64>() / total_v).max(0.0)))
}

/// The walls' own line, wall = a + b·v over the group's points, when its
/// slope is well determined (standard error under 10% of it). It holds
/// what grows with a run's length, which the steps of short runs miss: on
/// this VM a 64-image run cost 5–15% more per image than 16-image runs.
fn wall_line(g: &[&StudyPoint], ranks: usize) -> Option<TimeFit> {
    let vs: Vec<f64> = g.iter().map(|p| p.max_rank_voxels as f64).collect();
    let ys: Vec<f64> = g.iter().map(|p| p.wall_s).collect();
    let (a, b) = ols(&vs, &ys)?;
    let n = vs.len() as f64;
    let mean = vs.iter().sum::<f64>() / n;
    let sxx: f64 = vs.iter().map(|v| (v - mean).powi(2)).sum();
    let sse: f64 = vs
        .iter()
        .zip(&ys)
        .map(|(v, y)| (y - a - b * v).powi(2))
        .sum();
    let se = (sse / (n - 2.0).max(1.0) / sxx).sqrt();
    (vs.len() >= 3 && b > 0.0 && se < 0.1 * b).then_some(TimeFit {
        ranks,
        a: a.max(0.0),
        c: 0.0,
        b,
    })
}

/// A group's fit. The walls' line when it is well determined, its cost per
/// image split into c and b as the steps say when sizes vary (equal at the
/// group's mean image). Else c and b from the runs' steady steps, a the
/// median of what the walls leave over (from the runs that had steady
/// steps, whose tails are like the target's). Else (older studies, runs
/// too short for a steady state) the walls' line as it is.
fn fit_group(g: &[&StudyPoint], ranks: usize) -> Option<TimeFit> {
    let rates = rates(g);
    if let Some(mut fit) = wall_line(g, ranks) {
        if let Some((c, b)) = rates.filter(|&(c, _)| c > 0.0) {
            let images: usize = g.iter().map(|p| p.busiest_images()).sum();
            let voxels: f64 = g.iter().map(|p| p.max_rank_voxels as f64).sum();
            let mean = voxels / images.max(1) as f64;
            let k = fit.b * mean / (c + b * mean);
            (fit.c, fit.b) = (k * c, k * b);
        }
        return Some(fit);
    }
    if let Some((c, b)) = rates {
        let steady: Vec<&&StudyPoint> = g
            .iter()
            .filter(|p| steady_steps(p).next().is_some())
            .collect();
        let mut rest: Vec<f64> = steady
            .iter()
            .map(|p| p.wall_s - c * p.busiest_images() as f64 - b * p.max_rank_voxels as f64)
            .collect();
        rest.sort_by(f64::total_cmp);
        let a = rest[rest.len() / 2].max(0.0);
        return Some(TimeFit { ranks, a, c, b });
    }
    let vs: Vec<f64> = g.iter().map(|p| p.max_rank_voxels as f64).collect();
    let ys: Vec<f64> = g.iter().map(|p| p.wall_s).collect();
    let (a, b) = ols(&vs, &ys)?;
    Some(TimeFit {
        ranks,
        a: a.max(0.0),
        c: 0.0,
        b: b.max(0.0),
    })
}

fn time_fits(points: &[StudyPoint], threads: usize) -> Vec<TimeFit> {
    let mut ranks: Vec<usize> = points
        .iter()
        .filter(|p| p.threads == threads)
        .map(|p| p.ranks)
        .collect();
    ranks.sort_unstable();
    ranks.dedup();
    ranks
        .into_iter()
        .filter_map(|r| {
            let g: Vec<&StudyPoint> = points
                .iter()
                .filter(|p| p.threads == threads && p.ranks == r)
                .collect();
            fit_group(&g, r)
        })
        .collect()
}

/// Bytes as text: "123 MiB".
fn mib_text(b: f64) -> String {
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

/// The study's mean voxels per image.
fn study_mean_voxels(ok: &[StudyPoint]) -> f64 {
    let (v, n) = ok.iter().fold((0.0, 0usize), |(v, n), p| {
        (v + p.total_voxels as f64, n + p.tasks)
    });
    v / n.max(1) as f64
}

/// wall = launcher + a + c·n + b(M)·v on the busiest rank, the work growing
/// with the ranks M on a node by Amdahl's law.
struct TimeModel {
    threads: usize,
    fits: Vec<TimeFit>,
    /// The fit at the fewest ranks.
    base: TimeFit,
    /// The fit the prediction used (the base one, contention applied, when
    /// the target's ranks per node were not studied).
    used: TimeFit,
    serial_fraction: f64,
    launcher_s: f64,
    wall_s: Interval,
    /// Images and mean voxels per image on the target's busiest rank.
    busiest_images: f64,
    mean_voxels: f64,
    /// The target's ranks per node are outside the study's.
    extrapolated: bool,
}

/// Amdahl's serial fraction from the fits: the work at M ranks over the
/// work at the fewest, at a reference share, is (1 + f(M−1)) / (1 + f(R0−1)).
fn serial_fraction(fits: &[TimeFit], base: &TimeFit, n: f64, v: f64) -> f64 {
    let w0 = base.work(n, v);
    let pts: Vec<(f64, f64)> = fits
        .iter()
        .filter(|f| f.ranks != base.ranks && w0 > 0.0)
        .map(|f| ((f.ranks - base.ranks) as f64, f.work(n, v) / w0 - 1.0))
        .collect();
    if pts.is_empty() {
        return 0.0;
    }
    // Least squares through the origin: g − 1 = f·ΔM.
    let num: f64 = pts.iter().map(|(x, y)| x * y).sum();
    let den: f64 = pts.iter().map(|(x, _)| x * x).sum();
    (num / den).clamp(0.0, 1.0)
}

fn time_model(ok: &[StudyPoint], target: &Target) -> Result<TimeModel, StudyError> {
    // The study's thread count nearest the target's.
    let threads = ok
        .iter()
        .map(|p| p.threads)
        .min_by_key(|t| (*t as i64 - target.threads as i64).abs())
        .unwrap();
    let fits = time_fits(ok, threads);
    if fits.is_empty() {
        return Err(StudyError::NoTimedImages(threads));
    }
    let base = *fits.iter().min_by_key(|f| f.ranks).unwrap();
    let mean_voxels = target.mean_voxels.unwrap_or_else(|| study_mean_voxels(ok));
    let reference = ok.iter().map(|p| p.busiest_images()).max().unwrap_or(1) as f64;
    let serial_fraction =
        serial_fraction(&fits, &base, reference, reference * study_mean_voxels(ok));
    let m = target.ranks_per_node;
    let studied = fits.iter().find(|f| f.ranks == m).copied();
    let used = studied.unwrap_or_else(|| {
        let g = (1.0 + serial_fraction * (m as f64 - 1.0))
            / (1.0 + serial_fraction * (base.ranks as f64 - 1.0));
        TimeFit {
            ranks: m,
            a: fits.iter().map(|f| f.a).sum::<f64>() / fits.len() as f64,
            c: base.c * g,
            b: base.b * g,
        }
    });
    // Balanced shares: the busiest rank gets its even part, at least one image.
    let n = (target.tasks as f64 / target.ranks() as f64)
        .ceil()
        .max(1.0);
    let launcher_s = launcher(ok, target);
    let wall = launcher_s + used.a + used.work(n, n * mean_voxels);
    // Relative residuals of every fitted point, as the interval.
    let rel: Vec<f64> = ok
        .iter()
        .filter(|p| p.threads == threads)
        .filter_map(|p| {
            let pred = fits.iter().find(|f| f.ranks == p.ranks)?.predict(p);
            (pred > 0.0).then(|| p.wall_s / pred - 1.0)
        })
        .collect();
    let rel_sd = (rel.iter().map(|r| r * r).sum::<f64>() / rel.len().max(1) as f64).sqrt();
    let extrapolated = studied.is_none();
    let spread = (2.0 * rel_sd).max(0.05) + if extrapolated { 0.10 } else { 0.0 };
    let wall_s = Interval {
        value: wall,
        low: wall * (1.0 - spread).max(0.0),
        high: wall * (1.0 + spread),
    };
    Ok(TimeModel {
        threads,
        fits,
        base,
        used,
        serial_fraction,
        launcher_s,
        wall_s,
        busiest_images: n,
        mean_voxels,
        extrapolated,
    })
}

/// The launcher's time around the run (outer wall − the report's wall), the
/// median over the points launched like the target: one process started
/// directly, or several by mpirun/srun (which costs more).
fn launcher(ok: &[StudyPoint], target: &Target) -> f64 {
    let several = target.ranks() > 1;
    let mut v: Vec<f64> = ok
        .iter()
        .filter(|p| (p.ranks > 1) == several)
        .map(|p| (p.outer_wall_s - p.wall_s).max(0.0))
        .collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The most bytes a rank holds at once when it reads images of `sizes` in
/// that order and holds up to `depth` of them: the largest sum of `depth`
/// consecutive sizes (all of them when there are fewer).
pub fn in_flight_bytes(sizes: &[u64], depth: usize) -> u64 {
    sizes
        .windows(depth.clamp(1, sizes.len().max(1)))
        .map(|w| w.iter().sum::<u64>())
        .max()
        .unwrap_or(0)
}

/// The target's in-flight bytes under the default (balanced) schedule:
/// `voxels` and `bytes` per image in list order, shared among `ranks`.
pub fn planned_in_flight(voxels: &[u64], bytes: &[u64], ranks: usize, threads: usize) -> u64 {
    let depth = pipeline_images(default_readers(threads));
    partition(Schedule::Balanced, voxels, ranks.max(1))
        .unwrap_or_default()
        .iter()
        .map(|share| {
            let sizes: Vec<u64> = share.iter().map(|&i| bytes[i]).collect();
            in_flight_bytes(&sizes, depth)
        })
        .max()
        .unwrap_or(0)
}

/// peak = base + k × the image bytes a rank holds at once, from runs like
/// the target's.
struct MemoryModel {
    base: f64,
    k: f64,
    peak_rss: Interval,
    /// The target's largest image (the study's when the target names none).
    target_largest: f64,
}

impl MemoryModel {
    fn predict(&self, in_flight: f64) -> f64 {
        self.base + self.k * in_flight
    }
}

fn memory_model(ok: &[StudyPoint], target: &Target) -> MemoryModel {
    // Memory per rank, from runs like the target's: one rank runs without
    // MPI, several load the MPI library (about 10 MiB more per rank).
    let like: Vec<&StudyPoint> = {
        let same: Vec<&StudyPoint> = ok
            .iter()
            .filter(|p| (p.ranks > 1) == (target.ranks() > 1))
            .collect();
        if same.is_empty() {
            ok.iter().collect()
        } else {
            same
        }
    };
    let xs: Vec<f64> = like.iter().map(|p| p.in_flight()).collect();
    let peaks: Vec<f64> = like.iter().map(|p| p.peak_rss_max_bytes as f64).collect();
    let study_x = xs.iter().cloned().fold(0.0, f64::max);
    let study_largest = like
        .iter()
        .map(|p| p.largest_image_bytes as f64)
        .fold(0.0, f64::max);
    let target_largest = target
        .largest_image_bytes
        .map(|b| b as f64)
        .unwrap_or(study_largest);
    let depth = pipeline_images(default_readers(target.threads)) as f64;
    let target_x = target
        .in_flight_bytes
        .map(|b| b as f64)
        .unwrap_or(depth * target_largest);
    let spread = xs.iter().cloned().fold(f64::INFINITY, f64::min) < 0.9 * study_x;
    let (base, k) = match ols(&xs, &peaks).filter(|&(a, k)| spread && a > 0.0 && k > 0.0) {
        Some(fit) => fit,
        None => (
            0.0,
            peaks.iter().cloned().fold(0.0, f64::max) / study_x.max(1.0),
        ),
    };
    let predict = |x: f64| base + k * x;
    let rel: Vec<f64> = xs
        .iter()
        .zip(&peaks)
        .map(|(x, p)| p / predict(*x) - 1.0)
        .collect();
    let sd = (rel.iter().map(|r| r * r).sum::<f64>() / rel.len() as f64).sqrt();
    // Never below a peak the study saw with no more bytes in flight.
    let seen = xs
        .iter()
        .zip(&peaks)
        .filter(|(x, _)| **x <= target_x)
        .map(|(_, p)| *p)
        .fold(0.0, f64::max);
    let mem = predict(target_x).max(seen);
    let spread = (2.0 * sd).max(0.05);
    MemoryModel {
        base,
        k,
        peak_rss: Interval {
            value: mem,
            low: mem * (1.0 - spread).max(0.0),
            high: mem * (1.0 + spread),
        },
        target_largest,
    }
}

/// How much the peak grew beyond the model from the fewest images to the
/// most, at each rank count of the time model: 0 when memory is flat once
/// the images in flight are counted.
fn memory_growth(ok: &[StudyPoint], time: &TimeModel, memory: &MemoryModel) -> f64 {
    let mut growth: f64 = 0.0;
    for f in &time.fits {
        let g: Vec<&StudyPoint> = ok
            .iter()
            .filter(|p| p.ranks == f.ranks && p.threads == time.threads)
            .collect();
        let (Some(lo), Some(hi)) = (
            g.iter().min_by_key(|p| p.tasks),
            g.iter().max_by_key(|p| p.tasks),
        ) else {
            continue;
        };
        if hi.tasks > lo.tasks {
            let per_byte =
                |p: &StudyPoint| p.peak_rss_max_bytes as f64 / memory.predict(p.in_flight());
            growth = growth.max(per_byte(hi) / per_byte(lo) - 1.0);
        }
    }
    growth
}

/// Plain advice: the slowest stage, ranks against threads, memory, and
/// any extrapolation.
fn advice(
    ok: &[StudyPoint],
    target: &Target,
    time: &TimeModel,
    memory: &MemoryModel,
    growth: f64,
) -> Vec<String> {
    let (threads, m) = (time.threads, target.ranks_per_node);
    let (base, serial_fraction) = (&time.base, time.serial_fraction);
    let mut advice = Vec::new();
    let near = ok
        .iter()
        .filter(|p| p.threads == threads)
        .min_by_key(|p| ((p.ranks as i64 - m as i64).abs(), usize::MAX - p.tasks))
        .unwrap();
    let stage = near.read_s + near.filter_s + near.write_s;
    if stage > 0.0 {
        let (name, share) = [
            ("reading", near.read_s),
            ("filtering", near.filter_s),
            ("writing", near.write_s),
        ]
        .into_iter()
        .map(|(n, v)| (n, v / stage))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap();
        advice.push(format!(
            "CPU efficiency {:.0}% at {} rank(s) × {} thread(s): {} is {:.0}% of each task's time{}.",
            100.0 * near.cpu_efficiency,
            near.ranks,
            near.threads,
            name,
            100.0 * share,
            if near.threads > 1 && name != "filtering" {
                "; threads speed up only the filter, so ranks pay off more than threads"
            } else {
                ""
            }
        ));
    }
    advice.extend(launcher_share(ok));
    let two = time.fits.iter().find(|f| f.ranks > base.ranks);
    let ratio = two.map_or(1.0, |t| t.ranks as f64 / base.ranks as f64);
    // The per-rank work of the target's share, at each rank count.
    let (n, v) = (time.busiest_images, time.busiest_images * time.mean_voxels);
    // A speed-up outside (0.05, 2 × the rank ratio) is the fit's noise, not
    // the machine's: said so, never printed as a figure.
    let speedup = two
        .filter(|t| base.work(n, v) > 0.0 && t.work(n, v) > 0.0)
        .map(|t| ratio * base.work(n, v) / t.work(n, v))
        .filter(|s| (0.05..=2.0 * ratio).contains(s));
    if let (Some(two), None) = (two, speedup) {
        advice.push(format!(
            "{} ranks on one node: the study's times do not fit time = a + b × voxels well enough to give a speed-up over {} (runs too short or too noisy); study more or larger images.",
            two.ranks, base.ranks
        ));
    }
    if let (Some(two), Some(s)) = (two, speedup) {
        let limit = if serial_fraction < 1e-3 {
            "no contention between ranks was measured, so the study cannot say where it starts: measure more ranks per node before relying on many".to_string()
        } else {
            format!(
                "so more ranks per node help until about {:.0} ranks, where efficiency falls to 50%; beyond that, add nodes",
                1.0 + 1.0 / serial_fraction
            )
        };
        advice.push(format!(
            "{} ranks on one node: speed-up {:.2}× over {} (efficiency {:.0}%); serial fraction {:.3}: {limit}.",
            two.ranks,
            s,
            base.ranks,
            100.0 * s / ratio,
            serial_fraction,
        ));
    }
    if growth < 0.10 {
        let naive = target.tasks as f64 / target.ranks() as f64 * memory.target_largest;
        advice.push(format!(
            "Memory per rank stays flat as images are added (+{:.0}% over the study): up to {} per rank (the interval's high end, before the request's margin), not {} (every image of a rank held in memory at once).",
            100.0 * growth.max(0.0),
            mib_text(memory.peak_rss.high),
            mib_text(naive)
        ));
    } else {
        advice.push(format!(
            "Memory per rank grew {:.0}% with the number of images in the study: the request below may be short; report this.",
            100.0 * growth
        ));
    }
    if time.extrapolated {
        advice.push(format!(
            "{m} rank(s) per node is outside the study (ranks {:?}): the time is extrapolated with Amdahl's law and its interval widened by 10%.",
            time.fits.iter().map(|f| f.ranks).collect::<Vec<_>>()
        ));
    }
    advice
}

/// The median of `v` (0 when empty).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// A launcher whose start-up is a large part of each point: the job's
/// limit must cover it.
fn launcher_share(ok: &[StudyPoint]) -> Option<String> {
    let launcher = median(
        ok.iter()
            .map(|p| (p.outer_wall_s - p.wall_s).max(0.0) / p.outer_wall_s.max(1e-9))
            .collect(),
    );
    (launcher > 0.3).then(|| {
        format!(
            "The launcher's start-up is {:.0}% of each point's time (median): a job's time limit must cover it as well as the run.",
            100.0 * launcher
        )
    })
}

/// The range of `f` over the points, as (low, high).
fn range(ok: &[StudyPoint], f: impl Fn(&StudyPoint) -> f64) -> (f64, f64) {
    ok.iter()
        .map(f)
        .fold((f64::INFINITY, 0.0), |(lo, hi), x| (lo.min(x), hi.max(x)))
}

/// Where the study cannot support the target, said plainly: the estimate
/// prints these first, and `--json` keeps them.
fn warnings(
    ok: &[StudyPoint],
    target: &Target,
    time: &TimeModel,
    memory: &MemoryModel,
) -> Vec<String> {
    let mut out = Vec::new();
    let wall = median(ok.iter().map(|p| p.wall_s).collect());
    if wall < 1.0 {
        out.push(format!(
            "The study's runs last {:.0} ms (median): too short for the per-image cost to stand out of start-up and noise. Study more or larger images (a second or more per point).",
            1e3 * wall
        ));
    }
    if time.threads != target.threads {
        out.push(format!(
            "The study has no points at {} thread(s): the time is that of {} thread(s). Study --threads {}.",
            target.threads, time.threads, target.threads
        ));
    }
    if time.fits.len() == 1 && time.extrapolated {
        out.push(format!(
            "The study measured {} rank(s) per node only: contention between ranks is unknown, and the time for {} assumes none. Study --ranks 1,2,4… up to the node's cores.",
            time.base.ranks, target.ranks_per_node
        ));
    }
    let (lo, hi) = range(ok, |p| p.total_voxels as f64 / p.tasks as f64);
    if time.mean_voxels > 2.0 * hi || time.mean_voxels < 0.5 * lo {
        out.push(format!(
            "The target's images hold {:.0} voxels on average, the study's {:.0} to {:.0}: costs are scaled by voxels{}. Study images like the target's.",
            time.mean_voxels,
            lo,
            hi,
            if time.used.c == 0.0 {
                ", and the study's images were too alike in size to measure a per-image cost apart"
            } else {
                ""
            }
        ));
    }
    let (_, most) = range(ok, |p| p.busiest_images() as f64);
    if time.busiest_images > 100.0 * most {
        out.push(format!(
            "Each rank gets {:.0} images, {:.0}× the most the study ran on one rank ({most:.0}): a small error in the per-image cost grows with that. Check the first job's report (nismooth report) before submitting the rest.",
            time.busiest_images,
            time.busiest_images / most
        ));
    }
    let (_, largest) = range(ok, |p| p.largest_image_bytes as f64);
    if memory.target_largest > 2.0 * largest {
        out.push(format!(
            "The target's largest image ({}) is {:.1}× the study's largest ({}): the memory is extrapolated.",
            mib_text(memory.target_largest),
            memory.target_largest / largest.max(1.0),
            mib_text(largest)
        ));
    }
    out.extend(dtype_mismatch(ok, target));
    out
}

/// The target's voxel types that the study did not measure (the cost per
/// voxel differs by type: float32 against int16 is about 1.5× here).
fn dtype_mismatch(ok: &[StudyPoint], target: &Target) -> Option<String> {
    let mut studied: Vec<&str> = ok
        .iter()
        .flat_map(|p| p.dtypes.iter().map(String::as_str))
        .collect();
    studied.sort_unstable();
    studied.dedup();
    let wanted = target.dtypes.as_ref()?;
    let missing: Vec<&str> = wanted
        .iter()
        .map(String::as_str)
        .filter(|d| !studied.contains(d))
        .collect();
    (!studied.is_empty() && !missing.is_empty()).then(|| {
        format!(
            "The target's images are {}, the study's {}: the cost per voxel differs by voxel type. Study the target's data.",
            missing.join(", "),
            studied.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Numbers in a text, as written (signs, decimals, exponents).
    fn numbers(text: &str) -> Vec<f64> {
        text.split(|c: char| !(c.is_ascii_digit() || ".-e+".contains(c)))
            .filter_map(|w| {
                w.trim_matches(|c| c == '.' || c == '-' || c == '+' || c == 'e')
                    .parse()
                    .ok()
            })
            .collect()
    }

    #[test]
    fn no_figure_is_ever_absurd_whatever_the_study() {
        // Random studies, degenerate ones included: identical sizes, zero and
        // tiny walls, noise far beyond any signal, one rank count or several.
        let mut seed = 0x9e3779b97f4a7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 11) as f64 / (1u64 << 53) as f64
        };
        for case in 0..2000 {
            let mut pts = Vec::new();
            let scale = [1e-3, 0.04, 1.0, 100.0][case % 4];
            for ranks in [1, 2, 4].into_iter().take(1 + case % 3) {
                for tasks in [1, 2, 4, 8, 16] {
                    if next() < 0.3 {
                        continue;
                    }
                    let wall =
                        scale * (next() * 3.0 + if case % 5 == 0 { 0.0 } else { tasks as f64 });
                    let mut p = point(ranks, tasks, wall, (next() * 1e9) as u64 + 1);
                    p.outer_wall_s = wall + next() * scale;
                    p.cpu_efficiency = next();
                    if case % 7 == 0 {
                        p.max_rank_voxels = 1000;
                    }
                    pts.push(p);
                }
            }
            let target = Target {
                tasks: 1 + (next() * 40000.0) as usize,
                nodes: 1 + (next() * 4.0) as usize,
                ranks_per_node: 1 + (next() * 8.0) as usize,
                threads: 1,
                mean_voxels: None,
                largest_image_bytes: None,
                dtypes: None,
                in_flight_bytes: None,
            };
            let Ok(e) = estimate(&pts, target) else {
                continue;
            };
            for iv in [&e.wall_s, &e.peak_rss_per_rank_bytes] {
                assert!(
                    iv.value.is_finite() && iv.low <= iv.value && iv.value <= iv.high,
                    "{case}: {iv:?}"
                );
                assert!(
                    iv.low >= -1e-9 * iv.value.abs().max(1.0) || iv.value == 0.0,
                    "{case}: {iv:?}"
                );
            }
            assert!((0.0..=1.0).contains(&e.serial_fraction), "{case}");
            for a in &e.advice {
                assert!(!a.contains("inf") && !a.contains("NaN"), "{case}: {a}");
                let speedups: Vec<f64> = a
                    .split("speed-up ")
                    .skip(1)
                    .flat_map(numbers)
                    .take(1)
                    .collect();
                assert!(
                    speedups.iter().all(|s| (0.05..=16.0).contains(s)),
                    "{case}: {a}"
                );
                let effs: Vec<f64> = a
                    .split("(efficiency ")
                    .skip(1)
                    .flat_map(numbers)
                    .take(1)
                    .collect();
                assert!(
                    effs.iter().all(|e| (0.0..=200.0).contains(e)),
                    "{case}: {a}"
                );
            }
        }
    }

    use super::super::test_point as point;

    /// A synthetic machine: 0.3 s start-up, 1 s per image, 10% contention per extra rank.
    fn synthetic(ranks: usize, tasks: usize) -> f64 {
        0.3 + tasks.div_ceil(ranks) as f64 * (1.0 + 0.1 * (ranks - 1) as f64)
    }

    #[test]
    fn the_launchers_time_is_part_of_the_prediction() {
        // mpirun takes 0.5 s around a run of several ranks, nothing around one.
        let mut pts = Vec::new();
        for ranks in [1, 2] {
            for tasks in [2, 4, 8] {
                let mut p = point(ranks, tasks, synthetic(ranks, tasks), 1 << 20);
                p.outer_wall_s = p.wall_s + if ranks > 1 { 0.5 } else { 0.0 };
                pts.push(p);
            }
        }
        let target = |ranks_per_node| Target {
            tasks: 16,
            nodes: 1,
            ranks_per_node,
            threads: 1,
            mean_voxels: None,
            largest_image_bytes: None,
            dtypes: None,
            in_flight_bytes: None,
        };
        let two = estimate(&pts, target(2)).unwrap();
        assert!((two.launcher_s - 0.5).abs() < 1e-9);
        assert!(
            (two.wall_s.value - (0.5 + synthetic(2, 16))).abs() < 1e-6,
            "{:?}",
            two.wall_s
        );
        assert_eq!(estimate(&pts, target(1)).unwrap().launcher_s, 0.0);
    }

    #[test]
    fn memory_ramps_until_the_pipeline_is_full_then_counts_as_flat() {
        // A rank holds min(images, pipeline_images) images of 4 MB: memory
        // rises over the first few images, then stays put.
        let peak = |ranks: usize, tasks: usize| {
            let most = pipeline_images(default_readers(1));
            (10 << 20) + tasks.div_ceil(ranks).min(most) as u64 * (4 << 20)
        };
        let mut pts = Vec::new();
        for r in [1, 2] {
            for n in [2, 4, 8, 16] {
                pts.push(point(r, n, synthetic(r, n), peak(r, n)));
            }
        }
        let e = estimate(
            &pts,
            Target {
                tasks: 64,
                nodes: 1,
                ranks_per_node: 2,
                threads: 1,
                mean_voxels: None,
                largest_image_bytes: None,
                dtypes: None,
                in_flight_bytes: None,
            },
        )
        .unwrap();
        assert!(
            e.memory_flat,
            "the ramp before the pipeline fills is not growth"
        );
        let full = peak(2, 64) as f64;
        assert!(
            (e.peak_rss_per_rank_bytes.value - full).abs() < 0.02 * full,
            "{} vs {full}",
            e.peak_rss_per_rank_bytes.value
        );
    }

    #[test]
    fn recovers_a_known_machine_and_extrapolates_with_amdahl() {
        let mut pts = Vec::new();
        for r in [1, 2] {
            for n in [2, 4, 8, 16] {
                pts.push(point(r, n, synthetic(r, n), 50 << 20));
            }
        }
        let t = |ranks_per_node, nodes| Target {
            tasks: 64,
            nodes,
            ranks_per_node,
            threads: 1,
            mean_voxels: None,
            largest_image_bytes: None,
            dtypes: None,
            in_flight_bytes: None,
        };
        let e = estimate(&pts, t(2, 1)).unwrap();
        assert!(
            (e.wall_s.value - synthetic(2, 64)).abs() < 1e-6,
            "{}",
            e.wall_s.value
        );
        assert!((e.serial_fraction - 0.1).abs() < 1e-9);
        assert!(e.memory_flat);
        // 4 ranks per node was not studied: Amdahl gives 1 + 0.1 × 3.
        let e4 = estimate(&pts, t(4, 1)).unwrap();
        assert!(
            (e4.wall_s.value - synthetic(4, 64)).abs() < 1e-6,
            "{}",
            e4.wall_s.value
        );
        assert!(
            e4.wall_s.high / e4.wall_s.value > 1.14,
            "extrapolation widens the interval"
        );
        // Two nodes of 2 ranks: no extra contention, half the images per rank.
        let e22 = estimate(&pts, t(2, 2)).unwrap();
        assert!((e22.wall_s.value - (0.3 + 16.0 * 1.1)).abs() < 1e-6);
        assert!(
            e.advice.iter().any(|a| a.contains("writing is 70%")),
            "{:?}",
            e.advice
        );
    }

    #[test]
    fn memory_counts_the_images_in_flight() {
        assert_eq!(in_flight_bytes(&[5, 1, 1, 1, 1, 9, 9, 1], 4), 20);
        assert_eq!(
            in_flight_bytes(&[3, 4], 4),
            7,
            "fewer images than the depth"
        );
        assert_eq!(in_flight_bytes(&[], 4), 0);
        let depth = pipeline_images(default_readers(1)) as u64;
        assert_eq!(
            planned_in_flight(&[10; 64], &[1000; 64], 2, 1),
            depth * 1000
        );
        // peak = 8 MiB + 1.5 × the bytes in flight, which grow with the images.
        let mut pts = Vec::new();
        for (n, in_flight) in [(2usize, 1000u64), (4, 2000), (8, 4000)] {
            let mut p = point(1, n, synthetic(1, n), 0);
            p.in_flight_bytes = in_flight << 10;
            p.largest_image_bytes = 1000 << 10;
            p.peak_rss_max_bytes = (8 << 20) + 3 * (in_flight << 10) / 2;
            pts.push(p);
        }
        let e = estimate(
            &pts,
            Target {
                in_flight_bytes: Some(6000 << 10),
                ..target(100, 1, None)
            },
        )
        .unwrap();
        let want = (8 << 20) as f64 + 1.5 * (6000 << 10) as f64;
        assert!((e.peak_rss_per_rank_bytes.value / want - 1.0).abs() < 1e-9);
        assert!((e.memory_base_bytes - (8 << 20) as f64).abs() < 1.0);
    }

    /// A machine with a per-image cost: 0.2 s per process, 50 ms per image,
    /// 1 µs per voxel, 10% contention per extra rank.
    fn per_image_machine(ranks: usize, images: usize, voxels: u64) -> f64 {
        0.2 + (1.0 + 0.1 * (ranks - 1) as f64) * (0.05 * images as f64 + 1e-6 * voxels as f64)
    }

    /// Points whose images differ in size from point to point.
    fn varied_study() -> Vec<StudyPoint> {
        let mut pts = Vec::new();
        for ranks in [1, 2] {
            for (tasks, per_image) in [
                (4usize, 300_000u64),
                (8, 100_000),
                (16, 200_000),
                (12, 50_000),
            ] {
                let n = tasks.div_ceil(ranks);
                let v = n as u64 * per_image;
                let mut p = point(ranks, tasks, per_image_machine(ranks, n, v), 50 << 20);
                p.max_rank_voxels = v;
                p.total_voxels = tasks as u64 * per_image;
                p.finishes = vec![(1..=n)
                    .map(|k| (per_image, per_image_machine(ranks, k, k as u64 * per_image)))
                    .collect()];
                pts.push(p);
            }
        }
        pts
    }

    fn target(tasks: usize, ranks_per_node: usize, mean_voxels: Option<f64>) -> Target {
        Target {
            tasks,
            nodes: 1,
            ranks_per_node,
            threads: 1,
            mean_voxels,
            largest_image_bytes: None,
            dtypes: None,
            in_flight_bytes: None,
        }
    }

    #[test]
    fn separates_the_per_image_cost_when_sizes_vary() {
        // The finish times give c and b apart; the walls' line (which
        // leaves out c) sets their level: within 5% of the machine's.
        let e = estimate(&varied_study(), target(64, 2, Some(20_000.0))).unwrap();
        assert!(
            (e.seconds_per_image / 0.055 - 1.0).abs() < 0.05,
            "{}",
            e.seconds_per_image
        );
        assert!(
            (e.seconds_per_voxel / 1.1e-6 - 1.0).abs() < 0.05,
            "{}",
            e.seconds_per_voxel
        );
        // Images far smaller than the study's: the per-image cost decides.
        let want = per_image_machine(2, 32, 32 * 20_000);
        assert!(
            (e.wall_s.value / want - 1.0).abs() < 0.05,
            "{} vs {want}",
            e.wall_s.value
        );
        // Images of one size, no finish times (an older study): c and b
        // cannot be told apart, and b carries both.
        let mut same = varied_study();
        for p in &mut same {
            p.total_voxels = p.tasks as u64 * 100_000;
            p.max_rank_voxels = p.busiest_images() as u64 * 100_000;
            p.wall_s = per_image_machine(p.ranks, p.busiest_images(), p.max_rank_voxels);
            p.outer_wall_s = p.wall_s;
            p.finishes.clear();
        }
        let e = estimate(&same, target(64, 2, None)).unwrap();
        assert_eq!(e.seconds_per_image, 0.0);
        let want = per_image_machine(2, 32, 32 * 100_000);
        assert!(
            (e.wall_s.value - want).abs() < 1e-6,
            "{} vs {want}",
            e.wall_s.value
        );
    }

    #[test]
    fn warns_where_the_study_cannot_support_the_target() {
        // A well-supported target: no warning.
        let pts = varied_study();
        let e = estimate(&pts, target(64, 2, Some(150_000.0))).unwrap();
        assert!(e.warnings.is_empty(), "{:?}", e.warnings);
        let warned = |pts: &[StudyPoint], t: Target, words: &str| {
            let e = estimate(pts, t).unwrap();
            assert!(
                e.warnings.iter().any(|w| w.contains(words)),
                "{words}: {:?}",
                e.warnings
            );
        };
        let one_rank: Vec<StudyPoint> = pts.iter().filter(|p| p.ranks == 1).cloned().collect();
        warned(&one_rank, target(64, 4, None), "1 rank(s) per node only");
        warned(
            &pts,
            Target {
                threads: 4,
                ..target(64, 2, None)
            },
            "no points at 4 thread(s)",
        );
        warned(&pts, target(64, 2, Some(5e6)), "costs are scaled by voxels");
        warned(
            &pts,
            target(40_000, 1, None),
            "the most the study ran on one rank",
        );
        let float = Target {
            dtypes: Some(vec!["float32".into()]),
            ..target(64, 2, None)
        };
        warned(
            &pts,
            float,
            "The target's images are float32, the study's int16",
        );
        let big = Target {
            largest_image_bytes: Some(1 << 30),
            ..target(64, 2, None)
        };
        warned(&pts, big, "the memory is extrapolated");
        let short: Vec<StudyPoint> = pts
            .iter()
            .map(|p| StudyPoint {
                wall_s: p.wall_s / 100.0,
                ..p.clone()
            })
            .collect();
        warned(&short, target(64, 2, None), "too short");
    }

    #[test]
    fn finish_times_give_the_rates_that_start_up_noise_hides() {
        // Tiny images behind a start-up that varies by ±40 ms per run: the
        // walls alone give a slope of noise; the finish times do not.
        let mut pts = Vec::new();
        for (j, tasks) in [4usize, 8, 16, 4, 8, 16].into_iter().enumerate() {
            let start = 0.3 + [0.04, -0.03, -0.04, 0.0, 0.03, -0.02][j];
            let sizes: Vec<u64> = (0..tasks as u64).map(|k| 1000 + 500 * (k % 3)).collect();
            let mut p = point(1, tasks, 0.0, 50 << 20);
            let (mut t, mut vox) = (start, 0);
            let mut finishes = Vec::new();
            for &v in &sizes {
                t += 0.002 + 1e-6 * v as f64;
                vox += v;
                finishes.push((v, t));
            }
            p.finishes = vec![finishes];
            (p.wall_s, p.outer_wall_s) = (t + 0.001, t + 0.001);
            (p.max_rank_voxels, p.total_voxels) = (vox, vox);
            pts.push(p);
        }
        let e = estimate(&pts, target(400, 1, Some(1500.0))).unwrap();
        assert!(
            (e.seconds_per_image - 0.002).abs() < 1e-9,
            "{}",
            e.seconds_per_image
        );
        assert!(
            (e.seconds_per_voxel - 1e-6).abs() < 1e-12,
            "{}",
            e.seconds_per_voxel
        );
        let want = 0.3 + 400.0 * (0.002 + 1e-6 * 1500.0);
        assert!(
            (e.wall_s.value / want - 1.0).abs() < 0.05,
            "{} vs {want}",
            e.wall_s.value
        );
    }
}

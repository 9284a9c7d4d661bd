//! The time model: launcher + a + c·n + b(M)·v on the busiest rank, each
//! (ranks, threads) group fitted from its walls or its runs' steady steps.

use super::{median, ols, Interval, Target};
use crate::resources::{default_readers, pipeline_images};
use crate::study::{StudyError, StudyPoint};

/// One (ranks, threads) group's fit: seconds = a + c·images + b·voxels on
/// the busiest rank.
#[derive(Clone, Copy, Debug)]
pub(super) struct TimeFit {
    pub(super) ranks: usize,
    pub(super) a: f64,
    pub(super) c: f64,
    pub(super) b: f64,
}

impl TimeFit {
    /// The per-rank work (a excluded) for `n` images of `v` voxels in all.
    pub(super) fn work(&self, n: f64, v: f64) -> f64 {
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
///
/// A rank whose images were put in place together (the committer, behind
/// a writer of small images, renames a batch at once: 16 images 16 µs
/// apart at the end of a 22 ms run) has no steady steps: its steps would
/// put the per-voxel cost 50× too low. Its steps are left out when they
/// add up to less than a tenth of the rank's busy time for them (a pipeline
/// of four overlapping stages steps at a quarter of it or more).
fn steady_steps(p: &StudyPoint) -> impl Iterator<Item = (f64, f64)> + '_ {
    let tail = pipeline_images(default_readers(p.threads)) - 1;
    let busy_per_image = p.max_rank_busy_s / p.busiest_images().max(1) as f64;
    let spread = move |rank: &&Vec<(u64, f64)>| {
        let steps = rank.len().saturating_sub(1).saturating_sub(tail);
        let span = rank.get(steps).map_or(0.0, |l| l.1) - rank.first().map_or(0.0, |f| f.1);
        steps == 0 || span >= 0.1 * busy_per_image * steps as f64
    };
    p.finishes.iter().filter(spread).flat_map(move |rank| {
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
        let rest: Vec<f64> = g
            .iter()
            .filter(|p| steady_steps(p).next().is_some())
            .map(|p| p.wall_s - c * p.busiest_images() as f64 - b * p.max_rank_voxels as f64)
            .collect();
        let a = median(rest).max(0.0);
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

/// The study's mean voxels per image.
fn study_mean_voxels(ok: &[StudyPoint]) -> f64 {
    let (v, n) = ok.iter().fold((0.0, 0usize), |(v, n), p| {
        (v + p.total_voxels as f64, n + p.tasks)
    });
    v / n.max(1) as f64
}

/// wall = launcher + a + c·n + b(M)·v on the busiest rank, the work growing
/// with the ranks M on a node by Amdahl's law.
pub(super) struct TimeModel {
    pub(super) threads: usize,
    pub(super) fits: Vec<TimeFit>,
    /// The fit at the fewest ranks.
    pub(super) base: TimeFit,
    /// The fit the prediction used (the base one, contention applied, when
    /// the target's ranks per node were not studied).
    pub(super) used: TimeFit,
    pub(super) serial_fraction: f64,
    pub(super) launcher_s: f64,
    pub(super) wall_s: Interval,
    /// Images and mean voxels per image on the target's busiest rank.
    pub(super) busiest_images: f64,
    pub(super) mean_voxels: f64,
    /// The target's ranks per node are outside the study's.
    pub(super) extrapolated: bool,
    /// The fit's work per image on the busiest rank, seconds, when it was
    /// below what the study's own stages took and was raised to that.
    pub(super) floored_from: Option<f64>,
}

/// The least the study's stages say a voxel costs one rank, seconds: over
/// the points at `threads`, the slowest stage's time per image (read,
/// filter or write: overlapped, the pipeline goes no faster than it)
/// divided among the threads and by the point's mean voxels per image; the
/// most hopeful point's figure. Stage times are sums, not differences, so
/// noise cannot take them to zero as it can a slope.
fn stage_floor(ok: &[StudyPoint], threads: usize) -> f64 {
    ok.iter()
        .filter(|p| p.threads == threads && p.tasks > 0 && p.total_voxels > 0)
        .map(|p| {
            let slowest = p
                .read_per_task_s
                .max(p.filter_per_task_s)
                .max(p.write_per_task_s);
            slowest / threads.max(1) as f64 / (p.total_voxels as f64 / p.tasks as f64)
        })
        .min_by(f64::total_cmp)
        .unwrap_or(0.0)
}

/// Raises the fit's work for `n` images of `v` voxels to `per_voxel` × v
/// when it is below: a slope from two short runs whose walls were nearly
/// equal once put a billion images at 0.016 s. Returns the work per image
/// it had before, when raised.
fn floor(fit: &mut TimeFit, per_voxel: f64, n: f64, v: f64) -> Option<f64> {
    let (work, least) = (fit.work(n, v), per_voxel * v);
    let below = work < least;
    if !below {
        return None;
    }
    if work > 0.0 {
        let k = least / work;
        (fit.c, fit.b) = (fit.c * k, fit.b * k);
    } else {
        (fit.c, fit.b) = (0.0, per_voxel);
    }
    Some(work / n.max(1.0))
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

pub(super) fn time_model(ok: &[StudyPoint], target: &Target) -> Result<TimeModel, StudyError> {
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
    let mut used = studied.unwrap_or_else(|| {
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
    let floored_from = floor(&mut used, stage_floor(ok, threads), n, n * mean_voxels);
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
    // Noise only adds time, so a large residual says little about how much
    // faster the target could be: the low end stays within half the value.
    let wall_s = Interval {
        value: wall,
        low: wall * (1.0 - spread).max(0.5),
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
        floored_from,
    })
}

/// The launcher's time around the run (outer wall − the report's wall), the
/// median over the points launched like the target: one process started
/// directly, or several by mpirun/srun (which costs more).
fn launcher(ok: &[StudyPoint], target: &Target) -> f64 {
    let several = target.ranks() > 1;
    median(
        ok.iter()
            .filter(|p| (p.ranks > 1) == several)
            .map(|p| (p.outer_wall_s - p.wall_s).max(0.0))
            .collect(),
    )
}

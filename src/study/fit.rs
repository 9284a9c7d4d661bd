//! From a study to predictions for a target workload.
//!
//! Time: each (ranks, threads) group is fitted as wall = a + b·x, where x is
//! the voxels on the busiest rank (so uneven image sizes count as they cost).
//! by least squares; studies interleave repetitions and sync between points,
//! because start-up noise in a few short runs can tilt the line.
//! Ranks on one node contend for memory bandwidth and the disk, so the
//! per-voxel cost grows with the ranks per node M as b(M) = b(1)·(1 + f·(M−1)):
//! that is Amdahl's law, S(M) = M / (1 + f·(M−1)), and f is the serial fraction
//! read off the speed-up curve. Nodes add ranks without adding contention.
//! Memory: peak RSS per rank = base + k·(largest image) when the study saw
//! images of different sizes, else the observed peak scaled by the largest
//! image's growth. Every prediction has an interval from the fit's residuals.

use serde::Serialize;

use super::{StudyError, StudyPoint};
use crate::resources::{default_readers, pipeline_images};

/// Where the target runs.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Target {
    pub tasks: usize,
    pub nodes: usize,
    pub ranks_per_node: usize,
    pub threads: usize,
    /// Mean voxels per image of the target list (None: the study's mean).
    pub mean_voxels: Option<f64>,
    /// The target's largest image in memory, bytes (None: the study's largest).
    pub largest_image_bytes: Option<u64>,
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
    /// Fixed cost per run (start-up, planning) and seconds per voxel at one rank per node.
    pub fixed_s: f64,
    pub seconds_per_voxel: f64,
    /// Amdahl's serial fraction from the speed-up over ranks on one node.
    pub serial_fraction: f64,
    pub memory_base_bytes: f64,
    pub memory_per_image_byte: f64,
    /// Whether peak memory per rank stayed flat as the image count grew.
    pub memory_flat: bool,
    pub memory_growth_over_study: f64,
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

#[derive(Clone, Copy)]
struct TimeFit {
    ranks: usize,
    a: f64,
    b: f64,
}

fn time_fits(points: &[StudyPoint], threads: usize) -> Vec<TimeFit> {
    let mut ranks: Vec<usize> = points
        .iter()
        .filter(|p| p.threads == threads)
        .map(|p| p.ranks)
        .collect();
    ranks.sort_unstable();
    ranks.dedup();
    let mut fits = Vec::new();
    for r in ranks {
        let g: Vec<&StudyPoint> = points
            .iter()
            .filter(|p| p.threads == threads && p.ranks == r)
            .collect();
        let xs: Vec<f64> = g.iter().map(|p| p.max_rank_voxels as f64).collect();
        let ys: Vec<f64> = g.iter().map(|p| p.wall_s).collect();
        if let Some((a, b)) = ols(&xs, &ys) {
            fits.push(TimeFit {
                ranks: r,
                a: a.max(0.0),
                b: b.max(0.0),
            });
        }
    }
    fits
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
    let advice = advice(&ok, &target, &time, &memory, growth);
    Ok(Estimate {
        target,
        wall_s: time.wall_s,
        peak_rss_per_rank_bytes: memory.peak_rss,
        launcher_s: time.launcher_s,
        fixed_s: time.a,
        seconds_per_voxel: time.base.b,
        serial_fraction: time.serial_fraction,
        memory_base_bytes: memory.base,
        memory_per_image_byte: memory.k,
        memory_flat: growth < 0.10,
        memory_growth_over_study: growth,
        advice,
    })
}

/// time = a + b(M) × voxels on the busiest rank, b growing with the ranks
/// M on a node by Amdahl's law.
struct TimeModel {
    threads: usize,
    fits: Vec<TimeFit>,
    /// The fit at the fewest ranks.
    base: TimeFit,
    serial_fraction: f64,
    a: f64,
    launcher_s: f64,
    wall_s: Interval,
    /// The target's ranks per node are outside the study's.
    extrapolated: bool,
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
    // Amdahl over ranks on one node: b(M)/b(R0) = (1 + f(M−1)) / (1 + f(R0−1)).
    let serial_fraction = {
        let pts: Vec<(f64, f64)> = fits
            .iter()
            .filter(|f| f.ranks != base.ranks && base.b > 0.0)
            .map(|f| ((f.ranks - base.ranks) as f64, f.b / base.b - 1.0))
            .collect();
        if pts.is_empty() {
            0.0
        } else {
            // Least squares through the origin: g − 1 = f·ΔM.
            let num: f64 = pts.iter().map(|(x, y)| x * y).sum();
            let den: f64 = pts.iter().map(|(x, _)| x * x).sum();
            (num / den).clamp(0.0, 1.0)
        }
    };
    let m = target.ranks_per_node;
    let b_m = match fits.iter().find(|f| f.ranks == m) {
        Some(f) => f.b,
        None => base.b * (1.0 + serial_fraction * (m as f64 - base.ranks as f64)),
    };
    let a = fits
        .iter()
        .find(|f| f.ranks == m)
        .map(|f| f.a)
        .unwrap_or_else(|| fits.iter().map(|f| f.a).sum::<f64>() / fits.len() as f64);
    let mean_vox = target.mean_voxels.unwrap_or_else(|| {
        let (v, n) = ok.iter().fold((0.0, 0usize), |(v, n), p| {
            (v + p.total_voxels as f64, n + p.tasks)
        });
        v / n as f64
    });
    // Balanced shares: the busiest rank gets its even part, at least one image.
    let per_rank = (target.tasks as f64 / target.ranks() as f64)
        .ceil()
        .max(1.0);
    let x = per_rank * mean_vox;
    let launcher_s = launcher(ok, target);
    let wall = launcher_s + a + b_m * x;
    // Relative residuals of every fitted point, as the interval.
    let rel: Vec<f64> = ok
        .iter()
        .filter(|p| p.threads == threads)
        .filter_map(|p| {
            let f = fits.iter().find(|f| f.ranks == p.ranks)?;
            let pred = f.a + f.b * p.max_rank_voxels as f64;
            (pred > 0.0).then(|| p.wall_s / pred - 1.0)
        })
        .collect();
    let rel_sd = (rel.iter().map(|r| r * r).sum::<f64>() / rel.len().max(1) as f64).sqrt();
    let extrapolated = fits.iter().all(|f| f.ranks != m);
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
        serial_fraction,
        a,
        launcher_s,
        wall_s,
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

/// peak = base + k × the largest image, from runs like the target's.
struct MemoryModel {
    base: f64,
    k: f64,
    peak_rss: Interval,
    /// The target's largest image (the study's when the target names none).
    target_largest: f64,
}

impl MemoryModel {
    fn predict(&self, largest: f64) -> f64 {
        self.base + self.k * largest
    }
}

/// Whether a point gave every rank at least the images a rank holds at
/// once, so that its peak shows the plateau.
fn full(p: &StudyPoint) -> bool {
    p.tasks.div_ceil(p.ranks) >= pipeline_images(default_readers(p.threads))
}

fn memory_model(ok: &[StudyPoint], target: &Target) -> MemoryModel {
    // Memory per rank, from runs like the target's: one rank runs without
    // MPI, several load the MPI library (about 10 MiB more per rank). A rank
    // holds up to `pipeline_images` images at once, so only runs that gave
    // every rank at least that many show the plateau (when the study has any).
    let like: Vec<&StudyPoint> = {
        let same: Vec<&StudyPoint> = ok
            .iter()
            .filter(|p| (p.ranks > 1) == (target.ranks() > 1))
            .collect();
        let same = if same.iter().any(|p| full(p)) {
            same.into_iter().filter(|p| full(p)).collect()
        } else {
            same
        };
        if same.is_empty() {
            ok.iter().collect()
        } else {
            same
        }
    };
    let sizes: Vec<f64> = like.iter().map(|p| p.largest_image_bytes as f64).collect();
    let peaks: Vec<f64> = like.iter().map(|p| p.peak_rss_max_bytes as f64).collect();
    let study_largest = sizes.iter().cloned().fold(0.0, f64::max);
    let target_largest = target
        .largest_image_bytes
        .map(|b| b as f64)
        .unwrap_or(study_largest);
    let spread_sizes = sizes.iter().cloned().fold(f64::INFINITY, f64::min) < 0.9 * study_largest;
    let (mem_base, mem_k) =
        match ols(&sizes, &peaks).filter(|&(a, k)| spread_sizes && a > 0.0 && k > 0.0) {
            Some(fit) => fit,
            None => {
                let peak = peaks.iter().cloned().fold(0.0, f64::max);
                (0.0, peak / study_largest.max(1.0))
            }
        };
    let predict_mem = |s: f64| mem_base + mem_k * s;
    let mem_rel: Vec<f64> = sizes
        .iter()
        .zip(&peaks)
        .map(|(s, p)| p / predict_mem(*s) - 1.0)
        .collect();
    let mem_sd = (mem_rel.iter().map(|r| r * r).sum::<f64>() / mem_rel.len() as f64).sqrt();
    let mem = predict_mem(target_largest).max(
        peaks.iter().cloned().fold(0.0, f64::max)
            * (target_largest / study_largest.max(1.0)).min(1.0),
    );
    let mem_spread = (2.0 * mem_sd).max(0.05);
    let peak_rss = Interval {
        value: mem,
        low: mem * (1.0 - mem_spread).max(0.0),
        high: mem * (1.0 + mem_spread),
    };
    MemoryModel {
        base: mem_base,
        k: mem_k,
        peak_rss,
        target_largest,
    }
}

/// How much the peak per byte of image grew from the fewest images to the
/// most, at each rank count of the time model: 0 when memory is flat.
fn memory_growth(ok: &[StudyPoint], time: &TimeModel, memory: &MemoryModel) -> f64 {
    // Does memory grow with the number of images? Compare the most and fewest tasks per group.
    let mut growth: f64 = 0.0;
    for f in &time.fits {
        let g: Vec<&StudyPoint> = ok
            .iter()
            .filter(|p| p.ranks == f.ranks && p.threads == time.threads)
            .filter(|p| full(p))
            .collect();
        let (Some(lo), Some(hi)) = (
            g.iter().min_by_key(|p| p.tasks),
            g.iter().max_by_key(|p| p.tasks),
        ) else {
            continue;
        };
        if hi.tasks > lo.tasks {
            let per_byte = |p: &StudyPoint| {
                p.peak_rss_max_bytes as f64 / memory.predict(p.largest_image_bytes as f64)
            };
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
    advice.extend(measurability(ok));
    let two = time.fits.iter().find(|f| f.ranks > base.ranks);
    let ratio = two.map_or(1.0, |t| t.ranks as f64 / base.ranks as f64);
    // A speed-up outside (0.05, 2 × the rank ratio) is the fit's noise, not
    // the machine's: said so, never printed as a figure.
    let speedup = two
        .filter(|t| base.b > 0.0 && t.b > 0.0)
        .map(|t| ratio * base.b / t.b)
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

/// What the study could not measure well: points too short for the
/// per-voxel cost to stand out of the fixed costs, and a launcher whose
/// start-up is a large part of each point (the job's limit must cover it).
fn measurability(ok: &[StudyPoint]) -> Vec<String> {
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    let wall = median(ok.iter().map(|p| p.wall_s).collect());
    let launcher = median(
        ok.iter()
            .map(|p| (p.outer_wall_s - p.wall_s).max(0.0) / p.outer_wall_s.max(1e-9))
            .collect(),
    );
    let mut out = Vec::new();
    if wall < 1.0 {
        out.push(format!(
            "The study's runs last {:.0} ms (median): too short for the per-image cost to stand out of start-up and noise; study more or larger images (a second or more per point) before trusting a large extrapolation.",
            1e3 * wall
        ));
    }
    if launcher > 0.3 {
        out.push(format!(
            "The launcher's start-up is {:.0}% of each point's time (median): a job's time limit must cover it as well as the run.",
            100.0 * launcher
        ));
    }
    out
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
    fn memory_scales_with_the_largest_image() {
        let mut pts = Vec::new();
        for (n, size) in [(2usize, 1000u64), (4, 2000), (8, 4000)] {
            let mut p = point(1, n, synthetic(1, n), 0);
            p.largest_image_bytes = size << 10;
            p.peak_rss_max_bytes = (8 << 20) + 2 * (size << 10);
            pts.push(p);
        }
        let e = estimate(
            &pts,
            Target {
                tasks: 100,
                nodes: 1,
                ranks_per_node: 1,
                threads: 1,
                mean_voxels: None,
                largest_image_bytes: Some(8000 << 10),
            },
        )
        .unwrap();
        let want = (8 << 20) as f64 + 2.0 * (8000 << 10) as f64;
        assert!((e.peak_rss_per_rank_bytes.value / want - 1.0).abs() < 1e-9);
        assert!((e.memory_base_bytes - (8 << 20) as f64).abs() < 1.0);
    }
}

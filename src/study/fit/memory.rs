//! The memory model: peak per rank = base + k × the image bytes a rank
//! holds at once, counted per point from its report and for the target
//! from its planned shares.

use super::{ols, time::TimeModel, Interval, Target};
use crate::plan::schedule::{partition, Schedule};
use crate::resources::{default_readers, pipeline_images};
use crate::study::StudyPoint;

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
pub(super) struct MemoryModel {
    pub(super) base: f64,
    pub(super) k: f64,
    pub(super) peak_rss: Interval,
    /// The target's largest image (the study's when the target names none).
    pub(super) target_largest: f64,
}

impl MemoryModel {
    fn predict(&self, in_flight: f64) -> f64 {
        self.base + self.k * in_flight
    }
}

pub(super) fn memory_model(ok: &[StudyPoint], target: &Target) -> MemoryModel {
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
pub(super) fn memory_growth(ok: &[StudyPoint], time: &TimeModel, memory: &MemoryModel) -> f64 {
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

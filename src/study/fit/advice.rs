//! What the estimate says beside its figures: warnings where the study
//! cannot support the target, and plain advice.

use super::{
    median, memory::MemoryModel, mib_text, time::TimeModel, FileSystem, Noise, Target, NOISY_SPREAD,
};
use crate::study::StudyPoint;

/// Plain advice: the slowest stage, ranks against threads, memory, and
/// any extrapolation.
pub(super) fn advice(
    ok: &[StudyPoint],
    target: &Target,
    time: &TimeModel,
    memory: &MemoryModel,
    growth: f64,
) -> Vec<String> {
    let m = target.ranks_per_node;
    let mut advice = Vec::new();
    advice.extend(slowest_stage(ok, time.threads, m));
    advice.extend(launcher_share(ok));
    advice.extend(more_ranks(time));
    advice.push(memory_growth(target, memory, growth));
    if time.extrapolated {
        advice.push(format!(
            "{m} rank(s) per node is outside the study (ranks {:?}): the time is extrapolated with Amdahl's law and its interval widened by 10%.",
            time.fits.iter().map(|f| f.ranks).collect::<Vec<_>>()
        ));
    }
    advice
}

/// The stage that takes most of each task's time at the point nearest the
/// target (the model's threads, the nearest rank count, the most tasks).
fn slowest_stage(ok: &[StudyPoint], threads: usize, m: usize) -> Option<String> {
    let near = ok
        .iter()
        .filter(|p| p.threads == threads)
        .min_by_key(|p| ((p.ranks as i64 - m as i64).abs(), usize::MAX - p.tasks))
        .unwrap();
    let stage = near.read_s + near.filter_s + near.write_s;
    if stage <= 0.0 {
        return None;
    }
    let (name, share) = [
        ("reading", near.read_s),
        ("filtering", near.filter_s),
        ("writing", near.write_s),
    ]
    .into_iter()
    .map(|(n, v)| (n, v / stage))
    .max_by(|a, b| a.1.total_cmp(&b.1))
    .unwrap();
    Some(format!(
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
    ))
}

/// What more ranks on one node give over the fewest studied: the speed-up
/// and where contention ends it, or that the fit cannot say.
fn more_ranks(time: &TimeModel) -> Option<String> {
    let base = &time.base;
    let two = time.fits.iter().find(|f| f.ranks > base.ranks)?;
    let ratio = two.ranks as f64 / base.ranks as f64;
    // The per-rank work of the target's share, at each rank count.
    let (n, v) = (time.busiest_images, time.busiest_images * time.mean_voxels);
    // A speed-up outside (0.05, 2 × the rank ratio) is the fit's noise, not
    // the machine's: said so, never printed as a figure.
    let speedup = Some(two)
        .filter(|t| base.work(n, v) > 0.0 && t.work(n, v) > 0.0)
        .map(|t| ratio * base.work(n, v) / t.work(n, v))
        .filter(|s| (0.05..=2.0 * ratio).contains(s));
    let Some(s) = speedup else {
        return Some(format!(
            "{} ranks on one node: the study's times do not fit time = a + b × voxels well enough to give a speed-up over {} (runs too short or too noisy); study more or larger images.",
            two.ranks, base.ranks
        ));
    };
    let serial_fraction = time.serial_fraction;
    let limit = if serial_fraction < 1e-3 {
        "no contention between ranks was measured, so the study cannot say where it starts: measure more ranks per node before relying on many".to_string()
    } else {
        format!(
            "so more ranks per node help until about {:.0} ranks, where efficiency falls to 50%; beyond that, add nodes",
            1.0 + 1.0 / serial_fraction
        )
    };
    Some(format!(
        "{} ranks on one node: speed-up {:.2}× over {} (efficiency {:.0}%); serial fraction {:.3}: {limit}.",
        two.ranks,
        s,
        base.ranks,
        100.0 * s / ratio,
        serial_fraction,
    ))
}

/// Whether memory per rank stayed flat as images were added, and what that
/// means for the target.
fn memory_growth(target: &Target, memory: &MemoryModel, growth: f64) -> String {
    if growth < 0.10 {
        let naive = target.tasks as f64 / target.ranks() as f64 * memory.target_largest;
        format!(
            "Memory per rank stays flat as images are added (+{:.0}% over the study): up to {} per rank (the interval's high end, before the request's margin), not {} (every image of a rank held in memory at once).",
            100.0 * growth.max(0.0),
            mib_text(memory.peak_rss.high),
            mib_text(naive)
        )
    } else {
        format!(
            "Memory per rank grew {:.0}% with the number of images in the study: the request below may be short; report this.",
            100.0 * growth
        )
    }
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
pub(super) fn warnings(
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
    if let Some(before) = time.floored_from {
        out.push(format!(
            "The fit put an image at {} on the busiest rank, less than the study's own slowest stage took per image: the time uses the stage's figure, {}. The study's walls hardly grew with its images (too few, too small or too noisy); study more or larger images.",
            per_image_text(before),
            per_image_text(time.used.work(1.0, time.mean_voxels))
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

/// Seconds per image as text: "1.2e-6 s".
fn per_image_text(s: f64) -> String {
    format!("{s:.2e} s")
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

/// What the repetitions say of the study's noise: too few to know it,
/// repeats that disagree, or a speed-up no machine gives.
pub(super) fn noise_warnings(noise: &Noise, time: &TimeModel) -> Vec<String> {
    let mut out = Vec::new();
    if noise.reps < 3 {
        out.push(format!(
            "The study ran each point {} time(s): its noise is unknown, and one disturbed run tilts the fit. Study with --reps 3 or more (the default): the estimate then uses each point's median run and takes its high end from the slowest.",
            noise.reps
        ));
    }
    if noise.worst_spread > NOISY_SPREAD {
        out.push(format!(
            "Repeats of one point differ by up to {:.0}% ({}): the machine was busy while the study ran. The estimate uses each point's median run; {}.",
            100.0 * noise.worst_spread,
            noise.worst_point.as_deref().unwrap_or("?"),
            match noise.slowest_wall_s {
                Some(w) if w > time.wall_s.value => format!(
                    "the slowest runs predict {}, and the interval's high end covers it",
                    crate::metrics::hms(w)
                ),
                _ => "the slowest runs predict no more than the median ones (the noise was in points that lower the contention between ranks)".into(),
            }
        ));
    }
    let above = time.wall_s.high / time.wall_s.value.max(1e-12) - 1.0;
    if above > 0.5 {
        out.push(format!(
            "The interval reaches {:.0}% above the value: the study's points do not fit one model well (too short, or too disturbed). Study again on a quieter machine, or with more images per point.",
            100.0 * above
        ));
    }
    let base = &time.base;
    let (n, v) = (time.busiest_images, time.busiest_images * time.mean_voxels);
    for f in time.fits.iter().filter(|f| f.ranks > base.ranks) {
        let (w0, w) = (base.work(n, v), f.work(n, v));
        if w0 > 0.0 && w > 0.0 && w < 0.95 * w0 {
            out.push(format!(
                "At {} ranks each rank's work came out {:.0}% smaller than at {}: a speed-up above the ranks' count (efficiency {:.0}%), which no machine gives. The slower points were disturbed; the serial fraction is taken as 0. Study again on a quiet machine.",
                f.ranks,
                100.0 * (1.0 - w / w0),
                base.ranks,
                100.0 * w0 / w
            ));
        }
    }
    out
}

/// The file system cannot carry the target's bytes in the predicted time.
pub(super) fn bandwidth_warning(fs: &FileSystem) -> String {
    format!(
        "The target reads and writes {:.1} GB: more than --fs-bandwidth {:.2} GB/s carries in the compute time. The wall is raised to what the file system allows ({:.2} GB/s); more ranks will not make it faster.",
        fs.bytes / 1e9,
        fs.limit_bytes_per_s.unwrap_or(0.0) / 1e9,
        fs.bytes_per_s / 1e9
    )
}

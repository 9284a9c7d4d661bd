//! The estimate on synthetic studies: known machines recovered, warnings,
//! and no absurd figure whatever the study.

use super::*;
use crate::resources::{default_readers, pipeline_images};

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
                let wall = scale * (next() * 3.0 + if case % 5 == 0 { 0.0 } else { tasks as f64 });
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
        let Ok(e) = estimate(&pts, target, None) else {
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

use crate::study::test_point as point;

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
    let two = estimate(&pts, target(2), None).unwrap();
    assert!((two.launcher_s - 0.5).abs() < 1e-9);
    assert!(
        (two.wall_s.value - (0.5 + synthetic(2, 16))).abs() < 1e-6,
        "{:?}",
        two.wall_s
    );
    assert_eq!(estimate(&pts, target(1), None).unwrap().launcher_s, 0.0);
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
        None,
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
    let e = estimate(&pts, t(2, 1), None).unwrap();
    assert!(
        (e.wall_s.value - synthetic(2, 64)).abs() < 1e-6,
        "{}",
        e.wall_s.value
    );
    assert!((e.serial_fraction - 0.1).abs() < 1e-9);
    assert!(e.memory_flat);
    // 4 ranks per node was not studied: Amdahl gives 1 + 0.1 × 3.
    let e4 = estimate(&pts, t(4, 1), None).unwrap();
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
    let e22 = estimate(&pts, t(2, 2), None).unwrap();
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
        None,
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

/// Each point again once per factor, its wall (and its finishes) times it.
fn repeated(pts: &[StudyPoint], factors: &[f64]) -> Vec<StudyPoint> {
    let mut out = Vec::new();
    for (rep, f) in factors.iter().enumerate() {
        for p in pts {
            let mut q = p.clone();
            q.rep = rep;
            q.wall_s *= f;
            q.outer_wall_s *= f;
            for rank in &mut q.finishes {
                for step in rank.iter_mut() {
                    step.1 *= f;
                }
            }
            out.push(q);
        }
    }
    out
}

/// One disturbed repetition of three per point (twice as slow) leaves the
/// value where the quiet ones put it, raises the high end, and is said;
/// one run per point is said to leave the noise unknown.
#[test]
fn repetitions_fit_the_median_and_bound_with_the_slowest() {
    let quiet = estimate(
        &repeated(&varied_study(), &[1.0, 1.01, 1.02]),
        target(640, 2, None),
        None,
    )
    .unwrap();
    let noisy = estimate(
        &repeated(&varied_study(), &[1.0, 2.0, 1.01]),
        target(640, 2, None),
        None,
    )
    .unwrap();
    let rel = |a: f64, b: f64| (a / b - 1.0).abs();
    assert!(
        rel(noisy.wall_s.value, quiet.wall_s.value) < 0.02,
        "{} vs {}",
        noisy.wall_s.value,
        quiet.wall_s.value
    );
    assert!(
        noisy.wall_s.high > 1.8 * noisy.wall_s.value,
        "{:?}",
        noisy.wall_s
    );
    assert_eq!(noisy.noise.reps, 3);
    assert!((noisy.noise.worst_spread - 1.0).abs() < 1e-9);
    assert!(
        noisy
            .warnings
            .iter()
            .any(|w| w.contains("differ by up to 100%")),
        "{:?}",
        noisy.warnings
    );
    assert!(
        !quiet.warnings.iter().any(|w| w.contains("differ by")),
        "{:?}",
        quiet.warnings
    );
    let once = estimate(&varied_study(), target(640, 2, None), None).unwrap();
    assert!(
        once.warnings
            .iter()
            .any(|w| w.contains("its noise is unknown")),
        "{:?}",
        once.warnings
    );
    assert_eq!(once.noise.slowest_wall_s, None);
}

/// A speed-up above the ranks' count is noise, and said.
#[test]
fn a_superlinear_speed_up_is_called_noise() {
    let pts: Vec<StudyPoint> = repeated(&varied_study(), &[1.0, 1.01, 1.02])
        .into_iter()
        .map(|mut p| {
            if p.ranks == 1 {
                p.wall_s *= 1.6;
                for rank in &mut p.finishes {
                    rank.iter_mut().for_each(|s| s.1 *= 1.6);
                }
            }
            p
        })
        .collect();
    let e = estimate(&pts, target(640, 2, None), None).unwrap();
    assert!(
        e.warnings
            .iter()
            .any(|w| w.contains("which no machine gives")),
        "{:?}",
        e.warnings
    );
}

/// The bytes the target moves, and a file system slower than the compute:
/// the wall is what the file system allows, and a warning says so.
#[test]
fn the_file_systems_rate_bounds_the_wall() {
    let pts = repeated(&varied_study(), &[1.0, 1.01, 1.02]);
    let free = estimate(&pts, target(6400, 2, None), None).unwrap();
    let fs = free.file_system.clone().unwrap();
    assert!(fs.bytes > 0.0 && (fs.bytes_per_s * free.wall_s.value / fs.bytes - 1.0).abs() < 1e-9);
    let slow = fs.bytes_per_s / 4.0;
    let bound = estimate(&pts, target(6400, 2, None), Some(slow)).unwrap();
    assert!(
        bound.wall_s.value > 3.0 * free.wall_s.value,
        "{} vs {}",
        bound.wall_s.value,
        free.wall_s.value
    );
    assert!(
        bound.warnings.iter().any(|w| w.contains("--fs-bandwidth")),
        "{:?}",
        bound.warnings
    );
    let fast = estimate(&pts, target(6400, 2, None), Some(fs.bytes_per_s * 4.0)).unwrap();
    assert_eq!(
        fast.wall_s.value, free.wall_s.value,
        "a fast file system changes nothing"
    );
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
    let e = estimate(&varied_study(), target(64, 2, Some(20_000.0)), None).unwrap();
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
    let e = estimate(&same, target(64, 2, None), None).unwrap();
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
    // A well-supported target (three quiet repetitions of each point): no warning.
    let pts = repeated(&varied_study(), &[1.0, 1.02, 1.04]);
    let e = estimate(&pts, target(64, 2, Some(150_000.0)), None).unwrap();
    assert!(e.warnings.is_empty(), "{:?}", e.warnings);
    let warned = |pts: &[StudyPoint], t: Target, words: &str| {
        let e = estimate(pts, t, None).unwrap();
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
    let e = estimate(&pts, target(400, 1, Some(1500.0)), None).unwrap();
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

/// A committer that put a run's small images in place together at its end
/// (finishes microseconds apart) gives no steady steps: the walls decide.
/// Before, the steps' 1 µs per image became the per-voxel cost, and 400
/// images were predicted to take what 16 did.
#[test]
fn finishes_put_in_place_together_are_no_steady_steps() {
    let per_image = |v: u64| 0.002 + 1e-6 * v as f64;
    let mut pts = Vec::new();
    for tasks in [4usize, 16] {
        let mut p = point(1, tasks, 0.0, 50 << 20);
        let busy = tasks as f64 * per_image(1500);
        let end = 0.3 + busy;
        p.finishes = vec![(0..tasks).map(|k| (1500, end + 1e-6 * k as f64)).collect()];
        (p.wall_s, p.outer_wall_s, p.max_rank_busy_s) = (end, end, busy);
        (p.max_rank_voxels, p.total_voxels) = (1500 * tasks as u64, 1500 * tasks as u64);
        pts.push(p);
    }
    let e = estimate(&pts, target(400, 1, Some(1500.0)), None).unwrap();
    let want = 0.3 + 400.0 * per_image(1500);
    assert!(
        (e.wall_s.value / want - 1.0).abs() < 0.05,
        "{} vs {want}",
        e.wall_s.value
    );
}

/// An array is its task repeated: the span is the task's wall times the
/// waves %N makes, the CPU-hours every task's, and the file system is
/// shared by the tasks running at once (each task's wall raised to its
/// share, said once for the array).
#[test]
fn an_array_is_its_task_in_waves() {
    let pts = repeated(&varied_study(), &[1.0, 1.01, 1.02]);
    let shape = ArrayShape {
        images: 40_000,
        tasks: 100,
        limit: Some(20),
        chunk: None,
    };
    let a = estimate_array(&pts, target(1, 1, None), shape, None).unwrap();
    let one = estimate(&pts, target(400, 1, None), None).unwrap();
    assert_eq!(a.images_per_task, 400);
    assert_eq!((a.at_once, a.waves), (20, 5));
    assert_eq!(a.per_task.wall_s.value, one.wall_s.value);
    assert!((a.span_s.value - 5.0 * one.wall_s.value).abs() < 1e-9);
    assert!((a.span_s.high - 5.0 * one.wall_s.high).abs() < 1e-9);
    assert!((a.cpu_hours.value - 100.0 * one.wall_s.value / 3600.0).abs() < 1e-9);
    assert!(
        a.warnings.iter().all(|w| !w.contains("no %N")),
        "{:?}",
        a.warnings
    );
    let fs = a.file_system.clone().unwrap();
    let task_rate = one.file_system.unwrap().bytes_per_s;
    assert!((fs.bytes_per_s / (20.0 * task_rate) - 1.0).abs() < 1e-9);

    // A file system that carries half of what 20 tasks ask.
    let slow = estimate_array(&pts, target(1, 1, None), shape, Some(10.0 * task_rate)).unwrap();
    assert!(slow.per_task.wall_s.value > 1.9 * one.wall_s.value);
    assert!(
        slow.warnings.iter().any(|w| w.contains("20 tasks at once")),
        "{:?}",
        slow.warnings
    );
    assert!(
        slow.per_task
            .warnings
            .iter()
            .all(|w| !w.contains("--fs-bandwidth")),
        "the bound is said for the array, not for one task: {:?}",
        slow.per_task.warnings
    );

    // No %N: every task at once, and the span says what it assumes.
    let free = ArrayShape {
        limit: None,
        ..shape
    };
    let all = estimate_array(&pts, target(1, 1, None), free, None).unwrap();
    assert_eq!((all.at_once, all.waves), (100, 1));
    assert!(
        all.warnings.iter().any(|w| w.contains("no %N")),
        "{:?}",
        all.warnings
    );
}

#[test]
fn a_slope_below_the_studys_own_stages_is_raised_to_them() {
    // Two tiny points whose walls came out equal (the 3-image run as fast
    // as the 1-image one): the walls' slope is 0, and a billion images took
    // 0.016 s. The stages say each image's write took 0.7 ms.
    let pts: Vec<StudyPoint> = [1, 3]
        .into_iter()
        .map(|n| {
            let mut p = point(1, n, 0.004, 10 << 20);
            p.max_rank_busy_s = 0.003;
            p.write_per_task_s = 0.0007;
            p
        })
        .collect();
    let e = estimate(&pts, target(1_000_000_000, 1, None), None).unwrap();
    assert!(e.wall_s.value >= 1e9 * 0.0007, "{:?}", e.wall_s);
    assert!(e.wall_s.value < 1e9 * 0.0007 * 1.01 + 1.0, "{:?}", e.wall_s);
    assert!(
        e.warnings.iter().any(|w| w.contains("slowest stage")),
        "{:?}",
        e.warnings
    );
    // A fit above the stages is left alone, and says nothing.
    let f = estimate(&varied_study(), target(1000, 1, None), None).unwrap();
    assert!(!f.warnings.iter().any(|w| w.contains("slowest stage")));
}

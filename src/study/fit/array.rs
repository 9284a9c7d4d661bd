//! A job array from a study: each task is a job of one process, so the
//! study's model predicts one task, and the array is that task repeated.
//!
//! Why not one big estimate: an array's tasks share nothing (no launcher,
//! no gather), each is queued, started and charged on its own, and its
//! `--time` and `--mem` are per task. What the lab needs besides is the
//! whole: how long the array spans when `%N` lets only N run at once, the
//! CPU-hours charged, and what the tasks running together ask of the file
//! system. The queue's wait between tasks is no part of any of it: the
//! span is the least the array can take.

use serde::Serialize;

use super::{advice, estimate, Estimate, FileSystem, Interval, StudyError, StudyPoint, Target};

/// The array's shape: its images, tasks, `%N` and chunk (None: cyclic shares).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct ArrayShape {
    pub images: usize,
    pub tasks: usize,
    pub limit: Option<usize>,
    pub chunk: Option<usize>,
}

impl ArrayShape {
    /// The most images one task takes: its chunk, or its cyclic share.
    pub fn images_per_task(&self) -> usize {
        self.chunk
            .unwrap_or_else(|| self.images.div_ceil(self.tasks.max(1)))
    }

    /// Tasks running at once: `%N`, else every task (as if the queue had room).
    pub fn at_once(&self) -> usize {
        self.limit.unwrap_or(self.tasks).clamp(1, self.tasks.max(1))
    }

    /// Rounds of tasks one after the other under `%N`.
    pub fn waves(&self) -> usize {
        self.tasks.div_ceil(self.at_once())
    }
}

/// The array's prediction: one task's estimate and the whole array.
#[derive(Clone, Debug, Serialize)]
pub struct ArrayEstimate {
    pub shape: ArrayShape,
    pub images_per_task: usize,
    pub at_once: usize,
    pub waves: usize,
    /// First start to last end, if every task starts as a slot frees.
    pub span_s: Interval,
    /// CPU time charged for every task's CPUs over its wall.
    pub cpu_hours: Interval,
    /// What the tasks running together move through the file system.
    pub file_system: Option<FileSystem>,
    pub per_task: Estimate,
    pub warnings: Vec<String>,
}

/// Predicts an array of `shape` whose tasks each run one process of
/// `task.threads` threads. `task` describes the images (sizes, types);
/// its counts are set here. `fs_limit` is the file system's rate for the
/// whole array: the tasks running at once share it.
pub fn estimate_array(
    points: &[StudyPoint],
    task: Target,
    shape: ArrayShape,
    fs_limit: Option<f64>,
) -> Result<ArrayEstimate, StudyError> {
    let at_once = shape.at_once();
    let task = Target {
        tasks: shape.images_per_task(),
        nodes: 1,
        ranks_per_node: 1,
        ..task
    };
    let threads = task.threads as f64;
    let mut per_task = estimate(points, task.clone(), None)?;
    let mut warnings = Vec::new();
    // The tasks running at once share the file system: when together they
    // would move more than it carries, each gets its share, and the
    // warning speaks of the array, not of one task.
    let rate = |e: &Estimate| e.file_system.as_ref().map_or(0.0, |f| f.bytes_per_s);
    if let Some(limit) = fs_limit.filter(|&l| rate(&per_task) * at_once as f64 > l) {
        let asked = rate(&per_task) * at_once as f64;
        per_task = estimate(points, task, Some(limit / at_once as f64))?;
        if let Some(fs) = &per_task.file_system {
            let one_task = advice::bandwidth_warning(fs);
            per_task.warnings.retain(|w| *w != one_task);
        }
        warnings.push(format!(
            "{at_once} tasks at once would read and write {:.2} GB/s: more than --fs-bandwidth {:.2} GB/s carries. Each task's wall is raised to its share ({:.3} GB/s); more tasks at once will not make the array faster.",
            asked / 1e9,
            limit / 1e9,
            limit / at_once as f64 / 1e9
        ));
    }
    warnings.extend(array_warnings(&shape, &per_task));
    let waves = shape.waves();
    let scale = |w: &Interval, by: f64| Interval {
        value: w.value * by,
        low: w.low * by,
        high: w.high * by,
    };
    let file_system = per_task.file_system.as_ref().map(|f| FileSystem {
        bytes: f.bytes * shape.tasks as f64,
        bytes_per_s: f.bytes_per_s * at_once as f64,
        limit_bytes_per_s: fs_limit,
    });
    Ok(ArrayEstimate {
        shape,
        images_per_task: shape.images_per_task(),
        at_once,
        waves,
        span_s: scale(&per_task.wall_s, waves as f64),
        cpu_hours: scale(&per_task.wall_s, shape.tasks as f64 * threads / 3600.0),
        file_system,
        warnings,
        per_task,
    })
}

/// A task shorter than this is mostly Slurm's own start and end of it
/// (prolog, epilog, accounting), which no study measures.
const SHORT_TASK_S: f64 = 60.0;

fn array_warnings(shape: &ArrayShape, task: &Estimate) -> Vec<String> {
    let mut w = Vec::new();
    if shape.limit.is_none() && shape.tasks > 1 {
        w.push(format!(
            "no %N limit: the span assumes all {} tasks run at once; the queue decides how many do (give --array-limit N for the span under %N)",
            shape.tasks
        ));
    }
    let wall = task.wall_s.value;
    if wall < SHORT_TASK_S && shape.tasks > 1 {
        let fewer = (shape.tasks as f64 * wall / SHORT_TASK_S).floor() as usize;
        let instead = if fewer <= 1 {
            format!(
                "all {} tasks together are {:.1} s of work: one job (--model threads) does it with none of that",
                shape.tasks,
                shape.tasks as f64 * wall
            )
        } else {
            format!("{fewer} tasks (--array-tasks {fewer}) make tasks of a minute or more")
        };
        w.push(format!(
            "each task is predicted to take {wall:.2} s: Slurm's start and end of a task (seconds each, not in the study) weigh as much; {instead}"
        ));
    }
    w
}

//! Job arrays, in one place: which task a process is (`ArraySlot`, from the
//! ids Slurm gives), what a task takes of the list (`share`: images, or
//! whole participants of a BIDS dataset), whether the array reaches every
//! image, and how many tasks a script asks for (`plan`). The run, the
//! driver, the lock and `sbatch` all ask here, so that the script's array
//! and the shares the run takes cannot disagree.
//!
//! Why the plan is checked when the script is written: Slurm refuses an
//! array whose indices reach `MaxArraySize` (1001 by default), and an array
//! whose chunks are too small leaves images to no task while every task
//! ends well, so the job shows COMPLETED. Both are caught before the job
//! waits in a queue, and the first is turned into chunks of the size that
//! fits.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::{Input, Task};
pub use crate::error::ArrayError;

/// Slurm's default `MaxArraySize`: array indices run from 0 to 1000.
pub const DEFAULT_MAX_ARRAY_SIZE: usize = 1001;

/// An array that covers every image, each exactly once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArrayPlan {
    pub tasks: usize,
    /// Consecutive images per task; `None`: cyclic shares.
    pub chunk: Option<usize>,
    /// Why the plan differs from what was asked, for the script's comments.
    pub note: Option<String>,
}

/// The array for `images` images, from the tasks and chunk asked (either
/// may be left to this plan) and the cluster's `MaxArraySize`.
pub fn plan(
    images: usize,
    tasks: Option<usize>,
    chunk: Option<usize>,
    max: usize,
) -> Result<ArrayPlan, ArrayError> {
    if images == 0 {
        return Err(ArrayError::NoImages);
    }
    let max = max.max(1);
    if let Some(chunk) = chunk.map(|k| k.max(1)) {
        let need = images.div_ceil(chunk);
        if need > max {
            let fits = images.div_ceil(max);
            return Err(ArrayError::BeyondMax {
                chunk,
                need,
                max,
                fits,
            });
        }
        return match tasks {
            Some(t) if t < need => Err(ArrayError::Uncovered {
                chunk,
                tasks: t,
                images,
                need,
            }),
            Some(t) if t > need => Err(ArrayError::Idle {
                chunk,
                tasks: t,
                images,
                need,
            }),
            _ => Ok(ArrayPlan {
                tasks: need,
                chunk: Some(chunk),
                note: None,
            }),
        };
    }
    let asked = tasks.unwrap_or(images);
    if asked > images {
        return Err(ArrayError::MoreTasksThanImages {
            tasks: asked,
            images,
        });
    }
    if asked <= max {
        return Ok(ArrayPlan {
            tasks: asked,
            chunk: None,
            note: None,
        });
    }
    let chunk = images.div_ceil(max);
    let tasks = images.div_ceil(chunk);
    Ok(ArrayPlan {
        tasks,
        chunk: Some(chunk),
        note: Some(format!(
            "Array: {asked} tasks would pass this cluster's MaxArraySize {max}: {chunk} consecutive images per task, {tasks} tasks."
        )),
    })
}

/// One task of a job array: its id, its position among the tasks, their number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArraySlot {
    pub task_id: u64,
    pub position: usize,
    pub count: usize,
}

impl ArraySlot {
    /// Task `id`'s place on the array's grid of ids (`min`, `step`, and the
    /// task count or the largest id, as Slurm gives them).
    pub fn on_grid(
        id: u64,
        min: u64,
        step: u64,
        count: Option<u64>,
        max: Option<u64>,
    ) -> Result<ArraySlot, ArrayError> {
        let step = step.max(1);
        let n = match (count, max) {
            (Some(c), _) => c,
            (None, Some(max)) => (max.saturating_sub(min)) / step + 1,
            (None, None) => return Err(ArrayError::NoCount),
        };
        if let (Some(c), Some(max)) = (count, max) {
            if c == 0 || min.checked_add((c - 1).saturating_mul(step)) != Some(max) {
                return Err(ArrayError::Uneven {
                    min,
                    max,
                    step,
                    count: c,
                });
            }
        }
        if id < min || !(id - min).is_multiple_of(step) || (id - min) / step >= n {
            return Err(ArrayError::OffGrid {
                id,
                min,
                step,
                count: n,
            });
        }
        Ok(ArraySlot {
            task_id: id,
            position: ((id - min) / step) as usize,
            count: n as usize,
        })
    }

    /// The indices (into a list of `n` units) this task processes: cyclic
    /// over the array's tasks, or `chunk` consecutive units per task.
    pub fn share(&self, n: usize, chunk: Option<usize>) -> Vec<usize> {
        match chunk {
            None => (self.position..n).step_by(self.count).collect(),
            Some(k) => {
                let start = self.position.saturating_mul(k).min(n);
                (start..start.saturating_add(k).min(n)).collect()
            }
        }
    }

    /// Units no task of the array reaches (with `chunk` too small for the list).
    pub fn uncovered(&self, n: usize, chunk: Option<usize>) -> usize {
        match chunk {
            None => 0,
            Some(k) => n.saturating_sub(k.saturating_mul(self.count)),
        }
    }
}

/// The slot a run takes a share for: with `--array` (`asked`) the task's
/// own, which must exist; without it, the task's only when the run is one
/// process (several MPI ranks in one task share the whole list among them).
pub fn slot_for_run(
    asked: bool,
    in_job: bool,
    slot: Option<ArraySlot>,
    ranks: usize,
) -> Result<Option<ArraySlot>, ArrayError> {
    if asked {
        return match (slot, in_job) {
            (Some(s), _) => Ok(Some(s)),
            (None, false) => Err(ArrayError::NotInJob),
            (None, true) => Err(ArrayError::NotInArray),
        };
    }
    if ranks == 1 {
        return Ok(slot);
    }
    if let Some(s) = slot {
        log::warn!(
            "array task {} runs {ranks} MPI ranks without --array: this task processes the whole list",
            s.task_id
        );
    }
    Ok(None)
}

/// What a job array shares: images, or the groups they belong to (a BIDS
/// participant's images stay on one task). The unit of each input (groups
/// numbered in the order they first appear), and how many units there are.
pub fn units(inputs: &[Input]) -> (Vec<usize>, usize) {
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut unit_of = Vec::with_capacity(inputs.len());
    for (i, input) in inputs.iter().enumerate() {
        unit_of.push(match &input.group {
            Some(g) => {
                let next = index.len();
                *index.entry(g.as_str()).or_insert(next)
            }
            None => i,
        });
    }
    let units = if index.is_empty() {
        inputs.len()
    } else {
        index.len()
    };
    (unit_of, units)
}

/// Refuses a chunked array whose tasks leave the last units to no task.
pub fn covers_every_unit(
    units: usize,
    slot: ArraySlot,
    chunk: Option<usize>,
) -> Result<(), ArrayError> {
    let uncovered = slot.uncovered(units, chunk);
    if uncovered == 0 {
        return Ok(());
    }
    let k = chunk.unwrap_or(1).max(1);
    Err(ArrayError::Short {
        chunk: k,
        tasks: slot.count,
        uncovered,
        units,
        last: units.div_ceil(k) - 1,
    })
}

/// This array task's tasks (global indices kept, so merged reports line up).
pub fn take_share(
    all: Vec<Task>,
    unit_of: &[usize],
    units: usize,
    slot: ArraySlot,
    chunk: Option<usize>,
) -> Vec<Task> {
    let n = all.len();
    let keep: HashSet<usize> = slot.share(units, chunk).into_iter().collect();
    let mine: Vec<Task> = all
        .into_iter()
        .filter(|t| keep.contains(&unit_of[t.index]))
        .collect();
    // Images are shared one by one, or whole participants at a time (BIDS).
    let groups = if units == n {
        String::new()
    } else {
        format!("{} of {units} groups (participants), ", keep.len())
    };
    log::info!(
        "array task {} ({} of {}): {groups}{} of {n} images",
        slot.task_id,
        slot.position + 1,
        slot.count,
        mine.len()
    );
    mine
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every image in exactly one task's share, as the run computes shares.
    fn covers(images: usize, p: &ArrayPlan) -> bool {
        let mut seen = vec![0; images];
        for position in 0..p.tasks {
            let slot = ArraySlot {
                task_id: position as u64,
                position,
                count: p.tasks,
            };
            let share = slot.share(images, p.chunk);
            assert!(!share.is_empty(), "task {position} of {p:?} has no image");
            for i in share {
                seen[i] += 1;
            }
        }
        seen.iter().all(|&n| n == 1)
    }

    #[test]
    fn every_plan_covers_every_image_once_and_fits_the_cluster() {
        for images in [1, 2, 7, 20, 1000, 1001, 1002, 40000] {
            for tasks in [None, Some(1), Some(4), Some(1001), Some(5000)] {
                for chunk in [None, Some(1), Some(2), Some(40), Some(50000)] {
                    for max in [10, 1001] {
                        if let Ok(p) = plan(images, tasks, chunk, max) {
                            assert!(p.tasks <= max, "{images} {tasks:?} {chunk:?} {max}: {p:?}");
                            assert!(
                                covers(images, &p),
                                "{images} {tasks:?} {chunk:?} {max}: {p:?}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn refuses_arrays_that_skip_idle_or_overflow() {
        // The reviewed case: 20 images, chunks of 2, four tasks (8 images covered).
        assert_eq!(
            plan(20, Some(4), Some(2), 1001),
            Err(ArrayError::Uncovered {
                chunk: 2,
                tasks: 4,
                images: 20,
                need: 10
            })
        );
        assert!(matches!(
            plan(20, Some(11), Some(2), 1001),
            Err(ArrayError::Idle { .. })
        ));
        assert!(matches!(
            plan(3, Some(4), None, 1001),
            Err(ArrayError::MoreTasksThanImages { .. })
        ));
        assert_eq!(
            plan(40000, None, Some(2), 1001),
            Err(ArrayError::BeyondMax {
                chunk: 2,
                need: 20000,
                max: 1001,
                fits: 40
            })
        );
        assert_eq!(plan(0, None, None, 1001), Err(ArrayError::NoImages));
    }

    #[test]
    fn too_many_tasks_become_chunks() {
        let p = plan(40000, Some(40000), None, 1001).unwrap();
        assert_eq!((p.tasks, p.chunk), (1000, Some(40)));
        assert!(p.note.unwrap().contains("MaxArraySize 1001"));
        assert_eq!(
            plan(20, Some(4), None, 1001).unwrap(),
            ArrayPlan {
                tasks: 4,
                chunk: None,
                note: None
            }
        );
    }

    #[test]
    fn array_shares_cover_the_list_once() {
        for n in [0usize, 1, 7, 10, 23] {
            for count in 1..6 {
                for chunk in [None, Some(n.div_ceil(count).max(1))] {
                    let mut all: Vec<usize> = (0..count)
                        .flat_map(|position| {
                            ArraySlot {
                                task_id: position as u64,
                                position,
                                count,
                            }
                            .share(n, chunk)
                        })
                        .collect();
                    all.sort_unstable();
                    assert_eq!(
                        all,
                        (0..n).collect::<Vec<_>>(),
                        "n={n} count={count} chunk={chunk:?}"
                    );
                }
            }
        }
        let slot = ArraySlot {
            task_id: 0,
            position: 0,
            count: 2,
        };
        assert_eq!(slot.uncovered(10, Some(3)), 4);
        assert_eq!(
            ArraySlot {
                task_id: 1,
                position: 1,
                count: 2
            }
            .share(10, Some(3)),
            vec![3, 4, 5]
        );
        let huge = ArraySlot {
            task_id: 1,
            position: 1,
            count: 2,
        };
        assert!(huge.share(5, Some(usize::MAX)).is_empty());
        assert_eq!(huge.uncovered(5, Some(usize::MAX)), 0);
    }

    #[test]
    fn participants_are_units_counted_once_in_any_order() {
        let input = |group: &str| Input {
            group: Some(group.into()),
            ..Input::flat("x.nii".into())
        };
        let inputs = [input("02"), input("01"), input("02"), input("03")];
        let (unit_of, units) = units(&inputs);
        assert_eq!((unit_of, units), (vec![0, 1, 0, 2], 3));
    }
}

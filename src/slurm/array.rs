//! How a job array covers a list of images, decided when its script is
//! written: how many tasks, and whether each takes a cyclic share or a chunk
//! of consecutive images.
//!
//! Why: Slurm refuses an array whose indices reach `MaxArraySize` (1001 by
//! default), and an array whose chunks are too small leaves images to no
//! task while every task ends well, so the job shows COMPLETED. Both are
//! caught here, before the job waits in a queue, and the first is turned
//! into chunks of the size that fits.

use std::process::Command;

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

/// An array that would skip images, idle tasks, or exceed `MaxArraySize`.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ArrayError {
    #[error("the run has no images to share over an array")]
    NoImages,
    #[error(
        "--array-chunk {chunk} × {tasks} task(s) covers {} of {images} images: the rest would go to \
         no task; {need} tasks cover them (omit --array-tasks to get that)",
        chunk * tasks
    )]
    Uncovered {
        chunk: usize,
        tasks: usize,
        images: usize,
        need: usize,
    },
    #[error(
        "--array-tasks {tasks} with --array-chunk {chunk}: {images} images need only {need} task(s), \
         the others would have none"
    )]
    Idle {
        chunk: usize,
        tasks: usize,
        images: usize,
        need: usize,
    },
    #[error("--array-tasks {tasks} for {images} images: {} task(s) would have none", tasks - images)]
    MoreTasksThanImages { tasks: usize, images: usize },
    #[error(
        "--array-chunk {chunk} needs {need} tasks, beyond this cluster's MaxArraySize {max}: \
         use --array-chunk {fits} or more"
    )]
    BeyondMax {
        chunk: usize,
        need: usize,
        max: usize,
        fits: usize,
    },
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

/// This cluster's `MaxArraySize` from `scontrol show config`, when Slurm
/// answers; `None` off a cluster.
pub fn max_array_size() -> Option<usize> {
    let out = Command::new("scontrol")
        .args(["show", "config"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.trim().strip_prefix("MaxArraySize"))
        .and_then(|rest| rest.trim().trim_start_matches('=').trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every image in exactly one task's share, as the run computes shares.
    fn covers(images: usize, p: &ArrayPlan) -> bool {
        let mut seen = vec![0; images];
        for position in 0..p.tasks {
            let slot = super::super::ArraySlot {
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
}

//! How a list of images is shared among ranks: pure functions of the image
//! costs and the number of ranks, so every schedule is unit-tested without I/O.
//!
//! `block` and `cyclic` ignore the costs (contiguous chunks and
//! job-array order); `balanced` is Graham's longest-processing-time-first rule
//! (within 4/3 of the optimal makespan); `dynamic` is decided at run time by
//! whichever rank asks first, and here only fixes the order images are handed
//! out in: largest first, which is LPT done online.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

#[derive(Copy, Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// Contiguous chunks, sizes differing by at most one image.
    Block,
    /// Round-robin: image i to rank i mod P.
    Cyclic,
    /// Longest processing time first by voxel count (the default).
    Balanced,
    /// Rank 0 hands the next image to whichever rank asks.
    Dynamic,
}

crate::choice::named_choices!(Schedule {
    Block => "block": "Contiguous chunks, sizes differing by at most one image",
    Cyclic => "cyclic": "Round-robin: image i to rank i mod P",
    Balanced => "balanced": "Longest processing time first by voxel count (the default)",
    Dynamic => "dynamic": "Rank 0 hands the next image to whichever rank asks",
});

/// Whether one image may be shared by several ranks (`driver::split`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// When the run has fewer images than ranks, every rank works on every image.
    Auto,
    /// Every image shared by every rank, whatever the count.
    Always,
    /// Each image on one rank, whatever the count.
    Never,
}

crate::choice::named_choices!(Split {
    Auto => "auto": "Fewer images than ranks: each image is shared by every rank (the default; scipy's filter, any mode but wrap)",
    Always => "always": "Every image shared by every rank, whatever the count",
    Never => "never": "Each image on one rank; ranks without an image wait",
});

impl Schedule {
    /// Whether the schedule needs each image's size (its header read up front).
    pub fn needs_costs(self) -> bool {
        matches!(self, Schedule::Balanced | Schedule::Dynamic)
    }
}

/// The images (indices into `costs`) of each of `ranks` ranks, each list in
/// ascending order. `Dynamic` has no static assignment: it gets `None`.
pub fn partition(schedule: Schedule, costs: &[u64], ranks: usize) -> Option<Vec<Vec<usize>>> {
    assert!(ranks > 0, "at least one rank");
    let n = costs.len();
    let shares = match schedule {
        Schedule::Block => {
            let (base, extra) = (n / ranks, n % ranks);
            let mut start = 0;
            (0..ranks)
                .map(|r| {
                    let len = base + usize::from(r < extra);
                    let share: Vec<usize> = (start..start + len).collect();
                    start += len;
                    share
                })
                .collect()
        }
        Schedule::Cyclic => (0..ranks)
            .map(|r| (r..n).step_by(ranks).collect())
            .collect(),
        Schedule::Balanced => lpt(costs, ranks),
        Schedule::Dynamic => return None,
    };
    Some(shares)
}

/// The order `dynamic` hands images out in: largest first, ties by index.
pub fn dynamic_order(costs: &[u64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..costs.len()).collect();
    order.sort_by_key(|&i| (Reverse(costs[i]), i));
    order
}

/// Graham's LPT: the largest remaining image goes to the least-loaded rank
/// (ties to the lowest rank), so the result is deterministic.
fn lpt(costs: &[u64], ranks: usize) -> Vec<Vec<usize>> {
    let mut shares = vec![Vec::new(); ranks];
    let mut loads: BinaryHeap<Reverse<(u64, usize)>> =
        (0..ranks).map(|r| Reverse((0, r))).collect();
    for i in dynamic_order(costs) {
        let Reverse((load, r)) = loads.pop().expect("ranks > 0");
        shares[r].push(i);
        loads.push(Reverse((load + costs[i], r)));
    }
    for s in &mut shares {
        s.sort_unstable();
    }
    shares
}

/// The largest total cost over ranks.
pub fn makespan(shares: &[Vec<usize>], costs: &[u64]) -> u64 {
    shares
        .iter()
        .map(|s| s.iter().map(|&i| costs[i]).sum::<u64>())
        .max()
        .unwrap_or(0)
}

/// A lower bound of any schedule's makespan: max(total / P, largest image).
#[cfg(test)]
pub fn ideal_makespan(costs: &[u64], ranks: usize) -> f64 {
    let total: u64 = costs.iter().sum();
    let largest = costs.iter().copied().max().unwrap_or(0);
    (total as f64 / ranks as f64).max(largest as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_image_once(shares: &[Vec<usize>], n: usize) {
        let mut all: Vec<usize> = shares.iter().flatten().copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..n).collect::<Vec<_>>());
    }

    #[test]
    fn block_is_contiguous_and_even() {
        let s = partition(Schedule::Block, &[1; 10], 4).unwrap();
        assert_eq!(
            s,
            vec![vec![0, 1, 2], vec![3, 4, 5], vec![6, 7], vec![8, 9]]
        );
        let s = partition(Schedule::Block, &[1; 2], 4).unwrap();
        assert_eq!(s, vec![vec![0], vec![1], vec![], vec![]]);
    }

    #[test]
    fn cyclic_is_round_robin() {
        let s = partition(Schedule::Cyclic, &[1; 7], 3).unwrap();
        assert_eq!(s, vec![vec![0, 3, 6], vec![1, 4], vec![2, 5]]);
    }

    #[test]
    fn balanced_beats_block_on_skewed_sizes() {
        // Two huge images first: block puts both on rank 0.
        let costs = [100, 100, 10, 10, 10, 10, 10, 10];
        let block = partition(Schedule::Block, &costs, 2).unwrap();
        let lpt = partition(Schedule::Balanced, &costs, 2).unwrap();
        every_image_once(&lpt, costs.len());
        assert_eq!(makespan(&block, &costs), 220);
        assert_eq!(makespan(&lpt, &costs), 130);
    }

    /// The optimal makespan by trying every assignment (small cases only).
    fn optimal(costs: &[u64], ranks: usize) -> u64 {
        let n = costs.len();
        let mut best = u64::MAX;
        for code in 0..ranks.pow(n as u32) {
            let mut loads = vec![0; ranks];
            let mut c = code;
            for &w in costs {
                loads[c % ranks] += w;
                c /= ranks;
            }
            best = best.min(*loads.iter().max().unwrap());
        }
        best
    }

    #[test]
    fn lpt_within_four_thirds_of_optimal() {
        // A small deterministic generator; the bound is Graham's (4/3 − 1/(3P)).
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for case in 0..300 {
            let ranks = 2 + case % 3;
            let n = 3 + case % 6;
            let costs: Vec<u64> = (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    1 + x % 50
                })
                .collect();
            let shares = partition(Schedule::Balanced, &costs, ranks).unwrap();
            every_image_once(&shares, n);
            let (got, opt) = (makespan(&shares, &costs), optimal(&costs, ranks));
            let bound = (4.0 / 3.0 - 1.0 / (3.0 * ranks as f64)) * opt as f64;
            assert!(
                got as f64 <= bound + 1e-9,
                "{costs:?} P={ranks}: LPT {got}, optimal {opt}"
            );
            assert!(got as f64 >= ideal_makespan(&costs, ranks) - 1e-9);
        }
    }

    #[test]
    fn more_ranks_than_images() {
        for sched in [Schedule::Block, Schedule::Cyclic, Schedule::Balanced] {
            let s = partition(sched, &[5, 3], 5).unwrap();
            assert_eq!(s.len(), 5);
            every_image_once(&s, 2);
        }
        assert!(partition(Schedule::Dynamic, &[1], 2).is_none());
        assert_eq!(dynamic_order(&[3, 9, 3, 1]), vec![1, 0, 2, 3]);
    }
}

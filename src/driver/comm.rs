//! The communicator seam: what the driver needs from a parallel runtime.
//!
//! The driver speaks only this trait, so its whole flow (root plans, everyone
//! works, root gathers) runs in plain `cargo test` with `Single`, and under a
//! launcher with `Mpi` (feature `mpi`). Payloads are bytes or integers
//! (serde-encoded by the driver), which keeps implementations free of our types.

/// A group of cooperating processes. Every collective must be called by all
/// ranks in the same order; callers must never return early between them.
/// Only the thread that created the communicator may call it.
pub trait Comm {
    fn rank(&self) -> usize;
    fn size(&self) -> usize;
    /// This rank's position among the ranks sharing its node.
    fn node_rank(&self) -> usize;
    /// How many ranks share this rank's node.
    fn node_size(&self) -> usize;
    /// The root's `bytes` on every rank.
    fn broadcast(&self, bytes: Vec<u8>) -> Vec<u8>;
    /// Root passes one list per rank; every rank gets its own list.
    fn scatter(&self, parts: Option<Vec<Vec<u64>>>) -> Vec<u64>;
    /// Every rank's `bytes`, in rank order, at the root; `None` elsewhere.
    fn gather(&self, bytes: Vec<u8>) -> Option<Vec<Vec<u8>>>;
    /// The maximum over ranks, on every rank.
    fn max_f64(&self, v: f64) -> f64;
    /// The sum over ranks, on every rank.
    fn sum_u64(&self, v: u64) -> u64;
    /// Not root: asks root for the next task; `None` when none is left.
    fn request_task(&self) -> Option<usize>;
    /// Root: the rank of one waiting request, if any (does not block).
    fn poll_request(&self) -> Option<usize>;
    /// Root: answers `rank`'s request with a task, or `None` to stop it.
    fn assign(&self, rank: usize, task: Option<usize>);
    /// A one-line description for logs and reports.
    fn describe(&self) -> String;
    /// Tells every other rank that this one is draining (`stop::Watch`).
    fn notify_stop(&self) {}
    /// Whether another rank's drain notice has arrived (does not block).
    fn poll_stop(&self) -> bool {
        false
    }
    /// Collective: receives every drain notice still on its way, `sent`
    /// saying whether this rank sent some, so none is left at finalise.
    fn settle_stops(&self, _sent: bool) {}

    fn is_root(&self) -> bool {
        self.rank() == 0
    }
}

/// One process, no runtime: collectives are identities, and nobody else asks for work.
pub struct Single;

impl Comm for Single {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn node_rank(&self) -> usize {
        0
    }
    fn node_size(&self) -> usize {
        1
    }
    fn broadcast(&self, bytes: Vec<u8>) -> Vec<u8> {
        bytes
    }
    fn scatter(&self, parts: Option<Vec<Vec<u64>>>) -> Vec<u64> {
        parts
            .and_then(|p| p.into_iter().next())
            .expect("root passes its parts")
    }
    fn gather(&self, bytes: Vec<u8>) -> Option<Vec<Vec<u8>>> {
        Some(vec![bytes])
    }
    fn max_f64(&self, v: f64) -> f64 {
        v
    }
    fn sum_u64(&self, v: u64) -> u64 {
        v
    }
    fn request_task(&self) -> Option<usize> {
        unreachable!("a single process is root")
    }
    fn poll_request(&self) -> Option<usize> {
        None
    }
    fn assign(&self, rank: usize, _task: Option<usize>) {
        unreachable!("no rank {rank} to answer in a single process")
    }
    fn describe(&self) -> String {
        "single process (no MPI)".into()
    }
}

//! The communicator seam: what the driver needs from a parallel runtime.
//!
//! The driver speaks only this trait, so its whole flow (root plans, everyone
//! works, root gathers) runs in plain `cargo test` with `Single`, and under a
//! launcher with an MPI implementation. Payloads are bytes (serde-encoded by
//! the driver), which keeps implementations free of our types.

/// A group of cooperating processes. Every collective must be called by all
/// ranks in the same order; callers must never return early between them.
pub trait Comm {
    fn rank(&self) -> usize;
    fn size(&self) -> usize;
    /// The root's `bytes` on every rank.
    fn broadcast(&self, bytes: Vec<u8>) -> Vec<u8>;
    /// Every rank's `bytes`, in rank order, at the root; `None` elsewhere.
    fn gather(&self, bytes: Vec<u8>) -> Option<Vec<Vec<u8>>>;
    /// The maximum over ranks, on every rank.
    fn max_f64(&self, v: f64) -> f64;
    /// The sum over ranks, on every rank.
    fn sum_u64(&self, v: u64) -> u64;
    /// A one-line description for logs and reports.
    fn describe(&self) -> String;

    fn is_root(&self) -> bool {
        self.rank() == 0
    }
}

/// One process, no runtime: collectives are identities.
pub struct Single;

impl Comm for Single {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn broadcast(&self, bytes: Vec<u8>) -> Vec<u8> {
        bytes
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
    fn describe(&self) -> String {
        "single process (no MPI)".into()
    }
}

//! Keeping to a deadline: an image starts only if this rank's pace says it
//! ends in time.
//!
//! Why: a job killed at its time limit loses the images in flight and its
//! report; one that stops starting images in time loses nothing, and a
//! requeued attempt finishes the rest. The pace is measured, not guessed,
//! because image sizes and node speeds vary; the prior covers only the
//! first image.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use super::stop::{self, unix_now};

/// Before any image is done, this many seconds per voxel: about three
/// times the slowest per-voxel wall measured at one thread (docs/slurm.md).
pub const PRIOR_S_PER_VOXEL: f64 = 100e-9;

/// Why an image may not start.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Refusal {
    /// It would end this many seconds after the deadline.
    Late(f64),
    /// The run began draining while the image waited.
    Draining,
}

/// Keeps a rank to its deadline: an image starts only if the rank's pace so
/// far says it ends in time. The pace is the wall time since the first
/// image started over the voxels done (skipped images cost nothing); an
/// image fed now ends after its own voxels and those still in flight ahead
/// of it. Before any image is done, the prior, except for the first image,
/// which starts whenever the deadline has not passed.
pub struct Pacer {
    deadline_unix: f64,
    state: Mutex<PaceState>,
    /// Signalled when an image leaves the pipeline.
    ended: Condvar,
}

#[derive(Default)]
struct PaceState {
    /// Voxels of each image in flight, by task index.
    in_flight: HashMap<usize, u64>,
    worked_voxels: u64,
    first: Option<Instant>,
}

impl Pacer {
    pub fn new(deadline_unix: f64) -> Pacer {
        Pacer {
            deadline_unix,
            state: Mutex::new(PaceState::default()),
            ended: Condvar::new(),
        }
    }

    /// Whether an image of `voxels` (task `index`) may start now; if so it
    /// counts as in flight. While it does not fit but images are in flight,
    /// waits for one to end (the pace then counts it) and looks again, until
    /// the deadline or a drain.
    pub fn admit(&self, index: usize, voxels: u64) -> Result<(), Refusal> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if stop::draining() {
                return Err(Refusal::Draining);
            }
            let ahead: u64 = st.in_flight.values().sum();
            let elapsed = st.first.map_or(0.0, |t| t.elapsed().as_secs_f64());
            let now = unix_now();
            let ends = finish_at(now, voxels, ahead, st.worked_voxels, elapsed);
            // The first image starts whenever the deadline has not passed:
            // without it there is no pace, only the prior, and a run that
            // never tries would be requeued to make no progress again.
            let first = st.first.is_none() && st.in_flight.is_empty();
            if ends <= self.deadline_unix || (first && now < self.deadline_unix) {
                st.first.get_or_insert_with(Instant::now);
                st.in_flight.insert(index, voxels);
                return Ok(());
            }
            // Past the deadline nothing fits however the pace changes: the
            // wait ends there at the latest, and the timeout looks for a
            // drain meanwhile.
            if st.in_flight.is_empty() || unix_now() >= self.deadline_unix {
                return Err(Refusal::Late(ends - self.deadline_unix));
            }
            st = self
                .ended
                .wait_timeout(st, Duration::from_millis(250))
                .map_or_else(|e| e.into_inner().0, |(g, _)| g);
        }
    }

    /// An image has left the pipeline; `worked` when it was smoothed (or
    /// tried), not skipped.
    pub fn done(&self, index: usize, worked: bool) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = st.in_flight.remove(&index) {
            if worked {
                st.worked_voxels += v;
            }
        }
        self.ended.notify_all();
    }
}

/// When an image of `voxels`, fed at `now` behind `ahead` voxels in flight,
/// would end, given `done` voxels worked in `elapsed` seconds.
pub(super) fn finish_at(now: f64, voxels: u64, ahead: u64, done: u64, elapsed: f64) -> f64 {
    let rate = if done > 0 && elapsed > 0.0 {
        elapsed / done as f64
    } else {
        PRIOR_S_PER_VOXEL
    };
    now + HEADROOM * rate * (voxels + ahead) as f64
}

/// The pace drifts (this VM's by ±15–30% from minute to minute): 10% more
/// than measured keeps the last image inside the deadline.
const HEADROOM: f64 = 1.1;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pace_uses_the_prior_until_an_image_is_done() {
        assert!((finish_at(10.0, 1_000_000, 0, 0, 0.0) - (10.0 + 0.11)).abs() < 1e-9);
        // 2 s for 1e8 voxels: 20 ns each; 1e6 voxels behind 1e6 in flight.
        let t = finish_at(10.0, 1_000_000, 1_000_000, 100_000_000, 2.0);
        assert!((t - 10.044).abs() < 1e-9, "{t}");
    }

    #[test]
    fn the_pacer_admits_what_fits_and_counts_what_is_in_flight() {
        // 1e7 voxels at the prior: 1.1 s each. The first starts anyway,
        // even one the prior says is too long.
        let p = Pacer::new(unix_now() + 1.5);
        assert!(p.admit(0, 10_000_000).is_ok());
        assert!(Pacer::new(unix_now() + 0.5).admit(0, 10_000_000).is_ok());
        // Behind the first, the second would end after 2 s: it waits for
        // the first to end (skipped: no pace), then fits alone.
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(std::time::Duration::from_millis(50));
                p.done(0, false);
            });
            assert!(p.admit(1, 10_000_000).is_ok());
        });
        // Alone and still too long: refused, with how late it would end.
        let Err(Refusal::Late(late)) = Pacer::new(unix_now() - 1.0).admit(0, 1) else {
            panic!("a past deadline admits nothing")
        };
        assert!((1.0..1.5).contains(&late), "{late}");
    }
}

//! Stopping early without losing anything: signals, a grace, a deadline.
//!
//! A cluster job ends by finishing, by `scancel`, or at its time limit
//! (SIGTERM, then SIGKILL after Slurm's KillWait). Killed outright, a run
//! loses its report and leaves temp files; so the first drain signal
//! (SIGTERM, SIGINT or SIGUSR1 by default) only stops images from
//! *starting*: those in flight finish if they can within the grace, and are
//! otherwise abandoned at the next stage boundary (temp removed). A second
//! signal (a second or more after the first: one event often arrives by two
//! paths) abandons them at once. Either way every rank still gathers its
//! records and root writes the report, with the undone images marked
//! `not_started` or `interrupted`, and the run exits 3 (`--resume` finishes
//! the rest).
//!
//! The state is process-wide (atomics), because a signal is: the watcher
//! thread sets it, the pipeline's stages read it at their boundaries, and
//! the driver's main thread passes a drain on to the other MPI ranks
//! (`Watch`). A deadline is the same stop decided ahead of time: an image
//! whose predicted finish (`Pace`) falls after it is not started.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::comm::Comm;
use crate::config::StopSettings;

/// Nothing asked; no new image starts; in-flight images are abandoned.
const RUNNING: u8 = 0;
const DRAINING: u8 = 1;
const ABORTING: u8 = 2;

static STATE: AtomicU8 = AtomicU8::new(RUNNING);
/// When the drain began (ms since the Unix epoch) and the grace it gives.
static DRAIN_SINCE_MS: AtomicU64 = AtomicU64::new(0);
static GRACE_MS: AtomicU64 = AtomicU64::new(10_000);
/// A signal this soon after the drain began is the first one again.
const ECHO_MS: u64 = 1000;

/// Whether the other ranks know of this rank's drain (told by it, or they
/// told it), and whether this rank sent them notices (`Watch::settle`).
static TOLD: AtomicBool = AtomicBool::new(false);
static SENT: AtomicBool = AtomicBool::new(false);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Now, in Unix seconds.
pub fn unix_now() -> f64 {
    now_ms() as f64 / 1000.0
}

/// Starts watching the drain signals on a thread of its own (a handler
/// proper may do almost nothing; the thread may log). Replaces the default
/// action of those signals, which would kill the process mid-write.
pub fn install(settings: &StopSettings) -> std::io::Result<()> {
    GRACE_MS.store(
        (settings.grace_s.max(0.0) * 1000.0) as u64,
        Ordering::SeqCst,
    );
    if settings.signals.is_empty() {
        return Ok(());
    }
    let mut signals = signal_hook::iterator::Signals::new(&settings.signals)?;
    let grace = settings.grace_s;
    std::thread::Builder::new()
        .name("nismooth-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                let name = signal_name(sig);
                if begin_drain(&name) {
                    log::warn!(
                        "{name}: draining: no new image starts; images in flight get {grace} s \
                         (--grace); a second signal abandons them now"
                    );
                } else if now_ms().saturating_sub(DRAIN_SINCE_MS.load(Ordering::SeqCst)) < ECHO_MS {
                    // The same event by a second path (`scancel --full`,
                    // a launcher passing on what Slurm also sent): not a second signal.
                    log::info!("{name} again within a second: taken as the same request");
                } else {
                    STATE.store(ABORTING, Ordering::SeqCst);
                    log::warn!("{name} again: abandoning the images in flight (no output, no temp file left)");
                }
            }
        })?;
    Ok(())
}

/// What started the drain ("SIGTERM", "another rank").
static REASON: Mutex<Option<String>> = Mutex::new(None);

/// Starts a drain for `reason` (a signal, another rank); false if one had
/// already begun.
pub fn begin_drain(reason: &str) -> bool {
    let began = STATE
        .compare_exchange(RUNNING, DRAINING, Ordering::SeqCst, Ordering::SeqCst)
        .is_ok();
    if began {
        DRAIN_SINCE_MS.store(now_ms(), Ordering::SeqCst);
        *REASON.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason.to_string());
    }
    began
}

/// What started this rank's drain, if one began.
pub fn reason() -> Option<String> {
    REASON.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Whether new images must not start.
pub fn draining() -> bool {
    STATE.load(Ordering::SeqCst) != RUNNING
}

/// Whether images in flight must be abandoned: a second signal, or the
/// grace is over.
pub fn aborting() -> bool {
    match STATE.load(Ordering::SeqCst) {
        RUNNING => false,
        ABORTING => true,
        _ => {
            let since = DRAIN_SINCE_MS.load(Ordering::SeqCst);
            now_ms().saturating_sub(since) > GRACE_MS.load(Ordering::SeqCst)
        }
    }
}

/// A signal's usual name, for the log.
pub fn signal_name(sig: i32) -> String {
    match sig {
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGINT => "SIGINT".into(),
        libc::SIGUSR1 => "SIGUSR1".into(),
        libc::SIGUSR2 => "SIGUSR2".into(),
        libc::SIGHUP => "SIGHUP".into(),
        libc::SIGQUIT => "SIGQUIT".into(),
        other => format!("signal {other}"),
    }
}

/// A signal by name (`TERM`, `SIGUSR1`) or number, for `--drain-signal`.
pub fn parse_signal(text: &str) -> Option<i32> {
    let t = text.trim().to_ascii_uppercase();
    let name = t.strip_prefix("SIG").unwrap_or(&t);
    let known = [
        ("TERM", libc::SIGTERM),
        ("INT", libc::SIGINT),
        ("USR1", libc::SIGUSR1),
        ("USR2", libc::SIGUSR2),
        ("HUP", libc::SIGHUP),
        ("QUIT", libc::SIGQUIT),
        ("CONT", libc::SIGCONT),
    ];
    known
        .iter()
        .find(|(n, _)| *n == name)
        .map(|&(_, s)| s)
        .or_else(|| name.parse().ok().filter(|&n| (1..32).contains(&n)))
        .filter(|&s| !signal_hook::consts::FORBIDDEN.contains(&s))
}

/// The driver's main thread's view of stops across ranks: it tells the
/// others of this rank's drain once, and starts a drain when another rank
/// says so. Only the thread that owns the communicator may use it.
pub struct Watch<'c> {
    comm: &'c dyn Comm,
}

impl<'c> Watch<'c> {
    pub fn new(comm: &'c dyn Comm) -> Self {
        Watch { comm }
    }

    /// Passes drains both ways; true when this rank is draining.
    pub fn check(&self) -> bool {
        if draining() {
            if !TOLD.swap(true, Ordering::SeqCst) {
                SENT.store(true, Ordering::SeqCst);
                self.comm.notify_stop();
            }
        } else if self.comm.poll_stop() && begin_drain("another rank") {
            TOLD.store(true, Ordering::SeqCst);
            log::warn!("another rank is draining: no new image starts here either");
        }
        draining()
    }

    /// Collective, at the end: every stop notice sent is received, so that
    /// none is left unmatched when MPI finalises.
    pub fn settle(&self) {
        self.comm.settle_stops(SENT.load(Ordering::SeqCst));
    }
}

/// Before any image is done, this many seconds per voxel: about three
/// times the slowest per-voxel wall measured at one thread (docs/slurm.md).
pub const PRIOR_S_PER_VOXEL: f64 = 100e-9;

/// Keeps a rank to its deadline: an image starts only if the rank's pace so
/// far says it ends in time. The pace is the wall time since the first
/// image started over the voxels done (skipped images cost nothing); an
/// image fed now ends after its own voxels and those still in flight ahead
/// of it. Before any image is done, the prior.
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
    /// waits for one to end (the pace then counts it) and looks again; with
    /// none in flight, `Err` holds how many seconds late it would end.
    pub fn admit(&self, index: usize, voxels: u64) -> Result<(), f64> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let ahead: u64 = st.in_flight.values().sum();
            let elapsed = st.first.map_or(0.0, |t| t.elapsed().as_secs_f64());
            let ends = finish_at(unix_now(), voxels, ahead, st.worked_voxels, elapsed);
            if ends <= self.deadline_unix {
                st.first.get_or_insert_with(Instant::now);
                st.in_flight.insert(index, voxels);
                return Ok(());
            }
            if st.in_flight.is_empty() {
                return Err(ends - self.deadline_unix);
            }
            st = self.ended.wait(st).unwrap_or_else(|e| e.into_inner());
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
fn finish_at(now: f64, voxels: u64, ahead: u64, done: u64, elapsed: f64) -> f64 {
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
    fn signals_parse_by_name_and_number_but_not_the_uncatchable() {
        assert_eq!(parse_signal("TERM"), Some(libc::SIGTERM));
        assert_eq!(parse_signal("sigusr1"), Some(libc::SIGUSR1));
        assert_eq!(parse_signal("10"), Some(10));
        assert_eq!(parse_signal("KILL"), None);
        assert_eq!(parse_signal("9"), None);
        assert_eq!(parse_signal("nonsense"), None);
    }

    #[test]
    fn the_pace_uses_the_prior_until_an_image_is_done() {
        assert!((finish_at(10.0, 1_000_000, 0, 0, 0.0) - (10.0 + 0.11)).abs() < 1e-9);
        // 2 s for 1e8 voxels: 20 ns each; 1e6 voxels behind 1e6 in flight.
        let t = finish_at(10.0, 1_000_000, 1_000_000, 100_000_000, 2.0);
        assert!((t - 10.044).abs() < 1e-9, "{t}");
    }

    #[test]
    fn the_pacer_admits_what_fits_and_counts_what_is_in_flight() {
        // 1e7 voxels at the prior: 1.1 s each.
        let p = Pacer::new(unix_now() + 1.5);
        assert!(p.admit(0, 10_000_000).is_ok());
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
        let late = Pacer::new(unix_now() - 1.0).admit(0, 1).unwrap_err();
        assert!((1.0..1.5).contains(&late), "{late}");
    }
}

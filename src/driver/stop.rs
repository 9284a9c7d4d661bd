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
//! (`Watch`). A deadline is the same stop decided ahead of time, image by
//! image (`pace`). A third signal, or a second one once the images in flight
//! are abandoned, takes the signal's default action: a process stuck
//! somewhere must still be stoppable.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use super::comm::Comm;
use crate::config::StopSettings;

/// Nothing asked.
const RUNNING: u8 = 0;
/// No new image starts; images in flight finish within the grace.
const DRAINING: u8 = 1;
/// Images in flight are abandoned at their next stage boundary.
const ABORTING: u8 = 2;

static STATE: AtomicU8 = AtomicU8::new(RUNNING);
/// When the drain began (ms since the Unix epoch) and the grace it gives.
static DRAIN_SINCE_MS: AtomicU64 = AtomicU64::new(0);
/// When this process's own first drain signal came (0: none yet); a drain
/// passed on by another rank does not make this rank's own signal a second.
static OWN_SINCE_MS: AtomicU64 = AtomicU64::new(0);
static GRACE_MS: AtomicU64 = AtomicU64::new(10_000);
/// A signal this soon after the drain began is the first one again.
const ECHO_MS: u64 = 1000;

/// Whether this process is still planning (finding images, reading a list,
/// sharing the plan): nothing is in flight then, so a second signal has
/// nothing to abandon and takes its default action at once (a list read
/// from a standard input that never closes would hold the drain forever).
static PLANNING: AtomicBool = AtomicBool::new(true);

/// The plan is made: images are about to be in flight.
pub fn planned() {
    PLANNING.store(false, Ordering::SeqCst);
}

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
    // A filter in progress asks too, between groups of lines.
    crate::filter::set_cancel_check(aborting);
    if settings.signals.is_empty() {
        return Ok(());
    }
    let mut signals = signal_hook::iterator::Signals::new(&settings.signals)?;
    let grace = settings.grace_s;
    std::thread::Builder::new()
        .name("nismooth-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                on_signal(sig, grace);
            }
        })?;
    Ok(())
}

/// One drain signal: the first drains; the same again within a second is
/// one event by two paths (`scancel --full`, a launcher passing on what
/// Slurm also sent); a later one abandons the images in flight; one more
/// after that takes the default action.
fn on_signal(sig: i32, grace: f64) {
    let name = signal_name(sig);
    let now = now_ms();
    let own = OWN_SINCE_MS.load(Ordering::SeqCst);
    if own == 0 {
        OWN_SINCE_MS.store(now, Ordering::SeqCst);
        if begin_drain(&name) {
            log::warn!(
                "{name}: draining: no new image starts; images in flight get {grace} s \
                 (--grace); a second signal abandons them now"
            );
        }
        if PLANNING.load(Ordering::SeqCst) {
            stop_if_still_planning(name, grace);
        }
    } else if now.saturating_sub(own) < ECHO_MS {
        log::info!("{name} again within a second: taken as the same request");
    } else if PLANNING.load(Ordering::SeqCst) {
        log::warn!(
            "{name} again while planning (nothing in flight, nothing written): stopping now"
        );
        let _ = signal_hook::low_level::emulate_default_handler(sig);
    } else if STATE.swap(ABORTING, Ordering::SeqCst) != ABORTING {
        log::warn!("{name} again: abandoning the images in flight (no output, no temp file left)");
    } else {
        log::warn!("{name} a third time: stopping now, as {name} does by default");
        let _ = signal_hook::low_level::emulate_default_handler(sig);
    }
}

/// A drain that came while planning: if the plan is still not made when
/// the grace is over, the run stops with exit 3 (stopped early, nothing in
/// flight, nothing written). Planning can wait forever, in `open` of a
/// `--list` FIFO that no writer opens, where the drain is never looked at:
/// one `kill` did nothing. Exit 3, not the signal's default action, so a
/// job script that requeues a drained run (exit 3) still does.
fn stop_if_still_planning(name: String, grace: f64) {
    let wait = std::time::Duration::from_secs_f64(grace.clamp(0.0, 86_400.0));
    let _ = std::thread::Builder::new()
        .name("nismooth-planning-drain".into())
        .spawn(move || {
            std::thread::sleep(wait);
            if PLANNING.load(Ordering::SeqCst) {
                log::warn!(
                    "{name}: still planning after the {grace} s grace (reading a list that never \
                     ends?): nothing in flight, nothing written: stopping now (exit 3)"
                );
                std::process::exit(3);
            }
        });
}

/// What started the drain ("SIGTERM", "another rank").
static REASON: Mutex<Option<String>> = Mutex::new(None);

/// Starts a drain for `reason` (a signal, another rank); false if one had
/// already begun.
pub fn begin_drain(reason: &str) -> bool {
    // The time first: a stage that sees DRAINING must see when it began,
    // or it would read the grace as long over.
    let _ = DRAIN_SINCE_MS.compare_exchange(0, now_ms(), Ordering::SeqCst, Ordering::SeqCst);
    let began = STATE
        .compare_exchange(RUNNING, DRAINING, Ordering::SeqCst, Ordering::SeqCst)
        .is_ok();
    if began {
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

/// The signals `--drain-signal` may name: those a job's tools send to
/// stop or notify a job. Others (CHLD, PIPE, BUS, …) mean something else.
const DRAIN_SIGNALS: [(&str, i32); 6] = [
    ("TERM", libc::SIGTERM),
    ("INT", libc::SIGINT),
    ("USR1", libc::SIGUSR1),
    ("USR2", libc::SIGUSR2),
    ("HUP", libc::SIGHUP),
    ("QUIT", libc::SIGQUIT),
];

/// A drain signal by name (`TERM`, `SIGUSR1`, any case).
pub fn parse_signal(text: &str) -> Option<i32> {
    let t = text.trim().to_ascii_uppercase();
    let name = t.strip_prefix("SIG").unwrap_or(&t);
    DRAIN_SIGNALS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|&(_, s)| s)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_signals_parse_by_name_only() {
        assert_eq!(parse_signal("TERM"), Some(libc::SIGTERM));
        assert_eq!(parse_signal("sigusr1"), Some(libc::SIGUSR1));
        for other in ["10", "KILL", "9", "CHLD", "PIPE", "nonsense"] {
            assert_eq!(parse_signal(other), None, "{other}");
        }
    }
}

//! Process-level measurements: CPU time from getrusage, peak RSS, the host name.
//!
//! Peak RSS comes from `VmHWM` in /proc/self/status where it exists: it belongs
//! to this program's address space. getrusage's `ru_maxrss` survives fork and
//! exec, so a process started by a big parent (a Python driver, slurmstepd)
//! would report the parent's peak instead of its own.

use std::sync::OnceLock;
use std::time::Instant;

/// When the run started, and the CPU time (user, system) the process had
/// spent by then: a Python interpreter that starts the run (the wheel's
/// `nismooth` command) spent some before it, which is not the run's.
static START: OnceLock<(Instant, f64, f64)> = OnceLock::new();

fn start() -> &'static (Instant, f64, f64) {
    START.get_or_init(|| {
        let (user, sys) = cpu_now();
        (Instant::now(), user, sys)
    })
}

/// Seconds as H:MM:SS (hours not wrapped), rounded to the second: how
/// sacct, seff and Slurm's --time write a duration.
pub fn hms(s: f64) -> String {
    let s = s.round() as u64;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// Marks the start of the process (call first thing in main), so wall time
/// covers what CPU time covers: start-up and MPI initialisation included.
pub fn mark_start() {
    start();
}

/// Image buffers are tens of MiB. glibc raises its mmap threshold after the
/// first such buffer is freed, and later ones then come from the heap and stay
/// resident: RSS would grow with the number of images. A fixed threshold keeps
/// every large buffer in its own mapping, returned to the OS when dropped.
/// Call before any thread starts.
pub fn fixed_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        // Fixing the mmap threshold also pins the trim threshold at 128 KiB:
        // the filter's per-thread scratch (a few hundred KiB, freed after each
        // pass) would then be returned to the OS and faulted in again every time.
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
        // Under an address-space limit (`ulimit -v`) each thread's arena
        // reserves 64 MiB (128 MiB mapped while aligning) that the limit
        // counts although it is never touched: with a pipeline's threads
        // that was 500 MB of a 700 MB limit, and an 8 MiB buffer then failed
        // to allocate, which aborts the process. One arena keeps the
        // reservations small (one arena: buffers of a MiB or more are mapped apart, so the threads seldom meet on its lock); without such a limit nothing changes.
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_AS, &mut lim) == 0 && lim.rlim_cur != libc::RLIM_INFINITY {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

/// When the process started (or first asked, if `mark_start` was never called).
pub fn process_start() -> Instant {
    start().0
}

pub struct Usage {
    pub user_s: f64,
    pub sys_s: f64,
    pub peak_rss_bytes: u64,
}

/// The run's CPU time (since `mark_start`) and the process's peak RSS.
pub fn usage() -> Usage {
    let &(_, user0, sys0) = start();
    let (user, sys, maxrss) = rusage();
    Usage {
        user_s: (user - user0).max(0.0),
        sys_s: (sys - sys0).max(0.0),
        // Linux reports ru_maxrss in KiB.
        peak_rss_bytes: vm_hwm_bytes().unwrap_or(maxrss * 1024),
    }
}

fn cpu_now() -> (f64, f64) {
    let (user, sys, _) = rusage();
    (user, sys)
}

/// This process's user and system CPU seconds, and ru_maxrss.
fn rusage() -> (f64, f64, u64) {
    // SAFETY: rusage is plain integers and timevals: all zeros is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    (secs(ru.ru_utime), secs(ru.ru_stime), ru.ru_maxrss as u64)
}

/// Bytes in a mebibyte: every "MiB" nismooth prints is `bytes / MIB`.
pub const MIB: f64 = 1048576.0;

/// Bytes as MiB.
pub fn mib(bytes: f64) -> f64 {
    bytes / MIB
}

/// Seconds since the Unix epoch (0 if the clock is before it).
/// Seconds since the epoch, to the nanosecond (0 on a clock before it).
pub fn unix_now_f64() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// The peak resident set of this address space (Linux), in bytes.
fn vm_hwm_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    #[test]
    fn peak_rss_sees_a_large_allocation() {
        let before = super::usage().peak_rss_bytes;
        let big = vec![1u8; 64 << 20];
        std::hint::black_box(&big);
        let after = super::usage().peak_rss_bytes;
        assert!(after >= before.max(64 << 20), "{before} -> {after}");
    }
}

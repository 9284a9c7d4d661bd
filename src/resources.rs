//! Memory: the one model of what a rank holds, and the room it has left.
//!
//! The model (which the run, `sbatch` and `estimate` share): how many
//! readers a rank gets, how many images it holds at once, and what a rank's
//! request must cover.
//!
//! The room: how much memory this process may still take, from every limit
//! that can end it: the cgroup it runs in (Slurm's `task/cgroup`, v1 or v2),
//! its address-space rlimit (`ulimit -v`) and the node's available memory.
//! Why: an image whose header claims more voxels than fit would otherwise be
//! allocated anyway, and the process dies for it (an abort on `ulimit -v`,
//! the OOM killer in a cgroup), taking every other image of the run with it.
//! Asking first turns that into one image's error. The answer is a snapshot:
//! other images in flight may take their share after it is read.

use std::fs;
use std::path::PathBuf;

/// Readers per rank when `--readers` is not given. Inflating an image is one
/// thread's work, and on two cores it takes about as long as filtering and
/// compressing it on both: a second reader keeps both cores busy at the
/// start of a run and whenever inflating is the slowest stage
/// (docs/performance.md: 8 float32 `.nii.gz` on 2 cores 5.7% faster,
/// for one more image in memory).
pub fn default_readers(threads: usize) -> usize {
    threads.clamp(1, 2)
}

/// The most images one process with `readers` readers holds at once: one
/// per reader, one being filtered, one being written, and the written
/// image's buffer on its way back to a reader (a GPU backend holds
/// `Backend::depth` − 1 more). Peak memory per process is flat once a
/// process has this many images (docs/performance.md).
pub fn pipeline_images(readers: usize) -> usize {
    readers.max(1) + 3
}

/// A series (a 4-D image) is read, filtered and written in parts of whole
/// volumes of about this size in memory, so that what a rank holds of it
/// follows the volume, not the series (a 1200-volume HCP run would be
/// 4.3 GB at once). Small enough that a rank's few parts stay far below its
/// images' base; large enough that handing a part between stages (tens of
/// microseconds) is lost in its work.
pub const PART_BYTES: u64 = 8 << 20;

/// `PART_BYTES`, or `NISMOOTH_PART_BYTES` where it is set to a positive
/// number (the tests cut series into one-volume parts with it).
pub fn part_bytes() -> u64 {
    std::env::var("NISMOOTH_PART_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&b| b > 0)
        .unwrap_or(PART_BYTES)
}

/// Volumes per part of an image of `bytes` in memory over `volumes`
/// volumes: about `part_bytes()`, at least one volume, at most all.
pub fn part_volumes(bytes: u64, volumes: usize) -> usize {
    volumes_within(bytes, volumes, part_bytes())
}

/// Whole volumes of an image of `bytes` over `volumes` that fit in
/// `budget` bytes: at least one, at most all.
pub fn volumes_within(bytes: u64, volumes: usize, budget: u64) -> usize {
    let volumes = volumes.max(1);
    let volume = (bytes / volumes as u64).max(1);
    (budget / volume).clamp(1, volumes as u64) as usize
}

/// What one pipeline slot holds of an image of `bytes` in memory over
/// `volumes` volumes: a 3-D image whole, one part of a series.
pub fn held_bytes(bytes: u64, volumes: usize) -> u64 {
    bytes / volumes.max(1) as u64 * part_volumes(bytes, volumes) as u64
}

/// What a rank holds beside its images (binary, allocator arenas, the MPI
/// library), as a request allows for it: measured about 48 MiB
/// (docs/performance.md).
pub const RANK_BASE_BYTES: u64 = 64 << 20;

/// The memory to ask for one rank whose largest image (or part of a
/// series, `held_bytes`) takes `largest` bytes in memory: every image its
/// pipeline may hold at once, each as large as the largest, plus the base. An upper bound: the measured peak
/// is (readers + 1) images + about 48 MiB (docs/performance.md).
pub fn rank_request_bytes(largest: u64, readers: usize) -> u64 {
    pipeline_images(readers) as u64 * largest + RANK_BASE_BYTES
}

/// The least room a run starts with: its threads' stacks, the MPI
/// library, the compressor and one small image's buffers. Below it an
/// allocation fails before the first image is checked, and under
/// `ulimit -v` a failed allocation aborts the process.
pub const START_ROOM_BYTES: u64 = 48 << 20;

/// Refuses to start a run with less room than `START_ROOM_BYTES`, naming
/// the limit and what it leaves.
pub fn check_start_room() -> Result<(), String> {
    match memory_room() {
        Some(room) if room.bytes < START_ROOM_BYTES => Err(format!(
            "only {} MiB of memory left under {}: a run needs at least {} MiB beside its images",
            room.bytes >> 20,
            room.limit,
            START_ROOM_BYTES >> 20
        )),
        _ => Ok(()),
    }
}

/// The memory this process may still take, and the limit that sets it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Room {
    pub bytes: u64,
    pub limit: &'static str,
}

/// The tightest of the limits that apply now; `None` when none can be read.
pub fn memory_room() -> Option<Room> {
    [cgroup_room(), rlimit_room(), available_room()]
        .into_iter()
        .flatten()
        .min_by_key(|r| r.bytes)
}

/// `MemAvailable` from /proc/meminfo: what the node can give without swapping.
fn available_room() -> Option<Room> {
    let bytes = proc_kib(&fs::read_to_string("/proc/meminfo").ok()?, "MemAvailable:")?;
    Some(Room {
        bytes,
        limit: "the node's available memory",
    })
}

/// RLIMIT_AS less the address space already mapped (`VmSize`).
fn rlimit_room() -> Option<Room> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit through a valid, exclusive pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut lim) } != 0
        || lim.rlim_cur == libc::RLIM_INFINITY
    {
        return None;
    }
    let used = proc_kib(&fs::read_to_string("/proc/self/status").ok()?, "VmSize:")?;
    Some(Room {
        bytes: lim.rlim_cur.saturating_sub(used),
        limit: "the address-space limit (ulimit -v)",
    })
}

/// The memory cgroup's limit less its usage: v2 `memory.max`/`memory.current`,
/// or v1 `memory.limit_in_bytes`/`memory.usage_in_bytes`.
fn cgroup_room() -> Option<Room> {
    let cgroups = fs::read_to_string("/proc/self/cgroup").ok()?;
    let (limit, usage) = cgroup_files(&cgroups)?;
    let limit: u64 = fs::read_to_string(limit).ok()?.trim().parse().ok()?;
    let usage: u64 = fs::read_to_string(usage).ok()?.trim().parse().ok()?;
    // v1 reports "no limit" as a huge page-rounded number.
    (limit < 1 << 60).then(|| Room {
        bytes: limit.saturating_sub(usage),
        limit: "the memory cgroup's limit",
    })
}

/// The limit and usage files of this process's memory cgroup, from the lines
/// of /proc/self/cgroup: `N:memory:/path` (v1) first, else `0::/path` (v2).
fn cgroup_files(cgroups: &str) -> Option<(PathBuf, PathBuf)> {
    let path_of = |l: &str| {
        l.splitn(3, ':')
            .nth(2)
            .map(|p| p.trim_start_matches('/').to_owned())
    };
    let v1 = cgroups.lines().find(|l| {
        l.split(':')
            .nth(1)
            .is_some_and(|c| c.split(',').any(|c| c == "memory"))
    });
    if let Some(path) = v1.and_then(path_of) {
        let dir = PathBuf::from("/sys/fs/cgroup/memory").join(path);
        return Some((
            dir.join("memory.limit_in_bytes"),
            dir.join("memory.usage_in_bytes"),
        ));
    }
    let path = cgroups
        .lines()
        .find(|l| l.starts_with("0::"))
        .and_then(path_of)?;
    let dir = PathBuf::from("/sys/fs/cgroup").join(path);
    Some((dir.join("memory.max"), dir.join("memory.current")))
}

/// A `Key:   123 kB` line of a /proc file, in bytes.
fn proc_kib(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line[key.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_proc_lines() {
        let text = "MemTotal:       24000000 kB\nMemAvailable:    1000 kB\n";
        assert_eq!(proc_kib(text, "MemAvailable:"), Some(1000 * 1024));
        assert_eq!(proc_kib(text, "VmSize:"), None);
    }

    #[test]
    fn finds_v1_before_v2() {
        let both = "12:memory:/slurm/uid_0/job_7\n0::/user.slice\n";
        let (limit, _) = cgroup_files(both).unwrap();
        assert_eq!(
            limit,
            PathBuf::from("/sys/fs/cgroup/memory/slurm/uid_0/job_7/memory.limit_in_bytes")
        );
        let (limit, usage) = cgroup_files("0::/a/b\n").unwrap();
        assert_eq!(limit, PathBuf::from("/sys/fs/cgroup/a/b/memory.max"));
        assert_eq!(usage, PathBuf::from("/sys/fs/cgroup/a/b/memory.current"));
        let (limit, _) = cgroup_files("4:cpu,memory:/x\n").unwrap();
        assert!(limit.starts_with("/sys/fs/cgroup/memory/x"));
    }

    #[test]
    fn this_process_has_some_room() {
        let room = memory_room().expect("/proc/meminfo at least");
        assert!(room.bytes > 0, "{room:?}");
    }
}

//! One run at a time in an output folder: a lock file with its holder's name.
//!
//! Two runs writing one OUTDIR do the same images twice, and a `--resume`
//! would take the live run's temp files for a killed run's and delete them.
//! Root takes `OUTDIR/.nismooth/lock` for the run's whole life. It is made
//! the way that works on NFS and Lustre, where `flock` may not: the holder's
//! record (host, pid, start) is written to a file of its own, which is then
//! hard-linked to the lock's name, and `link` fails if the name exists. A
//! lock is stale only when its owner is provably gone: it was taken on this
//! host and its process no longer exists (or is another process with the
//! same pid). A lock from another host is never broken: the message names
//! the holder and the file to remove by hand.
//!
//! Job-array tasks share one OUTDIR and write disjoint shares, so a task
//! locks its share (`lock-task-P-of-N`); a whole-list run conflicts with
//! every lock, a share with the whole-list lock and its own.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::array::ArraySlot;
use super::STATE_DIR as DIR;
pub use crate::error::LockError;

/// Who holds a lock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub host: String,
    pub pid: u32,
    /// The process's start time in clock ticks since boot (/proc/PID/stat),
    /// which tells a reused pid from the holder.
    pub start_ticks: Option<u64>,
    pub since_unix: u64,
    pub slurm_job: Option<String>,
}

impl Holder {
    fn me() -> Holder {
        let pid = std::process::id();
        Holder {
            host: crate::metrics::hostname(),
            pid,
            start_ticks: start_ticks(pid),
            since_unix: crate::metrics::unix_now(),
            slurm_job: std::env::var("SLURM_JOB_ID").ok(),
        }
    }

    /// Whether this holder is provably gone: same host, and no process with
    /// its pid and start time.
    fn gone(&self) -> bool {
        let now = start_ticks(self.pid);
        self.host == crate::metrics::hostname() && (now.is_none() || now != self.start_ticks)
    }

    fn describe(&self) -> String {
        let job = self
            .slurm_job
            .as_deref()
            .map(|j| format!(", Slurm job {j}"))
            .unwrap_or_default();
        format!(
            "pid {} on host {}{job}, since unix time {}",
            self.pid, self.host, self.since_unix
        )
    }
}

/// Field 22 of /proc/PID/stat: when the process started. None when no such
/// process, or when it is a zombie (dead, not yet reaped: in a container
/// whose first process does not reap, a killed run stays one).
fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    if matches!(fields.next(), Some("Z" | "X")) {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// A held lock; dropping it removes the lock file.
#[derive(Debug)]
pub struct Lock {
    file: PathBuf,
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
    }
}

/// What a run writes of the folder: all of it, an array task's share, or
/// the one file `-o` named.
#[derive(Clone, Copy)]
enum Scope<'a> {
    Whole,
    Share(ArraySlot),
    File(&'a str),
}

fn name(scope: Scope) -> String {
    match scope {
        Scope::Whole => "lock".into(),
        Scope::Share(s) => format!("lock-task-{}-of-{}", s.position, s.count),
        // 255 bytes less `lock-file-`.
        Scope::File(f) => format!("lock-file-{}", crate::io::short_name(f, 245)),
    }
}

/// Takes the lock of `outdir` for a whole-list run (`share` None) or one array task's share.
pub fn acquire(outdir: &Path, share: Option<ArraySlot>) -> Result<Lock, LockError> {
    take(outdir, share.map_or(Scope::Whole, Scope::Share))
}

/// Takes the lock of one output file `file_name` in `outdir` (`-o` naming
/// a file): runs of other files in the folder go on beside it, as a loop of
/// fslmaths calls would; a whole-folder run or an array does not.
pub fn acquire_file(outdir: &Path, file_name: &str) -> Result<Lock, LockError> {
    take(outdir, Scope::File(file_name))
}

fn take(outdir: &Path, scope: Scope) -> Result<Lock, LockError> {
    let dir = outdir.join(DIR);
    let mine = dir.join(name(scope));
    let io = |file: &Path| {
        let (outdir, file) = (outdir.to_path_buf(), file.to_path_buf());
        move |source| LockError::Io {
            outdir,
            file,
            source,
        }
    };
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    check_conflicts(outdir, &dir, scope, None)?;
    let me = Holder::me();
    let record = dir.join(format!(".lock-{}-{}", me.host, me.pid));
    std::fs::write(&record, serde_json::to_vec(&me).unwrap_or_default()).map_err(io(&record))?;
    let linked = std::fs::hard_link(&record, &mine);
    let _ = std::fs::remove_file(&record);
    match linked {
        Ok(()) => {
            let lock = Lock { file: mine };
            // A conflicting run may have checked before our link and linked
            // its own since: whichever links second sees the first here, so
            // two overlapping runs never both go on (at worst both refuse).
            check_conflicts(outdir, &dir, scope, Some(&lock.file))?;
            Ok(lock)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            // Taken between our check and our link: its holder is alive.
            Err(held(outdir, &mine))
        }
        Err(e) => Err(io(&mine)(e)),
    }
}

/// Whether the lock file `n` guards images that a run of `scope` would
/// write: a whole-list run conflicts with every lock; an array task with a
/// whole-list run, with its own share, with any share of an array of
/// another size (whose shares overlap its own) and with any one-file run;
/// a one-file run with a whole-list run, any array task and its own file.
fn conflicts(n: &str, scope: Scope) -> bool {
    let file = n.starts_with("lock-file-");
    let task = n.starts_with("lock-task-");
    match scope {
        Scope::Whole => n == "lock" || task || file,
        Scope::Share(s) => {
            n == "lock"
                || n == name(scope)
                || task && !n.ends_with(&format!("-of-{}", s.count))
                || file
        }
        Scope::File(_) => n == "lock" || n == name(scope) || task,
    }
}

/// Refuses while a conflicting lock's holder may be alive; removes the
/// conflicting locks whose holders are provably gone. `ours` is skipped.
fn check_conflicts(
    outdir: &Path,
    dir: &Path,
    scope: Scope,
    ours: Option<&Path>,
) -> Result<(), LockError> {
    let entries = std::fs::read_dir(dir).map_err(|source| LockError::Io {
        outdir: outdir.to_path_buf(),
        file: dir.to_path_buf(),
        source,
    })?;
    for e in entries.filter_map(Result::ok) {
        let n = e.file_name().to_string_lossy().into_owned();
        if !conflicts(&n, scope) || ours.is_some_and(|o| o == e.path()) {
            continue;
        }
        match read_holder(&e.path()) {
            Some(h) if h.gone() => {
                log::warn!(
                    "removing the stale lock {} (its run, {}, is gone)",
                    e.path().display(),
                    h.describe()
                );
                let _ = std::fs::remove_file(e.path());
            }
            _ => return Err(held(outdir, &e.path())),
        }
    }
    Ok(())
}

/// Refuses while a live run writes a folder above OUTDIR (its whole-list
/// or array lock: a tree's outputs go into subfolders) or one of the
/// folders this run writes below OUTDIR (`folders`, with the folders
/// between them and OUTDIR; any lock there). Each run locks its own
/// OUTDIR, so nested OUTDIRs took two locks and one `--resume` removed
/// the other run's live temp files. Locks found stale here are left to
/// their own folder's next run.
pub fn check_nested<'a>(
    outdir: &Path,
    folders: impl Iterator<Item = &'a Path>,
) -> Result<(), LockError> {
    use crate::plan::identity::resolve_future;
    let real = resolve_future(outdir);
    let live = |folder: &Path, whole_only: bool| -> Result<(), LockError> {
        let Ok(entries) = std::fs::read_dir(folder.join(DIR)) else {
            return Ok(());
        };
        for e in entries.filter_map(Result::ok) {
            let n = e.file_name().to_string_lossy().into_owned();
            let counts = n == "lock"
                || n.starts_with("lock-task-")
                || (!whole_only && n.starts_with("lock-file-"));
            if counts && !read_holder(&e.path()).is_some_and(|h| h.gone()) {
                let holder = read_holder(&e.path()).map_or_else(
                    || "holder unreadable (not a lock nismooth wrote)".to_string(),
                    |h| h.describe(),
                );
                return Err(LockError::Nested {
                    outdir: outdir.to_path_buf(),
                    other: folder.to_path_buf(),
                    holder,
                    file: e.path(),
                });
            }
        }
        Ok(())
    };
    for above in real.ancestors().skip(1) {
        live(above, true)?;
    }
    let mut seen = std::collections::HashSet::new();
    for folder in folders {
        let mut f = resolve_future(folder);
        while f != real && f.starts_with(&real) && seen.insert(f.clone()) {
            live(&f, false)?;
            if !f.pop() {
                break;
            }
        }
    }
    Ok(())
}

/// The holder a lock file names; `None` for anything but a regular file
/// (opening a FIFO planted there would block the run forever) or one that
/// does not parse. Such a lock is never taken as stale: it is refused.
fn read_holder(file: &Path) -> Option<Holder> {
    let meta = std::fs::symlink_metadata(file).ok()?;
    if !meta.file_type().is_file() {
        return None;
    }
    let bytes = std::fs::read(file).ok()?;
    serde_json::from_slice::<Holder>(&bytes).ok()
}

fn held(outdir: &Path, file: &Path) -> LockError {
    let holder = read_holder(file).map_or_else(
        || "holder unreadable (not a lock nismooth wrote)".to_string(),
        |h| h.describe(),
    );
    LockError::Held {
        outdir: outdir.to_path_buf(),
        holder,
        file: file.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_at_the_lock_is_refused_not_waited_on() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join(DIR)).unwrap();
        let fifo =
            std::ffi::CString::new(d.path().join(DIR).join("lock").to_str().unwrap()).unwrap();
        // SAFETY: mkfifo reads a NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let (tx, rx) = std::sync::mpsc::channel();
        let outdir = d.path().to_path_buf();
        std::thread::spawn(move || {
            let _ = tx.send(
                acquire(&outdir, None)
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
            );
        });
        let got = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("acquire blocked on a FIFO lock");
        let e = got.unwrap_err();
        assert!(e.contains("not a lock nismooth wrote"), "{e}");
    }

    #[test]
    fn one_file_runs_go_on_beside_each_other_but_not_beside_the_folders_runs() {
        let d = tempfile::tempdir().unwrap();
        let a = acquire_file(d.path(), "a_s.nii.gz").unwrap();
        let _b = acquire_file(d.path(), "b_s.nii.gz").expect("another file of the folder");
        assert!(
            acquire_file(d.path(), "a_s.nii.gz").is_err(),
            "the same file"
        );
        assert!(
            acquire(d.path(), None).is_err(),
            "a whole-folder run over a file's"
        );
        let slot = Some(ArraySlot {
            task_id: 0,
            position: 0,
            count: 2,
        });
        assert!(
            acquire(d.path(), slot).is_err(),
            "an array task over a file's"
        );
        drop((a, _b));
        let whole = acquire(d.path(), None).unwrap();
        assert!(
            acquire_file(d.path(), "c.nii").is_err(),
            "a file's run under a whole-folder run"
        );
        drop(whole);
        let _task = acquire(d.path(), slot).unwrap();
        assert!(
            acquire_file(d.path(), "c.nii").is_err(),
            "a file's run under an array task"
        );
    }

    #[test]
    fn a_second_run_is_refused_and_a_dead_holder_is_stale() {
        let d = tempfile::tempdir().unwrap();
        let first = acquire(d.path(), None).unwrap();
        let e = acquire(d.path(), None).unwrap_err().to_string();
        assert!(e.contains(&format!("pid {}", std::process::id())), "{e}");
        let slot = |position| {
            Some(ArraySlot {
                task_id: position as u64,
                position,
                count: 4,
            })
        };
        assert!(
            acquire(d.path(), slot(1)).is_err(),
            "a share under a whole-list run"
        );
        drop(first);
        let one = acquire(d.path(), slot(1)).unwrap();
        let _two = acquire(d.path(), slot(2)).expect("array tasks share the folder");
        assert!(acquire(d.path(), slot(1)).is_err());
        assert!(
            acquire(d.path(), None).is_err(),
            "a whole-list run over a share"
        );
        drop(one);
        // A holder on this host whose process is gone.
        let dead = Holder {
            pid: u32::MAX - 1,
            start_ticks: Some(1),
            ..Holder::me()
        };
        let file = d.path().join(DIR).join("lock-task-1-of-4");
        std::fs::write(&file, serde_json::to_vec(&dead).unwrap()).unwrap();
        let _again = acquire(d.path(), slot(1)).expect("a dead holder's lock is stale");
        // Another host's lock is never broken.
        let other = Holder {
            host: "elsewhere".into(),
            ..dead
        };
        std::fs::write(
            d.path().join(DIR).join("lock-task-3-of-4"),
            serde_json::to_vec(&other).unwrap(),
        )
        .unwrap();
        let e = acquire(d.path(), slot(3)).unwrap_err().to_string();
        assert!(e.contains("elsewhere"), "{e}");
    }

    #[test]
    fn arrays_of_another_size_overlap_and_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let slot = |position, count| {
            Some(ArraySlot {
                task_id: position as u64,
                position,
                count,
            })
        };
        let _four = acquire(d.path(), slot(0, 4)).unwrap();
        let e = acquire(d.path(), slot(5, 8)).unwrap_err().to_string();
        assert!(e.contains("lock-task-0-of-4"), "{e}");
        assert!(
            acquire(d.path(), slot(1, 14)).is_err(),
            "-of-14 is not -of-4"
        );
        let _same_size = acquire(d.path(), slot(3, 4)).expect("same geometry, other share");
    }
}

//! What a run's journals say of it while it runs, or after: `nismooth
//! status OUTDIR`, from any node that sees OUTDIR.
//!
//! Every rank appends a line per finished image to its own journal in
//! `OUTDIR/.nismooth`, on the file system the whole job shares, so a login
//! node can follow a job without asking it anything: the start lines give
//! the run's images and ranks, the image lines what is done and what
//! failed, a journal's modification time when its rank last finished an
//! image, and an end line that a rank's share is done or drained. A rank
//! with a start line and no end line is at work, or was killed: on this
//! host its process id says which; elsewhere only time does (a rank quiet
//! for much longer than its own images take is called stalled).
//!
//! Reading takes no lock and writes nothing. A [`Watcher`] keeps how far it
//! read each journal, so each refresh reads only the bytes added since.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::journal::{self, Line};
use super::Status;
use crate::plan::STATE_DIR;

/// Why a run's journals cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("{0}: no run has written here (no {STATE_DIR}/journal-*.jsonl): not a nismooth OUTDIR, or its run has not started")]
    NoRun(PathBuf),
    #[error("{0}: no journal of run {1}")]
    NoSuchRun(PathBuf, String),
    #[error("{path}: {source}{}", hint(source))]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What a refusal to read usually means here.
fn hint(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied => {
            " (a run of another user: its journals must be readable to you)"
        }
        _ => "",
    }
}

/// One rank's journal as read so far.
#[derive(Debug, Default)]
struct RankJournal {
    offset: u64,
    host: String,
    pid: u32,
    started_unix: f64,
    images: Option<usize>,
    ranks: Option<usize>,
    done: usize,
    failed: Vec<(String, String)>,
    /// Seconds each finished image took (its read to its write).
    took: Vec<f64>,
    end: Option<(u64, usize)>,
    last_unix: f64,
}

/// Follows one run's journals in OUTDIR.
pub struct Watcher {
    outdir: PathBuf,
    run: String,
    ranks: BTreeMap<usize, RankJournal>,
    others: Vec<String>,
}

impl Watcher {
    /// The run `run`, or the latest one (run ids sort in the order runs start).
    pub fn new(outdir: &Path, run: Option<&str>) -> Result<Watcher, StatusError> {
        let runs = journals(outdir)?;
        let run = match run {
            Some(r) if runs.iter().any(|(id, _, _)| id == r) => r.to_string(),
            Some(r) => return Err(StatusError::NoSuchRun(outdir.to_path_buf(), r.to_string())),
            None => runs
                .iter()
                .map(|(id, _, _)| id.clone())
                .max()
                .ok_or_else(|| StatusError::NoRun(outdir.to_path_buf()))?,
        };
        let mut others: Vec<String> = (runs.into_iter())
            .map(|(id, _, _)| id)
            .filter(|id| *id != run)
            .collect();
        others.dedup();
        Ok(Watcher {
            outdir: outdir.to_path_buf(),
            run,
            ranks: BTreeMap::new(),
            others,
        })
    }

    /// Reads what the run's journals gained since the last call.
    pub fn refresh(&mut self, now_unix: f64) -> Result<Snapshot, StatusError> {
        for (id, rank, path) in journals(&self.outdir)? {
            if id != self.run {
                continue;
            }
            let r = self.ranks.entry(rank).or_default();
            let unreadable = |source| StatusError::Unreadable {
                path: path.clone(),
                source,
            };
            let lines = journal::read_new(&path, &mut r.offset).map_err(unreadable)?;
            lines.into_iter().for_each(|line| r.take(line));
            if let Ok(m) = std::fs::metadata(&path) {
                r.last_unix = crate::io::mtime_ns(&m).map_or(0.0, |ns| ns as f64 * 1e-9);
            }
        }
        Ok(self.snapshot(now_unix))
    }

    fn snapshot(&self, now: f64) -> Snapshot {
        let first = |f: fn(&RankJournal) -> Option<usize>| self.ranks.values().find_map(f);
        let images = first(|r| r.images);
        let started_unix = (self.ranks.values())
            .map(|r| r.started_unix)
            .filter(|&u| u > 0.0)
            .fold(f64::INFINITY, f64::min);
        let started_unix = if started_unix.is_finite() {
            started_unix
        } else {
            now
        };
        let ranks: Vec<RankState> = self
            .ranks
            .iter()
            .map(|(&rank, r)| r.state(rank, now))
            .collect();
        let done: usize = self.ranks.values().map(|r| r.done).sum();
        let failed: Vec<(String, String)> =
            self.ranks.values().flat_map(|r| r.failed.clone()).collect();
        let undone: usize = self.ranks.values().filter_map(|r| r.end.map(|e| e.1)).sum();
        // An ended run's time is up to its last line (its journal's mtime).
        let ended = self.ranks.values().all(|r| r.end.is_some());
        let last = self.ranks.values().map(|r| r.last_unix).fold(0.0, f64::max);
        let until = if ended && last > 0.0 { last } else { now };
        let elapsed = (until - started_unix).max(1e-3);
        let rate = (done > 0).then(|| done as f64 / elapsed);
        let state = run_state(&ranks, failed.len(), undone);
        let eta_s = match (&state, images, rate) {
            (RunState::Running, Some(n), Some(rate)) => Some(n.saturating_sub(done) as f64 / rate),
            _ => None,
        };
        Snapshot {
            run: self.run.clone(),
            outdir: self.outdir.clone(),
            images,
            ranks_total: first(|r| r.ranks),
            started_unix,
            elapsed_s: elapsed,
            done,
            failed: failed
                .into_iter()
                .map(|(input, error)| Failure { input, error })
                .collect(),
            undone,
            rate_per_s: rate,
            eta_s,
            ranks,
            state,
            other_runs: self.others.clone(),
        }
    }
}

impl RankJournal {
    fn take(&mut self, line: Line) {
        match line {
            Line::Start {
                host,
                pid,
                unix,
                images,
                ranks,
                started,
                ..
            } => {
                (self.host, self.pid) = (host, pid);
                self.started_unix = started.unwrap_or(unix as f64);
                (self.images, self.ranks) = (images, ranks);
            }
            Line::Image { record, .. } => {
                if record.status.did_work() || record.status == Status::Skipped {
                    self.done += 1;
                }
                if record.status == Status::Failed {
                    let error = record.error.clone().unwrap_or_default();
                    self.failed.push((record.input.clone(), error));
                }
                if record.status.did_work() {
                    self.took
                        .push((record.finished_s - record.started_s).max(0.0));
                }
            }
            Line::End { unix, undone, .. } => self.end = Some((unix, undone)),
        }
    }

    fn state(&self, rank: usize, now: f64) -> RankState {
        let mut took = self.took.clone();
        took.sort_by(f64::total_cmp);
        let median = took.get(took.len() / 2).copied();
        let quiet = (now - self.last_unix).max(0.0);
        let here = self.host == crate::metrics::hostname();
        let alive = here.then(|| pid_alive(self.pid));
        let state = match (self.end, alive) {
            (Some(_), _) => "ended",
            (None, Some(false)) => "gone",
            // Much longer than its own images take, and at least a minute.
            (None, _) if quiet > (10.0 * median.unwrap_or(6.0)).max(60.0) => "stalled",
            (None, _) => "working",
        };
        RankState {
            rank,
            host: self.host.clone(),
            pid: self.pid,
            images: self.done,
            failed: self.failed.len(),
            median_image_s: median,
            last_activity_s_ago: quiet,
            state,
        }
    }
}

/// Whether process `pid` on this host is alive (a signal 0 reaches it).
fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 sends nothing; it only checks the process.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// How the run stands: every rank that started has ended (how), a rank
/// ended without its end line, or it is still at work.
fn run_state(ranks: &[RankState], failed: usize, undone: usize) -> RunState {
    let lost: Vec<usize> = ranks
        .iter()
        .filter(|r| r.state == "gone" || r.state == "stalled")
        .map(|r| r.rank)
        .collect();
    if !lost.is_empty() {
        RunState::NotFinished { ranks: lost }
    } else if ranks.iter().any(|r| r.state != "ended") {
        RunState::Running
    } else if undone > 0 {
        RunState::StoppedEarly { left: undone }
    } else if failed > 0 {
        RunState::FinishedWithFailures { failed }
    } else {
        RunState::Finished
    }
}

/// Every journal file of OUTDIR as (run, rank, path), the folded one aside.
fn journals(outdir: &Path) -> Result<Vec<(String, usize, PathBuf)>, StatusError> {
    let dir = outdir.join(STATE_DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(StatusError::NoRun(outdir.to_path_buf()))
        }
        Err(source) => return Err(StatusError::Unreadable { path: dir, source }),
    };
    let mut found = Vec::new();
    for e in entries.filter_map(Result::ok) {
        let name = e.file_name().to_string_lossy().into_owned();
        let parsed = name
            .strip_prefix("journal-")
            .and_then(|n| n.strip_suffix(".jsonl"))
            .and_then(|n| n.rsplit_once("-rank"))
            .and_then(|(run, rank)| Some((run.to_string(), rank.parse().ok()?)));
        // Only regular files are journals (a FIFO there would block a
        // reader, a folder is no run's).
        let regular = e.file_type().is_ok_and(|t| t.is_file());
        if let Some((run, rank)) = parsed.filter(|_| regular) {
            found.push((run, rank, e.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// The run as its journals tell it at one moment.
#[derive(Debug, Serialize)]
pub struct Snapshot {
    pub run: String,
    pub outdir: PathBuf,
    /// The run's images (None for journals of older versions).
    pub images: Option<usize>,
    pub ranks_total: Option<usize>,
    pub started_unix: f64,
    /// From the first start to now, or to the last line of an ended run.
    pub elapsed_s: f64,
    /// Images finished: written, failed or skipped as complete.
    pub done: usize,
    pub failed: Vec<Failure>,
    /// Images the ranks that ended left for `--resume`.
    pub undone: usize,
    pub rate_per_s: Option<f64>,
    pub eta_s: Option<f64>,
    pub ranks: Vec<RankState>,
    pub state: RunState,
    /// Other runs with journals in OUTDIR (a job array's other tasks,
    /// earlier runs): the status is of `run` alone.
    pub other_runs: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Failure {
    pub input: String,
    pub error: String,
}

#[derive(Debug, Serialize)]
pub struct RankState {
    pub rank: usize,
    pub host: String,
    pub pid: u32,
    pub images: usize,
    pub failed: usize,
    pub median_image_s: Option<f64>,
    pub last_activity_s_ago: f64,
    /// "working", "ended", "stalled" (quiet far longer than its images
    /// take), "gone" (its process is not alive on this host, no end line).
    pub state: &'static str,
}

#[derive(Debug, PartialEq, Serialize)]
#[serde(tag = "is", rename_all = "snake_case")]
pub enum RunState {
    Running,
    Finished,
    FinishedWithFailures {
        failed: usize,
    },
    StoppedEarly {
        left: usize,
    },
    /// Ranks that stopped without their end line (killed, a node lost).
    NotFinished {
        ranks: Vec<usize>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rank(state: &'static str) -> RankState {
        RankState {
            rank: 0,
            host: "h".into(),
            pid: 1,
            images: 1,
            failed: 0,
            median_image_s: Some(0.1),
            last_activity_s_ago: 0.0,
            state,
        }
    }

    #[test]
    fn a_run_ends_as_its_ranks_end_lines_say() {
        assert_eq!(
            run_state(&[rank("ended"), rank("ended")], 0, 0),
            RunState::Finished
        );
        assert_eq!(
            run_state(&[rank("ended"), rank("working")], 0, 0),
            RunState::Running
        );
        assert_eq!(
            run_state(&[rank("ended")], 0, 3),
            RunState::StoppedEarly { left: 3 }
        );
        assert_eq!(
            run_state(&[rank("ended")], 2, 0),
            RunState::FinishedWithFailures { failed: 2 }
        );
        assert_eq!(
            run_state(&[rank("ended"), rank("gone")], 0, 0),
            RunState::NotFinished { ranks: vec![0] }
        );
    }
}

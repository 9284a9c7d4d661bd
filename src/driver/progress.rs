//! Progress over the whole run, as a person at a terminal or reading a batch
//! log needs it: images finished of the total over every rank, the rate in
//! images/s and MB/s, the time so far and an estimate of the time left.
//!
//! Root learns the other ranks' progress from their journals: every rank
//! appends a line per finished image to `OUTDIR/.nismooth/journal-RUN-rankR`
//! the moment the output is in place, and every rank writes into the same
//! OUTDIR. Reading those files costs no rank anything (no message to answer,
//! no collective to wait in), counts images finished whatever the schedule
//! (the dynamic one hands images out long before they are done), and counts
//! exactly what `--resume` would find. A rank whose journal cannot be written
//! is missing from the count; root's own finished images are counted in
//! memory too, so a single process without a journal still shows progress.

use std::collections::HashMap;
use std::io::{IsTerminal, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::config::ProgressChoice;
use crate::plan::STATE_DIR;
use crate::report::journal::Line;
use crate::report::Status;

/// How often the bar is redrawn (log lines come every `--progress-interval`).
const BAR_EVERY: Duration = Duration::from_millis(250);

/// What is counted: the run's journals and its size.
pub struct Scope {
    pub outdir: PathBuf,
    pub run: String,
    pub total: usize,
}

/// The figures of one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Figures {
    pub done: u64,
    pub failed: u64,
    /// Of `done`, those skipped (`--resume`, `--skip-existing`): counted as
    /// done, not in the rate, so the ETA is the work left at the work's pace.
    pub skipped: u64,
    /// Bytes of the inputs finished (as read from disk).
    pub bytes: u64,
}

/// The display, on its own thread on root; `Progress::quiet()` elsewhere.
pub struct Progress {
    local: Arc<AtomicU64>,
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    /// No display (ranks other than root, `--progress none`).
    pub fn quiet() -> Progress {
        Progress {
            local: Arc::new(AtomicU64::new(0)),
            stop: Arc::new((Mutex::new(false), Condvar::new())),
            thread: None,
        }
    }

    /// A bar on a terminal (or `--progress bar`), else a log line every
    /// `every` and one at the end.
    pub fn start(choice: ProgressChoice, every: Duration, scope: Scope) -> Progress {
        let bar = match choice {
            ProgressChoice::None => return Progress::quiet(),
            ProgressChoice::Bar => true,
            ProgressChoice::Auto => std::io::stderr().is_terminal(),
            ProgressChoice::Log => false,
        };
        let mut p = Progress::quiet();
        let (local, stop) = (p.local.clone(), p.stop.clone());
        let view = if bar {
            View::bar(scope.total)
        } else {
            View::Log
        };
        let every = if bar { BAR_EVERY } else { every };
        p.thread = std::thread::Builder::new()
            .name("nismooth-progress".into())
            .spawn(move || show(view, every, scope, &local, &stop))
            .ok();
        p
    }

    /// One of root's own images finished.
    pub fn tick(&self) {
        self.local.fetch_add(1, Ordering::Relaxed);
    }

    /// The last figures shown (a log line, or the bar cleared); waits for it.
    pub fn finish(&mut self) {
        let (lock, cv) = &*self.stop;
        if let Ok(mut s) = lock.lock() {
            *s = true;
        }
        cv.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

enum View {
    Bar(ProgressBar),
    Log,
}

impl View {
    fn bar(total: usize) -> View {
        let bar = ProgressBar::new(total as u64);
        bar.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} images  {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        View::Bar(bar)
    }
}

/// The display thread: counts and shows every `every` until told to stop,
/// then once more.
fn show(
    view: View,
    every: Duration,
    scope: Scope,
    local: &AtomicU64,
    stop: &(Mutex<bool>, Condvar),
) {
    let started = Instant::now();
    let mut journals = Journals::new(&scope.outdir, &scope.run);
    let (lock, cv) = stop;
    loop {
        let stopping = match lock.lock() {
            Ok(g) => cv
                .wait_timeout_while(g, every, |s| !*s)
                .map(|(g, _)| *g)
                .unwrap_or(true),
            Err(_) => true,
        };
        let mut f = journals.read();
        f.done = f.done.max(local.load(Ordering::Relaxed));
        let line = describe(f, scope.total, started.elapsed());
        match &view {
            View::Bar(b) => {
                b.set_position(f.done);
                b.set_message(line.rates);
            }
            View::Log => log::info!("{}", line.whole()),
        }
        if stopping {
            if let View::Bar(b) = &view {
                b.finish_and_clear();
            }
            return;
        }
    }
}

/// One progress line, in parts: the bar shows the counts itself.
pub struct Text {
    pub counts: String,
    pub rates: String,
}

impl Text {
    fn whole(&self) -> String {
        format!("{}, {}", self.counts, self.rates)
    }
}

/// `done/total images (P%), F failed` and `R images/s, M MB/s, elapsed
/// H:MM:SS, ETA H:MM:SS` (the ETA from the rate so far; "?" before any image
/// is finished).
pub fn describe(f: Figures, total: usize, elapsed: Duration) -> Text {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let worked = f.done.saturating_sub(f.skipped);
    let rate = worked as f64 / secs;
    let pct = if total == 0 {
        100.0
    } else {
        100.0 * f.done as f64 / total as f64
    };
    let left = (total as u64).saturating_sub(f.done);
    let eta = if left == 0 {
        clock(0.0)
    } else if worked == 0 {
        "?".to_string()
    } else {
        clock(left as f64 / rate)
    };
    let failed = if f.failed > 0 {
        format!(", {} failed", f.failed)
    } else {
        String::new()
    };
    Text {
        counts: format!("progress: {}/{total} images ({pct:.0}%){failed}", f.done),
        rates: format!(
            "{rate:.1} images/s, {:.1} MB/s, elapsed {}, ETA {eta}",
            f.bytes as f64 / 1e6 / secs,
            clock(secs)
        ),
    }
}

/// Seconds as H:MM:SS.
fn clock(secs: f64) -> String {
    let s = secs.round() as u64;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// The run's journals, read a little further each time: each file's offset
/// and its unfinished last line are kept.
struct Journals {
    dir: PathBuf,
    prefix: String,
    files: HashMap<PathBuf, (u64, Vec<u8>)>,
    seen: Figures,
}

impl Journals {
    fn new(outdir: &Path, run: &str) -> Journals {
        Journals {
            dir: outdir.join(STATE_DIR),
            prefix: format!("journal-{run}-rank"),
            files: HashMap::new(),
            seen: Figures::default(),
        }
    }

    /// Everything the journals hold now.
    fn read(&mut self) -> Figures {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return self.seen;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(&self.prefix) && name.ends_with(".jsonl") {
                let (offset, partial) = self.files.entry(e.path()).or_default();
                read_more(&e.path(), offset, partial, &mut self.seen);
            }
        }
        self.seen
    }
}

/// Counts the complete lines past `offset` into `f`.
fn read_more(path: &Path, offset: &mut u64, partial: &mut Vec<u8>, f: &mut Figures) {
    let Ok(mut file) = std::fs::File::open(path) else {
        return;
    };
    if file.seek(SeekFrom::Start(*offset)).is_err() {
        return;
    }
    let mut fresh = Vec::new();
    if file.read_to_end(&mut fresh).is_err() {
        return;
    }
    *offset += fresh.len() as u64;
    partial.extend_from_slice(&fresh);
    let Some(end) = partial.iter().rposition(|&b| b == b'\n') else {
        return;
    };
    for line in partial[..end].split(|&b| b == b'\n') {
        if let Ok(Line::Image { record, .. }) = serde_json::from_slice::<Line>(line) {
            // A drain's records of images it never made are not progress.
            if record.status.left_undone() {
                continue;
            }
            f.done += 1;
            f.bytes += record.bytes_in;
            f.failed += u64::from(record.status == Status::Failed);
            f.skipped += u64::from(record.status == Status::Skipped);
        }
    }
    partial.drain(..=end);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn image(run: &str, status: &str, bytes_in: u64) -> String {
        let record = serde_json::json!({
            "index": 0, "input": "a.nii", "output": "a.nii", "rank": 0, "voxels": 1,
            "shape": [1], "dtype_in": null, "dtype_out": null, "bytes_in": bytes_in,
            "bytes_out": 0, "read_s": 0.0, "filter_s": 0.0, "write_s": 0.0,
            "status": status, "error": null,
        });
        serde_json::json!({"kind": "image", "run": run, "stamp": null, "record": record})
            .to_string()
    }

    #[test]
    fn every_ranks_journal_of_this_run_is_counted_as_it_grows() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join(STATE_DIR);
        std::fs::create_dir_all(&state).unwrap();
        let write = |name: &str, text: &str| {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(state.join(name))
                .unwrap();
            f.write_all(text.as_bytes()).unwrap();
        };
        write(
            "journal-R-rank0.jsonl",
            &format!("{}\n{}\n", image("R", "ok", 10), image("R", "failed", 5)),
        );
        let third = image("R", "ok", 100);
        let (head, tail) = third.split_at(20);
        write("journal-R-rank1.jsonl", head);
        write(
            "journal-OTHER-rank0.jsonl",
            &format!("{}\n", image("OTHER", "ok", 1000)),
        );
        let mut j = Journals::new(dir.path(), "R");
        let figures = |done, failed, bytes| Figures {
            done,
            failed,
            bytes,
            skipped: 0,
        };
        assert_eq!(j.read(), figures(2, 1, 15));
        write("journal-R-rank1.jsonl", &format!("{tail}\n"));
        let whole = figures(3, 1, 115);
        assert_eq!(j.read(), whole);
        assert_eq!(j.read(), whole, "lines are counted once");
    }

    #[test]
    fn the_line_says_counts_rates_and_eta() {
        let f = Figures {
            done: 30,
            failed: 2,
            bytes: 60_000_000,
            skipped: 0,
        };
        let l = describe(f, 120, Duration::from_secs(60));
        assert_eq!(l.counts, "progress: 30/120 images (25%), 2 failed");
        assert_eq!(
            l.rates,
            "0.5 images/s, 1.0 MB/s, elapsed 0:01:00, ETA 0:03:00"
        );
        // After --resume: 90 of 100 skipped, 5 smoothed in 10 s. The rate
        // and the ETA are the smoothing's (0.5/s, 10 s for the last 5).
        let resumed = Figures {
            done: 95,
            failed: 0,
            bytes: 0,
            skipped: 90,
        };
        let r = describe(resumed, 100, Duration::from_secs(10));
        assert!(
            r.rates.starts_with("0.5 images/s") && r.rates.ends_with("ETA 0:00:10"),
            "{}",
            r.rates
        );
        let none = describe(Figures::default(), 10, Duration::from_secs(5));
        assert!(none.rates.ends_with("ETA ?"), "{}", none.rates);
        let all = describe(Figures { done: 10, ..f }, 10, Duration::from_secs(3725));
        assert!(
            all.rates.ends_with("elapsed 1:02:05, ETA 0:00:00"),
            "{}",
            all.rates
        );
    }
}

//! The journal's writer and `--resume`'s reader: one JSON line per
//! finished image, per rank, appended the moment the image's output is
//! renamed into place (the format is `report::journal`).
//!
//! Reports are gathered to root only at the end, so a run killed halfway
//! (a node lost, `scancel`, the time limit) would lose every timing record.
//! The journal keeps them on disk, beside the outputs, in
//! `OUTDIR/.nismooth/journal-RUN-rankR.jsonl`. It is also what `--resume`
//! trusts, and nothing else: each run's first line records the settings
//! that determine an output (every filter and format option), each image's
//! line the output's size and modification time as written and the input's
//! identity (size, mtime, a CRC of its header). An existing output is
//! skipped only when a journal line vouches for it on all three counts; an
//! output the journals do not vouch for is made again, and outputs made
//! with other settings are refused with the setting named.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::UsageError;
use crate::io::InputId;
use crate::plan::Task;
use crate::report::{ImageRecord, Status};

use crate::plan::STATE_DIR as DIR;
use crate::report::journal::{path, read_all, read_file, Line, Stamp};

/// What the pipeline needs for durability: the run's id (it names this
/// process's journal) and, with `--resume`, what the journals already hold.
pub struct Durable {
    pub run: String,
    pub resume: Option<Index>,
    /// What determines an output (`RunConfig::output_settings`).
    pub settings: serde_json::Value,
    /// The run's images and ranks, for its journals' start lines.
    pub images: usize,
    pub ranks: usize,
}

/// This process's journal file; a journal that cannot be opened is reported
/// once and the run goes on without it (it is a record, not the work).
pub struct Journal {
    file: Option<File>,
    run: String,
}

impl Journal {
    pub fn open(outdir: &Path, durable: &Durable, rank: usize) -> Journal {
        let (run, settings) = (durable.run.as_str(), &durable.settings);
        let p = path(outdir, run, rank);
        let opened = std::fs::create_dir_all(outdir.join(DIR))
            .and_then(|_| OpenOptions::new().create(true).append(true).open(&p));
        let mut journal = Journal {
            file: None,
            run: run.to_string(),
        };
        match opened {
            Ok(f) => {
                journal.file = Some(f);
                journal.append(&Line::Start {
                    run: run.to_string(),
                    rank,
                    pid: std::process::id(),
                    host: crate::metrics::hostname(),
                    unix: crate::metrics::unix_now(),
                    settings: Some(settings.clone()),
                    images: Some(durable.images),
                    ranks: Some(durable.ranks),
                    started: Some(crate::metrics::unix_now_f64()),
                });
            }
            Err(e) => log::warn!(
                "cannot open the journal {}: {e}; the run goes on without one",
                p.display()
            ),
        }
        journal
    }

    /// Appends a finished image. One `write` per line on an O_APPEND file,
    /// so a kill leaves at most one partial last line, which readers skip.
    pub fn record(&mut self, rec: &ImageRecord, output: &Path, input: Option<InputId>) {
        let stamp = (rec.status == Status::Ok)
            .then(|| Stamp::of(output))
            .flatten();
        self.append(&Line::Image {
            run: self.run.clone(),
            stamp,
            input,
            record: Box::new(rec.clone()),
        });
    }

    /// Appends this process's last line: its share done or drained.
    pub fn end(outdir: &Path, run: &str, rank: usize, records: &[ImageRecord]) {
        let Ok(file) = OpenOptions::new()
            .append(true)
            .open(path(outdir, run, rank))
        else {
            return;
        };
        let mut journal = Journal {
            file: Some(file),
            run: run.to_string(),
        };
        journal.append(&Line::End {
            run: run.to_string(),
            rank,
            unix: crate::metrics::unix_now(),
            undone: records.iter().filter(|r| r.status.left_undone()).count(),
            failed: records
                .iter()
                .filter(|r| r.status == Status::Failed)
                .count(),
        });
    }

    fn append(&mut self, line: &Line) {
        let Some(f) = self.file.as_mut() else { return };
        let Ok(mut text) = serde_json::to_vec(line) else {
            return;
        };
        text.push(b'\n');
        if let Err(e) = f.write_all(&text) {
            log::warn!(
                "cannot append to the journal: {e}; no more journal lines from this process"
            );
            self.file = None;
        }
    }
}

/// What the journals say of each output they vouch for.
struct Entry {
    stamp: Stamp,
    run: String,
    input: Option<InputId>,
}

/// An output's key in the index: its folder resolved (runs may spell
/// OUTDIR differently, and a tree's outputs share file names) and its name.
/// `folders` caches the resolutions.
fn output_key(output: &Path, folders: &mut HashMap<PathBuf, PathBuf>) -> PathBuf {
    let (Some(folder), Some(name)) = (output.parent(), output.file_name()) else {
        return output.to_path_buf();
    };
    let resolved = folders
        .entry(folder.to_path_buf())
        .or_insert_with(|| std::fs::canonicalize(folder).unwrap_or_else(|_| folder.to_path_buf()));
    resolved.join(name)
}

/// Outputs that journals say were written whole (resolved path → the
/// latest line), and each run's settings.
pub struct Index {
    outputs: HashMap<PathBuf, Entry>,
    settings: HashMap<String, serde_json::Value>,
}

impl Index {
    pub fn load(outdir: &Path) -> Index {
        let (mut outputs, mut settings) = (HashMap::new(), HashMap::new());
        let mut folders = HashMap::new();
        for line in read_all(outdir) {
            match line {
                Line::Start {
                    run,
                    settings: Some(s),
                    ..
                } => {
                    settings.insert(run, s);
                }
                Line::Image {
                    run,
                    stamp: Some(stamp),
                    input,
                    record,
                } => {
                    let key = output_key(Path::new(&record.output), &mut folders);
                    outputs.insert(key, Entry { stamp, run, input });
                }
                _ => {}
            }
        }
        Index { outputs, settings }
    }

    /// The journal entry that vouches for `task`'s output as it is on disk now.
    fn vouching(&self, task: &Task) -> Option<&Entry> {
        let stamp = Stamp::of(&task.output)?;
        let key = output_key(&task.output, &mut HashMap::new());
        self.outputs.get(&key).filter(|e| e.stamp == stamp)
    }

    /// Refuses `--resume` when outputs on disk were made with settings other
    /// than `now`'s, naming the first setting that differs.
    pub fn check_settings(
        &self,
        tasks: &[Task],
        now: &serde_json::Value,
        outdir: &Path,
    ) -> Result<(), UsageError> {
        let mut differing = tasks.iter().filter_map(|t| {
            let then = self.settings.get(&self.vouching(t)?.run)?;
            first_difference(then, now).map(|d| (t, d))
        });
        let Some((task, (key, then, asked))) = differing.next() else {
            return Ok(());
        };
        let more = differing.count();
        Err(UsageError::Resume(format!(
            "{} in {} was made with {key} {then}, and this run asks for {key} {asked}{}. \
             Run without --resume to remake the outputs, or write them to another folder",
            task.output
                .file_name()
                .unwrap_or_default()
                .to_string_lossy(),
            outdir.display(),
            if more > 0 {
                format!(" ({more} other output(s) too)")
            } else {
                String::new()
            }
        )))
    }
}

/// The first setting whose value differs: (name, then, now).
fn first_difference(
    then: &serde_json::Value,
    now: &serde_json::Value,
) -> Option<(String, String, String)> {
    let (then, now) = (then.as_object()?, now.as_object()?);
    now.iter().find_map(|(k, v)| {
        let old = then.get(k).unwrap_or(&serde_json::Value::Null);
        (old != v).then(|| (k.clone(), old.to_string(), v.to_string()))
    })
}

/// Whether `task`'s output may be skipped: a journal line vouches for the
/// output as it is now (size and mtime), for the run's settings, and for the
/// input as it is now. Settings that differ were refused when planning.
pub fn complete(task: &Task, index: &Index, settings: &serde_json::Value) -> bool {
    let Some(entry) = index.vouching(task) else {
        return false;
    };
    let same_settings = index.settings.get(&entry.run) == Some(settings);
    same_settings && entry.input.is_some() && entry.input == crate::io::input_id(&task.input).ok()
}

/// Journals of this many most recent runs stay as they were written.
pub const KEEP_RUNS: usize = 4;

/// The folded journal: what older runs' journals still vouch for. Its name
/// sorts before every run's (`journal-UNIX-PID-rankR`), so any later line
/// about the same output overrides it, as lines of later runs always do.
const FOLDED: &str = "journal-0-folded.jsonl";

/// Folds the journals of all but the `keep` most recent runs into one file
/// holding, for each output, the last line that vouches for it (and the
/// settings of the runs those lines name), and removes them: a folder that
/// many runs wrote keeps a few journal files, not one per run and rank.
/// Call only while holding the whole folder's lock (no other run writes a
/// journal here). Returns how many files it folded.
pub fn fold_old(outdir: &Path, keep: usize) -> usize {
    let dir = outdir.join(DIR);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return 0;
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    let run_of = |p: &Path| {
        let name = p.file_name().unwrap_or_default().to_string_lossy();
        name.rsplit_once("-rank").map(|(run, _)| run.to_string())
    };
    let mut runs: Vec<String> = files.iter().filter_map(|p| run_of(p)).collect();
    runs.dedup();
    let old: Vec<&PathBuf> = match runs.len().checked_sub(keep) {
        Some(n) if n > 0 => {
            let cut = &runs[n - 1];
            files
                .iter()
                .filter(|p| run_of(p).is_some_and(|r| &r <= cut))
                .collect()
        }
        _ => return 0,
    };
    let folded_path = dir.join(FOLDED);
    let mut sources: Vec<&Path> = old.iter().map(|p| p.as_path()).collect();
    if folded_path.is_file() {
        sources.insert(0, &folded_path);
    }
    // Only what was read goes: a journal that could not be read (another
    // user's, a stale NFS handle) stays, and an unreadable folded file
    // stops the fold (rewriting it would lose what it holds).
    let read: Vec<(&Path, Vec<Line>)> = sources
        .iter()
        .filter_map(|p| read_file(p).ok().map(|lines| (*p, lines)))
        .collect();
    if folded_path.is_file() && read.first().map(|(p, _)| *p) != Some(folded_path.as_path()) {
        return 0;
    }
    let text = folded_text(read.iter().flat_map(|(_, lines)| lines));
    if crate::io::write_file_atomic(&folded_path, text.as_bytes()).is_err() {
        return 0;
    }
    read.iter()
        .filter(|(p, _)| *p != folded_path.as_path() && std::fs::remove_file(p).is_ok())
        .count()
}

/// The lines that still vouch for an output, last one per output, after
/// the Start lines of the runs they name; in the order of each output's
/// last line, so that what `Index::load` keeps (the last line per output,
/// however the folder was spelled) is what it kept before the fold.
fn folded_text<'a>(lines: impl Iterator<Item = &'a Line>) -> String {
    let mut starts: HashMap<&str, &Line> = HashMap::new();
    let mut latest: HashMap<&str, (usize, &Line)> = HashMap::new();
    for (seq, line) in lines.enumerate() {
        match line {
            Line::Start {
                run,
                settings: Some(_),
                ..
            } => {
                starts.insert(run, line);
            }
            Line::Image {
                stamp: Some(_),
                record,
                ..
            } => {
                latest.insert(&record.output, (seq, line));
            }
            _ => {}
        }
    }
    let mut kept: Vec<(usize, &Line)> = latest.into_values().collect();
    kept.sort_by_key(|&(seq, _)| seq);
    let mut runs: Vec<&str> = kept
        .iter()
        .filter_map(|(_, l)| match l {
            Line::Image { run, .. } => Some(run.as_str()),
            _ => None,
        })
        .collect();
    runs.sort();
    runs.dedup();
    let lines = runs
        .into_iter()
        .filter_map(|run| starts.get(run).copied())
        .chain(kept.into_iter().map(|(_, l)| l));
    let mut out = String::new();
    for line in lines {
        if let Ok(text) = serde_json::to_string(line) {
            out.push_str(&text);
            out.push('\n');
        }
    }
    out
}

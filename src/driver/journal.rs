//! The journal: one JSON line per finished image, per rank, appended the
//! moment the image's output is renamed into place.
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
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};

use crate::error::UsageError;
use crate::io::InputId;
use crate::plan::Task;
use crate::report::{ImageRecord, Status};

/// The folder inside OUTDIR that holds the journals (and the lock).
pub use crate::plan::STATE_DIR as DIR;

/// What the pipeline needs for durability: the run's id (it names this
/// process's journal) and, with `--resume`, what the journals already hold.
pub struct Durable {
    pub run: String,
    pub resume: Option<Index>,
    /// What determines an output (`RunConfig::output_settings`).
    pub settings: serde_json::Value,
}

/// One line of a journal.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Line {
    /// The first line a process writes: who it is, so that a person (or a
    /// test) can tell which process wrote what, and kill it.
    Start {
        run: String,
        rank: usize,
        pid: u32,
        host: String,
        unix: u64,
        /// The settings that determine every output of this run (absent in
        /// journals of older versions, whose outputs `--resume` then remakes).
        #[serde(default)]
        settings: Option<serde_json::Value>,
    },
    /// A finished image (written, failed or skipped) and, when written, the
    /// stamp of its output.
    Image {
        run: String,
        stamp: Option<Stamp>,
        /// The input as it was read.
        #[serde(default)]
        input: Option<InputId>,
        record: Box<ImageRecord>,
    },
}

/// Size and modification time of an output as nismooth left it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    pub bytes: u64,
    pub mtime_ns: u64,
}

impl Stamp {
    /// The stamp of a regular file (not through a symlink); None otherwise.
    pub fn of(path: &Path) -> Option<Stamp> {
        let m = std::fs::symlink_metadata(path).ok()?;
        if !m.is_file() {
            return None;
        }
        let mtime = m.modified().ok()?.duration_since(UNIX_EPOCH).ok()?;
        Some(Stamp {
            bytes: m.len(),
            mtime_ns: mtime.as_nanos() as u64,
        })
    }
}

/// This process's journal file; a journal that cannot be opened is reported
/// once and the run goes on without it (it is a record, not the work).
pub struct Journal {
    file: Option<File>,
    run: String,
}

/// The journal file of `rank` in run `run`.
pub fn path(outdir: &Path, run: &str, rank: usize) -> PathBuf {
    outdir
        .join(DIR)
        .join(format!("journal-{run}-rank{rank}.jsonl"))
}

impl Journal {
    pub fn open(outdir: &Path, run: &str, rank: usize, settings: &serde_json::Value) -> Journal {
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

/// The lines of one journal file; a line that does not parse (the partial
/// last line of a killed writer) is skipped.
pub fn read_file(path: &Path) -> std::io::Result<Vec<Line>> {
    let f = File::open(path)?;
    Ok(BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str(&l).ok())
        .collect())
}

/// Every journal line in `outdir`'s journals (all runs, all ranks), in file
/// order; lines that do not parse (a partial last line) are skipped.
pub fn read_all(outdir: &Path) -> Vec<Line> {
    let Ok(dir) = std::fs::read_dir(outdir.join(DIR)) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = dir
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    files
        .iter()
        .filter_map(|p| read_file(p).ok())
        .flatten()
        .collect()
}

/// What the journals say of each output they vouch for.
struct Entry {
    stamp: Stamp,
    run: String,
    input: Option<InputId>,
}

/// Outputs that journals say were written whole (file name → the latest
/// line), and each run's settings.
pub struct Index {
    outputs: HashMap<String, Entry>,
    settings: HashMap<String, serde_json::Value>,
}

impl Index {
    pub fn load(outdir: &Path) -> Index {
        let (mut outputs, mut settings) = (HashMap::new(), HashMap::new());
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
                    if let Some(name) = Path::new(&record.output).file_name() {
                        let name = name.to_string_lossy().into_owned();
                        outputs.insert(name, Entry { stamp, run, input });
                    }
                }
                _ => {}
            }
        }
        Index { outputs, settings }
    }

    /// The journal entry that vouches for `task`'s output as it is on disk now.
    fn vouching(&self, task: &Task) -> Option<&Entry> {
        let stamp = Stamp::of(&task.output)?;
        let name = task.output.file_name()?.to_string_lossy();
        self.outputs.get(name.as_ref()).filter(|e| e.stamp == stamp)
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

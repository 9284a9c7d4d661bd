//! The journal: one JSON line per finished image, per rank, appended the
//! moment the image's output is renamed into place.
//!
//! Reports are gathered to root only at the end, so a run killed halfway
//! (a node lost, `scancel`, the time limit) would lose every timing record.
//! The journal keeps them on disk, beside the outputs, in
//! `OUTDIR/.nismooth/journal-RUN-rankR.jsonl`. It also lets `--resume` trust
//! an existing output without reading it again: a journal line records the
//! output's size and modification time as written, and an output whose
//! stamp still matches is the one nismooth wrote whole. Any other existing
//! output is verified by reading it completely (gzip CRC included) before it
//! is skipped.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};

use crate::plan::Task;
use crate::report::{ImageRecord, Status};

/// The folder inside OUTDIR that holds the journals.
pub const DIR: &str = ".nismooth";

/// What the pipeline needs for durability: the run's id (it names this
/// process's journal) and, with `--resume`, what the journals already hold.
pub struct Durable {
    pub run: String,
    pub resume: Option<Index>,
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
    },
    /// A finished image (written, failed or skipped) and, when written, the
    /// stamp of its output.
    Image {
        run: String,
        stamp: Option<Stamp>,
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
    pub fn open(outdir: &Path, run: &str, rank: usize) -> Journal {
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
                    host: super::metrics::hostname(),
                    unix: std::time::SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0),
                });
            }
            Err(e) => log::warn!(
                "cannot open the journal {}: {e}; the run goes on without one",
                p.display()
            ),
        }
        journal
    }

    /// A journal that writes nothing (unit tests, `bench-filter`).
    pub fn disabled() -> Journal {
        Journal {
            file: None,
            run: String::new(),
        }
    }

    /// Appends a finished image. One `write` per line on an O_APPEND file,
    /// so a kill leaves at most one partial last line, which readers skip.
    pub fn record(&mut self, rec: &ImageRecord, output: &Path) {
        let stamp = (rec.status == Status::Ok)
            .then(|| Stamp::of(output))
            .flatten();
        self.append(&Line::Image {
            run: self.run.clone(),
            stamp,
            record: Box::new(rec.clone()),
        });
    }

    fn append(&mut self, line: &Line) {
        let Some(f) = self.file.as_mut() else { return };
        let mut text = serde_json::to_vec(line).expect("journal line serialises");
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

/// Outputs that journals say were written whole: file name → stamp.
pub struct Index(HashMap<String, Stamp>);

impl Index {
    pub fn load(outdir: &Path) -> Index {
        let mut map = HashMap::new();
        for line in read_all(outdir) {
            if let Line::Image {
                stamp: Some(stamp),
                record,
                ..
            } = line
            {
                if let Some(name) = Path::new(&record.output).file_name() {
                    map.insert(name.to_string_lossy().into_owned(), stamp);
                }
            }
        }
        Index(map)
    }
}

/// How `--resume` knows that an output is complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Complete {
    /// A journal line holds the output's current size and mtime.
    Journal,
    /// No journal line matched: the output was read back in full (header,
    /// every voxel, gzip CRC) and has the input's shape.
    Verified,
}

impl Complete {
    pub fn describe(self) -> &'static str {
        match self {
            Complete::Journal => "output complete (journal)",
            Complete::Verified => "output complete (verified by reading it)",
        }
    }
}

/// Whether `task`'s output exists and is complete; None if it must be made.
pub fn complete(task: &Task, index: &Index) -> Option<Complete> {
    let stamp = Stamp::of(&task.output)?;
    let name = task.output.file_name()?.to_string_lossy();
    if index.0.get(name.as_ref()) == Some(&stamp) {
        return Some(Complete::Journal);
    }
    let want = crate::io::read_header_info(&task.input).ok()?;
    let got = crate::io::read_image(&task.output).ok()?;
    (got.shape == want.shape).then_some(Complete::Verified)
}

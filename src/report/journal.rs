//! The journal's format: one JSON line per finished image, per rank, in
//! `OUTDIR/.nismooth/journal-RUN-rankR.jsonl`. A journal is the report
//! written an image at a time, so that a run killed halfway keeps its
//! records: the driver appends to it (`driver::journal`), `--resume` reads
//! what it vouches for, and `report merge` turns it back into a report.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ImageRecord;
use crate::io::InputId;
use crate::plan::STATE_DIR as DIR;

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
        Some(Stamp {
            bytes: m.len(),
            mtime_ns: crate::io::mtime_ns(&m)?,
        })
    }
}

/// The journal file of `rank` in run `run`.
pub fn path(outdir: &Path, run: &str, rank: usize) -> PathBuf {
    outdir
        .join(DIR)
        .join(format!("journal-{run}-rank{rank}.jsonl"))
}

/// The lines of one journal file; a line that does not parse (the partial
/// last line of a killed writer) is skipped.
pub fn read_file(path: &Path) -> std::io::Result<Vec<Line>> {
    let f = crate::io::open_regular_file(path)?;
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

//! The journal's format: one JSON line per finished image, per rank, in
//! `OUTDIR/.nismooth/journal-RUN-rankR.jsonl`. A journal is the report
//! written an image at a time, so that a run killed halfway keeps its
//! records: the driver appends to it (`driver::journal`), `--resume` reads
//! what it vouches for, and `report merge` turns it back into a report.

use std::io::{BufRead, BufReader, Read};
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
        /// The run's images and ranks (absent in older journals): what
        /// `nismooth status` counts against.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        images: Option<usize>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ranks: Option<usize>,
        /// `unix` to the nanosecond, for rates over short runs.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        started: Option<f64>,
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
    /// The last line a process writes, once its share is done or drained:
    /// a rank with a start line and none of these was killed, or is still
    /// at work. Older versions wrote none (their readers skip it).
    End {
        run: String,
        rank: usize,
        unix: u64,
        /// Images of this rank's share left for `--resume` (a drain, the deadline).
        undone: usize,
        failed: usize,
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
    let mut r = BufReader::new(crate::io::open_regular_file(path)?);
    let mut lines = Vec::new();
    let mut buf = Vec::new();
    while let Some(whole) = bounded_line(&mut r, &mut buf)? {
        if let Some(line) = whole.then(|| serde_json::from_slice(&buf).ok()).flatten() {
            lines.push(line);
        }
    }
    Ok(lines)
}

/// The whole lines `path` gained after byte `offset`, which moves past
/// them; a partial last line (a writer mid-append) waits for the next call.
/// Lines longer than `MAX_LINE` are skipped as they are read, never held.
pub fn read_new(path: &Path, offset: &mut u64) -> std::io::Result<Vec<Line>> {
    use std::io::{Seek, SeekFrom};
    let mut file = crate::io::open_regular_file(path)?;
    file.seek(SeekFrom::Start(*offset))?;
    let mut r = BufReader::new(file);
    let (mut lines, mut buf) = (Vec::new(), Vec::new());
    loop {
        buf.clear();
        let n = r.by_ref().take(MAX_LINE + 1).read_until(b'\n', &mut buf)? as u64;
        if buf.last() == Some(&b'\n') {
            *offset += n;
            lines.extend(serde_json::from_slice(&buf[..buf.len() - 1]).ok());
        } else if n > MAX_LINE {
            // Too long to be a line of ours: skip to its end, if it has one.
            let mut rest = n;
            loop {
                let chunk = r.fill_buf()?;
                if chunk.is_empty() {
                    return Ok(lines);
                }
                match chunk.iter().position(|&b| b == b'\n') {
                    Some(i) => {
                        r.consume(i + 1);
                        *offset += rest + i as u64 + 1;
                        break;
                    }
                    None => {
                        let len = chunk.len();
                        rest += len as u64;
                        r.consume(len);
                    }
                }
            }
        } else {
            return Ok(lines);
        }
    }
}

/// The longest journal line read: a record with its paths is a few KiB.
/// A longer one (a file of zeros, a planted line of gigabytes) is skipped
/// as it is read, never held: read whole, it aborted a run's allocation.
const MAX_LINE: u64 = 1 << 20;

/// The next line of `r` into `buf` (without its new line): `Some(true)`,
/// or `Some(false)` for a line longer than `MAX_LINE` (skipped to its end);
/// `None` at the end of the file.
fn bounded_line(r: &mut impl BufRead, buf: &mut Vec<u8>) -> std::io::Result<Option<bool>> {
    buf.clear();
    let n = r.by_ref().take(MAX_LINE + 1).read_until(b'\n', buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        return Ok(Some(true));
    }
    if (buf.len() as u64) <= MAX_LINE {
        return Ok(Some(true)); // the last line, without a new line
    }
    loop {
        let chunk = r.fill_buf()?;
        if chunk.is_empty() {
            return Ok(Some(false));
        }
        match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => {
                r.consume(i + 1);
                return Ok(Some(false));
            }
            None => {
                let len = chunk.len();
                r.consume(len);
            }
        }
    }
}

/// The outputs `outdir`'s journals vouch for: each written image's file
/// name with the size and modification time it was left with.
pub fn written(outdir: &Path) -> std::collections::HashSet<crate::plan::Written> {
    read_all(outdir)
        .into_iter()
        .filter_map(|line| match line {
            Line::Image {
                stamp: Some(stamp),
                record,
                ..
            } => Some(crate::plan::Written {
                name: Path::new(&record.output).file_name()?.to_os_string(),
                bytes: stamp.bytes,
                mtime_ns: stamp.mtime_ns,
            }),
            _ => None,
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A line of gigabytes (a journal truncated up to 6 GB of zeros) is
    /// skipped, not held: the lines around it still count.
    #[test]
    fn a_huge_line_is_skipped_as_it_is_read() {
        let start = r#"{"kind":"start","run":"1","rank":0,"pid":1,"host":"h","unix":1}"#;
        let mut text = format!("{start}\n").into_bytes();
        text.extend(std::iter::repeat_n(0u8, 3 << 20));
        text.push(b'\n');
        text.extend(start.as_bytes());
        let mut r = BufReader::new(&text[..]);
        let mut buf = Vec::new();
        let mut seen = Vec::new();
        while let Some(whole) = bounded_line(&mut r, &mut buf).unwrap() {
            seen.push((whole, buf.len()));
            assert!(buf.len() as u64 <= MAX_LINE + 1);
        }
        assert_eq!(
            seen,
            [
                (true, start.len()),
                (false, MAX_LINE as usize + 1),
                (true, start.len())
            ]
        );
        assert!(
            serde_json::from_str::<Line>(start).is_ok(),
            "the sample is a real line"
        );
    }
}

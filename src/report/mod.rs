//! What a run measured: per-image records, per-process totals, and a summary.
//!
//! The `Report` is the one data structure every exporter reads; a new format
//! is one file implementing `Exporter`. The schema is versioned and described
//! in docs/report-schema.md.

mod csv;
pub mod job;
pub mod journal;
mod json;
pub mod merge;
pub mod seff;
pub mod status;
mod table;
mod trace;

pub use self::csv::Csv;
pub use self::json::Json;
pub use self::table::Table;
pub use self::trace::Trace;

use serde::{Deserialize, Serialize};

pub const SCHEMA: &str = "nismooth-report";
pub const SCHEMA_VERSION: u32 = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Failed,
    Skipped,
    /// A drain or the deadline came first: not read at all.
    NotStarted,
    /// Begun, then abandoned (a second signal, or the grace ran out); no
    /// output and no temp file.
    Interrupted,
}

impl Status {
    /// Whether the image was smoothed (or tried and failed) in this run.
    pub fn did_work(self) -> bool {
        matches!(self, Status::Ok | Status::Failed)
    }

    /// Whether `--resume` has something left to do for the image.
    pub fn left_undone(self) -> bool {
        matches!(self, Status::NotStarted | Status::Interrupted)
    }
}

/// Why a run stopped before its last image, and what a deadline left unused.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Stopped {
    /// "SIGTERM", "another rank", "deadline", …; `None` when nothing stopped it.
    pub reason: Option<String>,
    /// The deadline the run kept (Unix seconds), and where it came from.
    pub deadline_unix: Option<f64>,
    pub deadline_from: Option<String>,
    /// Seconds between the run's end and its deadline.
    pub unused_s: Option<f64>,
}

/// One image's journey through read → filter → write.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ImageRecord {
    pub index: usize,
    pub input: String,
    pub output: String,
    pub rank: usize,
    pub voxels: u64,
    pub shape: Vec<usize>,
    pub dtype_in: Option<String>,
    pub dtype_out: Option<String>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub read_s: f64,
    pub filter_s: f64,
    pub write_s: f64,
    /// When the image's read began and its write ended, in seconds since the
    /// process started. Stages of neighbouring images overlap, so these (not
    /// read + filter + write) say how long the process was working.
    #[serde(default)]
    pub started_s: f64,
    #[serde(default)]
    pub finished_s: f64,
    pub status: Status,
    pub error: Option<String>,
    /// Why a skipped image was skipped (e.g. "output complete (journal)").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// When each read, filter and write of the image (or of its parts)
    /// began and ended, on the clock every rank shares: what a timeline
    /// draws (`report --trace`). Empty in older reports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spans: Vec<Span>,
}

/// One stage's work on an image or one of its parts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Span {
    pub stage: Stage,
    /// The rank that did it (a shared image's parts go to several).
    pub rank: usize,
    /// Seconds since the epoch: ranks on several nodes share it as far as
    /// their clocks agree (NTP: well under a millisecond on a cluster).
    pub start: f64,
    pub end: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Read,
    Filter,
    Write,
}

impl ImageRecord {
    /// Adds a span of `stage` that began at `t` and ends now.
    pub fn span(&mut self, stage: Stage, t: std::time::Instant) {
        let end = crate::metrics::unix_now_f64();
        let start = end - t.elapsed().as_secs_f64();
        self.spans.push(Span {
            stage,
            rank: self.rank,
            start,
            end,
        });
    }
}

/// What one process (rank) did and what it cost.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ProcessTotals {
    pub host: String,
    pub rank: usize,
    /// Position among the ranks on the same node.
    #[serde(default)]
    pub node_rank: usize,
    pub threads: usize,
    /// The CPUs this process was given: its filter threads, or the
    /// allocation's share when larger (SLURM_CPUS_PER_TASK, else the node's
    /// cores over its ranks): what CPU efficiency is measured against, as
    /// seff measures against allocated CPUs. Reports before it: `threads`.
    #[serde(default)]
    pub cpus: usize,
    pub images: usize,
    pub failed: usize,
    /// Voxels of the images this process handled (what `balanced` evens out).
    #[serde(default)]
    pub voxels: u64,
    pub read_s: f64,
    pub filter_s: f64,
    pub write_s: f64,
    /// From the first image's read to the last image's write (the stages
    /// overlap, so this is less than read + filter + write).
    pub busy_s: f64,
    /// wall − busy: start-up, planning, waiting.
    pub idle_s: f64,
    pub wall_s: f64,
    pub cpu_user_s: f64,
    pub cpu_sys_s: f64,
    /// (user + sys) / (wall × cpus). Above 1 only where nothing holds the
    /// process to its CPUs: its reader and writer threads ran beside the
    /// filter threads on more CPUs than it was given.
    pub cpu_efficiency: f64,
    pub peak_rss_bytes: u64,
    /// This process's Slurm context (job, step, procid, localid, node), inside a job.
    #[serde(default)]
    pub slurm: Option<crate::slurm::SlurmContext>,
    /// What began this process's drain ("SIGTERM", "another rank"), if one did.
    #[serde(default)]
    pub stopped_by: Option<String>,
}

/// Totals over every process, in the terms of the summary table and the study's tables.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Summary {
    pub tasks: usize,
    pub ok: usize,
    pub failed: usize,
    pub skipped: usize,
    /// Left for `--resume`: never started, or abandoned in flight.
    #[serde(default)]
    pub not_started: usize,
    #[serde(default)]
    pub interrupted: usize,
    pub processes: usize,
    pub threads_per_process: usize,
    /// The slowest process's wall time.
    pub wall_s: f64,
    pub read_s: f64,
    pub filter_s: f64,
    pub write_s: f64,
    pub read_per_task_s: f64,
    pub filter_per_task_s: f64,
    pub write_per_task_s: f64,
    /// Wall time over the summed processing time (read+filter+write) per process:
    /// 1.0 means no overhead; below 1 means processes overlapped their work.
    pub wtime_over_ptime: f64,
    pub cpu_s: f64,
    pub cpu_efficiency: f64,
    pub peak_rss_bytes: u64,
    /// max / mean busy time over processes (1.0 = perfectly balanced).
    pub load_imbalance: f64,
    /// Summed busy time over (processes × the slowest wall): the share of the
    /// allocation's process-time spent reading, filtering and writing.
    #[serde(default)]
    pub parallel_efficiency: f64,
}

/// How the run was spread: communicator, schedule, ranks and threads.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ParallelInfo {
    pub comm: String,
    pub schedule: crate::plan::schedule::Schedule,
    pub ranks: usize,
    pub threads_per_rank: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub schema: String,
    pub schema_version: u32,
    pub nismooth_version: String,
    pub created_unix: u64,
    pub command: Vec<String>,
    /// The folder the run started in: its relative paths (inputs, outputs,
    /// OUTDIR) are relative to it (None in older reports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<std::path::PathBuf>,
    /// A merged report's runs, each where it started and what it was told
    /// (empty in a run's own report, which is its own origin): what the
    /// merged runs own stays guarded when the merge is merged again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub origins: Vec<Origin>,
    pub backend: String,
    pub config: serde_json::Value,
    /// What determines the outputs' bytes, as the run's journal records it
    /// (`RunConfig::output_settings`): what a merge of reports and journals
    /// compares (None in older reports, and in merges of them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<serde_json::Value>,
    #[serde(default)]
    pub parallel: Option<ParallelInfo>,
    /// Root's Slurm context, inside a job.
    #[serde(default)]
    pub slurm: Option<crate::slurm::SlurmContext>,
    /// The job-array task this report covers (its share of the list).
    #[serde(default)]
    pub array: Option<crate::plan::array::ArraySlot>,
    /// Set when a signal or a deadline stopped the run early, or a deadline was kept.
    #[serde(default)]
    pub stopped: Option<Stopped>,
    pub summary: Summary,
    pub processes: Vec<ProcessTotals>,
    pub images: Vec<ImageRecord>,
}

/// Where a run started and what it was told.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Origin {
    pub cwd: Option<std::path::PathBuf>,
    pub command: Vec<String>,
    /// Its OUTDIR, as the run named it.
    pub outdir: Option<String>,
}

impl Report {
    /// The runs this report covers: its origins when merged, else itself.
    pub fn origins(&self) -> Vec<Origin> {
        if !self.origins.is_empty() {
            return self.origins.clone();
        }
        vec![Origin {
            cwd: self.cwd.clone(),
            command: self.command.clone(),
            outdir: (self.config.get("outdir"))
                .and_then(|o| o.as_str())
                .map(String::from),
        }]
    }

    /// A report of this nismooth version over `processes` and `images`, its
    /// summary computed from them; parallel, Slurm and array facts are left
    /// for the caller to fill in.
    pub fn new(
        created_unix: u64,
        command: Vec<String>,
        backend: &str,
        config: serde_json::Value,
        processes: Vec<ProcessTotals>,
        images: Vec<ImageRecord>,
    ) -> Report {
        Report {
            schema: SCHEMA.into(),
            schema_version: SCHEMA_VERSION,
            nismooth_version: env!("CARGO_PKG_VERSION").into(),
            created_unix,
            command,
            cwd: std::env::current_dir().ok(),
            origins: Vec::new(),
            backend: backend.into(),
            config,
            settings: None,
            parallel: None,
            slurm: None,
            array: None,
            stopped: None,
            summary: Summary::from_parts(&processes, &images),
            processes,
            images,
        }
    }
}

impl Summary {
    pub fn from_parts(processes: &[ProcessTotals], images: &[ImageRecord]) -> Summary {
        let count = |s| images.iter().filter(|r| r.status == s).count();
        let ok = count(Status::Ok);
        let sum = |f: fn(&ImageRecord) -> f64| images.iter().map(f).sum::<f64>();
        let (read_s, filter_s, write_s) =
            (sum(|r| r.read_s), sum(|r| r.filter_s), sum(|r| r.write_s));
        let per = |v: f64| if ok > 0 { v / ok as f64 } else { 0.0 };
        let wall_s = processes.iter().map(|p| p.wall_s).fold(0.0, f64::max);
        let cpu_s: f64 = processes.iter().map(|p| p.cpu_user_s + p.cpu_sys_s).sum();
        let capacity: f64 = processes
            .iter()
            .map(|p| p.wall_s * p.cpus.max(p.threads) as f64)
            .sum();
        let busy: Vec<f64> = processes.iter().map(|p| p.busy_s).collect();
        let mean_busy = busy.iter().sum::<f64>() / busy.len().max(1) as f64;
        let max_busy = busy.iter().cloned().fold(0.0, f64::max);
        let ptime = (read_s + filter_s + write_s) / processes.len().max(1) as f64;
        Summary {
            tasks: images.len(),
            ok,
            failed: count(Status::Failed),
            skipped: count(Status::Skipped),
            not_started: count(Status::NotStarted),
            interrupted: count(Status::Interrupted),
            processes: processes.len(),
            threads_per_process: processes.first().map(|p| p.threads).unwrap_or(0),
            wall_s,
            read_s,
            filter_s,
            write_s,
            read_per_task_s: per(read_s),
            filter_per_task_s: per(filter_s),
            write_per_task_s: per(write_s),
            wtime_over_ptime: if ptime > 0.0 { wall_s / ptime } else { 0.0 },
            cpu_s,
            cpu_efficiency: if capacity > 0.0 {
                cpu_s / capacity
            } else {
                0.0
            },
            peak_rss_bytes: processes
                .iter()
                .map(|p| p.peak_rss_bytes)
                .max()
                .unwrap_or(0),
            load_imbalance: if mean_busy > 0.0 {
                max_busy / mean_busy
            } else {
                1.0
            },
            parallel_efficiency: if wall_s > 0.0 {
                busy.iter().sum::<f64>() / (wall_s * busy.len() as f64)
            } else {
                0.0
            },
        }
    }
}

/// One output format of a report.
/// `text` with its control characters (an ANSI escape in a file name, a
/// host name or an error) written out as `\u{1b}`, so that a terminal shows
/// them instead of obeying them; the text's own new lines and tabs stay.
pub fn printable(text: &str) -> String {
    escaped(text, |c| c == '\n' || c == '\t')
}

/// One value inside a line (a file name, an error, a host): every control
/// character escaped, new lines and carriage returns too (a name holding
/// `\n[… INFO] all good` would print a line that was never logged), and
/// the bidirectional overrides that reorder what a terminal shows.
pub fn printable_value(text: &str) -> String {
    escaped(text, |_| false)
}

fn escaped(text: &str, keep: impl Fn(char) -> bool) -> String {
    let hidden = |c: char| {
        c.is_control()
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if hidden(c) && !keep(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

pub trait Exporter {
    fn render(&self, report: &Report) -> Result<String, ExportError>;
}

/// Why a report could not be rendered or written.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("CSV: {0}")]
    Csv(#[from] ::csv::Error),
    #[error("CSV: {0}")]
    Text(#[from] std::string::FromUtf8Error),
    #[error("text: {0}")]
    Format(#[from] std::fmt::Error),
    #[error(transparent)]
    Write(#[from] crate::io::WriteError),
}

/// Renders `report` with `exporter` into `path`: atomically where it is a
/// regular file, written into where it is a device or a FIFO.
pub fn export_to(
    exporter: &dyn Exporter,
    report: &Report,
    path: &std::path::Path,
) -> Result<(), ExportError> {
    let text = exporter.render(report)?;
    crate::io::write_report_file(path, text.as_bytes())?;
    Ok(())
}

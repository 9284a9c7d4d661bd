//! A whole run across however many processes the communicator holds.
//!
//! Root plans (discovery and the refusals) and broadcasts the outcome, so a
//! usage error ends every rank with the same code instead of a hang; each
//! rank runs its share through the pipeline; the records and per-process
//! totals are gathered to root, which builds the report. No rank returns
//! between collectives: errors travel inside the payloads.

pub mod comm;
pub mod metrics;
pub mod pipeline;

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::config::RunConfig;
use crate::error::UsageError;
use crate::filter::Backend;
use crate::plan::{self, Task};
use crate::report::{ImageRecord, ProcessTotals, Report, Status, Summary, SCHEMA, SCHEMA_VERSION};
use comm::Comm;
use pipeline::Progress;

/// What root decides and every rank receives.
#[derive(Serialize, Deserialize)]
enum PlanMsg {
    Tasks(Vec<Task>),
    Refused(String),
}

/// What each rank sends back.
#[derive(Serialize, Deserialize)]
struct RankResult {
    totals: ProcessTotals,
    records: Vec<ImageRecord>,
}

/// The end of a run, on every rank.
pub struct Outcome {
    /// Failed images over all ranks (the same number on every rank).
    pub failed: u64,
    /// The full report, on root only.
    pub report: Option<Report>,
}

/// The images of `tasks` that `rank` of `size` processes (all of them for one process).
fn my_share(tasks: Vec<Task>, rank: usize, size: usize) -> Vec<Task> {
    // Round-robin until the schedules of the MPI driver arrive.
    tasks
        .into_iter()
        .filter(|t| t.index % size == rank)
        .collect()
}

pub fn run(
    cfg: &RunConfig,
    comm: &dyn Comm,
    backend: &mut dyn Backend,
    command: Vec<String>,
) -> Result<Outcome, UsageError> {
    let start = Instant::now();
    let plan = if comm.is_root() {
        let planned = plan::discover(&cfg.inputs, cfg.list.as_deref())
            .and_then(|inputs| plan::make_tasks(inputs, &cfg.outdir, cfg.format));
        let msg = match planned {
            Ok(tasks) => PlanMsg::Tasks(tasks),
            Err(e) => PlanMsg::Refused(e.to_string()),
        };
        serde_json::to_vec(&msg).expect("plan serialises")
    } else {
        Vec::new()
    };
    let tasks = match serde_json::from_slice(&comm.broadcast(plan)).expect("plan deserialises") {
        PlanMsg::Tasks(t) => t,
        PlanMsg::Refused(msg) => return Err(UsageError::BadOption(msg)),
    };
    let total_tasks = tasks.len();
    let mine = my_share(tasks, comm.rank(), comm.size());
    log::info!(
        "{}: rank {} of {} has {} of {} images, {} thread(s), backend {}",
        comm.describe(),
        comm.rank(),
        comm.size(),
        mine.len(),
        total_tasks,
        cfg.threads,
        backend.name()
    );

    let mut progress = if comm.is_root() {
        Progress::new(cfg.progress, mine.len())
    } else {
        Progress::Quiet
    };
    let records = pipeline::process(&mine, cfg, backend, comm.rank(), &mut progress);
    let totals = totals(&records, comm.rank(), cfg.threads, start);
    let failed_here = records
        .iter()
        .filter(|r| r.status == Status::Failed)
        .count() as u64;

    let payload = serde_json::to_vec(&RankResult { totals, records }).expect("records serialise");
    let gathered = comm.gather(payload);
    let failed = comm.sum_u64(failed_here);

    let report = gathered.map(|parts| {
        let mut processes = Vec::new();
        let mut images = Vec::new();
        for p in parts {
            let r: RankResult = serde_json::from_slice(&p).expect("rank result deserialises");
            processes.push(r.totals);
            images.extend(r.records);
        }
        images.sort_by_key(|r| r.index);
        build_report(cfg, backend.name(), command, processes, images)
    });
    Ok(Outcome { failed, report })
}

fn totals(records: &[ImageRecord], rank: usize, threads: usize, start: Instant) -> ProcessTotals {
    let sum = |f: fn(&ImageRecord) -> f64| records.iter().map(f).sum::<f64>();
    let (read_s, filter_s, write_s) = (sum(|r| r.read_s), sum(|r| r.filter_s), sum(|r| r.write_s));
    let wall_s = start.elapsed().as_secs_f64();
    let u = metrics::usage();
    let busy_s = read_s + filter_s + write_s;
    ProcessTotals {
        host: metrics::hostname(),
        rank,
        threads,
        images: records
            .iter()
            .filter(|r| r.status != Status::Skipped)
            .count(),
        failed: records
            .iter()
            .filter(|r| r.status == Status::Failed)
            .count(),
        read_s,
        filter_s,
        write_s,
        busy_s,
        idle_s: (wall_s - busy_s).max(0.0),
        wall_s,
        cpu_user_s: u.user_s,
        cpu_sys_s: u.sys_s,
        cpu_efficiency: (u.user_s + u.sys_s) / (wall_s * threads as f64).max(1e-9),
        peak_rss_bytes: u.peak_rss_bytes,
    }
}

fn build_report(
    cfg: &RunConfig,
    backend: &str,
    command: Vec<String>,
    processes: Vec<ProcessTotals>,
    images: Vec<ImageRecord>,
) -> Report {
    Report {
        schema: SCHEMA.into(),
        schema_version: SCHEMA_VERSION,
        nismooth_version: env!("CARGO_PKG_VERSION").into(),
        created_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        command,
        backend: backend.into(),
        config: serde_json::to_value(cfg).unwrap_or_default(),
        summary: Summary::from_parts(&processes, &images),
        processes,
        images,
    }
}

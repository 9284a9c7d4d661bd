//! A whole run across however many processes the communicator holds.
//!
//! Root plans (discovery, the refusals, each image's size from its header)
//! and broadcasts the task list, so a usage error ends every rank with the
//! same code instead of a hang. Root then partitions by the schedule and
//! scatters each rank its share (or, for `dynamic`, hands images out on
//! request). Each rank reads, filters and writes its own images; no voxel
//! passes through root. Records and per-process totals are gathered to root,
//! which builds the report; reductions give every rank the failure count, so
//! all exit with the same code. No rank returns between collectives: errors
//! travel inside the payloads.

pub mod comm;
mod dynamic;
mod handoff;
pub mod journal;
#[cfg(feature = "mpi")]
pub mod mpi;
pub mod pace;
pub mod pipeline;
pub mod progress;
mod split;
pub mod stop;

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::config::{RunConfig, Selection};
use crate::error::UsageError;
use crate::filter::Backend;
use crate::metrics;
use crate::plan::array;
use crate::plan::schedule::{self, Schedule};
use crate::plan::{self, Task};
use crate::report::{ImageRecord, ParallelInfo, ProcessTotals, Report, Status, Stopped};
use comm::{Comm, Single};
use progress::Progress;

/// What root decides and every rank receives.
#[derive(Serialize, Deserialize)]
enum PlanMsg {
    /// The images, and the run's id (it names the journals).
    Tasks {
        tasks: Vec<Task>,
        run: String,
        /// Root's deadline (Unix seconds): one for every rank.
        deadline: Option<f64>,
    },
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
    /// Images left for `--resume` (not started or interrupted) over all ranks.
    pub undone: u64,
    /// The slowest rank's wall time (the same on every rank).
    pub wall_s: f64,
    /// The full report, on root only.
    pub report: Option<Report>,
    /// Root's lock on OUTDIR, held until the caller has written the reports.
    pub lock: Option<plan::lock::Lock>,
}

/// What root decides before any rank starts.
struct Planned {
    tasks: Vec<Task>,
    costs: Vec<u64>,
    lock: plan::lock::Lock,
}

/// Discovery, every refusal, the lock on OUTDIR, `--resume`'s checks and
/// the costs the schedule needs: root's work before the broadcast.
fn plan_on_root(cfg: &RunConfig) -> Result<Planned, UsageError> {
    let inputs = cfg.selection.discover()?;
    if let Selection::Bids(query) = &cfg.selection {
        query.check_kernel_conflicts(&inputs, &cfg.outdir, &cfg.output_settings())?;
    }
    let (unit_of, units) = array::units(&inputs);
    if let Some(slot) = cfg.array {
        array::covers_every_unit(units, slot, cfg.array_chunk)?;
    }
    let reports: Vec<(&'static str, &std::path::Path)> = [
        ("--report", &cfg.report),
        ("--csv", &cfg.csv),
        ("--trace", &cfg.trace),
    ]
    .into_iter()
    .filter_map(|(flag, p)| p.as_deref().map(|p| (flag, p)))
    .collect();
    let guard = cfg.selection.guard(&cfg.outdir);
    let all = match &cfg.output_name {
        Some(name) => plan::file_task(inputs, &cfg.outdir, name, &reports, &guard)?,
        None => plan::make_tasks(inputs, &cfg.outdir, cfg.format, &reports, &guard)?,
    };
    let tasks = match cfg.array {
        Some(slot) => array::take_share(all, &unit_of, units, slot, cfg.array_chunk),
        None => all,
    };
    let lock = match &cfg.output_name {
        Some(name) => {
            // One-file runs hold only their file's lock, so many go on side
            // by side; one that finds the folder free takes its lock a
            // moment to fold the journals (a run per file left one each).
            if let Ok(_whole) = plan::lock::acquire(&cfg.outdir, None) {
                fold_journals(&cfg.outdir);
            }
            plan::lock::acquire_file(&cfg.outdir, &name.to_string_lossy())?
        }
        None => plan::lock::acquire(&cfg.outdir, cfg.array)?,
    };
    let below = match cfg.output_name {
        Some(_) => Vec::new(),
        // Each folder once: a list of 40 000 images has a few folders.
        None => tasks
            .iter()
            .filter_map(|t| t.output.parent())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect(),
    };
    plan::lock::check_nested(&cfg.outdir, below.into_iter())?;
    if cfg.array.is_none() && cfg.output_name.is_none() {
        // The whole folder's lock: no other run writes a journal here now.
        fold_journals(&cfg.outdir);
    }
    if !cfg.resume && !cfg.skip_existing {
        warn_of_replacing(&tasks, &cfg.outdir);
    }
    if cfg.resume {
        let index = journal::Index::load(&cfg.outdir);
        index.check_settings(&tasks, &cfg.output_settings(), &cfg.outdir)?;
        // The lock proves that no live run of this share writes here: every
        // temp file of these outputs is a dead run's.
        let removed = plan::remove_stale_temps(&tasks);
        if removed > 0 {
            log::info!("--resume: removed {removed} temp file(s) a killed run left");
        }
    }
    let request = crate::slurm::SlurmContext::from_env().and_then(|c| c.rank_memory_mib());
    let costs = if cfg.schedule.needs_costs() || request.is_some() {
        let sizes = plan::sizes(&tasks, cfg.threads.max(4));
        tell_the_memory_model(&sizes, cfg.readers, request);
        sizes.iter().map(|s| s.voxels).collect()
    } else {
        vec![0; tasks.len()]
    };
    Ok(Planned { tasks, costs, lock })
}

/// The memory model's figure per rank for the largest image, logged so that
/// a job killed for memory leaves a number behind (`report --job` reads it
/// from the job's log), and a warning when the job's request is below it.
fn tell_the_memory_model(sizes: &[plan::Size], readers: usize, request_mib: Option<f64>) {
    let Some(largest) = sizes.iter().map(|s| s.held_bytes).max().filter(|&b| b > 0) else {
        return;
    };
    let need = crate::resources::rank_request_bytes(largest, readers) as f64 / (1 << 20) as f64;
    log::info!(
        "memory: the model asks {need:.0} MiB per rank (largest image {:.1} MiB in memory, up to {} at once, + {} MiB)",
        largest as f64 / (1 << 20) as f64,
        crate::resources::pipeline_images(readers),
        crate::resources::RANK_BASE_BYTES >> 20
    );
    if let Some(asked) = request_mib.filter(|&asked| asked < need) {
        log::warn!(
            "memory: this job asked for {asked:.0} MiB per rank, below the model's {need:.0} MiB: it may be killed for memory"
        );
    }
}

/// Folds the journals of all but the most recent runs into one, under
/// the whole folder's lock (no other run writes a journal here now).
fn fold_journals(outdir: &std::path::Path) {
    let folded = journal::fold_old(outdir, journal::KEEP_RUNS);
    if folded > 0 {
        log::info!(
            "{folded} journal file(s) of older runs folded into one ({} most recent runs kept as written)",
            journal::KEEP_RUNS
        );
    }
}

/// Says, before anything is written, how many outputs a run will replace:
/// a second run into the same folder is most often a mistake or a resume.
fn warn_of_replacing(tasks: &[Task], outdir: &std::path::Path) {
    let there = tasks
        .iter()
        .filter(|t| crate::io::exists_nonempty(&t.output))
        .count();
    if there > 0 {
        log::warn!(
            "{there} of the {} outputs already exist in {} and will be replaced; --resume skips \
             those a journal says are complete (same settings, same input), --skip-existing every \
             one that exists",
            tasks.len(),
            outdir.display()
        );
    }
}

/// A test hook: `NISMOOTH_INJECT_PANIC=STAGE:RANK` panics on that rank at
/// that stage (`plan`, `gather`; `split`: a shared image's run written,
/// before root puts it in place), to prove that no rank is left waiting.
pub(crate) fn inject_panic(stage: &str, rank: usize) {
    if let Ok(v) = std::env::var("NISMOOTH_INJECT_PANIC") {
        if v == format!("{stage}:{rank}") {
            panic!("injected panic ({v})");
        }
    }
}

/// The communicator for this process: MPI when a launcher started us (and
/// the `mpi` feature is on), else a single process.
pub fn connect() -> Result<Box<dyn Comm>, UsageError> {
    #[cfg(feature = "mpi")]
    if mpi::launched() {
        let world = mpi::Mpi::init()
            .ok_or_else(|| UsageError::Launch("MPI was already initialised".into()))?;
        world.abort_world_on_panic();
        if !world.threading_ok() {
            log::warn!("the MPI library gave MPI_THREAD_SINGLE; nismooth calls MPI from one thread only, so it goes on");
        }
        return Ok(Box::new(world));
    }
    if let Some(n) = std::env::var("SLURM_STEP_NUM_TASKS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 1)
    {
        return Err(UsageError::Launch(format!(
            "srun started {n} tasks without an MPI launch (no PMIx): each would process every image. \
             Use `srun --mpi=pmix`, or a job array for independent tasks"
        )));
    }
    #[cfg(not(feature = "mpi"))]
    if let Some(n) = std::env::var("OMPI_COMM_WORLD_SIZE")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 1)
    {
        return Err(UsageError::Launch(format!(
            "started by an MPI launcher with {n} ranks, but this nismooth was built without MPI \
             (feature `mpi`): every copy would process every image. Rebuild with MPI, or run one process"
        )));
    }
    Ok(Box::new(Single))
}

/// The whole run on this rank, in its three phases: the plan shared (root
/// plans, every rank receives it), this rank's share processed, and every
/// rank's records gathered into root's report.
pub fn run(
    cfg: &RunConfig,
    comm: &dyn Comm,
    backend: &mut dyn Backend,
    command: Vec<String>,
) -> Result<Outcome, UsageError> {
    let start = metrics::process_start();
    let shared = share_plan(cfg, comm)?;
    let mut cfg = cfg.clone();
    cfg.stop.deadline_unix = shared.deadline;
    let cfg = &cfg;
    let durable = journal::Durable {
        run: shared.run.clone(),
        resume: cfg.resume.then(|| journal::Index::load(&cfg.outdir)),
        settings: cfg.output_settings(),
        images: shared.tasks.len(),
        ranks: comm.size(),
    };
    let mut progress = show_progress(&shared, cfg, comm, &durable);
    let records = process_my_share(&shared, cfg, comm, &durable, backend, &progress);
    journal::Journal::end(&cfg.outdir, &durable.run, comm.rank(), &records);
    stop::Watch::new(comm).settle();
    let totals = totals(&records, comm, cfg, start);
    let (counts, wall_s, report) = gather(totals, records, comm, cfg, backend.name(), command);
    // After the gather every rank's journal is complete: the last line counts all.
    progress.finish();
    Ok(Outcome {
        failed: counts.failed,
        undone: counts.undone,
        wall_s,
        report,
        lock: shared.lock,
    })
}

/// The plan as every rank holds it after the broadcast; root alone holds
/// the costs (for the schedule) and the lock.
struct SharedPlan {
    tasks: Vec<Task>,
    run: String,
    deadline: Option<f64>,
    costs: Vec<u64>,
    lock: Option<plan::lock::Lock>,
}

/// Root plans; the others wait in the broadcast. A panic on any rank
/// before or inside it ends the whole world (`mpi::abort_world_on_panic`).
/// Every rank receives the same bytes and decodes them the same way: all
/// go on, or all leave here with root's refusal, before any other collective.
fn share_plan(cfg: &RunConfig, comm: &dyn Comm) -> Result<SharedPlan, UsageError> {
    inject_panic("plan", comm.rank());
    let mut costs = Vec::new();
    let mut lock = None;
    let plan = if comm.is_root() {
        let msg = match plan_on_root(cfg) {
            Ok(planned) => {
                costs = planned.costs;
                lock = Some(planned.lock);
                PlanMsg::Tasks {
                    tasks: planned.tasks,
                    run: run_id(),
                    deadline: cfg.stop.deadline_unix,
                }
            }
            Err(e) => PlanMsg::Refused(e.to_string()),
        };
        serde_json::to_vec(&msg).unwrap_or_else(|e| {
            let refused = PlanMsg::Refused(format!("internal error: the plan cannot be sent: {e}"));
            serde_json::to_vec(&refused).unwrap_or_default()
        })
    } else {
        Vec::new()
    };
    match serde_json::from_slice(&comm.broadcast(plan)) {
        Ok(PlanMsg::Tasks {
            tasks,
            run,
            deadline,
        }) => Ok(SharedPlan {
            tasks,
            run,
            deadline,
            costs,
            lock,
        }),
        Ok(PlanMsg::Refused(msg)) => Err(UsageError::Refused(msg)),
        Err(e) => Err(UsageError::Refused(format!(
            "internal error: the plan cannot be read: {e}"
        ))),
    }
}

/// Root shows the whole run's progress, every rank's journal counted; the
/// other ranks show none.
fn show_progress(
    plan: &SharedPlan,
    cfg: &RunConfig,
    comm: &dyn Comm,
    durable: &journal::Durable,
) -> Progress {
    if !comm.is_root() {
        return Progress::quiet();
    }
    let scope = progress::Scope {
        outdir: cfg.outdir.clone(),
        run: durable.run.clone(),
        total: plan.tasks.len(),
    };
    Progress::start(cfg.progress, cfg.progress_every, scope)
}

/// This rank's images, filtered: handed out on request by root
/// (`--schedule dynamic`), or the share root's partition scatters to it.
fn process_my_share(
    plan: &SharedPlan,
    cfg: &RunConfig,
    comm: &dyn Comm,
    durable: &journal::Durable,
    backend: &mut dyn Backend,
    progress: &Progress,
) -> Vec<ImageRecord> {
    let (rank, size, tasks) = (comm.rank(), comm.size(), &plan.tasks);
    stop::planned();
    if split::applies(cfg, size, tasks) {
        return split::process(tasks, cfg, comm, durable, backend, progress);
    }
    if cfg.schedule == Schedule::Dynamic {
        if !comm.is_root() {
            return dynamic::worker(comm, tasks, cfg, durable, backend);
        }
        log::info!(
            "{}: {} images handed out on request (largest first), {} thread(s) per rank, backend {}",
            comm.describe(),
            tasks.len(),
            cfg.threads,
            backend.name()
        );
        let order = schedule::dynamic_order(&plan.costs);
        return dynamic::root(comm, tasks, order, cfg, durable, backend, progress);
    }
    let parts = comm.is_root().then(|| {
        schedule::partition(cfg.schedule, &plan.costs, size)
            .expect("static schedule")
            .into_iter()
            .map(|p| p.into_iter().map(|i| i as u64).collect())
            .collect()
    });
    let mine: Vec<usize> = comm
        .scatter(parts)
        .into_iter()
        .map(|i| i as usize)
        .collect();
    log::info!(
        "{}: rank {rank} of {size} has {} of {} images ({} schedule), {} thread(s), {} reader(s), backend {}",
        comm.describe(),
        mine.len(),
        tasks.len(),
        cfg.schedule,
        cfg.threads,
        cfg.readers,
        backend.name()
    );
    let watch = stop::Watch::new(comm);
    let records = pipeline::process(
        mine.iter().map(|&i| &tasks[i]).inspect(|_| {
            watch.check();
        }),
        cfg,
        durable,
        backend,
        rank,
        progress,
    );
    records
}

/// Images over all ranks that failed, and that were left for `--resume`.
struct Counts {
    failed: u64,
    undone: u64,
}

/// Every rank's records and totals to root, which builds the report; the
/// failures summed and the slowest rank's wall time on every rank.
fn gather(
    totals: ProcessTotals,
    records: Vec<ImageRecord>,
    comm: &dyn Comm,
    cfg: &RunConfig,
    backend: &str,
    command: Vec<String>,
) -> (Counts, f64, Option<Report>) {
    let failed_here = totals.failed as u64;
    let undone_here = records.iter().filter(|r| r.status.left_undone()).count() as u64;
    let wall_here = totals.wall_s;
    let payload = serde_json::to_vec(&RankResult { totals, records }).unwrap_or_default();
    inject_panic("gather", comm.rank());
    let gathered = comm.gather(payload);
    let failed = comm.sum_u64(failed_here);
    let undone = comm.sum_u64(undone_here);
    let wall_s = comm.max_f64(wall_here);
    let report = gathered.map(|parts| {
        let mut processes = Vec::new();
        let mut images = Vec::new();
        for p in parts {
            match serde_json::from_slice::<RankResult>(&p) {
                Ok(r) => {
                    processes.push(r.totals);
                    images.extend(r.records);
                }
                Err(e) => {
                    log::error!("a rank's records could not be read ({e}); the report lacks them")
                }
            }
        }
        images.sort_by_key(|r| r.index);
        let images = split::merge(images);
        let mut report = build_report(cfg, backend, command, processes, images);
        report.parallel = Some(ParallelInfo {
            comm: comm.describe(),
            schedule: cfg.schedule,
            ranks: comm.size(),
            threads_per_rank: cfg.threads,
        });
        report.slurm = cfg.slurm.clone();
        report.array = cfg.array;
        report.stopped = stopped(cfg, &report);
        report
    });
    (Counts { failed, undone }, wall_s, report)
}

/// Why the run stopped early (the first rank's own signal, else a drain
/// passed on, else the deadline) and what its deadline left unused; `None`
/// for a run that neither stopped early nor kept a deadline.
fn stopped(cfg: &RunConfig, report: &Report) -> Option<Stopped> {
    let by = |p: &&ProcessTotals| p.stopped_by.clone();
    let own = report
        .processes
        .iter()
        .filter(|p| p.stopped_by.as_deref() != Some("another rank"))
        .find_map(|p| by(&p));
    let reason = own
        .or_else(|| report.processes.iter().find_map(|p| by(&p)))
        .or_else(|| (report.summary.not_started > 0).then(|| "deadline".to_string()));
    let deadline = cfg.stop.deadline_unix;
    if reason.is_none() && deadline.is_none() {
        return None;
    }
    Some(Stopped {
        reason,
        deadline_unix: deadline,
        deadline_from: cfg.stop.deadline_from.clone(),
        unused_s: deadline.map(|d| d - stop::unix_now()),
    })
}

/// A run's id: when root started it (to the nanosecond), and root's pid;
/// it names the journals. Their names sort in the order the runs started,
/// which the fold (older runs' journals) and `--resume` (a later line
/// overrides) rely on: with whole seconds and a bare pid, two runs in one
/// second sorted by their pids' digits (26020 before 9999).
fn run_id() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!(
        "{}.{:09}-{:010}",
        now.as_secs(),
        now.subsec_nanos(),
        std::process::id()
    )
}

fn totals(
    records: &[ImageRecord],
    comm: &dyn Comm,
    cfg: &RunConfig,
    start: Instant,
) -> ProcessTotals {
    let threads = cfg.threads;
    let cpus = threads.max(crate::config::default_threads(comm.node_size()).0);
    let sum = |f: fn(&ImageRecord) -> f64| records.iter().map(f).sum::<f64>();
    let (read_s, filter_s, write_s) = (sum(|r| r.read_s), sum(|r| r.filter_s), sum(|r| r.write_s));
    let wall_s = start.elapsed().as_secs_f64();
    let u = metrics::usage();
    // The span this process had images in flight (stages overlap).
    // Images never started (or abandoned) have no span of their own.
    let begun = || records.iter().filter(|r| !r.status.left_undone());
    let first = begun().map(|r| r.started_s).fold(f64::INFINITY, f64::min);
    let last = begun().map(|r| r.finished_s).fold(0.0, f64::max);
    let busy_s = if begun().next().is_none() {
        0.0
    } else {
        (last - first).max(0.0)
    };
    ProcessTotals {
        host: metrics::hostname(),
        rank: comm.rank(),
        node_rank: comm.node_rank(),
        threads,
        cpus,
        images: records.iter().filter(|r| r.status.did_work()).count(),
        failed: records
            .iter()
            .filter(|r| r.status == Status::Failed)
            .count(),
        voxels: records.iter().map(|r| r.voxels).sum(),
        read_s,
        filter_s,
        write_s,
        busy_s,
        idle_s: (wall_s - busy_s).max(0.0),
        wall_s,
        cpu_user_s: u.user_s,
        cpu_sys_s: u.sys_s,
        cpu_efficiency: (u.user_s + u.sys_s) / (wall_s * cpus as f64).max(1e-9),
        peak_rss_bytes: u.peak_rss_bytes,
        slurm: cfg.slurm.clone(),
        stopped_by: stop::reason(),
    }
}

fn build_report(
    cfg: &RunConfig,
    backend: &str,
    command: Vec<String>,
    processes: Vec<ProcessTotals>,
    images: Vec<ImageRecord>,
) -> Report {
    let created = metrics::unix_now();
    let config = serde_json::to_value(cfg).unwrap_or_default();
    let mut report = Report::new(created, command, backend, config, processes, images);
    report.settings = Some(cfg.output_settings());
    report
}

#[cfg(test)]
mod tests {
    /// Journals are named by run ids, and their name order must be the
    /// order the runs started: ids of one width, later ones after.
    #[test]
    fn run_ids_sort_in_the_order_runs_start() {
        let ids: Vec<String> = (0..50).map(|_| super::run_id()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, ids, "later ids sort after earlier ones, none equal");
        assert!(ids.iter().all(|i| i.len() == ids[0].len()), "{ids:?}");
    }
}

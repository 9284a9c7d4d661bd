//! `report --job`: what Slurm ran, read as one job.
//!
//! Why: users judge a job by what `seff` and `reportseff` print, but those
//! see one sacct line at a time. A requeued job is several runs under one
//! id (sacct `--duplicates` lists them), each with its own nismooth report
//! (`nismooth-ID.R.json`, R the restart count); an array is many tasks whose
//! real span runs from the first start to the last end. Reading only the
//! last line of either misjudges the job (a requeued job's last attempt
//! used 18% of its limit; the job used all of it three times). So this
//! module groups sacct's lines by job and by attempt, and prints one total
//! before the details, with advice in the unit the script asked in.

use std::path::Path;

use crate::metrics::{hms, mib};
use crate::report::seff::{memory_verdict, MemoryVerdict};
use crate::report::{merge, printable_value, Report};
use crate::slurm::accounting::{self, AccountingError, Attempts, Job, Record};

/// Everything `report --job JOB` prints: one array's total and its
/// tasks, or each job with its attempts and seff verdicts.
pub fn render(job: &str) -> Result<String, AccountingError> {
    let all = accounting::attempts(accounting::jobs(&accounting::query(job)?));
    let tasks: Vec<&Attempts> = all.iter().filter(|a| a.is_array_task()).collect();
    if tasks.len() > 1 {
        return Ok(array(job, &tasks));
    }
    Ok(all.iter().map(one_job).collect())
}

/// nismooth's own report of attempt `k` (0-based) of `a`: the per-attempt
/// name a requeueing script gives (`nismooth-ID.k.json`), else, for the
/// last attempt, `nismooth-ID.json`.
fn own_report(a: &Attempts, k: usize) -> Option<Report> {
    let workdir = Path::new(&a.runs[k].record.workdir);
    let apart = workdir.join(format!("nismooth-{}.{k}.json", a.id));
    let last = workdir.join(format!("nismooth-{}.json", a.id));
    let ours = |r: &Report| {
        // A report copied from another job (or older than Slurm contexts)
        // is not this job's: its figures are not shown under this id.
        let base = a.id.split('_').next().unwrap_or(&a.id);
        r.slurm
            .as_ref()
            .and_then(|s| s.array_job_id.or(s.job_id))
            .is_none_or(|id| id.to_string() == base)
    };
    let load = |p: &Path| match merge::load(p) {
        Ok(r) if ours(&r) => Some(r),
        Ok(_) => {
            log::warn!("{}: another job's report, not shown", p.display());
            None
        }
        Err(e) if p.exists() => {
            log::warn!(
                "{}: cannot be read ({e}); sacct's figures alone",
                p.display()
            );
            None
        }
        Err(_) => None,
    };
    load(&apart).or_else(|| (k + 1 == a.runs.len()).then(|| load(&last))?)
}

/// The memory model's figure per rank that the run logged (`memory: the
/// model asks N MiB per rank`), from the job's log as nismooth's scripts
/// name it (`%x-%j.out`, `%x-%A_%a.out`), the last one logged.
fn logged_model_mib(r: &Record) -> Option<f64> {
    let log = Path::new(&r.workdir).join(format!("{}-{}.out", r.name, r.id));
    let text = std::fs::read(log).ok()?;
    String::from_utf8_lossy(&text)
        .lines()
        .rev()
        .filter_map(|l| l.split("memory: the model asks ").nth(1))
        .find_map(|rest| rest.split(" MiB per rank").next()?.trim().parse().ok())
}

/// One job (or one array task) and its attempts.
fn one_job(a: &Attempts) -> String {
    let last = a.last();
    let r = &last.record;
    let mut o = format!(
        "== job {} ({}): {}, exit {}",
        printable_value(&a.id),
        printable_value(&r.name),
        printable_value(&r.state),
        printable_value(&r.exit_code)
    );
    let reports: Vec<Option<Report>> = (0..a.runs.len()).map(|k| own_report(a, k)).collect();
    if a.runs.len() > 1 {
        o += &format!(", after {} requeue(s)\n", a.runs.len() - 1);
        o += &attempt_lines(a, &reports);
    } else {
        o += "\n";
    }
    let own = reports.last().cloned().flatten();
    o += &seff_lines(last, own.as_ref(), a.runs.len() > 1);
    if let Some(rep) = &own {
        o += &slowest(rep);
    }
    let peak = reports.iter().flatten().map(own_peak).max();
    for line in advice(last, own.as_ref(), peak) {
        o += &format!("  advice: {line}\n");
    }
    o
}

/// A line per attempt, and their sum: time, CPU, images done.
fn attempt_lines(a: &Attempts, reports: &[Option<Report>]) -> String {
    let mut o = String::new();
    for (k, (run, rep)) in a.runs.iter().zip(reports).enumerate() {
        let r = &run.record;
        let batch = run.steps.iter().find(|s| s.id.ends_with(".batch"));
        let how = match batch {
            Some(b) if r.state == "REQUEUED" && b.exit_code == "3:0" => {
                " (its batch step's FAILED 3:0 is the run's exit 3: it stopped early and its script requeued it)".to_string()
            }
            Some(b) => format!(" (batch step {} {})", printable_value(&b.state), b.exit_code),
            None => String::new(),
        };
        let done = rep.as_ref().map_or(String::new(), |rep| {
            let ok = rep
                .images
                .iter()
                .filter(|i| i.status == super::Status::Ok)
                .count();
            let why = rep.stopped.as_ref().and_then(|s| s.reason.clone());
            format!(
                "; nismooth: {ok} image(s) smoothed{}",
                why.map_or(String::new(), |w| format!(
                    ", stopped by {}",
                    printable_value(&w)
                ))
            )
        });
        o += &format!(
            "  attempt {}: {}{how}, {} elapsed, {:.1} s CPU{done}\n",
            k + 1,
            printable_value(&r.state),
            hms(r.elapsed_s),
            r.total_cpu_s
        );
    }
    let elapsed: f64 = a.runs.iter().map(|j| j.record.elapsed_s).sum();
    let cpu: f64 = a.runs.iter().map(|j| j.record.total_cpu_s).sum();
    let capacity: f64 = a
        .runs
        .iter()
        .map(|j| j.record.elapsed_s * j.record.alloc_cpus as f64)
        .sum();
    let images: usize = reports
        .iter()
        .flatten()
        .map(|r| {
            r.images
                .iter()
                .filter(|i| i.status == super::Status::Ok)
                .count()
        })
        .sum();
    o += &format!(
        "  all {} attempts: {} elapsed, {cpu:.1} s CPU{}, {images} image(s) smoothed\n",
        a.runs.len(),
        hms(elapsed),
        if capacity > 0.0 {
            format!(
                " (CPU efficiency {:.1}%)",
                100.0 * (cpu / capacity).min(1.0)
            )
        } else {
            String::new()
        }
    );
    o
}

/// The largest peak per rank a report measured.
fn own_peak(rep: &Report) -> u64 {
    rep.processes
        .iter()
        .map(|p| p.peak_rss_bytes)
        .max()
        .unwrap_or(0)
}

/// seff's three verdicts on one attempt, nismooth's own peak beside sacct's.
fn seff_lines(j: &Job, own: Option<&Report>, several: bool) -> String {
    let (r, s) = (&j.record, j.seff());
    let which = if several { " (last attempt)" } else { "" };
    let mut o = match s.cpu {
        Some(cpu) => format!(
            "  seff{which}: CPU efficiency {:.1}% ({:.1} s of CPU over {} × {} CPU(s))\n",
            100.0 * cpu,
            r.total_cpu_s,
            hms(r.elapsed_s),
            r.alloc_cpus
        ),
        // sacct counts whole seconds: a job that ran under one shows 0.
        None if r.state.starts_with("PENDING") || r.state.starts_with("CANCELLED") => format!(
            "  seff{which}: CPU efficiency n/a (sacct gives {} CPU(s) over {}: the job did not run)\n",
            r.alloc_cpus,
            hms(r.elapsed_s)
        ),
        None => format!(
            "  seff{which}: CPU efficiency n/a (sacct gives {} CPU(s) over {}: the job ran under a second, which sacct cannot divide)\n",
            r.alloc_cpus,
            hms(r.elapsed_s)
        ),
    };
    let own_peak = own.map_or(String::new(), |rep| {
        format!(
            "; nismooth's own peak {:.1} MiB per rank",
            mib(own_peak(rep) as f64)
        )
    });
    o += &match (s.memory_per_node_bytes, r.req_mem_per_node_bytes, s.memory) {
        (Some(used), Some(req), Some(eff)) => format!(
            "  seff{which}: memory efficiency {:.1}% (MaxRSS × tasks per node {:.1} MiB of {:.0} MiB asked per node{own_peak})\n",
            100.0 * eff,
            mib(used as f64),
            mib(req as f64)
        ),
        _ => format!(
            "  seff{which}: memory efficiency unknown (sacct has no MaxRSS: the step ended before its first sample){own_peak}\n"
        ),
    };
    o += &match s.time {
        Some(t) => format!(
            "  seff{which}: time efficiency {:.1}% ({} of {})\n",
            100.0 * t,
            hms(r.elapsed_s),
            hms(r.timelimit_s.unwrap_or(0.0))
        ),
        None => format!("  seff{which}: time efficiency unknown (no time limit)\n"),
    };
    o
}

/// The three slowest images of nismooth's own report.
fn slowest(rep: &Report) -> String {
    let t = |i: &super::ImageRecord| i.read_s + i.filter_s + i.write_s;
    let mut images: Vec<_> = rep.images.iter().collect();
    images.sort_by(|a, b| t(b).total_cmp(&t(a)));
    let names: Vec<String> = images
        .iter()
        .take(3)
        .map(|i| {
            format!(
                "{} {:.2} s",
                printable_value(i.input.rsplit('/').next().unwrap_or(&i.input)),
                t(i)
            )
        })
        .collect();
    format!("  slowest images: {}\n", names.join(", "))
}

/// How the script asked for memory, and how much: per CPU or per node.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Asked {
    PerCpu { mib: f64, cpus_per_node: f64 },
    PerNode { mib: f64 },
}

impl Asked {
    /// From the run's own report (its environment says which flag the
    /// script used), else sacct's request per node.
    fn of(r: &Record, own: Option<&Report>) -> Option<Asked> {
        let slurm = own.and_then(|rep| rep.slurm.as_ref());
        let cpus_per_node = (r.alloc_cpus as f64 / r.nodes.max(1) as f64).max(1.0);
        if let Some(mib) = slurm.and_then(|s| s.mem_per_cpu_mib) {
            return Some(Asked::PerCpu {
                mib: mib as f64,
                cpus_per_node,
            });
        }
        if let Some(mib) = slurm.and_then(|s| s.mem_per_node_mib) {
            return Some(Asked::PerNode { mib: mib as f64 });
        }
        r.req_mem_per_node_bytes
            .map(|b| Asked::PerNode { mib: mib(b as f64) })
    }

    /// The request in the script's words, for `per_node_mib` per node.
    fn flag(self, per_node_mib: f64) -> String {
        let step = |m: f64| (m / 64.0).ceil().max(1.0) as u64 * 64;
        match self {
            Asked::PerCpu { cpus_per_node, .. } => {
                format!("--mem-per-cpu={}M", step(per_node_mib / cpus_per_node))
            }
            Asked::PerNode { .. } => format!("--mem={}M", step(per_node_mib)),
        }
    }

    fn per_node_mib(self) -> f64 {
        match self {
            Asked::PerCpu { mib, cpus_per_node } => mib * cpus_per_node,
            Asked::PerNode { mib } => mib,
        }
    }

    /// The request as the script made it.
    fn text(self) -> String {
        match self {
            Asked::PerCpu { mib, .. } => format!("--mem-per-cpu={mib:.0}M"),
            Asked::PerNode { mib } => format!("--mem={mib:.0}M"),
        }
    }
}

/// Plain advice from the verdicts, nismooth's own peak (the largest of any
/// attempt) and the memory model the run logged, in the request's unit.
fn advice(j: &Job, own: Option<&Report>, own_peak: Option<u64>) -> Vec<String> {
    let (r, s) = (&j.record, j.seff());
    let mut out = Vec::new();
    let asked = Asked::of(r, own);
    let per_node_tasks = j
        .steps
        .iter()
        .filter_map(|st| Some(st.tasks?.div_ceil(st.nodes.max(1))))
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    match r.state.as_str() {
        "OUT_OF_MEMORY" => out.push(after_oom(r, &s, asked, own_peak, per_node_tasks)),
        "TIMEOUT" => out.push(
            "stopped at its time limit: ask for more time, or resubmit with --resume to finish the rest".into(),
        ),
        _ => {}
    }
    let used = mib(s
        .memory_per_node_bytes
        .max(own_peak.map(|p| (p as f64 * per_node_tasks) as u64))
        .unwrap_or(0) as f64);
    if let (Some(asked), "COMPLETED") = (asked, r.state.as_str()) {
        if let MemoryVerdict::AskLess { ask_mib } = memory_verdict(used, asked.per_node_mib()) {
            out.push(format!(
                "memory: {} would do (the peak + 25%), not {}",
                asked.flag(ask_mib),
                asked.text()
            ));
        }
    }
    let limit = 2.0 * r.elapsed_s.max(30.0);
    if r.state == "COMPLETED"
        && s.time.is_some_and(|t| t < 0.25)
        && r.timelimit_s.is_some_and(|l| limit < l)
    {
        out.push(format!(
            "time: a limit near {} (twice the run) lets the scheduler start such jobs sooner",
            crate::slurm::time::format(limit)
        ));
    }
    if r.alloc_cpus > 1 && s.cpu.is_some_and(|c| c < 0.5) {
        out.push(format!(
            "CPUs: the job used {:.1} of its {} on average; ask for fewer",
            r.total_cpu_s / r.elapsed_s,
            r.alloc_cpus
        ));
    }
    out
}

/// A number to ask for after a kill for memory: the largest of the
/// memory model the run logged, a peak measured (sacct's or nismooth's)
/// + 25%, and twice the request, per node, in the script's unit.
fn after_oom(
    r: &Record,
    s: &accounting::Seff,
    asked: Option<Asked>,
    own_peak: Option<u64>,
    per_node_tasks: f64,
) -> String {
    let model = logged_model_mib(r).map(|m| m * per_node_tasks);
    let measured = s
        .memory_per_node_bytes
        .max(own_peak.map(|p| (p as f64 * per_node_tasks) as u64))
        .map(|b| 1.25 * mib(b as f64));
    let twice = asked.map(|a| 2.0 * a.per_node_mib());
    let need = [model, measured, twice]
        .into_iter()
        .flatten()
        .fold(0.0, f64::max);
    let asked = asked.unwrap_or(Asked::PerNode { mib: 0.0 });
    let why = if model.is_some_and(|m| m >= need) {
        "the memory model the run logged"
    } else if measured.is_some_and(|m| m >= need) {
        "the peak measured + 25%"
    } else {
        "twice the request; `nismooth estimate` predicts the peak from a study"
    };
    if need <= 0.0 {
        return "killed for memory: ask for more (`nismooth estimate` predicts the peak from a study)".into();
    }
    format!(
        "killed for memory with {}: ask for {} ({why})",
        asked.text(),
        asked.flag(need)
    )
}

/// An array: one total (span, CPU-hours, the largest MaxRSS, failures),
/// then a line per task as reportseff prints them.
fn array(job: &str, tasks: &[&Attempts]) -> String {
    let lasts: Vec<&Job> = tasks.iter().map(|a| a.last()).collect();
    let first = tasks
        .iter()
        .flat_map(|a| a.runs.iter())
        .filter_map(|j| j.record.start_s)
        .fold(f64::MAX, f64::min);
    let end = tasks
        .iter()
        .flat_map(|a| a.runs.iter())
        .filter_map(|j| j.record.end_s)
        .fold(f64::MIN, f64::max);
    let cpu: f64 = tasks
        .iter()
        .flat_map(|a| a.runs.iter())
        .map(|j| j.record.total_cpu_s)
        .sum();
    let failed: Vec<&str> = lasts
        .iter()
        .filter(|j| j.record.state != "COMPLETED")
        .map(|j| j.record.id.as_str())
        .collect();
    let requeues: usize = tasks.iter().map(|a| a.runs.len() - 1).sum();
    let peak = lasts
        .iter()
        .filter_map(|j| Some((j.seff().memory_per_node_bytes?, &j.record.id)))
        .max_by_key(|(b, _)| *b);
    let name = &lasts[0].record.name;
    let mut o = format!(
        "== array {} ({}): {} task(s), {} completed, {} not{}\n",
        printable_value(job),
        printable_value(name),
        tasks.len(),
        tasks.len() - failed.len(),
        failed.len(),
        if requeues > 0 {
            format!(", {requeues} requeue(s)")
        } else {
            String::new()
        }
    );
    o += &format!(
        "  span {} (first start to last end), {:.1} s CPU ({:.4} CPU-hours) over every task and attempt\n",
        if end >= first { hms(end - first) } else { "unknown".into() },
        cpu,
        cpu / 3600.0
    );
    if let Some((bytes, id)) = peak {
        o += &format!(
            "  largest MaxRSS × tasks per node: {:.1} MiB (task {})\n",
            mib(bytes as f64),
            printable_value(id)
        );
    }
    if !failed.is_empty() {
        o += &format!(
            "  not completed: {}\n",
            failed
                .iter()
                .map(|f| printable_value(f))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    o += &format!(
        "  {:<14} {:<14} {:>8} {:>8} {:>8} {:>8} {:>8}\n",
        "task", "state", "elapsed", "attempts", "TimeEff", "CPUEff", "MemEff"
    );
    let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.1}%", 100.0 * v));
    for (a, j) in tasks.iter().zip(&lasts) {
        let s = j.seff();
        o += &format!(
            "  {:<14} {:<14} {:>8} {:>8} {:>8} {:>8} {:>8}\n",
            printable_value(&a.id),
            printable_value(&j.record.state),
            hms(j.record.elapsed_s),
            a.runs.len(),
            pct(s.time),
            pct(s.cpu),
            pct(s.memory)
        );
    }
    // Advice from a task that did not complete, else the one using the most memory.
    let worst = tasks
        .iter()
        .max_by_key(|a| {
            let j = a.last();
            (
                j.record.state != "COMPLETED",
                j.seff().memory_per_node_bytes.unwrap_or(0),
            )
        })
        .expect("an array has tasks");
    let own = own_report(worst, worst.runs.len() - 1);
    let peak = tasks
        .iter()
        .flat_map(|a| (0..a.runs.len()).filter_map(|k| own_report(a, k)))
        .map(|r| own_peak(&r))
        .max();
    for line in advice(worst.last(), own.as_ref(), peak) {
        o += &format!("  advice (every task): {line}\n");
    }
    o
}

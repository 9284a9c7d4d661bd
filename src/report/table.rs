//! The end-of-run summary for humans, in the spirit of seff.

use std::fmt::Write;

use super::{ExportError, Exporter, Report, Status};

pub struct Table;

fn mib(b: u64) -> f64 {
    crate::metrics::mib(b as f64)
}

/// What stopped the run early and what its deadline left unused.
fn stopped_lines(o: &mut String, r: &Report) -> std::fmt::Result {
    let s = &r.summary;
    let Some(st) = &r.stopped else {
        return Ok(());
    };
    if s.not_started + s.interrupted > 0 {
        writeln!(
            o,
            "  stopped early ({}): {} not started, {} interrupted; `--resume` finishes them (exit code 3)",
            st.reason.as_deref().unwrap_or("unknown"),
            s.not_started,
            s.interrupted
        )?;
    }
    if let (Some(unused), Some(from)) = (st.unused_s, &st.deadline_from) {
        writeln!(
            o,
            "  deadline        {from}: {unused:.1} s left unused at the end"
        )?;
    }
    Ok(())
}

impl Exporter for Table {
    /// For a terminal: names, hosts and errors come from files and other
    /// machines, so their control characters are shown, not obeyed.
    fn render(&self, r: &Report) -> Result<String, ExportError> {
        Ok(super::printable(&table(r)?))
    }
}

fn table(r: &Report) -> Result<String, ExportError> {
    let s = &r.summary;
    let mut o = String::new();
    writeln!(
            o,
            "nismooth {}: {} images ({} ok, {} failed, {} skipped) on {} process(es) × {} thread(s), backend {}",
            r.nismooth_version, s.tasks, s.ok, s.failed, s.skipped, s.processes, s.threads_per_process, r.backend
        )?;
    stopped_lines(&mut o, r)?;
    time_lines(&mut o, r)?;
    writeln!(
        o,
        "  peak RSS        {:.1} MiB (largest process)",
        mib(s.peak_rss_bytes)
    )?;
    if let Some(p) = &r.parallel {
        writeln!(o, "  parallel        {} schedule; {}", p.schedule, p.comm)?;
    }
    if let Some(a) = &r.array {
        writeln!(
            o,
            "  job array       task {} ({} of {}): its share of the list",
            a.task_id,
            a.position + 1,
            a.count
        )?;
    }
    if let Some(j) = r.slurm.as_ref().and_then(|s| s.job_id) {
        writeln!(o, "  slurm job       {j}")?;
    }
    rank_lines(&mut o, r)?;
    for img in r.images.iter().filter(|i| i.status == Status::Failed) {
        writeln!(
            o,
            "  FAILED {}: {}",
            super::printable_value(&img.input),
            super::printable_value(img.error.as_deref().unwrap_or("?"))
        )?;
    }
    Ok(o)
}

/// One line per rank, beside the load balance, when there are several.
fn rank_lines(o: &mut String, r: &Report) -> std::fmt::Result {
    let s = &r.summary;
    if r.processes.len() < 2 {
        return Ok(());
    }
    writeln!(
            o,
            "  load imbalance  {:.3} (max/mean busy)   parallel efficiency {:.1}% (busy / ranks × wall)",
            s.load_imbalance,
            100.0 * s.parallel_efficiency
        )?;
    for p in &r.processes {
        // Inside Slurm the node name is the one users know (and the one
        // that differs between simulated nodes); the array task says whose share.
        let slurm = p.slurm.as_ref();
        let node = super::printable_value(
            &slurm
                .and_then(|s| s.nodename.clone())
                .unwrap_or_else(|| p.host.clone()),
        );
        let task = slurm
            .and_then(|s| s.array_task_id)
            .map(|t| format!(" task {t}"))
            .unwrap_or_default();
        writeln!(
                o,
                "  rank {:>3}{task} {:<12} {:>4} images  busy {:>8.3} s  idle {:>7.3} s  CPU eff {:>5.1}%  RSS {:>7.1} MiB",
                p.rank,
                node,
                p.images,
                p.busy_s,
                p.idle_s,
                100.0 * p.cpu_efficiency,
                mib(p.peak_rss_bytes)
            )?;
    }
    Ok(())
}

/// The stages' times, the wall, their ratio and the CPU efficiency.
fn time_lines(o: &mut String, r: &Report) -> std::fmt::Result {
    let s = &r.summary;
    writeln!(o, "  {:<16}{:>12}{:>15}", "", "total (s)", "per image (s)")?;
    for (name, tot, per) in [
        ("read", s.read_s, s.read_per_task_s),
        ("filter", s.filter_s, s.filter_per_task_s),
        ("write", s.write_s, s.write_per_task_s),
    ] {
        writeln!(o, "  {name:<16}{tot:>12.3}{per:>15.4}")?;
    }
    writeln!(o, "  {:<16}{:>12.3}", "wall", s.wall_s)?;
    writeln!(
            o,
            "  {:<16}{:>12.3}  (wall over read + filter + write per process: below 1, the stages overlapped; above 1, the process also waited: start-up, MPI, syncs)",
            "wtime/ptime", s.wtime_over_ptime
        )?;
    writeln!(
        o,
        "  CPU efficiency  {:.1}%  (CPU {:.2} s over wall × the CPUs each process was given){}",
        100.0 * s.cpu_efficiency,
        s.cpu_s,
        if s.cpu_efficiency > 1.0 {
            "; above 100%: readers and writer ran on more CPUs than given (nothing held the process to them)"
        } else {
            ""
        }
    )?;
    Ok(())
}

//! `nismooth report`: show reports with seff-style verdicts, or merge the
//! reports of an array's tasks into one.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::metrics::mib;
use crate::report::seff::{memory_verdict, MemoryVerdict};
use crate::report::{self, Exporter};
use crate::slurm::{accounting, parse_mib};

use super::cli::{ReportAction, ReportArgs};
use super::{EXIT_FAILED_IMAGES, EXIT_OK};

/// `nismooth report`: show reports, or merge them.
pub fn report(args: &ReportArgs) -> anyhow::Result<u8> {
    match &args.action {
        Some(ReportAction::Merge { files, output, csv }) => {
            check_merge_targets(files, output, csv.as_deref())?;
            let merged = report::merge::merge(files)?;
            report::export_to(&report::Json, &merged, output)
                .context("writing the merged report")?;
            if let Some(csv) = csv {
                report::export_to(&report::Csv, &merged, csv).context("writing the merged CSV")?;
            }
            eprint!("{}", report::Table.render(&merged)?);
            log::info!("merged {} report(s) into {}", files.len(), output.display());
            Ok(if merged.summary.failed > 0 {
                EXIT_FAILED_IMAGES
            } else {
                EXIT_OK
            })
        }
        None if args.job.is_some() => {
            mem_request(args)?;
            let job = args.job.as_deref().unwrap_or_default();
            print!("{}", report::printable(&accounted(job)?));
            Ok(EXIT_OK)
        }
        None => {
            anyhow::ensure!(
                !args.files.is_empty(),
                "give report files to show, `report --job JOBID`, or `report merge`"
            );
            let request = mem_request(args)?;
            for f in &args.files {
                let r = report::merge::load(f)?;
                println!("== {}", f.display());
                print!("{}", report::Table.render(&r)?);
                if let Some(mib) = request {
                    print!("{}", report::seff::memory_line(&r, mib));
                }
            }
            Ok(EXIT_OK)
        }
    }
}

/// `--mem-request`, read before anything else is (a size of 0 or none refused).
fn mem_request(args: &ReportArgs) -> anyhow::Result<Option<u64>> {
    args.mem_request
        .as_deref()
        .map(parse_mib)
        .transpose()
        .context("--mem-request")
}

/// The merged report and CSV go to files of their own: never over a report
/// being merged (through a link or a hard link too), never both to one
/// file, never into a folder or a missing one. Checked before anything is read.
fn check_merge_targets(files: &[PathBuf], output: &Path, csv: Option<&Path>) -> anyhow::Result<()> {
    use crate::plan::identity::Place;
    let targets = [("-o", Some(output)), ("--csv", csv)];
    for (flag, target) in targets {
        let Some(target) = target else { continue };
        crate::io::report_target(target).with_context(|| format!("{flag} {}", target.display()))?;
        if let Some(input) = Place::among(target, files) {
            anyhow::bail!(
                "{flag} {}: refused, it is report {} being merged",
                target.display(),
                input.display()
            );
        }
    }
    if let Some(csv) = csv {
        anyhow::ensure!(
            !Place::of(csv).same(&Place::of(output)),
            "--csv {}: refused, it is also the -o file",
            csv.display()
        );
    }
    Ok(())
}

/// `report --job`: every job (or array task) sacct knows under `job`, each
/// with its seff lines, nismooth's own figures when its report is found,
/// and advice.
fn accounted(job: &str) -> anyhow::Result<String> {
    let records = accounting::query(job)?;
    let mut o = String::new();
    for j in accounting::jobs(&records) {
        let own = Path::new(&j.record.workdir).join(format!("nismooth-{}.json", j.record.id));
        let own = report::merge::load(&own).ok();
        o += &seff_block(&j, own.as_ref());
    }
    Ok(o)
}

fn seff_block(j: &accounting::Job, own: Option<&report::Report>) -> String {
    let (r, s) = (&j.record, j.seff());
    let mut o = format!(
        "== job {} ({}): {}, exit {}\n",
        r.id, r.name, r.state, r.exit_code
    );
    o += &match s.cpu {
        Some(cpu) => format!(
            "  seff: CPU efficiency {:.1}% ({:.1} s of CPU over {} × {} CPU(s))\n",
            100.0 * cpu,
            r.total_cpu_s,
            crate::metrics::hms(r.elapsed_s),
            r.alloc_cpus
        ),
        // sacct counts whole seconds: a job that ran under one shows 0.
        None if r.state.starts_with("PENDING") || r.state.starts_with("CANCELLED") => format!(
            "  seff: CPU efficiency n/a (sacct gives {} CPU(s) over {}: the job did not run)\n",
            r.alloc_cpus,
            crate::metrics::hms(r.elapsed_s)
        ),
        None => format!(
            "  seff: CPU efficiency n/a (sacct gives {} CPU(s) over {}: the job ran under a second, which sacct cannot divide)\n",
            r.alloc_cpus,
            crate::metrics::hms(r.elapsed_s)
        ),
    };
    let ours = own.map(|rep| {
        rep.processes
            .iter()
            .map(|p| p.peak_rss_bytes)
            .max()
            .unwrap_or(0)
    });
    let own_peak = ours.map_or(String::new(), |b| {
        format!("; nismooth's own peak {:.1} MiB per rank", mib(b as f64))
    });
    match (s.memory_per_node_bytes, r.req_mem_per_node_bytes, s.memory) {
        (Some(used), Some(req), Some(eff)) => {
            o += &format!(
                "  seff: memory efficiency {:.1}% (MaxRSS × tasks per node {:.1} MiB of {:.0} MiB asked per node{own_peak})\n",
                100.0 * eff,
                mib(used as f64),
                mib(req as f64)
            )
        }
        _ => {
            o += &format!(
                "  seff: memory efficiency unknown (sacct has no MaxRSS: the step ended before its first sample){own_peak}\n"
            )
        }
    }
    match s.time {
        Some(t) => {
            o += &format!(
                "  seff: time efficiency {:.1}% ({} of {})\n",
                100.0 * t,
                crate::metrics::hms(r.elapsed_s),
                crate::metrics::hms(r.timelimit_s.unwrap_or(0.0))
            )
        }
        None => o += "  seff: time efficiency unknown (no time limit)\n",
    }
    if let Some(rep) = own {
        o += &slowest(rep);
    }
    for a in advice(r, &s, ours) {
        o += &format!("  advice: {a}\n");
    }
    o
}

/// The three slowest images of nismooth's own report.
fn slowest(rep: &report::Report) -> String {
    let mut images: Vec<_> = rep.images.iter().collect();
    images.sort_by(|a, b| {
        let t = |i: &&report::ImageRecord| i.read_s + i.filter_s + i.write_s;
        t(b).total_cmp(&t(a))
    });
    let names: Vec<String> = images
        .iter()
        .take(3)
        .map(|i| {
            format!(
                "{} {:.2} s",
                i.input.rsplit('/').next().unwrap_or(&i.input),
                i.read_s + i.filter_s + i.write_s
            )
        })
        .collect();
    format!("  slowest images: {}\n", names.join(", "))
}

/// Plain advice from the verdicts (and nismooth's own peak, when known).
fn advice(r: &accounting::Record, s: &accounting::Seff, own_peak: Option<u64>) -> Vec<String> {
    let mut out = Vec::new();
    let asked = r.req_mem_per_node_bytes.map_or("its request".into(), |b| {
        format!("{:.0} MiB", mib(b as f64))
    });
    match r.state.as_str() {
        "OUT_OF_MEMORY" => out.push(format!(
            "killed for memory: ask for more than {asked} (`nismooth estimate` predicts the peak from a study)"
        )),
        "TIMEOUT" => out.push(
            "stopped at its time limit: ask for more time, or resubmit with --resume to finish the rest".into(),
        ),
        _ => {}
    }
    let used = mib(s.memory_per_node_bytes.max(own_peak).unwrap_or(0) as f64);
    if let (Some(request), "COMPLETED") = (r.req_mem_per_node_bytes, r.state.as_str()) {
        if let MemoryVerdict::AskLess { ask_mib } = memory_verdict(used, mib(request as f64)) {
            out.push(format!(
                "memory: {ask_mib:.0} MiB would do (the peak + 25%), not {asked}"
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

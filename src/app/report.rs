//! `nismooth report`: show reports with seff-style verdicts, or merge the
//! reports of an array's tasks into one.

use anyhow::Context;

use nismooth::report::{self, Exporter};
use nismooth::slurm::parse_mib;

use super::cli::{ReportAction, ReportArgs};
use super::{EXIT_FAILED_IMAGES, EXIT_OK};

/// `nismooth report`: show reports, or merge them.
pub fn report(args: &ReportArgs) -> anyhow::Result<u8> {
    match &args.action {
        Some(ReportAction::Merge { files, output, csv }) => {
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
        None => {
            anyhow::ensure!(
                !args.files.is_empty(),
                "give report files to show, or `report merge`"
            );
            let request = args
                .mem_request
                .as_deref()
                .map(parse_mib)
                .transpose()
                .map_err(anyhow::Error::msg)?;
            for f in &args.files {
                let r = report::merge::load(f)?;
                println!("== {}", f.display());
                print!("{}", report::Table.render(&r)?);
                print!("{}", seff_lines(&r, request));
            }
            Ok(EXIT_OK)
        }
    }
}

/// seff-style verdicts on a report: CPU efficiency, memory against the request, balance.
fn seff_lines(r: &report::Report, mem_request_mib: Option<u64>) -> String {
    let s = &r.summary;
    let mut o = format!(
        "  seff: CPU efficiency {:.1}% of {} process(es) × {} thread(s) × wall\n",
        100.0 * s.cpu_efficiency,
        s.processes,
        s.threads_per_process
    );
    let peak_mib = s.peak_rss_bytes as f64 / 1048576.0;
    if let Some(req) = mem_request_mib {
        o += &format!(
            "  seff: memory efficiency {:.1}% ({peak_mib:.1} MiB peak of {req} MiB requested per rank){}\n",
            100.0 * peak_mib / req as f64,
            if peak_mib > req as f64 {
                ": over the request, the job would be killed"
            } else if peak_mib < 0.25 * req as f64 {
                ": ask for less"
            } else {
                ""
            }
        );
    }
    if s.processes > 1 {
        o += &format!(
            "  seff: load imbalance {:.3} (max/mean busy); parallel efficiency {:.1}%\n",
            s.load_imbalance,
            100.0 * s.parallel_efficiency
        );
    }
    o
}

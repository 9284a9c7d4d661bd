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
                .context("--mem-request")?;
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

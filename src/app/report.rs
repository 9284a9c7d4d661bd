//! `nismooth report`: show reports with seff-style verdicts, or merge the
//! reports of an array's tasks into one.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::report::{self, Exporter};
use crate::slurm::parse_mib;

use super::cli::{ReportAction, ReportArgs};
use super::{EXIT_FAILED_IMAGES, EXIT_OK};

/// `nismooth report`: show reports, or merge them.
pub fn report(args: &ReportArgs) -> anyhow::Result<u8> {
    match &args.action {
        Some(ReportAction::Merge { files, output, csv }) => {
            check_merge_targets(files, output, csv.as_deref())?;
            let merged = report::merge::merge(files)?;
            check_merge_images(&merged, ("-o", output), csv.as_deref())?;
            check_merge_runs(files, ("-o", output), csv.as_deref())?;
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
            super::say(&report::printable(&report::job::render(job)?))?;
            Ok(EXIT_OK)
        }
        None => {
            anyhow::ensure!(
                !args.files.is_empty(),
                "give report files to show, `report --job JOBID`, or `report merge`"
            );
            let request = mem_request(args)?;
            if let Some(trace) = &args.trace {
                return write_trace(&args.files, trace);
            }
            for f in &args.files {
                let r = report::merge::load(f)?;
                super::say(&format!("== {}\n", f.display()))?;
                super::say(&report::Table.render(&r)?)?;
                if let Some(mib) = request {
                    super::say(&report::seff::memory_line(&r, mib))?;
                }
            }
            Ok(EXIT_OK)
        }
    }
}

/// `report FILE --trace OUT`: one report's timeline, never over the report
/// itself (through a link or a hard link too), an image or a run's state,
/// nor into what the report's run read or wrote.
fn write_trace(files: &[PathBuf], trace: &Path) -> anyhow::Result<u8> {
    use crate::plan::identity::Place;
    anyhow::ensure!(files.len() == 1, "--trace draws one report; give one file");
    crate::io::report_target(trace).with_context(|| format!("--trace {}", trace.display()))?;
    anyhow::ensure!(
        Place::among(trace, files).is_none(),
        "--trace {}: refused, it is the report being drawn",
        trace.display()
    );
    let r = report::merge::load(&files[0])?;
    check_merge_images(&r, ("--trace", trace), None)?;
    check_merge_runs(files, ("--trace", trace), None)?;
    if r.images.iter().all(|i| i.spans.is_empty()) {
        log::warn!(
            "{} holds no stage times (a report of an older version): the trace has no slices",
            files[0].display()
        );
    }
    report::export_to(&report::Trace, &r, trace).context("writing --trace")?;
    Ok(EXIT_OK)
}

/// `--mem-request`, read before anything else is (a size of 0 or none refused).
fn mem_request(args: &ReportArgs) -> anyhow::Result<Option<u64>> {
    args.mem_request
        .as_deref()
        .map(parse_mib)
        .transpose()
        .context("--mem-request")
}

/// Nor over an image the merged runs read or wrote (their paths as the
/// reports name them): checked once the reports are read, before a byte
/// is written.
fn check_merge_images(
    merged: &report::Report,
    (flag, output): (&str, &Path),
    csv: Option<&Path>,
) -> anyhow::Result<()> {
    use crate::plan::identity::Place;
    for (flag, target) in [(flag, Some(output)), ("--csv", csv)] {
        let Some(target) = target else { continue };
        let place = Place::of(target);
        for image in &merged.images {
            let (input, out) = (Path::new(&image.input), Path::new(&image.output));
            let what = if crate::plan::guard::is_input(&place, input) {
                "input"
            } else if place.same(&Place::of(out)) {
                "output"
            } else {
                continue;
            };
            anyhow::bail!(
                "{flag} {}: refused, it is the {what} {} of a merged run",
                target.display(),
                if what == "input" { input } else { out }.display()
            );
        }
    }
    Ok(())
}

/// Nor into what the merged runs own, their paths read from the folder
/// each run started in (a report names them relative to it, so checked
/// from here an input `data/x.nii` was missed): an image, a journal or
/// the lock in OUTDIR, a NIfTI name below it, a raw BIDS dataset a `bids`
/// run read, or its derivative dataset's own files. As `run --report` and
/// `bids --report` refuse them.
fn check_merge_runs(
    files: &[PathBuf],
    (flag, output): (&str, &Path),
    csv: Option<&Path>,
) -> anyhow::Result<()> {
    for file in files {
        let run = report::merge::load(file)?;
        let origins = run.origins();
        let folders: Vec<Vec<PathBuf>> = origins.iter().map(|o| run_folders(o, file)).collect();
        for (origin, at) in origins.iter().zip(&folders) {
            let guard = origin_guard(origin, at, &run.images, &folders);
            for (flag, target) in [(flag, Some(output)), ("--csv", csv)] {
                let Some(target) = target else { continue };
                check_origin_target(flag, target, origin, at, &guard)
                    .with_context(|| format!("a run merged in {}", file.display()))?;
            }
        }
    }
    Ok(())
}

/// Where a merged run's relative paths may be now: the folder it started
/// in, as its report records it; and, for a run folder since moved or
/// renamed (its files move with it, the record does not), the folder its
/// `--report` now lies below as the run named it, and the report's own
/// folder. Every one is guarded: refusing too much rather than too little.
fn run_folders(origin: &report::Origin, file: &Path) -> Vec<PathBuf> {
    use clap::Parser;
    let here = std::env::current_dir().unwrap_or_default();
    let mut folders = vec![origin.cwd.clone().unwrap_or(here)];
    let Ok(real) = std::fs::canonicalize(file) else {
        return folders;
    };
    let named = match super::cli::Cli::try_parse_from(&origin.command).map(|c| c.command) {
        Ok(super::cli::Command::Run(r)) => r.report.clone(),
        Ok(super::cli::Command::Bids(b)) => b.options.report,
        _ => None,
    };
    // `--report logs/r.json` now at /new/place/logs/r.json: the run's folder is /new/place.
    let moved = named.filter(|n| n.is_relative()).and_then(|n| {
        let up = n.components().count();
        real.ancestors()
            .nth(up)
            .filter(|_| real.ends_with(&n))
            .map(Path::to_path_buf)
    });
    folders.extend(moved);
    folders.extend(real.parent().map(Path::to_path_buf));
    folders.sort();
    folders.dedup();
    folders
}

/// What one merged run owns: its list, a `bids` run's datasets, and the
/// report's images (named relative to some run's folder: every folder of
/// every merged run is tried, refusing too much rather than too little).
fn origin_guard(
    origin: &report::Origin,
    folders: &[PathBuf],
    images: &[report::ImageRecord],
    all: &[Vec<PathBuf>],
) -> crate::plan::Guard {
    use clap::Parser;
    let mut guard = crate::plan::Guard::default();
    // The run's own command line, read as it was (global flags too).
    if let Ok(cli) = super::cli::Cli::try_parse_from(&origin.command) {
        for at in folders {
            match &cli.command {
                super::cli::Command::Bids(b) => {
                    guard.trees.push(("the BIDS dataset", at.join(&b.bids_dir)));
                    guard.datasets.push(at.join(&b.output_dir));
                }
                super::cli::Command::Run(r) => {
                    let list = r.list.as_ref().filter(|l| l.as_os_str() != "-");
                    guard.read.extend(list.map(|l| ("--list", at.join(l))));
                }
                _ => {}
            }
        }
    }
    for image in images {
        for at in all.iter().flatten() {
            guard
                .read
                .push(("an input of a merged run", at.join(&image.input)));
            guard
                .read
                .push(("an output of a merged run", at.join(&image.output)));
        }
    }
    guard
}

fn check_origin_target(
    flag: &str,
    target: &Path,
    origin: &report::Origin,
    folders: &[PathBuf],
    guard: &crate::plan::Guard,
) -> anyhow::Result<()> {
    use crate::plan::identity::resolve_future;
    if let Some(why) = guard.refuses(target) {
        anyhow::bail!("{flag} {}: refused, {why}", target.display());
    }
    let Some(outdir) = &origin.outdir else {
        return super::sbatch::never_text(flag, target);
    };
    let real = resolve_future(target);
    for outdir in folders.iter().map(|at| at.join(outdir)) {
        let out = resolve_future(&outdir);
        let state = real.starts_with(out.join(crate::plan::STATE_DIR));
        let image = real.starts_with(&out) && crate::plan::is_nifti_name(&real);
        anyhow::ensure!(
            !state && !image,
            "{flag} {}: refused, it is inside the output directory {} of a merged run \
             (an output or nismooth's own folder)",
            target.display(),
            outdir.display()
        );
    }
    super::sbatch::never_text(flag, target)
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

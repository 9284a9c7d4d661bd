//! `nismooth study`: arguments in, the study's files and tables out.

use std::path::Path;

use anyhow::Context;

use crate::generate::{self, PhantomSpec};
use crate::io::OutputFormat;
use crate::study::{plot, tables, Study, StudySpec, STUDY_SCHEMA};

use super::cli::StudyArgs;
use super::{EXIT_FAILED_IMAGES, EXIT_OK};

/// A study's or an estimate's file: replaced atomically, or written into
/// a device or a FIFO (one nobody reads is an error, not a hang).
pub(super) fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    crate::io::write_report_file(path, text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

pub fn study(args: &StudyArgs) -> anyhow::Result<u8> {
    anyhow::ensure!(args.reps > 0, "--reps must be ≥ 1");
    anyhow::ensure!(
        [&args.ranks, &args.threads, &args.tasks]
            .iter()
            .all(|v| !v.is_empty() && v.iter().all(|&x| x > 0)),
        "--ranks, --threads and --tasks need positive values"
    );
    let shape = generate::parse_shape(&args.shape).context("--shape")?;
    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("creating {}", args.output.display()))?;
    check_own_files(&args.output, &args.data)?;
    let spec = StudySpec {
        ranks: args.ranks.clone(),
        threads: args.threads.clone(),
        tasks: args.tasks.clone(),
        schedule: args.schedule,
        launcher: args.launcher,
        reps: args.reps,
        images: study_images(args, shape)?,
        run_args: args.run_args.clone(),
    };
    let binary = std::env::current_exe().context("locating this nismooth binary")?;
    // Its real folder: the points' reports are named by it, so an estimate
    // from anywhere, or from a copy of study.json, knows and guards them.
    let folder = std::fs::canonicalize(&args.output)
        .with_context(|| format!("resolving {}", args.output.display()))?;
    let points = crate::study::run(&spec, &folder, &binary)?;
    let study = Study {
        schema: STUDY_SCHEMA.into(),
        nismooth_version: env!("CARGO_PKG_VERSION").into(),
        host: crate::metrics::hostname(),
        cpu: crate::study::cpu_name(),
        cores: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        folder: Some(folder),
        spec,
        points,
    };
    let out = &args.output;
    write(
        &out.join("study.json"),
        &serde_json::to_string_pretty(&study)?,
    )?;
    let failed = failed_points(&study, out);
    if !failed.is_empty() {
        remove_stale_tables(out);
        eprintln!(
            "nismooth: study: {} of {} point(s) failed, so no table, plot or estimate is made from it:",
            failed.len(),
            study.points.len()
        );
        for f in &failed {
            eprintln!("  {f}");
        }
        return Ok(EXIT_FAILED_IMAGES);
    }
    write(&out.join("study.csv"), &tables::csv(&study))?;
    let md = tables::markdown(&study);
    write(&out.join("study.md"), &md)?;
    let plots = plot::write_all(&study, out)?;
    super::say(&md)?;
    eprintln!(
        "study written to {}: study.json, study.csv, study.md, {} plot file(s)",
        out.display(),
        plots.len()
    );
    Ok(EXIT_OK)
}

/// The study's images: `--data`'s, or as many phantoms as the largest
/// point needs, generated under OUTPUT/data.
fn study_images(args: &StudyArgs, shape: Vec<usize>) -> anyhow::Result<Vec<std::path::PathBuf>> {
    if !args.data.is_empty() {
        return Ok(crate::plan::Sources::new(args.data.clone()).paths()?);
    }
    let max_tasks = *args.tasks.iter().max().unwrap();
    let dir = args.output.join("data");
    let spec = PhantomSpec {
        shape,
        dtype: args.dtype.parse().context("--dtype")?,
        seed: 1,
        vary_size: args.vary_size,
        noise: crate::generate::NoiseChoice::Rician,
        format: OutputFormat::NiiGz,
    };
    eprintln!("generating {max_tasks} image(s) in {}", dir.display());
    Ok(generate::generate(&dir, max_tasks, &spec)?)
}

/// The points with a failed image, each with its log: such a point measured
/// something else than the study asks, so no table, plot or estimate is
/// made from the study.
fn failed_points(study: &Study, out: &Path) -> Vec<String> {
    study
        .points
        .iter()
        .filter(|p| p.failed > 0)
        .map(|p| {
            let log = out.join("runs").join(format!("{}.log", p.name()));
            format!(
                "{}: {} of {} images failed (see {})",
                p.name(),
                p.failed,
                p.tasks,
                log.display()
            )
        })
        .collect()
}

/// No table or plot of an earlier study may stand beside a failed one's
/// record.
fn remove_stale_tables(out: &Path) {
    for name in plot::own_files().iter().filter(|n| *n != "study.json") {
        let _ = std::fs::remove_file(out.join(name));
    }
}

/// The study's own file names in OUTPUT must be free or regular files: a
/// link there was written through (onto the study's own input), and a FIFO
/// held the charts' writer forever. Refused before the study runs.
fn check_own_files(out: &Path, data: &[std::path::PathBuf]) -> anyhow::Result<()> {
    // Its folders are its own too: `work/POINT` is emptied before each
    // point (a link there took a folder outside with it), and `runs/`
    // gets each point's list and log (written through a link there).
    for sub in ["data", "runs", "work"] {
        let path = out.join(sub);
        if let Ok(m) = std::fs::symlink_metadata(&path) {
            anyhow::ensure!(
                m.file_type().is_dir(),
                "{} exists and is not a folder (a link, a file): the study keeps its {sub} there; \
                 remove it or choose another -o",
                path.display()
            );
        }
    }
    if let Ok(entries) = std::fs::read_dir(out.join("runs")) {
        for e in entries.filter_map(Result::ok) {
            let regular = e.file_type().is_ok_and(|t| t.is_file());
            anyhow::ensure!(
                regular,
                "{} is not a regular file: the study writes its points' lists, logs and reports in {}",
                e.path().display(),
                out.join("runs").display()
            );
        }
    }
    let (work, runs) = (
        crate::plan::identity::resolve_future(&out.join("work")),
        crate::plan::identity::resolve_future(&out.join("runs")),
    );
    for d in data {
        let real = crate::plan::identity::resolve_future(d);
        anyhow::ensure!(
            !real.starts_with(&work) && !real.starts_with(&runs),
            "--data {}: refused, it is inside the study's {} or {}, which the study empties and rewrites",
            d.display(),
            work.display(),
            runs.display()
        );
    }
    for name in plot::own_files() {
        let path = out.join(&name);
        if let Ok(m) = std::fs::symlink_metadata(&path) {
            anyhow::ensure!(
                m.file_type().is_file(),
                "{} exists and is not a regular file (a link, a FIFO, a device or a folder): \
                 the study writes its {name} there; remove it or choose another -o",
                path.display()
            );
        }
    }
    Ok(())
}

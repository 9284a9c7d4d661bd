//! `nismooth bids BIDS_DIR OUTPUT_DIR participant`: the run over a BIDS
//! query's images, then, on root, the derivatives' metadata (a sidecar per
//! image written or kept, `dataset_description.json`).

use std::path::Path;

use anyhow::Context;

use crate::bids::sidecar::{self, SourceLink};
use crate::bids::{self, Query};
use crate::config::RunConfig;
use crate::config::Selection;
use crate::filter::{Compat, Units};
use crate::report::{Report, Status};

use super::cli::{BidsArgs, RunArgs};
use super::run::{self, Kernel, Route};
use super::EXIT_OK;

pub fn bids(args: &BidsArgs) -> anyhow::Result<u8> {
    if let Err(e) = checks(args) {
        // Under a launcher every rank finds the same refusal before MPI
        // starts: the first rank says it (its launcher's rank variable).
        if launched_rank() == 0 {
            return Err(e);
        }
        return Ok(super::EXIT_USAGE);
    }
    if args.analysis_level == "group" {
        if launched_rank() == 0 {
            eprintln!("nismooth bids: the group level has nothing to do: each participant's images are smoothed at the participant level");
        }
        return Ok(EXIT_OK);
    }
    run::run_with(&run_args(args), &Derivatives(args))
}

/// What `bids` refuses before any process starts its run.
fn checks(args: &BidsArgs) -> anyhow::Result<()> {
    bids::check_dataset(&args.bids_dir).map_err(anyhow::Error::msg)?;
    if args.analysis_level == "group" {
        return Ok(());
    }
    check_labels(args)?;
    inside_derivatives(&args.bids_dir, &args.output_dir)?;
    sidecar::check_output_dataset(&args.output_dir, crate::report::journal::written)
        .map_err(anyhow::Error::msg)?;
    let link = SourceLink::new(&args.bids_dir, &args.output_dir);
    sidecar::check_links(&args.output_dir, &link).map_err(anyhow::Error::msg)
}

/// This process's rank as its launcher numbers it (mpirun, srun), before
/// MPI starts; 0 when no launcher says.
fn launched_rank() -> u64 {
    [
        "OMPI_COMM_WORLD_RANK",
        "PMI_RANK",
        "PMIX_RANK",
        "SLURM_PROCID",
    ]
    .iter()
    .find_map(|v| std::env::var(v).ok()?.trim().parse().ok())
    .unwrap_or(0)
}

/// The participant level: a query's images in, a derivatives dataset out.
struct Derivatives<'a>(&'a BidsArgs);

impl Route for Derivatives<'_> {
    fn select(&self, kernel: &Kernel) -> anyhow::Result<Selection> {
        query(self.0, kernel).map(Selection::Bids)
    }

    fn after(&self, report: &Report, cfg: &RunConfig) -> anyhow::Result<()> {
        derivatives(&self.0.bids_dir, report, cfg).context("writing the derivatives' metadata")
    }
}

/// The query the options describe, for `sbatch` (which plans the job
/// before it runs).
pub fn query_of(args: &BidsArgs) -> anyhow::Result<Query> {
    check_labels(args)?;
    query(args, &run::kernel(&run_args(args))?)
}

/// The query the options describe; the default `desc-` label from the kernel.
fn query(args: &BidsArgs, kernel: &Kernel) -> anyhow::Result<Query> {
    let desc = args
        .desc
        .clone()
        .unwrap_or_else(|| bids::default_desc(kernel.values, kernel.units));
    anyhow::ensure!(
        bids::label_ok(&desc),
        "--desc '{desc}': a BIDS label has letters and digits only"
    );
    let whence = match args.desc {
        Some(_) => "from --desc",
        None => "from the kernel's value",
    };
    anyhow::ensure!(
        desc.len() <= bids::MAX_DESC,
        "desc label '{}…' is {} characters long ({whence}): give a shorter one with --desc (at most {})",
        &desc[..24],
        desc.len(),
        bids::MAX_DESC
    );
    Ok(Query {
        root: args.bids_dir.clone(),
        participants: args.participant_label.clone(),
        sessions: args.session_label.clone(),
        datatypes: args.datatype.clone(),
        suffixes: args.suffix.clone(),
        desc,
    })
}

/// Each label option becomes a folder or a part of a file name: one label
/// each, so that none can climb out of the dataset (`--datatype ../../x`).
fn check_labels(args: &BidsArgs) -> anyhow::Result<()> {
    let lists = [
        ("--participant-label", &args.participant_label, "sub"),
        ("--session-label", &args.session_label, "ses"),
        ("--datatype", &args.datatype, ""),
        ("--suffix", &args.suffix, ""),
    ];
    for (option, values, key) in lists {
        for v in values {
            anyhow::ensure!(
                bids::label_ok(bids::bare(v, key)),
                "{option} '{v}': a BIDS label has letters and digits only"
            );
        }
    }
    Ok(())
}

/// An OUTPUT_DIR inside the dataset must be below its `derivatives/`:
/// anywhere else its files would make the dataset itself invalid.
fn inside_derivatives(root: &Path, out: &Path) -> anyhow::Result<()> {
    use crate::plan::identity::resolve_future;
    let (root, out) = (resolve_future(root), resolve_future(out));
    if let Ok(rel) = out.strip_prefix(&root) {
        let first = rel.components().next().map(|c| c.as_os_str().to_owned());
        anyhow::ensure!(
            first.is_some_and(|f| f == "derivatives"),
            "OUTPUT_DIR {} is inside the BIDS dataset {}: put it below {}/derivatives/ or outside the dataset",
            out.display(),
            root.display(),
            root.display()
        );
    }
    Ok(())
}

/// `run`'s arguments for the same job: the output directory and the options.
pub fn run_args(args: &BidsArgs) -> RunArgs {
    RunArgs {
        inputs: Vec::new(),
        recursive: false,
        list: None,
        output: args.output_dir.clone(),
        options: args.options.clone(),
    }
}

/// Root's work after the images: a sidecar beside each output that exists
/// now (made or kept), and the dataset's description.
fn derivatives(root: &Path, report: &Report, cfg: &RunConfig) -> anyhow::Result<()> {
    let link = SourceLink::new(root, &cfg.outdir);
    let smoothing = sidecar::Smoothing {
        description: describe(cfg),
        settings: cfg.output_settings(),
    };
    let mut written = 0;
    for rec in &report.images {
        // A skipped output keeps the sidecar that came with it: these
        // settings did not make its bytes. Only one whose journal vouches
        // for these settings (--resume) gets one where it has none.
        let output = Path::new(&rec.output);
        let ours = match rec.status {
            Status::Ok => true,
            Status::Skipped => cfg.resume && !sidecar::json_path(output).exists(),
            _ => false,
        };
        if !ours {
            continue;
        }
        let input = Path::new(&rec.input);
        let rel = input.strip_prefix(root).unwrap_or(input);
        let meta = sidecar::inherited(root, input).map_err(anyhow::Error::msg)?;
        sidecar::write_sidecar(output, &link.uri(rel), meta, &smoothing)?;
        written += 1;
    }
    // GeneratedBy names the runs that made bytes: a run that only skipped
    // (or failed) adds no entry, unless the dataset has no description yet
    // (a run killed before writing one, then resumed).
    let wrote = report.images.iter().any(|r| r.status == Status::Ok);
    let described = cfg.outdir.join("dataset_description.json").exists();
    let skipped = report.images.iter().any(|r| r.status == Status::Skipped);
    if !wrote && (described || !skipped) {
        log::info!(
            "derivatives: no image written by this run: dataset_description.json left as it was"
        );
        return Ok(());
    }
    sidecar::write_dataset_description(&cfg.outdir, &link, &report.command, &smoothing)?;
    log::info!(
        "derivatives: {written} sidecar(s) and dataset_description.json in {}",
        cfg.outdir.display()
    );
    Ok(())
}

/// One sentence on the kernel and whose semantics made it.
fn describe(cfg: &RunConfig) -> String {
    let values = if cfg.sigma.iter().all(|v| *v == cfg.sigma[0]) {
        format!("{}", cfg.sigma[0])
    } else {
        format!(
            "{}, {}, {} (x, y, z)",
            cfg.sigma[0], cfg.sigma[1], cfg.sigma[2]
        )
    };
    let kernel = match cfg.units {
        Units::FwhmMm => format!("FWHM {values} mm"),
        Units::Mm => format!("sigma {values} mm"),
        Units::Voxel => format!("sigma {values} voxels"),
    };
    let whose = match cfg.compat {
        Compat::Scipy => "scipy.ndimage.gaussian_filter, bit for bit",
        Compat::Fsl => "fslmaths -s",
        Compat::Nilearn => "nilearn.image.smooth_img, bit for bit",
    };
    format!("Gaussian smoothing, {kernel}, as {whose}.")
}

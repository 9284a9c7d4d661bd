//! `nismooth bids BIDS_DIR OUTPUT_DIR participant`: the run over a BIDS
//! query's images, then, on root, the derivatives' metadata (a sidecar per
//! image written or kept, `dataset_description.json`).

use std::path::Path;

use anyhow::Context;

use nismooth::bids::sidecar::{self, SourceLink};
use nismooth::bids::{self, Query};
use nismooth::config::RunConfig;
use nismooth::filter::{Compat, Units};
use nismooth::report::{Report, Status};

use super::cli::{BidsArgs, RunArgs};
use super::{run, EXIT_OK};

pub fn bids(args: &BidsArgs) -> anyhow::Result<u8> {
    anyhow::ensure!(
        args.bids_dir.join("dataset_description.json").is_file(),
        "{} is not a BIDS dataset: it has no dataset_description.json",
        args.bids_dir.display()
    );
    if args.analysis_level == "group" {
        eprintln!("nismooth bids: the group level has nothing to do: each participant's images are smoothed at the participant level");
        return Ok(EXIT_OK);
    }
    let run_args = run_args(args);
    let query = query(args)?;
    let root = query.root.clone();
    inside_derivatives(&root, &args.output_dir)?;
    run::run_with(&run_args, Some(query), &|report, cfg| {
        derivatives(&root, report, cfg).context("writing the derivatives' metadata")
    })
}

/// An OUTPUT_DIR inside the dataset must be below its `derivatives/`:
/// anywhere else its files would make the dataset itself invalid.
fn inside_derivatives(root: &Path, out: &Path) -> anyhow::Result<()> {
    use nismooth::plan::identity::resolve_future;
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

/// The query the options describe; the default `desc-` label from the kernel.
pub fn query(args: &BidsArgs) -> anyhow::Result<Query> {
    let (values, units) = match &args.options.fwhm {
        Some(f) => (nismooth::config::parse_axes("--fwhm", f)?, Units::FwhmMm),
        None => (
            nismooth::config::parse_sigma(&args.options.sigma)?,
            args.options.units,
        ),
    };
    let desc = args
        .desc
        .clone()
        .unwrap_or_else(|| bids::default_desc(values, units));
    anyhow::ensure!(
        bids::label_ok(&desc),
        "--desc '{desc}': a BIDS label has letters and digits only"
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
        if !matches!(rec.status, Status::Ok | Status::Skipped) {
            continue;
        }
        let input = Path::new(&rec.input);
        let rel = input.strip_prefix(root).unwrap_or(input);
        let meta = sidecar::inherited(root, input).map_err(anyhow::Error::msg)?;
        sidecar::write_sidecar(Path::new(&rec.output), &link.uri(rel), meta, &smoothing)?;
        written += 1;
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

//! `RunConfig`: a run's settings as plain data, with the rules that tie them
//! together (`check`). The command line (`app::run`) fills it in from its
//! options; tests and other callers start from `RunConfig::new`.

use std::path::PathBuf;

use crate::choice::named_choices;
use crate::error::UsageError;
use crate::filter::{BackendChoice, Compat, Units};
use crate::filter::{ExpFlavour, FilterSpec, Mode, Semantics};
use crate::io::OutputFormat;
use crate::plan::array::ArraySlot;
use crate::plan::schedule::{Schedule, Split};
use crate::resources::default_readers;
use crate::slurm::SlurmContext;
use crate::volume::DType;

/// How a run shows its progress.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ProgressChoice {
    Auto,
    Bar,
    Log,
    None,
}
named_choices!(ProgressChoice {
    Auto => "auto": "a bar on a terminal, log lines otherwise",
    Bar => "bar": "a bar, redrawn in place (for a terminal)",
    Log => "log": "a line every --progress-interval seconds, and one at the end",
    None => "none": "nothing",
});

/// The images a run takes: what the user named (paths, a list, trees), or
/// a BIDS dataset's query. The driver matches on it, so that `plan` never
/// needs to know what BIDS is.
#[derive(Clone, Debug)]
pub enum Selection {
    Named(crate::plan::Sources),
    Bids(crate::bids::Query),
}

impl Selection {
    /// Every input image, in order.
    pub fn discover(&self) -> Result<Vec<crate::plan::Input>, UsageError> {
        match self {
            Selection::Named(sources) => sources.discover(),
            Selection::Bids(query) => query.discover(),
        }
    }

    /// What the run's reports may never be written over besides its images
    /// and outputs: its list, or the BIDS dataset it reads and the
    /// derivative dataset's own files in `outdir`.
    pub fn guard(&self, outdir: &std::path::Path) -> crate::plan::Guard {
        match self {
            Selection::Named(s) => crate::plan::Guard {
                read: s
                    .list
                    .iter()
                    .filter(|l| l.as_os_str() != "-")
                    .map(|l| ("--list", l.clone()))
                    .collect(),
                ..Default::default()
            },
            Selection::Bids(q) => crate::plan::Guard {
                trees: vec![("the BIDS dataset", q.root.clone())],
                datasets: vec![outdir.to_path_buf()],
                ..Default::default()
            },
        }
    }

    /// Whether folders are searched to the bottom (the report's `recursive`).
    pub fn recursive(&self) -> bool {
        matches!(self, Selection::Named(s) if s.recursive)
    }
}

/// A report's `config` keeps `recursive` from before the selection was one value.
fn serialize_recursive<S: serde::Serializer>(sel: &Selection, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_bool(sel.recursive())
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct RunConfig {
    /// What to smooth (`recursive` in a report).
    #[serde(rename = "recursive", serialize_with = "serialize_recursive")]
    pub selection: Selection,
    pub outdir: PathBuf,
    /// The output file's name when `-o` named a file (fslmaths' habit):
    /// one image, written to `outdir/output_name`.
    #[serde(skip)]
    pub output_name: Option<std::ffi::OsString>,
    /// Sigma per axis in `units`.
    pub sigma: [f64; 3],
    pub units: Units,
    /// scipy's semantics, or fslmaths -s (σ in mm).
    pub compat: Compat,
    pub truncate: f64,
    pub mode: Mode,
    pub cval: f64,
    /// None: keep the dtype nibabel presents.
    pub dtype: Option<DType>,
    pub threads: usize,
    /// Where the thread count came from (flag, SLURM_CPUS_PER_TASK, cores).
    pub threads_from: String,
    /// Reader threads: images read and inflated at once.
    pub readers: usize,
    /// How images are shared among ranks.
    pub schedule: Schedule,
    /// Whether one image may be shared by several ranks.
    pub split: Split,
    pub compression_level: u32,
    /// None: same container as each input.
    pub format: Option<OutputFormat>,
    pub exp: ExpFlavour,
    #[serde(skip)]
    pub report: Option<PathBuf>,
    #[serde(skip)]
    pub csv: Option<PathBuf>,
    #[serde(skip)]
    pub trace: Option<PathBuf>,
    /// This process's Slurm job context, when inside a job.
    #[serde(skip)]
    pub slurm: Option<SlurmContext>,
    /// The job-array task whose share of the list this run takes.
    pub array: Option<ArraySlot>,
    /// Consecutive images per array task (None: cyclic shares).
    pub array_chunk: Option<usize>,
    pub backend: BackendChoice,
    pub skip_existing: bool,
    pub resume: bool,
    /// Sync each output's data before its rename, and the folder after.
    pub sync: bool,
    #[serde(skip)]
    pub progress: ProgressChoice,
    /// How often log-mode progress lines come.
    #[serde(skip)]
    pub progress_every: std::time::Duration,
    /// Signals, grace and deadline (`driver::stop`).
    pub stop: StopSettings,
}

/// How a run may be stopped early: what `RunConfig` carries.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StopSettings {
    /// Signal numbers that start a drain (a second one aborts).
    pub signals: Vec<i32>,
    /// How long images in flight may take to finish once draining.
    pub grace_s: f64,
    /// No image starts that would end after this (Unix seconds).
    pub deadline_unix: Option<f64>,
    /// Where the deadline came from, for the log and the report.
    pub deadline_from: Option<String>,
}

impl Default for StopSettings {
    fn default() -> Self {
        StopSettings {
            signals: vec![libc::SIGTERM, libc::SIGINT, libc::SIGUSR1],
            grace_s: 10.0,
            deadline_unix: None,
            deadline_from: None,
        }
    }
}

/// `--sigma` or `--fwhm`: one value, or three (x,y,z).
pub fn parse_sigma(s: &str) -> Result<[f64; 3], UsageError> {
    parse_axes("--sigma", s)
}

pub fn parse_axes(option: &'static str, s: &str) -> Result<[f64; 3], UsageError> {
    let vals: Vec<f64> = s
        .split(',')
        .map(|v| v.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|_| {
            bad_sigma(
                option,
                s,
                "expected a number or three comma-separated numbers".into(),
            )
        })?;
    let sigma = match vals.as_slice() {
        [v] => [*v; 3],
        [a, b, c] => [*a, *b, *c],
        _ => {
            return Err(bad_sigma(
                option,
                s,
                format!(
                    "give one value or three (x,y,z), not {}; a 4-D image is smoothed volume by volume \
                     (σ 0 along time, as nilearn's smooth_img), so there is no time value to give",
                    vals.len()
                ),
            ))
        }
    };
    if sigma.iter().any(|v| !v.is_finite() || *v < 0.0) {
        return Err(bad_sigma(option, s, "values must be finite and ≥ 0".into()));
    }
    Ok(sigma)
}

fn bad_sigma(option: &'static str, value: &str, expected: String) -> UsageError {
    UsageError::BadValue {
        option,
        value: value.into(),
        expected,
    }
}

/// Threads per rank when `--threads` is not given: SLURM_CPUS_PER_TASK when
/// set (the allocation says), else the node's cores shared among the
/// `node_ranks` ranks on it, and never more than this process may run on
/// (a launcher that binds each rank to one core gets one thread).
pub fn default_threads(node_ranks: usize) -> (usize, String) {
    let allowed = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    if let Some(n) = std::env::var("SLURM_CPUS_PER_TASK")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
    {
        // Slurm's cgroup gives the task its CPUs: more than this process may
        // run on is a stray variable (2000 threads for 6 tiny images took
        // 10 s, 100 000 never finished), so the CPUs it has bound it.
        if n > allowed {
            return (
                allowed,
                format!("SLURM_CPUS_PER_TASK={n}, capped to the {allowed} CPU(s) this process may run on"),
            );
        }
        return (n, "SLURM_CPUS_PER_TASK".into());
    }
    if node_ranks <= 1 {
        return (allowed, "available cores".into());
    }
    // SAFETY: sysconf only reads a system value.
    let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as usize;
    let share = (online / node_ranks).clamp(1, allowed);
    (
        share,
        format!("{online} cores / {node_ranks} ranks on the node"),
    )
}

impl RunConfig {
    /// The defaults of `nismooth run INPUTS -o OUTDIR` on one thread, with
    /// no Slurm context: sigma 2 voxels, scipy's semantics, reflect.
    pub fn new(inputs: Vec<PathBuf>, outdir: PathBuf) -> RunConfig {
        let sources = crate::plan::Sources {
            outdir: Some(outdir.clone()),
            ..crate::plan::Sources::new(inputs)
        };
        RunConfig::of(Selection::Named(sources), outdir)
    }

    /// The same defaults for any selection of images.
    pub fn of(selection: Selection, outdir: PathBuf) -> RunConfig {
        RunConfig {
            selection,
            outdir,
            output_name: None,
            sigma: [2.0; 3],
            units: Units::Voxel,
            compat: Compat::Scipy,
            truncate: 4.0,
            mode: Mode::Reflect,
            cval: 0.0,
            dtype: None,
            threads: 1,
            threads_from: "--threads".into(),
            readers: default_readers(1),
            schedule: Schedule::Balanced,
            split: Split::Auto,
            compression_level: 1,
            format: None,
            exp: ExpFlavour::detect(),
            report: None,
            csv: None,
            trace: None,
            slurm: None,
            array: None,
            array_chunk: None,
            backend: BackendChoice::Auto,
            skip_existing: false,
            resume: false,
            sync: true,
            progress: ProgressChoice::Auto,
            progress_every: std::time::Duration::from_secs(10),
            stop: StopSettings::default(),
        }
    }

    /// The rules between settings, checked before any work: finite values,
    /// what `--compat fsl` excludes, a kernel that options alone make too
    /// large (per image, `filter_spec` meets a tighter bound).
    pub fn check(&self) -> Result<(), UsageError> {
        let bad = |option, value: &dyn std::fmt::Display, expected: &str| {
            Err(UsageError::BadValue {
                option,
                value: value.to_string(),
                expected: expected.into(),
            })
        };
        if !self.truncate.is_finite() || self.truncate < 0.0 {
            return bad("--truncate", &self.truncate, "must be finite and ≥ 0");
        }
        if !self.cval.is_finite() {
            return bad("--cval", &self.cval, "must be finite");
        }
        if self.threads == 0 {
            return bad("--threads", &self.threads, "must be ≥ 1");
        }
        if self.compat == Compat::Fsl
            && (self.mode != Mode::Reflect || self.truncate != 4.0 || self.cval != 0.0)
        {
            return Err(UsageError::Conflict(
                "--compat fsl takes σ in mm and renormalises at the edges: \
                 --mode, --truncate and --cval do not apply",
            ));
        }
        if self.compat == Compat::Nilearn {
            if self.units != Units::FwhmMm {
                return Err(UsageError::Conflict(
                    "--compat nilearn smooths by a FWHM in mm, as smooth_img(img, fwhm): give --fwhm",
                ));
            }
            if self.mode != Mode::Reflect || self.truncate != 4.0 || self.cval != 0.0 {
                return Err(UsageError::Conflict(
                    "--compat nilearn uses scipy's defaults, as smooth_img does: \
                     --mode, --truncate and --cval do not apply",
                ));
            }
            if self.dtype.is_some() {
                return Err(UsageError::Conflict(
                    "--compat nilearn decides the dtype as smooth_img does (integers become float32): --dtype does not apply",
                ));
            }
        }
        if self.array_chunk.is_some() && self.array.is_none() {
            return Err(UsageError::Conflict(
                "--array-chunk needs a job array (SLURM_ARRAY_TASK_ID)",
            ));
        }
        self.filter_spec([1.0; 3], [1.0; 3]).check_radius(
            3,
            crate::filter::MAX_RADIUS,
            " (from the options; σ in mm counted at 1 mm voxels)",
        )?;
        Ok(())
    }

    /// The settings, by the names `output_settings` and a report's `config`
    /// give them, that change an output's values or its container: two runs
    /// that differ in one made different files (the compression level only
    /// changes how the same values are stored). Sidecars and merged reports
    /// must state one set of these, the one that made the bytes.
    pub const VALUE_SETTINGS: [&'static str; 10] = [
        "sigma", "fwhm", "units", "compat", "truncate", "mode", "cval", "dtype", "exp", "format",
    ];

    /// What determines an output's bytes, by option name: recorded in the
    /// journal, so that `--resume` never skips an output made otherwise.
    pub fn output_settings(&self) -> serde_json::Value {
        // FWHM values under their own name, so that a refusal says "fwhm".
        let kernel = if self.units == Units::FwhmMm {
            "fwhm"
        } else {
            "sigma"
        };
        serde_json::json!({
            kernel: self.sigma,
            "units": self.units,
            "compat": self.compat,
            "truncate": self.truncate,
            "mode": self.mode,
            "cval": self.cval,
            "dtype": self.dtype.map_or("input".to_string(), |d| d.to_string()),
            "format": self.format.map_or("as input", |f| f.extension()),
            "compression-level": self.compression_level,
            "exp": self.exp,
        })
    }

    /// The filter for this image, or why it cannot have one: the per-image
    /// rules in one place (nilearn refuses images of fewer than three
    /// spatial axes; a kernel in mm needs finite, non-zero voxel sizes; the
    /// radius is bounded by the image's longest axis). The pipeline reads,
    /// asks here once, and carries the answer with the image.
    pub fn image_spec(&self, img: &crate::io::Image) -> Result<FilterSpec, String> {
        let ndim = img.shape.spatial_ndim;
        if self.compat == Compat::Nilearn && ndim < 3 {
            return Err(format!(
                "a {ndim}-D image: nilearn's smooth_img filters three spatial axes and fails on it (no reference to match)"
            ));
        }
        if self.units != Units::Voxel {
            let (what, size): (&str, &dyn Fn(usize) -> f64) = match self.compat {
                Compat::Nilearn => ("the affine's voxel size", &|a| img.voxel_sizes[a]),
                _ => ("pixdim", &|a| img.pixdim[a]),
            };
            let bad = (0..ndim)
                .find(|&a| self.sigma[a] > 0.0 && !(size(a).is_finite() && size(a) != 0.0));
            if let Some(a) = bad {
                return Err(format!(
                    "{what} along axis {} is {}: cannot convert the kernel from mm to voxels",
                    a + 1,
                    size(a)
                ));
            }
        }
        let spec = self.filter_spec(img.pixdim, img.voxel_sizes);
        let longest = img.shape.spatial[..ndim].iter().copied().max().unwrap_or(1);
        spec.check_radius(
            ndim,
            FilterSpec::image_bound(longest),
            &format!(
                " ({}× this image's longest axis, {longest} voxels)",
                crate::filter::RADIUS_PER_AXIS
            ),
        )
        .map_err(|e| e.to_string())?;
        Ok(spec)
    }

    /// The filter for an image with voxel size `pixdim` and, as nibabel's
    /// affine has it, `voxel_sizes` (σ in mm and FWHM are converted with
    /// pixdim, as FSL reads it, except under nilearn's semantics).
    pub fn filter_spec(&self, pixdim: [f64; 3], voxel_sizes: [f64; 3]) -> FilterSpec {
        let ratio = crate::filter::nilearn::fwhm_over_sigma();
        let sigma = match (self.compat, self.units) {
            (_, Units::Voxel) | (Compat::Fsl, Units::Mm) => self.sigma,
            (Compat::Fsl, Units::FwhmMm) => self.sigma.map(|f| f / ratio),
            (Compat::Nilearn, _) => {
                std::array::from_fn(|a| self.sigma[a] / (ratio * voxel_sizes[a]))
            }
            (Compat::Scipy, Units::Mm) => std::array::from_fn(|a| self.sigma[a] / pixdim[a].abs()),
            (Compat::Scipy, Units::FwhmMm) => {
                std::array::from_fn(|a| self.sigma[a] / (ratio * pixdim[a].abs()))
            }
        };
        let semantics = match self.compat {
            Compat::Scipy | Compat::Nilearn => Semantics::Scipy,
            // fslmaths holds voxel sizes as float, NIfTI-2's too.
            Compat::Fsl => Semantics::Fsl {
                pixdim: pixdim.map(|p| p as f32),
            },
        };
        FilterSpec {
            sigma,
            truncate: self.truncate,
            mode: self.mode,
            cval: self.cval,
            exp: self.exp,
            semantics,
        }
    }

    /// The dtype an image presented in `dtype` is written in: `--dtype`,
    /// else nilearn's rule under its semantics, else the input's.
    pub fn output_dtype(&self, dtype: DType) -> DType {
        match (self.dtype, self.compat) {
            (Some(d), _) => d,
            (None, Compat::Nilearn) => crate::filter::nilearn::dtype(dtype),
            (None, _) => dtype,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigma_forms() {
        assert_eq!(parse_sigma("2").unwrap(), [2.0; 3]);
        assert_eq!(parse_sigma("1, 2,3").unwrap(), [1.0, 2.0, 3.0]);
        assert!(parse_sigma("1,2").is_err());
        assert!(parse_sigma("-1").is_err());
        assert!(parse_sigma("x").is_err());
    }
}

//! The Gaussian filter: what to compute (`FilterSpec`) and who computes it (`Backend`).
//!
//! The spec is backend-independent and carries scipy's exact semantics; the
//! CPU backend and the CUDA backend implement the same trait, so the pipeline
//! and the bit-exactness tests never care which runs.

pub mod cpu;
pub mod cuda;
pub mod extend;
pub mod fsl;
pub mod kernel;
pub mod nilearn;
pub mod simd;
pub mod slab;

pub use extend::Mode;
pub use kernel::{ExpFlavour, Kernel1d};

use crate::choice::named_choices;
pub use crate::volume::Shape;
use crate::volume::{DType, Voxels};

/// What the kernel's size is given as: σ in voxels, σ in mm, or the full
/// width at half maximum in mm (`--fwhm`, σ = FWHM / √(8 ln 2)).
#[derive(Copy, Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Units {
    Voxel,
    Mm,
    FwhmMm,
}
named_choices!(Units { Voxel => "voxel", Mm => "mm", FwhmMm => "fwhm-mm" });

/// Whose semantics to reproduce: scipy.ndimage.gaussian_filter, fslmaths
/// -s, or nilearn.image.smooth_img.
#[derive(Copy, Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compat {
    Scipy,
    Fsl,
    Nilearn,
}
named_choices!(Compat { Scipy => "scipy", Fsl => "fsl", Nilearn => "nilearn" });

/// Which filter backend a run asks for; `Auto` takes CUDA where it works.
#[derive(Copy, Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    Cpu,
    Cuda,
    Auto,
}
named_choices!(BackendChoice { Cpu => "cpu", Cuda => "cuda", Auto => "auto" });

/// An axis with sigma at or below this is skipped, as in scipy.
pub const SIGMA_EPS: f64 = 1e-15;

/// What to compute for one image: sigma per spatial axis (in voxels for
/// scipy, in mm for FSL), and the options of the semantics chosen.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct FilterSpec {
    pub sigma: [f64; 3],
    pub truncate: f64,
    pub mode: Mode,
    pub cval: f64,
    pub exp: ExpFlavour,
    pub semantics: Semantics,
}

/// Whose filter a spec describes.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub enum Semantics {
    /// `scipy.ndimage.gaussian_filter`: σ in voxels, f64, a boundary mode.
    Scipy,
    /// `fslmaths -s`: σ in mm over this voxel size, f32, edge renormalisation
    /// (`fsl.rs`; truncate, mode and cval do not apply).
    Fsl { pixdim: [f32; 3] },
}

/// The longest kernel radius, in voxels, that options may ask for: four
/// times the longest axis NIfTI-1 can describe. Per image the bound is
/// tighter (`FilterSpec::check_radius`).
pub const MAX_RADIUS: f64 = 4.0 * 32768.0;

/// Per image, a radius is refused beyond this many times the image's longest
/// axis (and `MIN_RADIUS_BOUND`): well before that, every output voxel is
/// the image's mean and the filter only burns time and memory.
pub const RADIUS_PER_AXIS: usize = 4;
pub const MIN_RADIUS_BOUND: usize = 256;

/// A kernel too long to compute, named with where its length came from.
#[derive(Debug, thiserror::Error)]
#[error("kernel radius {} voxels along axis {axis} (σ {} voxels × truncate {}) is beyond the bound of {bound} voxels{why}", short(*.radius), short(*.sigma), short(*.truncate))]
pub struct KernelError {
    pub axis: usize,
    pub radius: f64,
    pub sigma: f64,
    pub truncate: f64,
    pub bound: f64,
    pub why: String,
}

/// A number as people write it, in scientific notation only when it is huge or tiny.
fn short(x: f64) -> String {
    if x == 0.0 || (1e-4..1e6).contains(&x.abs()) {
        format!("{x}")
    } else {
        format!("{x:.3e}")
    }
}

/// The radius scipy gives σ and truncate, as a float (`int(truncate·σ + 0.5)`
/// before the cast): a huge or non-finite value is caught before any allocation.
pub fn radius_f64(sigma: f64, truncate: f64) -> f64 {
    (truncate * sigma + 0.5).floor()
}

impl FilterSpec {
    /// Refuses a kernel longer than `bound` voxels on any axis of the first
    /// `spatial_ndim`, before anything is allocated.
    pub fn check_radius(
        &self,
        spatial_ndim: usize,
        bound: f64,
        why: &str,
    ) -> Result<(), KernelError> {
        let truncate = match self.semantics {
            Semantics::Scipy => self.truncate,
            Semantics::Fsl { .. } => 4.0,
        };
        for a in 0..spatial_ndim.min(3) {
            let sigma = match self.semantics {
                Semantics::Scipy => self.sigma[a],
                Semantics::Fsl { pixdim } => self.sigma[a] / pixdim[a].abs() as f64,
            };
            let radius = radius_f64(sigma, truncate);
            // NaN is beyond every bound too.
            let within = radius.is_finite() && radius <= bound;
            if sigma > SIGMA_EPS && !within {
                return Err(KernelError {
                    axis: a + 1,
                    radius,
                    sigma,
                    truncate,
                    bound,
                    why: why.to_string(),
                });
            }
        }
        Ok(())
    }

    /// The kernel in the words users check it by, per axis: σ in voxels
    /// and in mm, the FWHM in mm, and the radius in voxels. `voxel_mm` is
    /// the voxel size the σ was converted with.
    pub fn describe(&self, spatial_ndim: usize, voxel_mm: [f64; 3]) -> String {
        let fwhm_over_sigma = 2.0 * (2.0 * std::f64::consts::LN_2).sqrt();
        let axes = 0..spatial_ndim.clamp(1, 3);
        let vox: Vec<f64> = axes
            .clone()
            .map(|a| match self.semantics {
                Semantics::Scipy => self.sigma[a],
                Semantics::Fsl { pixdim } => self.sigma[a] / pixdim[a].abs() as f64,
            })
            .collect();
        let radius: Vec<f64> = vox
            .iter()
            .map(|&v| match (v > SIGMA_EPS, self.semantics) {
                (false, _) => 0.0,
                (true, Semantics::Scipy) => radius_f64(v, self.truncate).floor(),
                (true, Semantics::Fsl { .. }) => (4.0 * v).ceil(),
            })
            .collect();
        let mm: Vec<f64> = axes.map(|a| vox[a] * voxel_mm[a].abs()).collect();
        let fwhm: Vec<f64> = mm.iter().map(|m| m * fwhm_over_sigma).collect();
        let join = |v: &[f64]| {
            let shown: Vec<String> = v
                .iter()
                .map(|x| format!("{}", (x * 1000.0).round() / 1000.0))
                .collect();
            shown.join(", ")
        };
        let truncate = match self.semantics {
            Semantics::Scipy => format!("truncate {}", short(self.truncate)),
            Semantics::Fsl { .. } => "FSL's 4σ".to_string(),
        };
        format!(
            "σ {} voxels = {} mm (FWHM {} mm), radius {} voxels ({truncate})",
            join(&vox),
            join(&mm),
            join(&fwhm),
            join(&radius)
        )
    }

    /// The per-image bound for an image whose longest spatial axis is `longest`.
    pub fn image_bound(longest: usize) -> f64 {
        (RADIUS_PER_AXIS * longest).max(MIN_RADIUS_BOUND) as f64
    }

    /// The kernel of each spatial axis, `None` for skipped axes (σ ≤ 1e-15 or
    /// beyond the image's spatial dimensionality).
    pub fn kernels(&self, spatial_ndim: usize) -> [Option<Kernel1d>; 3] {
        std::array::from_fn(|a| {
            (a < spatial_ndim && self.sigma[a] > SIGMA_EPS)
                .then(|| Kernel1d::gaussian(self.sigma[a], self.truncate, self.exp))
        })
    }
}

/// What the filter asks, between groups of lines, to know whether to stop:
/// set once by the driver (its drain's "abandon the images in flight"), so
/// that a second signal or the end of the grace stops a long filter within
/// a few lines instead of at its end. The filter imports nothing from the
/// driver; this hook is the whole of their contact.
static CANCEL: std::sync::OnceLock<fn() -> bool> = std::sync::OnceLock::new();

/// Makes `check` the question the filters ask (the first call wins).
pub fn set_cancel_check(check: fn() -> bool) {
    let _ = CANCEL.set(check);
}

/// Whether a filter in progress should stop now.
pub fn cancelled() -> bool {
    CANCEL.get().is_some_and(|check| check())
}

#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// The run is stopping and abandoned this image part-way (a second
    /// signal, or the drain's grace ran out): its voxels are not the result.
    #[error("abandoned part-way: the run is stopping")]
    Cancelled,
    /// The voxel buffer does not hold shape's voxel count (a bug upstream, or a truncated read).
    #[error("voxel buffer holds {got} values but the shape needs {want}")]
    ShapeMismatch { got: usize, want: usize },
    /// The backend cannot run here, or not this image (built without CUDA,
    /// no driver or device, `--compat fsl` on the GPU).
    #[error("{0}")]
    Unavailable(String),
    /// The GPU failed: an allocation (out of device memory), a copy, a launch,
    /// or the kernel compile; the CUDA error is quoted.
    #[error("CUDA: {0}")]
    Device(String),
}

/// A smoothing handed to a backend that may still be running on a device.
pub enum Pending {
    /// Already finished (every synchronous backend).
    Done(Result<Voxels, FilterError>),
    /// Queued: `Backend::finish` with this ticket waits for it.
    Queued(u64),
}

/// Something that smooths volumes. Takes the voxels by value so that it can
/// work in place when the output dtype equals the input's (the default).
pub trait Backend: Send {
    fn name(&self) -> &'static str;
    fn smooth(
        &mut self,
        input: Voxels,
        shape: Shape,
        spec: &FilterSpec,
        out: DType,
    ) -> Result<Voxels, FilterError>;

    /// How many images the pipeline keeps submitted before it waits for the
    /// oldest: 1 for a synchronous backend; 2 lets a GPU upload one image
    /// while it filters another and downloads a third.
    fn depth(&self) -> usize {
        1
    }

    /// Whether `smooth` with σz = 0 may be given a 3-D image's z-slabs one
    /// at a time (`filter::slab` does the z pass): the CPU's passes are
    /// exact on any slab; a GPU's whole-image kernels are not asked.
    fn streams_slabs(&self) -> bool {
        false
    }

    /// Starts smoothing one image; by default runs `smooth` to the end.
    fn submit(&mut self, input: Voxels, shape: Shape, spec: &FilterSpec, out: DType) -> Pending {
        Pending::Done(self.smooth(input, shape, spec, out))
    }

    /// The device time of the last finished image's passes, without copies,
    /// where the backend can measure it (CUDA events); `None` on the CPU.
    fn device_time_s(&self) -> Option<f64> {
        None
    }

    /// Waits for a queued image. Tickets are finished in the order they were
    /// submitted.
    fn finish(&mut self, ticket: u64) -> Result<Voxels, FilterError> {
        Err(FilterError::Unavailable(format!(
            "ticket {ticket}: the {} backend queues nothing",
            self.name()
        )))
    }
}

/// Deterministic noise in [-50, 150) for the backends' tests.
#[cfg(test)]
pub(crate) fn test_noise(n: usize, seed: u64) -> Vec<f64> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 11) as f64 / (1u64 << 53) as f64) * 200.0 - 50.0
        })
        .collect()
}

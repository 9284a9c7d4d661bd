//! The CUDA backend: the CPU filter's separable passes, run on a GPU.
//!
//! This module holds what does not need CUDA to exist: the kernel source,
//! how each image becomes a list of kernel launches (`plan`), and which GPU a
//! rank takes. `enabled.rs` runs such plans through `cudarc` (feature
//! `cuda`); `disabled.rs` stands in with a clear error when the feature is
//! off. Keeping the plan here lets CI run the very kernels on the host
//! (`tests/cuda_kernels_on_host.rs`) and check them against the CPU backend
//! voxel for voxel, on machines that have no GPU.

use super::{FilterError, FilterSpec, Mode, Semantics, Shape};
use crate::volume::DType;

#[cfg(feature = "cuda")]
mod enabled;
#[cfg(feature = "cuda")]
pub use enabled::{compile_ptx, probe, CudaBackend};

#[cfg(not(feature = "cuda"))]
mod disabled;
#[cfg(not(feature = "cuda"))]
pub use disabled::{probe, CudaBackend};

/// Why `--compat fsl` never goes to a GPU, and what to do instead.
pub const FSL_ON_CPU_ONLY: &str =
    "--compat fsl runs on the CPU backend only (use --backend cpu or auto)";

/// The kernels, compiled by NVRTC at run time (`kernels.cu` says how).
pub const KERNEL_SOURCE: &str = include_str!("kernels.cu");

/// Threads per block over (x, y): a warp reads 32 neighbouring x.
pub const BLOCK: (u32, u32, u32) = (32, 8, 1);

/// The grid's y and z dimensions stop here (CUDA's limit); the kernel walks
/// z with a stride, so only y bounds the image (n1 ≤ 8 × 65535).
pub const MAX_GRID_YZ: u32 = 65_535;

/// The C type a `DType` is in the kernel source.
pub fn c_type(d: DType) -> &'static str {
    match d {
        DType::U8 => "unsigned char",
        DType::I8 => "signed char",
        DType::I16 => "short",
        DType::U16 => "unsigned short",
        DType::I32 => "int",
        DType::U32 => "unsigned int",
        DType::I64 => "long long",
        DType::U64 => "unsigned long long",
        DType::F32 => "float",
        DType::F64 => "double",
    }
}

/// The kernel's name for one pair of types, e.g. `nismooth_pass_int16_float32`.
pub fn kernel_name(src: DType, dst: DType) -> String {
    format!("nismooth_pass_{}_{}", src.name(), dst.name())
}

/// The preprocessor options that instantiate the kernel for one pair of types.
pub fn defines(src: DType, dst: DType) -> Vec<String> {
    vec![
        format!("-DSRC_T={}", c_type(src)),
        format!("-DDST_T={}", c_type(dst)),
        format!("-DNISMOOTH_KERNEL={}", kernel_name(src, dst)),
    ]
}

/// The kernel's number for a boundary mode (the `NISMOOTH_*` defines).
pub fn mode_code(m: Mode) -> i32 {
    match m {
        Mode::Reflect => 0,
        Mode::Nearest => 1,
        Mode::Mirror => 2,
        Mode::Constant => 3,
        Mode::Wrap => 4,
    }
}

/// A device buffer of one image in flight: the upload, and two buffers in the
/// output type that the passes write in turn (a pass cannot run in place:
/// every thread reads its neighbours).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Buf {
    Input,
    A,
    B,
}

/// One kernel launch: a pass along `axis` with scipy's half kernel `weights`
/// (`weights[0]` the centre), from one buffer into another.
#[derive(Clone, Debug, PartialEq)]
pub struct Pass {
    pub axis: usize,
    pub weights: Vec<f64>,
    pub from: Buf,
    pub to: Buf,
    pub src: DType,
    pub dst: DType,
}

/// Everything the device does for one image. `passes` is empty when no axis
/// is filtered: scipy then only casts, which the host does.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub passes: Vec<Pass>,
    /// (n0, n1, n2, n2 × volumes), the kernel's extents.
    pub dims: [i64; 4],
    pub grid: (u32, u32, u32),
    pub mode: i32,
    pub cval: f64,
    /// Voxels in the whole image (all volumes).
    pub len: usize,
}

impl Plan {
    /// The buffer that holds the result once every pass has run.
    pub fn result(&self) -> Option<Buf> {
        self.passes.last().map(|p| p.to)
    }
}

/// The launches that smooth one image of `shape` from `input` into `out`,
/// in the CPU backend's order (x, then y, then z; skipped axes left out).
pub fn plan(
    shape: Shape,
    spec: &FilterSpec,
    input: DType,
    out: DType,
) -> Result<Plan, FilterError> {
    if let Semantics::Fsl { .. } = spec.semantics {
        return Err(FilterError::Unavailable(FSL_ON_CPU_ONLY.into()));
    }
    let [n0, n1, n2] = shape.spatial;
    let slabs = n2 * shape.volumes;
    let blocks_y = n1.div_ceil(BLOCK.1 as usize);
    if blocks_y > MAX_GRID_YZ as usize {
        return Err(FilterError::Unavailable(format!(
            "an image {n1} voxels along y exceeds the CUDA grid (at most {})",
            BLOCK.1 * MAX_GRID_YZ
        )));
    }
    let mut passes = Vec::new();
    let mut at = Buf::Input;
    for (axis, k) in spec.kernels(shape.spatial_ndim).into_iter().enumerate() {
        let Some(k) = k else { continue };
        let to = if at == Buf::A { Buf::B } else { Buf::A };
        passes.push(Pass {
            axis,
            weights: k.half.clone(),
            from: at,
            to,
            src: if at == Buf::Input { input } else { out },
            dst: out,
        });
        at = to;
    }
    let to_i64 = |n: usize| n as i64;
    Ok(Plan {
        passes,
        dims: [to_i64(n0), to_i64(n1), to_i64(n2), to_i64(slabs)],
        grid: (
            n0.div_ceil(BLOCK.0 as usize) as u32,
            blocks_y as u32,
            slabs.clamp(1, MAX_GRID_YZ as usize) as u32,
        ),
        mode: mode_code(spec.mode),
        cval: spec.cval,
        len: shape.len(),
    })
}

/// Device bytes one image in flight takes: its upload, and two buffers in
/// the output type.
pub fn device_bytes(voxels: usize, input: DType, out: DType) -> usize {
    voxels * (input.size() + 2 * out.size())
}

/// How many volumes of an image go to the GPU at once so that one slot stays
/// within `budget` bytes: all of them when they fit, else as many as fit, at
/// least one. A long 4-D run (fMRI) then never needs three times its size in
/// device memory; volumes are independent, so batches change no voxel.
pub fn volumes_per_batch(shape: Shape, input: DType, out: DType, budget: usize) -> usize {
    let per_volume = device_bytes(shape.volume_len(), input, out).max(1);
    (budget / per_volume).clamp(1, shape.volumes.max(1))
}

/// This process's rank among those on its node, from the launcher: the MPI
/// shared-memory split when there are several ranks, else Slurm's or
/// OpenMPI's local id (a job step of single processes), else 0.
pub fn local_rank(node_rank: usize, ranks: usize) -> usize {
    if ranks > 1 {
        return node_rank;
    }
    [
        "SLURM_LOCALID",
        "OMPI_COMM_WORLD_LOCAL_RANK",
        "MPI_LOCALRANKID",
    ]
    .iter()
    .find_map(|v| std::env::var(v).ok()?.trim().parse().ok())
    .unwrap_or(0)
}

/// The GPU a rank takes: local rank modulo the devices it can see, so that
/// ranks on a node spread over its GPUs and share them evenly.
pub fn device_for(local_rank: usize, devices: usize) -> usize {
    local_rank % devices.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::ExpFlavour;

    fn spec(sigma: [f64; 3]) -> FilterSpec {
        FilterSpec {
            sigma,
            truncate: 4.0,
            mode: Mode::Mirror,
            cval: 0.0,
            exp: ExpFlavour::Libm,
            semantics: Semantics::Scipy,
        }
    }

    fn shape(spatial: [usize; 3], volumes: usize) -> Shape {
        Shape {
            spatial,
            spatial_ndim: 3,
            volumes,
        }
    }

    #[test]
    fn passes_alternate_buffers_and_types_in_axis_order() {
        let p = plan(
            shape([40, 30, 20], 3),
            &spec([1.0, 0.0, 2.0]),
            DType::I16,
            DType::F32,
        )
        .unwrap();
        let route: Vec<_> = p
            .passes
            .iter()
            .map(|p| (p.axis, p.from, p.to, p.src, p.dst))
            .collect();
        assert_eq!(
            route,
            vec![
                (0, Buf::Input, Buf::A, DType::I16, DType::F32),
                (2, Buf::A, Buf::B, DType::F32, DType::F32),
            ]
        );
        assert_eq!(p.result(), Some(Buf::B));
        assert_eq!(p.passes[1].weights.len(), 9);
        assert_eq!(p.dims, [40, 30, 20, 60]);
        assert_eq!(p.grid, (2, 4, 60));
        assert_eq!(p.len, 40 * 30 * 20 * 3);
    }

    #[test]
    fn three_passes_end_in_a_and_no_pass_means_a_host_cast() {
        let p = plan(shape([8, 8, 8], 1), &spec([1.0; 3]), DType::U8, DType::U8).unwrap();
        let bufs: Vec<_> = p.passes.iter().map(|p| (p.from, p.to)).collect();
        assert_eq!(
            bufs,
            vec![(Buf::Input, Buf::A), (Buf::A, Buf::B), (Buf::B, Buf::A)]
        );
        let none = plan(shape([8, 8, 8], 1), &spec([0.0; 3]), DType::U8, DType::F32).unwrap();
        assert!(none.passes.is_empty() && none.result().is_none());
    }

    #[test]
    fn many_slices_are_walked_by_a_capped_grid_and_tall_images_refused() {
        let p = plan(
            shape([4, 4, 200], 1000),
            &spec([1.0; 3]),
            DType::F32,
            DType::F32,
        )
        .unwrap();
        assert_eq!(p.grid.2, MAX_GRID_YZ);
        assert_eq!(p.dims[3], 200_000);
        let tall = plan(
            shape([1, 8 * 65_535 + 1, 1], 1),
            &spec([1.0; 3]),
            DType::F32,
            DType::F32,
        );
        assert!(matches!(tall, Err(FilterError::Unavailable(m)) if m.contains("CUDA grid")));
    }

    #[test]
    fn fsl_semantics_are_refused_with_the_way_out() {
        let mut s = spec([1.0; 3]);
        s.semantics = Semantics::Fsl { pixdim: [1.0; 3] };
        let err = plan(shape([8, 8, 8], 1), &s, DType::F32, DType::F32).unwrap_err();
        assert!(err.to_string().contains("--backend cpu"), "{err}");
    }

    #[test]
    fn long_4d_images_go_in_batches_of_volumes_that_fit() {
        let fmri = shape([96, 96, 60], 1200); // 553 k voxels a volume
        let per_volume = 96 * 96 * 60 * (2 + 2 * 4); // int16 in, float32 out
        assert_eq!(
            device_bytes(96 * 96 * 60, DType::I16, DType::F32),
            per_volume
        );
        assert_eq!(
            volumes_per_batch(fmri, DType::I16, DType::F32, usize::MAX),
            1200
        );
        assert_eq!(
            volumes_per_batch(fmri, DType::I16, DType::F32, 100 * per_volume + 7),
            100
        );
        assert_eq!(
            volumes_per_batch(fmri, DType::I16, DType::F32, 10),
            1,
            "at least one"
        );
        assert_eq!(
            volumes_per_batch(shape([4, 4, 4], 1), DType::F32, DType::F32, 0),
            1
        );
    }

    #[test]
    fn ranks_spread_over_devices() {
        let got: Vec<_> = (0..6).map(|r| device_for(r, 4)).collect();
        assert_eq!(got, vec![0, 1, 2, 3, 0, 1]);
        assert_eq!(device_for(3, 0), 0);
        assert_eq!(local_rank(5, 8), 5);
    }

    #[test]
    fn every_type_pair_gets_its_own_kernel_name_and_c_types() {
        let d = defines(DType::U64, DType::F32);
        assert_eq!(
            d,
            vec![
                "-DSRC_T=unsigned long long",
                "-DDST_T=float",
                "-DNISMOOTH_KERNEL=nismooth_pass_uint64_float32"
            ]
        );
    }
}

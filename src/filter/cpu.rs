//! The CPU backend: separable passes, vectorised across neighbouring lines.
//!
//! Each pass gathers `LANES` neighbouring lines into a tile of f64 rows
//! (`tile[i][lane]`), pads it per boundary mode, and runs scipy's symmetric
//! accumulation `acc = x[i]*w0; acc += (x[i-k] + x[i+k]) * w[k]` for k = r..1
//! on whole rows, so the compiler emits SIMD adds and multiplies (never FMA:
//! Rust does not contract, which keeps every voxel bit-identical to scipy).
//! Groups of lines are disjoint, so passes run in place and in parallel over
//! rayon's pool; the result of each pass is stored in the output dtype before
//! the next pass reads it, exactly as scipy does.

use std::sync::Arc;

use rayon::prelude::*;

use super::{Backend, FilterError, FilterSpec, Kernel1d, Mode, Shape};
use crate::volume::{DType, Sample, VoxelVec, Voxels};
use crate::{with_dtype, with_voxels};

/// Lines processed together: 16 f64 = four AVX2 or two AVX-512 registers.
const LANES: usize = 16;
type Row = [f64; LANES];

pub struct CpuBackend {
    pool: Arc<rayon::ThreadPool>,
}

impl CpuBackend {
    pub fn new(threads: usize) -> Result<CpuBackend, FilterError> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .thread_name(|i| format!("nismooth-filter-{i}"))
            .build()
            .map_err(|e| FilterError::Unavailable(format!("cannot start filter threads: {e}")))?;
        Ok(CpuBackend {
            pool: Arc::new(pool),
        })
    }

    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }
}

impl Backend for CpuBackend {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn smooth(
        &mut self,
        input: Voxels,
        shape: Shape,
        spec: &FilterSpec,
        out: DType,
    ) -> Result<Voxels, FilterError> {
        if input.len() != shape.len() {
            return Err(FilterError::ShapeMismatch {
                got: input.len(),
                want: shape.len(),
            });
        }
        let kernels = spec.kernels(shape.spatial_ndim);
        let result = self
            .pool
            .install(|| smooth_all(input, shape, &kernels, spec, out));
        Ok(result)
    }
}

/// Runs the passes of every volume; in place when the dtype does not change.
fn smooth_all(
    input: Voxels,
    shape: Shape,
    kernels: &[Option<Kernel1d>; 3],
    spec: &FilterSpec,
    out: DType,
) -> Voxels {
    let first = kernels.iter().position(Option::is_some);
    let Some(first) = first else {
        // scipy copies the input into the output array when no axis is filtered.
        return input.cast(out);
    };
    let edge = Edge {
        mode: spec.mode,
        cval: spec.cval,
    };
    if input.dtype() == out {
        let mut buf = input;
        with_voxels!(&mut buf, v => {
            let ptr = v.as_mut_ptr();
            for (a, k) in kernels.iter().enumerate().skip(first) {
                if let Some(k) = k {
                    for_each_volume(shape, |off| unsafe {
                        pass(ptr.add(off), ptr.add(off), shape.spatial, a, k, edge)
                    });
                }
            }
        });
        buf
    } else {
        let mut result = Voxels::zeros(out, shape.len());
        with_voxels!(&input, src => with_voxels!(&mut result, dst => {
            let (sp, dp) = (src.as_ptr(), dst.as_mut_ptr());
            let k = kernels[first].as_ref().expect("first kernel");
            for_each_volume(shape, |off| unsafe {
                pass(sp.add(off), dp.add(off), shape.spatial, first, k, edge)
            });
            for (a, k) in kernels.iter().enumerate().skip(first + 1) {
                if let Some(k) = k {
                    for_each_volume(shape, |off| unsafe {
                        pass(dp.add(off), dp.add(off), shape.spatial, a, k, edge)
                    });
                }
            }
        }));
        result
    }
}

fn for_each_volume(shape: Shape, mut f: impl FnMut(usize)) {
    let n = shape.volume_len();
    for v in 0..shape.volumes {
        f(v * n);
    }
}

#[derive(Clone, Copy)]
struct Edge {
    mode: Mode,
    cval: f64,
}

/// A raw pointer that may cross threads: each task touches a disjoint set of lines.
#[derive(Clone, Copy)]
struct Shared<T>(*mut T);
unsafe impl<T> Send for Shared<T> {}
unsafe impl<T> Sync for Shared<T> {}

/// One pass along `axis` of a volume of `n` voxels (Fortran order) from `src`
/// into `dst`, which may be the same buffer.
///
/// # Safety
/// `src` and `dst` must each point to `n[0]*n[1]*n[2]` valid elements, and
/// nothing else may access them during the call.
unsafe fn pass<S: Sample, D: Sample>(
    src: *const S,
    dst: *mut D,
    n: [usize; 3],
    axis: usize,
    k: &Kernel1d,
    edge: Edge,
) {
    let stride = [1, n[0], n[0] * n[1]];
    // The two other axes: `b` (the faster one) is spread across lanes.
    let (b, c) = match axis {
        0 => (1, 2),
        1 => (0, 2),
        _ => (0, 1),
    };
    let len = n[axis];
    let blocks = n[b].div_ceil(LANES);
    let groups = n[c] * blocks;
    let r = k.radius();
    let (src, dst) = (Shared(src as *mut S), Shared(dst));
    let geo = Geometry {
        len,
        step: stride[axis],
        lane_step: stride[b],
    };

    (0..groups).into_par_iter().for_each_init(
        || (vec![[0.0; LANES]; len + 2 * r], vec![[0.0; LANES]; len]),
        |(tile, out), g| {
            let (ci, bi) = (g / blocks, g % blocks);
            let b0 = bi * LANES;
            let lanes = LANES.min(n[b] - b0);
            let base = ci * stride[c] + b0 * stride[b];
            // Copy the raw pointers out of their wrappers inside the closure.
            let (s, d) = (src, dst);
            unsafe {
                geo.load(s.0.add(base), lanes, &mut tile[r..r + len]);
                extend(tile, r, len, edge);
                convolve(tile, out, &k.half);
                geo.store(out, lanes, d.0.add(base));
            }
        },
    );
}

/// How lines lie in memory: `step` between samples of a line, `lane_step`
/// between neighbouring lines.
struct Geometry {
    len: usize,
    step: usize,
    lane_step: usize,
}

impl Geometry {
    unsafe fn load<S: Sample>(&self, p: *const S, lanes: usize, rows: &mut [Row]) {
        if self.lane_step == 1 {
            for (i, row) in rows.iter_mut().enumerate() {
                let q = p.add(i * self.step);
                for (l, x) in row.iter_mut().enumerate().take(lanes) {
                    *x = (*q.add(l)).to_f64();
                }
                row[lanes..].fill(0.0);
            }
        } else {
            // Lines are contiguous (axis 0): read each line, write a tile column.
            for l in 0..LANES {
                if l < lanes {
                    let q = p.add(l * self.lane_step);
                    for (i, row) in rows.iter_mut().enumerate().take(self.len) {
                        row[l] = (*q.add(i)).to_f64();
                    }
                } else {
                    rows.iter_mut().for_each(|row| row[l] = 0.0);
                }
            }
        }
    }

    unsafe fn store<D: Sample>(&self, rows: &[Row], lanes: usize, p: *mut D) {
        if self.lane_step == 1 {
            for (i, row) in rows.iter().enumerate() {
                let q = p.add(i * self.step);
                for (l, &x) in row.iter().enumerate().take(lanes) {
                    *q.add(l) = D::from_f64(x);
                }
            }
        } else {
            for l in 0..lanes {
                let q = p.add(l * self.lane_step);
                for (i, row) in rows.iter().enumerate() {
                    *q.add(i) = D::from_f64(row[l]);
                }
            }
        }
    }
}

/// Fills the `r` rows on each side of the line per boundary mode.
fn extend(tile: &mut [Row], r: usize, len: usize, edge: Edge) {
    for i in 1..=r as isize {
        for pos in [-i, len as isize - 1 + i] {
            let row = match edge.mode.source(pos, len) {
                Some(j) => tile[r + j],
                None => [edge.cval; LANES],
            };
            tile[(r as isize + pos) as usize] = row;
        }
    }
}

fn convolve(tile: &[Row], out: &mut [Row], w: &[f64]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return unsafe { convolve_avx512(tile, out, w) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            return unsafe { convolve_avx2(tile, out, w) };
        }
    }
    convolve_rows(tile, out, w)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn convolve_avx512(tile: &[Row], out: &mut [Row], w: &[f64]) {
    convolve_rows(tile, out, w)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn convolve_avx2(tile: &[Row], out: &mut [Row], w: &[f64]) {
    convolve_rows(tile, out, w)
}

/// scipy's symmetric correlation, one row of `LANES` lines at a time.
#[inline(always)]
fn convolve_rows(tile: &[Row], out: &mut [Row], w: &[f64]) {
    let r = w.len() - 1;
    for (i, o) in out.iter_mut().enumerate() {
        let win = &tile[i..i + 2 * r + 1];
        let centre = &win[r];
        let mut acc = [0.0; LANES];
        for l in 0..LANES {
            acc[l] = centre[l] * w[0];
        }
        for kk in (1..=r).rev() {
            let (lo, hi, wk) = (&win[r - kk], &win[r + kk], w[kk]);
            for l in 0..LANES {
                acc[l] += (lo[l] + hi[l]) * wk;
            }
        }
        *o = acc;
    }
}

/// Convenience for tests and tools: smooth a single-volume f64 array.
pub fn smooth_f64(data: Vec<f64>, shape: Shape, spec: &FilterSpec) -> Vec<f64> {
    let mut backend = CpuBackend::new(1).expect("pool");
    match backend
        .smooth(Voxels::F64(data), shape, spec, DType::F64)
        .expect("smooth")
    {
        Voxels::F64(v) => v,
        _ => unreachable!(),
    }
}

/// Reference implementation: one line at a time, straight from the definition.
/// Used by the tests to check the tiled code on shapes and modes at random.
pub fn reference<S: Sample, D: Sample + VoxelVec>(
    src: &[S],
    n: [usize; 3],
    kernels: &[Option<Kernel1d>; 3],
    mode: Mode,
    cval: f64,
) -> Vec<D> {
    let stride = [1, n[0], n[0] * n[1]];
    let mut cur: Option<Vec<D>> = None;
    for a in 0..3 {
        let Some(k) = &kernels[a] else { continue };
        let input: Vec<f64> = match &cur {
            None => src.iter().map(|x| x.to_f64()).collect(),
            Some(v) => v.iter().map(|x| x.to_f64()).collect(),
        };
        let mut output = vec![D::from_f64(0.0); input.len()];
        let r = k.radius() as isize;
        for start in 0..input.len() {
            let coord = (start / stride[a]) % n[a];
            if coord != 0 {
                continue;
            }
            let at = |i: isize| match mode.source(i, n[a]) {
                Some(j) => input[start + j * stride[a]],
                None => cval,
            };
            for i in 0..n[a] as isize {
                let mut acc = at(i) * k.half[0];
                for kk in (1..=r).rev() {
                    acc += (at(i - kk) + at(i + kk)) * k.half[kk as usize];
                }
                output[start + i as usize * stride[a]] = D::from_f64(acc);
            }
        }
        cur = Some(output);
    }
    cur.unwrap_or_else(|| src.iter().map(|x| D::from_f64(x.to_f64())).collect())
}

/// Runs `reference` for a dtype chosen at run time.
pub fn reference_voxels(input: &Voxels, shape: Shape, spec: &FilterSpec, out: DType) -> Voxels {
    let kernels = spec.kernels(shape.spatial_ndim);
    with_voxels!(input, src => with_dtype!(out, T => {
        let n = shape.volume_len();
        let mut all: Vec<T> = Vec::with_capacity(src.len());
        for v in 0..shape.volumes {
            all.extend(reference::<_, T>(&src[v * n..(v + 1) * n], shape.spatial, &kernels, spec.mode, spec.cval));
        }
        T::wrap(all)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::ExpFlavour;

    fn spec(sigma: [f64; 3], mode: Mode) -> FilterSpec {
        FilterSpec {
            sigma,
            truncate: 4.0,
            mode,
            cval: 7.5,
            exp: ExpFlavour::Libm,
        }
    }

    fn noise(n: usize, seed: u64) -> Vec<f64> {
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

    #[test]
    fn tiled_passes_equal_the_line_by_line_definition() {
        let shapes = [[5, 6, 7], [1, 9, 4], [17, 3, 2], [33, 20, 1], [2, 2, 2]];
        for (si, &n) in shapes.iter().enumerate() {
            for mode in Mode::ALL {
                for sigma in [[2.0, 2.0, 2.0], [1.0, 2.0, 3.0], [0.0, 1.5, 0.7]] {
                    let shape = Shape {
                        spatial: n,
                        spatial_ndim: 3,
                        volumes: 2,
                    };
                    let data = noise(shape.len(), si as u64);
                    let s = spec(sigma, mode);
                    for out in [DType::F64, DType::F32, DType::I16] {
                        let input = Voxels::F32(data.iter().map(|&x| x as f32).collect());
                        let want = reference_voxels(&input, shape, &s, out);
                        let got = CpuBackend::new(2)
                            .unwrap()
                            .smooth(input, shape, &s, out)
                            .unwrap();
                        assert_eq!(
                            got, want,
                            "shape {n:?} mode {mode} sigma {sigma:?} out {out}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_constant_image_stays_constant_in_nearest_mode() {
        let shape = Shape {
            spatial: [8, 8, 8],
            spatial_ndim: 3,
            volumes: 1,
        };
        let out = smooth_f64(vec![3.0; 512], shape, &spec([2.0; 3], Mode::Nearest));
        assert!(out.iter().all(|&v| (v - 3.0).abs() < 1e-12));
    }

    #[test]
    fn constant_mode_pulls_edges_toward_cval() {
        let shape = Shape {
            spatial: [9, 1, 1],
            spatial_ndim: 1,
            volumes: 1,
        };
        let out = smooth_f64(vec![0.0; 9], shape, &spec([1.0, 0.0, 0.0], Mode::Constant));
        // radius 4: the centre never reaches the pad, the ends see cval = 7.5.
        assert_eq!(out[4], 0.0);
        assert!(out[0] > out[1] && out[1] > 0.0, "{out:?}");
    }

    #[test]
    fn no_filtered_axis_copies_with_cast() {
        let shape = Shape {
            spatial: [3, 1, 1],
            spatial_ndim: 3,
            volumes: 1,
        };
        let got = CpuBackend::new(1)
            .unwrap()
            .smooth(
                Voxels::F32(vec![1.7, -2.2, 3.9]),
                shape,
                &spec([0.0; 3], Mode::Reflect),
                DType::I16,
            )
            .unwrap();
        assert_eq!(got, Voxels::I16(vec![1, -2, 3]));
    }
}

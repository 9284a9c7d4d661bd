//! `fslmaths -s σ` semantics (FSL 6), for users who must match an FSL
//! pipeline rather than scipy.
//!
//! σ is in mm. Along each axis the kernel has half-width `ceil(4σ / pixdim)`
//! voxels and unnormalised weights `exp(-x²·pixdim² / (2σ²))`. Three 1-D
//! passes (x, y, z) run in single precision; each output voxel is divided by
//! the sum of the weights that fell inside the image (edge renormalisation,
//! skipped when that sum is ≤ 1e-12), so there is no boundary mode. The
//! output is float32 unless another dtype is asked for, and integers are
//! rounded (half away from zero) and clamped to their range.
//!
//! Every sum runs in a fixed order (offsets from −r to +r, one multiply then
//! one add in f32), so the result is reproducible bit for bit and the tests
//! can compare it with a NumPy implementation of the same description.

use rayon::prelude::*;

use super::{ExpFlavour, Shape};
use crate::volume::{DType, Sample, VoxelVec, Voxels};
use crate::{with_dtype, with_voxels};

/// Sums of weights at or below this are not divided by (FSL's guard).
const MIN_WEIGHT_SUM: f32 = 1e-12;

/// The f32 weights for offsets −r..=r of one axis; None when σ or the axis
/// does not call for a pass.
pub fn weights(sigma_mm: f64, pixdim: f64, exp: ExpFlavour) -> Option<Vec<f32>> {
    if sigma_mm <= 0.0 || !pixdim.is_finite() || pixdim == 0.0 {
        return None;
    }
    let p = pixdim.abs();
    let r = (4.0 * sigma_mm / p).ceil() as i64;
    let (pp, ss) = (p * p, sigma_mm * sigma_mm);
    Some(
        (-r..=r)
            .map(|k| exp.exp(-((k * k) as f64 * pp) / (2.0 * ss)) as f32)
            .collect(),
    )
}

/// Smooths `input` (every volume) and returns it in `out`.
pub fn smooth(
    input: &Voxels,
    shape: Shape,
    sigma_mm: [f64; 3],
    pixdim: [f32; 3],
    exp: ExpFlavour,
    out: DType,
) -> Voxels {
    let mut data: Vec<f32> =
        with_voxels!(input, v => v.iter().map(|x| x.to_f64() as f32).collect());
    let kernels: [Option<Vec<f32>>; 3] = std::array::from_fn(|a| {
        (a < shape.spatial_ndim && shape.spatial[a] > 1)
            .then(|| weights(sigma_mm[a], pixdim[a] as f64, exp))
            .flatten()
    });
    let n = shape.volume_len();
    let mut scratch = vec![0f32; n];
    for volume in data.chunks_mut(n.max(1)) {
        for (axis, w) in kernels.iter().enumerate() {
            if let Some(w) = w {
                pass(volume, &mut scratch, shape.spatial, axis, w);
                volume.copy_from_slice(&scratch);
            }
        }
    }
    store(&data, out)
}

/// One 1-D pass along `axis` from `src` into `dst`. The output at position
/// i along the axis is Σ w[k]·src[i+k] / Σ w[k] over the offsets that stay
/// inside; the divisor depends on i alone, so whole rows (or planes) share it.
fn pass(src: &[f32], dst: &mut [f32], dims: [usize; 3], axis: usize, w: &[f32]) {
    let [nx, ny, _] = dims;
    let len = dims[axis];
    let r = (w.len() / 2) as isize;
    let taps = |i: usize| {
        (-r..=r).filter_map(move |k| {
            let j = i as isize + k;
            (0..len as isize)
                .contains(&j)
                .then(|| (j as usize, w[(k + r) as usize]))
        })
    };
    let norm: Vec<f32> = (0..len)
        .map(|i| taps(i).fold(0f32, |s, (_, wk)| s + wk))
        .collect();
    // acc[m] = Σ_k w·line[m][i+k], for `m` lines stored `stride` apart.
    let finish = |acc: &mut [f32], i: usize| {
        if norm[i] > MIN_WEIGHT_SUM {
            acc.iter_mut().for_each(|a| *a /= norm[i]);
        }
    };
    match axis {
        0 => dst
            .par_chunks_mut(nx)
            .zip(src.par_chunks(nx))
            .for_each(|(out, row)| {
                // A run that is stopping leaves the rest undone (`cancelled`).
                if super::cancelled() {
                    return;
                }
                for (i, o) in out.iter_mut().enumerate() {
                    let mut acc = [taps(i).fold(0f32, |s, (j, wk)| s + wk * row[j])];
                    finish(&mut acc, i);
                    *o = acc[0];
                }
            }),
        1 => dst
            .par_chunks_mut(nx * ny)
            .zip(src.par_chunks(nx * ny))
            .for_each(|(out, plane)| {
                for (i, acc) in out.chunks_mut(nx).enumerate() {
                    if super::cancelled() {
                        return;
                    }
                    acc.fill(0.0);
                    for (j, wk) in taps(i) {
                        let row = &plane[j * nx..(j + 1) * nx];
                        acc.iter_mut().zip(row).for_each(|(a, &v)| *a += wk * v);
                    }
                    finish(acc, i);
                }
            }),
        _ => dst
            .par_chunks_mut(nx * ny)
            .enumerate()
            .for_each(|(i, acc)| {
                acc.fill(0.0);
                for (j, wk) in taps(i) {
                    if super::cancelled() {
                        return;
                    }
                    let plane = &src[j * nx * ny..(j + 1) * nx * ny];
                    acc.iter_mut().zip(plane).for_each(|(a, &v)| *a += wk * v);
                }
                finish(acc, i);
            }),
    }
}

/// The f32 result in `out`: floats as they are, integers rounded half away
/// from zero and clamped to the type's range (NaN becomes 0).
fn store(data: &[f32], out: DType) -> Voxels {
    with_dtype!(out, T => {
        let (lo, hi) = int_range(out);
        T::wrap(data.iter().map(|&x| {
            if out.is_float() {
                T::from_f64(x as f64)
            } else if x.is_nan() {
                T::from_f64(0.0)
            } else {
                T::from_f64((x as f64).round().clamp(lo, hi))
            }
        }).collect())
    })
}

/// The range of an integer dtype as f64 (its ends are exact for ≤ 32 bits;
/// 64-bit ends are the nearest doubles inside the range).
fn int_range(d: DType) -> (f64, f64) {
    match d {
        DType::U8 => (0.0, u8::MAX as f64),
        DType::I8 => (i8::MIN as f64, i8::MAX as f64),
        DType::I16 => (i16::MIN as f64, i16::MAX as f64),
        DType::U16 => (0.0, u16::MAX as f64),
        DType::I32 => (i32::MIN as f64, i32::MAX as f64),
        DType::U32 => (0.0, u32::MAX as f64),
        DType::I64 => (i64::MIN as f64, 9223372036854774784.0),
        DType::U64 => (0.0, 18446744073709549568.0),
        DType::F32 | DType::F64 => (f64::MIN, f64::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(spatial: [usize; 3]) -> Shape {
        Shape {
            spatial,
            spatial_ndim: 3,
            volumes: 1,
        }
    }

    #[test]
    fn weights_follow_the_voxel_size() {
        let w = weights(2.0, 1.0, ExpFlavour::Libm).unwrap();
        assert_eq!(w.len(), 2 * 8 + 1);
        assert_eq!(w[8], 1.0);
        // Half-width ceil(4σ/p): 2 mm over 3 mm voxels reaches 3 voxels.
        assert_eq!(weights(2.0, 3.0, ExpFlavour::Libm).unwrap().len(), 7);
        assert!(weights(0.0, 1.0, ExpFlavour::Libm).is_none());
    }

    #[test]
    fn a_constant_image_stays_constant_up_to_its_edges() {
        // Edge renormalisation: no boundary mode, no darkening at the edges.
        let v = Voxels::F32(vec![7.0; 6 * 5 * 4]);
        let out = smooth(
            &v,
            shape([6, 5, 4]),
            [1.5; 3],
            [1.0; 3],
            ExpFlavour::Libm,
            DType::F32,
        );
        let Voxels::F32(out) = out else { panic!() };
        assert!(out.iter().all(|&x| (x - 7.0).abs() < 1e-5), "{out:?}");
    }

    #[test]
    fn integers_are_rounded_and_clamped() {
        let v = Voxels::F32(vec![-3.5, 2.5, 300.0, f32::NAN]);
        let sh = Shape {
            spatial: [4, 1, 1],
            spatial_ndim: 1,
            volumes: 1,
        };
        let Voxels::U8(out) = smooth(&v, sh, [0.0; 3], [1.0; 3], ExpFlavour::Libm, DType::U8)
        else {
            panic!()
        };
        assert_eq!(out, [0, 3, 255, 0]);
        let Voxels::I16(out) = smooth(&v, sh, [0.0; 3], [1.0; 3], ExpFlavour::Libm, DType::I16)
        else {
            panic!()
        };
        assert_eq!(out, [-4, 3, 300, 0]);
    }
}

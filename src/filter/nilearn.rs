//! `nilearn.image.smooth_img(img, fwhm)` as nilearn 0.14 computes it: what
//! differs from scipy's `gaussian_filter` lies around the filter, not in it.
//!
//! nilearn's `smooth_array` casts integer data to float32 (64-bit integers
//! to float64), sets every non-finite value to 0, turns the FWHM into a σ
//! per axis over the voxel sizes of the image's affine (column norms, not
//! pixdim), and runs one `gaussian_filter1d` per spatial axis in place,
//! which is scipy's `gaussian_filter` with the output in the same dtype.

use crate::volume::{DType, Voxels};

/// FWHM over σ, as nilearn computes it: `np.sqrt(8 * np.log(2))`.
pub fn fwhm_over_sigma() -> f64 {
    (8.0 * std::f64::consts::LN_2).sqrt()
}

/// The dtype nilearn smooths (and returns) data presented in `dtype`.
pub fn dtype(presented: DType) -> DType {
    match presented {
        DType::I64 | DType::U64 => DType::F64,
        d if d.is_float() => d,
        _ => DType::F32,
    }
}

/// nilearn calls `gaussian_filter1d` on every axis whose σ is above 0,
/// which (unlike `gaussian_filter`) does not skip a σ of 1e-15 or less: its
/// one weight is exp(-0.5/σ² · 0) / itself, which is 1 until σ² underflows
/// and -0.5/σ² overflows to -∞; then it is NaN, and so is every voxel.
pub fn kernel_is_nan(sigma: [f64; 3]) -> bool {
    sigma
        .iter()
        .any(|&s| s > 0.0 && s <= super::SIGMA_EPS && (-0.5 / (s * s) * 0.0).is_nan())
}

/// Every voxel NaN, as nilearn returns them when `kernel_is_nan`.
pub fn all_nan(v: &mut Voxels) {
    match v {
        Voxels::F32(x) => x.fill(f32::NAN),
        Voxels::F64(x) => x.fill(f64::NAN),
        _ => {}
    }
}

/// The array nilearn filters: cast to `out`, non-finite values set to 0.
pub fn prepare(voxels: Voxels, out: DType) -> Voxels {
    let mut v = if voxels.dtype() == out {
        voxels
    } else {
        voxels.cast(out)
    };
    match &mut v {
        Voxels::F32(x) => x
            .iter_mut()
            .filter(|x| !x.is_finite())
            .for_each(|x| *x = 0.0),
        Voxels::F64(x) => x
            .iter_mut()
            .filter(|x| !x.is_finite())
            .for_each(|x| *x = 0.0),
        _ => {}
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_become_float32_and_non_finite_values_zero() {
        assert_eq!(dtype(DType::I16), DType::F32);
        assert_eq!(dtype(DType::U8), DType::F32);
        assert_eq!(dtype(DType::I64), DType::F64);
        assert_eq!(dtype(DType::F64), DType::F64);
        // int32 beyond 2^24 rounds as numpy's astype(float32) does.
        let v = prepare(Voxels::I32(vec![16_777_217, -3]), DType::F32);
        assert_eq!(v, Voxels::F32(vec![16_777_216.0, -3.0]));
        let v = prepare(Voxels::F32(vec![f32::NAN, f32::INFINITY, 2.5]), DType::F32);
        assert_eq!(v, Voxels::F32(vec![0.0, 0.0, 2.5]));
    }

    #[test]
    fn the_ratio_is_numpys() {
        // np.sqrt(8 * np.log(2)).hex() == '0x1.2d6abe44afc43p+1'
        assert_eq!(fwhm_over_sigma().to_bits(), 0x4002_d6ab_e44a_fc43);
    }
}

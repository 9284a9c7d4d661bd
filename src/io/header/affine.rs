//! Voxel sizes as nilearn measures them: the column norms of the affine
//! nibabel gives the image (`img.affine`), not `pixdim`.
//!
//! nibabel takes the sform when its code is set, else the qform (a
//! quaternion, computed in numpy's long double: `qform.c`), else a diagonal
//! from pixdim. An oblique or inconsistent header makes these differ from
//! pixdim in the last bits or more, and `--compat nilearn` must use the same
//! float64 voxel sizes to reproduce `smooth_img` bit for bit.

use super::{Fields, Version};

extern "C" {
    /// nibabel's `quat2mat(fillpositive(b, c, d)) @ diag(vox)`, rounded to f64 (row-major).
    fn nismooth_qform_matrix(b: f64, c: f64, d: f64, vox: *const f64, out: *mut f64);
}

/// Where the transform fields are, per version: (qform_code, sform_code,
/// quatern_b, srow_x); codes are i16 in NIfTI-1, i32 in NIfTI-2.
fn offsets(version: Version) -> (usize, usize, usize, usize) {
    match version {
        Version::Nifti1 => (252, 254, 256, 280),
        Version::Nifti2 => (344, 348, 352, 400),
    }
}

/// A transform code as nibabel keeps it after its load-time fixes: a code
/// outside 0..=5 is reset to 0 (unknown).
fn code(f: &Fields, at: usize) -> i32 {
    let c = match f.version {
        Version::Nifti1 => f.i16(at) as i32,
        Version::Nifti2 => f.i32(at),
    };
    if (0..=5).contains(&c) {
        c
    } else {
        0
    }
}

/// The float64 column norms of the first three columns of nibabel's
/// `img.affine` for this header (`ndim` from dim[0]).
pub fn voxel_sizes(f: &Fields, ndim: usize) -> [f64; 3] {
    let (qcode_at, scode_at, quat_at, srow_at) = offsets(f.version);
    let fw = f.version.widths().1;
    let pixdim = |a: usize| super::as_nibabel_loads(f.float(f.version.pixdim_at() + fw * a));
    let m: [f64; 9] = if code(f, scode_at) != 0 {
        // srow_x, srow_y, srow_z: 4 floats each; the 3×3 part.
        std::array::from_fn(|k| f.float(srow_at + fw * (4 * (k / 3) + k % 3)))
    } else if code(f, qcode_at) != 0 {
        let [b, c, d] = std::array::from_fn(|i| f.float(quat_at + fw * i));
        let vox = [pixdim(1), pixdim(2), pixdim(3)];
        let mut out = [0.0f64; 9];
        // SAFETY: `vox` holds 3 and `out` 9 doubles, as the C function
        // reads and writes; it keeps no pointer past the call.
        unsafe { nismooth_qform_matrix(b, c, d, vox.as_ptr(), out.as_mut_ptr()) };
        out
    } else {
        // shape_zoom_affine: pixdim of the image's axes, 1 beyond them.
        let z = |a: usize| if a <= ndim { pixdim(a) } else { 1.0 };
        [z(1), 0.0, 0.0, 0.0, z(2), 0.0, 0.0, 0.0, z(3)]
    };
    // numpy: np.sqrt(np.sum(affine**2, axis=0)), the rows added in order.
    std::array::from_fn(|j| {
        let sq = |i: usize| m[3 * i + j] * m[3 * i + j];
        (sq(0) + sq(1) + sq(2)).sqrt()
    })
}

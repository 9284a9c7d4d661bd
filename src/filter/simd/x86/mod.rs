//! The x86-64 kernels. Every function here is written once over a register
//! width (`vector.rs`) and compiled into one entry point per instruction set
//! with `#[target_feature]`; only the entry points, in this file and
//! `lines.rs`, are called from outside, after `Level` has been checked.

mod kernel;
mod lines;
mod samples;
mod vector;

use super::LANES;
use crate::volume::{DType, Sample};
use std::arch::x86_64::*;

use kernel::*;
use lines::*;
pub use lines::{gather_lines_f32, scatter_lines_i32, transpose_in_avx512, transpose_out_avx512};
use samples::*;
use vector::*;

/// `job` compiled with AVX-512 F and VL, AVX2 and FMA: its inlined body
/// and every kernel it calls run that level's instructions.
///
/// # Safety
/// The CPU has those features.
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
pub unsafe fn run_avx512<J: super::Job>(job: J, isa: super::Avx512) -> J::Output {
    job.run(isa)
}

/// `job` compiled with AVX2 and FMA.
///
/// # Safety
/// The CPU has those features.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn run_avx2<J: super::Job>(job: J, isa: super::Avx2) -> J::Output {
    job.run(isa)
}

#[target_feature(enable = "avx512f")]
pub unsafe fn convolve_avx512(tile: &[f64], out: &mut [f64], width: usize, w: &[f64], odd: bool) {
    // SAFETY: an entry point: its caller checked `Level` for these features and keeps the contract
    // of the `simd` function of the same name on the pointers and lengths.
    unsafe { convolve::<__m512d>(tile, out, width, w, odd) }
}

#[target_feature(enable = "avx2,fma")]
pub unsafe fn convolve_avx2(tile: &[f64], out: &mut [f64], width: usize, w: &[f64], odd: bool) {
    // SAFETY: an entry point: its caller checked `Level` for these features and keeps the contract
    // of the `simd` function of the same name on the pointers and lengths.
    unsafe { convolve::<__m256d>(tile, out, width, w, odd) }
}

/// The AVX-512 and AVX2 entry points of a function written once over the
/// register width (`Lines`), each compiled with its own features.
/// `f32` first: over `Checked`, on f32 registers.
macro_rules! per_width {
    (f32 $avx512:ident, $avx2:ident = $generic:ident<$t:ident>($($arg:ident: $ty:ty),*)) => {
        per_width!(@ __m512, __m256; $avx512, $avx2 = $generic<$t>($($arg: $ty),*));
    };
    ($avx512:ident, $avx2:ident = $generic:ident<$t:ident>($($arg:ident: $ty:ty),*)) => {
        per_width!(@ __m512d, __m256d; $avx512, $avx2 = $generic<$t>($($arg: $ty),*));
    };
    (@ $wide:ty, $narrow:ty;
     $avx512:ident, $avx2:ident = $generic:ident<$t:ident>($($arg:ident: $ty:ty),*)) => {
        #[target_feature(enable = "avx512f,avx512vl")]
        pub unsafe fn $avx512<$t: Sample>($($arg: $ty),*) {
            // SAFETY: an entry point: its caller checked `Level` for these features and keeps the
            // contract of the `simd` function of the same name on the pointers and lengths.
            unsafe {
                $generic::<$wide, $t>($($arg),*)
            }
        }
        #[target_feature(enable = "avx2,fma")]
        pub unsafe fn $avx2<$t: Sample>($($arg: $ty),*) {
            // SAFETY: an entry point: its caller checked `Level` for these features and keeps the
            // contract of the `simd` function of the same name on the pointers and lengths.
            unsafe {
                $generic::<$narrow, $t>($($arg),*)
            }
        }
    };
}
per_width!(gather_lines_avx512, gather_lines_avx2 = gather_lines<S>(
    p: *const S, lane_step: usize, lanes: usize, len: usize, rows: &mut [f64]));
per_width!(scatter_lines_avx512, scatter_lines_avx2 = scatter_lines<D>(
    rows: &[f64], len: usize, p: *mut D, lane_step: usize, lanes: usize));
per_width!(convolve_store_avx512, convolve_store_avx2 = convolve_store<D>(
    tile: &[f64], len: usize, width: usize, w: (&[f64], bool), p: *mut D, step: usize));

per_width!(f32 convolve_store_f32, convolve_store_f32_avx2 = convolve_store_checked<D>(
    tile: &[f32], len: usize, width: usize, w: &[f64], p: *mut D, step: usize,
    flags: &mut [u16]));

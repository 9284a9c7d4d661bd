//! The register widths the kernels are written over: `Vector` (the few
//! operations the f64 and f32 kernels need), `Lines` (what the line gathers
//! need beyond them) and `Checked` (the f32 kernel's interval check).
//! One implementation per register type; only the intrinsics' names differ.

use super::*;

/// The few vector operations the kernel needs, for one register width.
///
/// # Safety
/// Every method runs its width's instructions: call it only from code
/// compiled with, and running on a CPU with, that width's features (the
/// entry points in `mod.rs` and `lines.rs`, reached after `Level` is
/// checked). `load` and `store` need `p` valid for `WIDTH` lanes.
pub(super) trait Vector: Copy {
    /// The lane type: f64, or f32 for the checked single-precision kernel.
    type E: Copy;
    const WIDTH: usize;
    unsafe fn load(p: *const Self::E) -> Self;
    unsafe fn store(self, p: *mut Self::E);
    /// All lanes `x`, rounded to nearest if the lanes are f32.
    unsafe fn splat(x: f64) -> Self;
    unsafe fn add(self, o: Self) -> Self;
    unsafe fn mul(self, o: Self) -> Self;
    /// `self + o` on the multiply-add units (`one` must hold 1.0).
    unsafe fn add_fma(self, o: Self, one: Self) -> Self;
}

/// One `Vector` per register type; only the intrinsics' names differ.
macro_rules! vector {
    ($v:ty, $e:ty, $width:literal, $load:ident, $store:ident, $set1:ident,
     $add:ident, $mul:ident, $fmadd:ident) => {
        impl Vector for $v {
            type E = $e;
            const WIDTH: usize = $width;
            #[inline(always)]
            unsafe fn load(p: *const $e) -> Self {
                // SAFETY: `Vector`'s contract, which the caller keeps: this width's features,
                // pointers valid for `WIDTH` lanes.
                unsafe {
                    $load(p)
                }
            }
            #[inline(always)]
            unsafe fn store(self, p: *mut $e) {
                // SAFETY: `Vector`'s contract, which the caller keeps: this width's features,
                // pointers valid for `WIDTH` lanes.
                unsafe {
                    $store(p, self)
                }
            }
            #[inline(always)]
            unsafe fn splat(x: f64) -> Self {
                // SAFETY: `Vector`'s contract, which the caller keeps: this width's features,
                // pointers valid for `WIDTH` lanes.
                unsafe {
                    $set1(x as $e)
                }
            }
            #[inline(always)]
            unsafe fn add(self, o: Self) -> Self {
                // SAFETY: `Vector`'s contract, which the caller keeps: this width's features,
                // pointers valid for `WIDTH` lanes.
                unsafe {
                    $add(self, o)
                }
            }
            #[inline(always)]
            unsafe fn mul(self, o: Self) -> Self {
                // SAFETY: `Vector`'s contract, which the caller keeps: this width's features,
                // pointers valid for `WIDTH` lanes.
                unsafe {
                    $mul(self, o)
                }
            }
            #[inline(always)]
            unsafe fn add_fma(self, o: Self, one: Self) -> Self {
                // SAFETY: `Vector`'s contract, which the caller keeps: this width's features,
                // pointers valid for `WIDTH` lanes.
                unsafe {
                    $fmadd(self, one, o)
                }
            }
        }
    };
}
vector!(
    __m512d,
    f64,
    8,
    _mm512_loadu_pd,
    _mm512_storeu_pd,
    _mm512_set1_pd,
    _mm512_add_pd,
    _mm512_mul_pd,
    _mm512_fmadd_pd
);
vector!(
    __m256d,
    f64,
    4,
    _mm256_loadu_pd,
    _mm256_storeu_pd,
    _mm256_set1_pd,
    _mm256_add_pd,
    _mm256_mul_pd,
    _mm256_fmadd_pd
);
vector!(
    __m256,
    f32,
    8,
    _mm256_loadu_ps,
    _mm256_storeu_ps,
    _mm256_set1_ps,
    _mm256_add_ps,
    _mm256_mul_ps,
    _mm256_fmadd_ps
);
vector!(
    __m512,
    f32,
    16,
    _mm512_loadu_ps,
    _mm512_storeu_ps,
    _mm512_set1_ps,
    _mm512_add_ps,
    _mm512_mul_ps,
    _mm512_fmadd_ps
);

/// One register width of the checked f32 kernel.
///
/// # Safety
/// As for `Vector`; the pointers hold what each method names.
pub(super) trait Checked: Vector<E = f32> {
    /// Stores the truncation of `self·hi` into `p` as `D`; nonzero where
    /// the truncation of `self·lo` differs (the lanes f64 must decide).
    unsafe fn store_checked<D: Sample>(self, lo: Self, hi: Self, p: *mut D) -> u16;
    /// Output row `i`, lanes `c..c + WIDTH`, by scipy's f64 sequence.
    unsafe fn recompute<D: Sample>(
        tile: &[f32],
        i: usize,
        c: usize,
        width: usize,
        w: &[f64],
        p: *mut D,
    );
}

impl Checked for __m512 {
    #[inline(always)]
    unsafe fn store_checked<D: Sample>(self, lo: Self, hi: Self, p: *mut D) -> u16 {
        // SAFETY: `Vector`'s contract, which the caller keeps: this width's features, pointers
        // valid for `WIDTH` lanes.
        unsafe {
            let below = _mm512_cvttps_epi32(_mm512_mul_ps(self, lo));
            let above = _mm512_cvttps_epi32(_mm512_mul_ps(self, hi));
            store16(p, above);
            _mm512_cmpneq_epi32_mask(below, above)
        }
    }
    #[inline(always)]
    unsafe fn recompute<D: Sample>(
        tile: &[f32],
        i: usize,
        c: usize,
        width: usize,
        w: &[f64],
        p: *mut D,
    ) {
        // SAFETY: `Vector`'s contract, which the caller keeps: this width's features, pointers
        // valid for `WIDTH` lanes.
        unsafe { convolve_exact(tile, i, c, width, w, p) }
    }
}

impl Checked for __m256 {
    #[inline(always)]
    unsafe fn store_checked<D: Sample>(self, lo: Self, hi: Self, p: *mut D) -> u16 {
        // SAFETY: `Vector`'s contract, which the caller keeps: this width's features, pointers
        // valid for `WIDTH` lanes.
        unsafe {
            let below = _mm256_cvttps_epi32(_mm256_mul_ps(self, lo));
            let above = _mm256_cvttps_epi32(_mm256_mul_ps(self, hi));
            store8_i32(p, above);
            let same = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(below, above)));
            (same ^ 0xff) as u16
        }
    }
    /// Lane by lane: rare enough that 256-bit f64 code would not pay.
    #[inline(always)]
    unsafe fn recompute<D: Sample>(
        tile: &[f32],
        i: usize,
        c: usize,
        width: usize,
        w: &[f64],
        p: *mut D,
    ) {
        // SAFETY: `Checked`'s contract, which the caller keeps: this width's features, pointers
        // valid for the rows and lanes named.
        unsafe { convolve_exact_lanes(tile, i, c..c + 8, width, w, p) }
    }
}

/// What the line gathers and scatters, and `convolve_store`, need of a
/// register width beyond the kernel's arithmetic.
///
/// # Safety
/// As for `Vector`; the pointers hold what each method names.
pub(super) trait Lines: Vector<E = f64> {
    /// `WIDTH` samples of `S` from `p`, as f64.
    unsafe fn load_as<S: Sample>(p: *const S) -> Self;
    /// `WIDTH` f64 into `p` as `D`, with `D::from_f64`'s semantics.
    unsafe fn store_as<D: Sample>(self, p: *mut D);
    /// Transposes the leading `WIDTH × WIDTH` block of `m` in registers.
    unsafe fn transpose(m: &mut [Self; 8]);
}

impl Lines for __m512d {
    #[inline(always)]
    unsafe fn load_as<S: Sample>(p: *const S) -> Self {
        // SAFETY: `Vector`'s contract, which the caller keeps: this width's features, pointers
        // valid for `WIDTH` lanes.
        unsafe { load8(p) }
    }
    #[inline(always)]
    unsafe fn store_as<D: Sample>(self, p: *mut D) {
        // SAFETY: `Vector`'s contract, which the caller keeps: this width's features, pointers
        // valid for `WIDTH` lanes.
        unsafe { store8(p, self) }
    }
    #[inline(always)]
    unsafe fn transpose(m: &mut [Self; 8]) {
        // SAFETY: `Vector`'s contract, which the caller keeps: this width's features, pointers
        // valid for `WIDTH` lanes.
        unsafe { *m = transpose8(*m) }
    }
}

impl Lines for __m256d {
    #[inline(always)]
    unsafe fn load_as<S: Sample>(p: *const S) -> Self {
        // SAFETY: `Vector`'s contract, which the caller keeps: this width's features, pointers
        // valid for `WIDTH` lanes.
        unsafe { load4(p) }
    }
    #[inline(always)]
    unsafe fn store_as<D: Sample>(self, p: *mut D) {
        // SAFETY: `Vector`'s contract, which the caller keeps: this width's features, pointers
        // valid for `WIDTH` lanes.
        unsafe { store4(p, self) }
    }
    #[inline(always)]
    unsafe fn transpose(m: &mut [Self; 8]) {
        // SAFETY: `Vector`'s contract, which the caller keeps: this width's features, pointers
        // valid for `WIDTH` lanes.
        unsafe { transpose4(m) }
    }
}

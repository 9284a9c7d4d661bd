//! The inner loops of every pass, written for the vector units.
//!
//! Bit-exactness fixes the arithmetic: per output, `acc = x·w0` and then
//! `acc = acc + (lo + hi)·w[k]` for k = r..1, each step rounded separately in
//! f64, as scipy does. What is left to win is how fast that exact sequence
//! runs. Two things matter on x86-64:
//! * **Loads.** Four neighbouring outputs are computed together, and the
//!   window of input rows slides through registers as k falls, so each step
//!   loads two rows instead of eight.
//! * **Ports.** Adds are two thirds of the work, and a CPU such as Zen 4 has
//!   two add units beside two multiply-add units. `fma(a, 1, b)` rounds once,
//!   exactly like `a + b`, so half of the pair sums go to the multiply-add
//!   units, which otherwise only multiply. Results do not change; the adds
//!   are spread over four units instead of two.
//!
//! Axis 0 (lines contiguous in memory) goes through 8×8 transposes in
//! registers, so that every pass works on the same tile layout.
//!
//! Integer outputs need only the f64 result's truncation. For them the same
//! kernel also runs in f32, on twice the lanes, and proves each truncation
//! from an error bound or recomputes it in f64 (`convolve_store_f32`).

use crate::volume::Sample;

/// Tile widths are multiples of this (two AVX-512 or four AVX2 vectors), and
/// axis 0's tiles are exactly this wide (the transposes work on 16 lines).
pub const LANES: usize = 16;

/// A tile is row-major f64: row `i` holds position `i` of `width` neighbouring
/// lines. `out` row `i` = the window of `tile` centred on row `i + r`, summed
/// in scipy's order; `tile` holds `len + 2r` rows (the lines and their padding).
pub fn convolve(tile: &[f64], out: &mut [f64], width: usize, w: &[f64]) {
    assert!(!w.is_empty() && width.is_multiple_of(LANES) && width > 0);
    assert!(tile.len() >= out.len() + 2 * (w.len() - 1) * width);
    match level() {
        // SAFETY: `level` checked the features; the assert bounds every row read.
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => unsafe { x86::convolve_avx512(tile, out, width, w) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => unsafe { x86::convolve_avx2(tile, out, width, w) },
        _ => convolve_scalar(tile, out, width, w),
    }
}

/// Which vector code the filter runs, widest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Scalar,
    /// AVX2 and FMA (Zen 2 and 3, Haswell to Coffee Lake): the in-register
    /// transposes, and the f32 kernel for the y and z passes.
    Avx2,
    /// AVX-512 F and VL: also the f32 kernel's x pass (16×16 transposes).
    Avx512,
}

/// What this CPU has, capped by `NISMOOTH_SIMD` (`avx2` or `scalar`), so that
/// the narrower paths can be tested and timed on an AVX-512 machine. Every
/// level gives the same bits.
pub fn level() -> Level {
    static LEVEL: std::sync::OnceLock<Level> = std::sync::OnceLock::new();
    *LEVEL.get_or_init(|| {
        let cap = match std::env::var("NISMOOTH_SIMD").ok().as_deref() {
            None | Some("" | "avx512") => Level::Avx512,
            Some("avx2") => Level::Avx2,
            Some("scalar") => Level::Scalar,
            Some(other) => {
                log::warn!("NISMOOTH_SIMD={other:?} ignored (avx512, avx2 or scalar)");
                Level::Avx512
            }
        };
        detect().min(cap)
    })
}

fn detect() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") && has!("avx512vl") {
            return Level::Avx512;
        }
        if has!("avx2") && has!("fma") {
            return Level::Avx2;
        }
    }
    Level::Scalar
}

/// The definition, one output at a time (also the fallback on other CPUs).
pub fn convolve_scalar(tile: &[f64], out: &mut [f64], width: usize, w: &[f64]) {
    for (i, o) in out.chunks_exact_mut(width).enumerate() {
        for (l, o) in o.iter_mut().enumerate() {
            *o = scipy_sum(|row| tile[(i + row) * width + l], w);
        }
    }
}

/// scipy's sequence for one output, in scalar f64 (Rust never contracts
/// it): `x(j)` is row `j` of the output's window, `0..=2r`, centre `r`.
#[inline(always)]
fn scipy_sum(x: impl Fn(usize) -> f64, w: &[f64]) -> f64 {
    let r = w.len() - 1;
    let mut acc = x(r) * w[0];
    for k in (1..=r).rev() {
        acc += (x(r - k) + x(r + k)) * w[k];
    }
    acc
}

/// Copies `LANES` lines (each at least `len` long) into a tile `LANES` wide:
/// `rows[i·LANES + l] = lines[l][i]`.
pub fn transpose_in(lines: &[Vec<f64>], len: usize, rows: &mut [f64]) {
    assert!(lines.len() == LANES && rows.len() >= len * LANES);
    #[cfg(target_arch = "x86_64")]
    if level() == Level::Avx512 {
        // SAFETY: feature detected; the assert bounds every access.
        return unsafe { x86::transpose_in_avx512(lines, len, rows) };
    }
    for (i, row) in rows.chunks_exact_mut(LANES).enumerate().take(len) {
        for (x, line) in row.iter_mut().zip(lines) {
            *x = line[i];
        }
    }
}

/// The inverse: `lines[l][i] = rows[i·LANES + l]`.
pub fn transpose_out(rows: &[f64], len: usize, lines: &mut [Vec<f64>]) {
    assert!(lines.len() == LANES && rows.len() >= len * LANES);
    #[cfg(target_arch = "x86_64")]
    if level() == Level::Avx512 {
        // SAFETY: as above.
        return unsafe { x86::transpose_out_avx512(rows, len, lines) };
    }
    for (l, line) in lines.iter_mut().enumerate() {
        for (i, x) in line.iter_mut().enumerate().take(len) {
            *x = rows[i * LANES + l];
        }
    }
}

/// `convolve` with every output converted and stored straight into row `i`
/// of the destination (`p + i·step`, `width` lanes each), skipping the f64
/// output tile. For groups whose lanes fill the tile; the caller has checked
/// `has_line_transposes()`.
///
/// # Safety
/// Every destination row holds `width` writable samples that `tile` does not
/// alias; `tile` holds `len + 2r` rows.
#[cfg(target_arch = "x86_64")]
pub unsafe fn convolve_store<D: Sample>(
    tile: &[f64],
    len: usize,
    width: usize,
    w: &[f64],
    p: *mut D,
    step: usize,
) {
    assert!(!w.is_empty() && width.is_multiple_of(LANES) && width > 0);
    assert!(tile.len() >= (len + 2 * (w.len() - 1)) * width);
    match level() {
        Level::Avx512 => x86::convolve_store_avx512(tile, len, width, w, p, step),
        Level::Avx2 => x86::convolve_store_avx2(tile, len, width, w, p, step),
        Level::Scalar => unreachable!("convolve_store needs has_line_transposes()"),
    }
}

/// `convolve_store` for int16 and uint8 images, in f32 on 16 lanes instead of
/// f64 on 8, and still bit-identical to scipy's f64 sequence.
///
/// An integer output only needs the f64 result's truncation, not the result
/// itself. With the tile's values and the weights all ≥ 0 (and each pair sum
/// exact in f32, as sums of 16-bit integers are), the f32 result `a` and
/// scipy's f64 result `s` both lie within a relative `(r + 2)·2⁻²⁴` and
/// `(r + 1)·2⁻⁵³` of the exact sum (each of the r + 1 terms passes through at
/// most r + 1 roundings, plus the rounding of its weight to f32). So `s` lies
/// in `[a·lo, a·hi]` (`f32_error_factors`, two units of margin for their own
/// roundings). Where both ends truncate to the same integer, `s` truncates
/// to it as well, and that is stored; where they do not (a result within
/// about 10⁻⁶ relative of an integer), that vector's outputs (16, or 8 with
/// AVX2) are recomputed by scipy's f64 sequence from the same tile.
///
/// # Safety
/// As for `convolve_store`; `D` is int16 or uint8 (or int32, for rows that
/// `scatter_lines_i32` narrows later); every tile value is an integer in
/// `0..2¹⁶`; `f32_kernel_fits(w)`.
#[cfg(target_arch = "x86_64")]
pub unsafe fn convolve_store_f32<D: Sample>(
    tile: &[f32],
    len: usize,
    width: usize,
    w: &[f64],
    p: *mut D,
    step: usize,
    flags: &mut [u16],
) {
    assert!(!w.is_empty() && width.is_multiple_of(LANES) && width > 0);
    assert!(tile.len() >= (len + 2 * (w.len() - 1)) * width);
    assert!(flags.len() >= len * width / 8);
    assert!(f32_kernel_fits(w));
    match level() {
        Level::Avx512 => x86::convolve_store_f32(tile, len, width, w, p, step, flags),
        Level::Avx2 => x86::convolve_store_f32_avx2(tile, len, width, w, p, step, flags),
        Level::Scalar => unreachable!("convolve_store_f32 needs has_f32_kernel()"),
    }
}

/// `gather_lines` into an f32 tile, for int16 and uint8 lines (exact in
/// f32), through 16×16 transposes. Returns whether every value is ≥ 0, which
/// `convolve_store_f32` needs.
///
/// # Safety
/// As for `gather_lines`; `S` is int16 or uint8.
#[cfg(target_arch = "x86_64")]
pub unsafe fn gather_lines_f32<S: Sample>(
    p: *const S,
    lane_step: usize,
    lanes: usize,
    len: usize,
    rows: &mut [f32],
) -> bool {
    assert!(rows.len() >= len * LANES && lanes <= LANES);
    x86::gather_lines_f32(p, lane_step, lanes, len, rows)
}

/// `scatter_lines` for the x pass of the f32 kernel: its outputs come as
/// int32 rows (`convolve_store_f32` into `D = i32`), already truncated,
/// and are narrowed into int16 or uint8 lines keeping the low bits.
///
/// # Safety
/// As for `scatter_lines`; `D` is int16 or uint8.
#[cfg(target_arch = "x86_64")]
pub unsafe fn scatter_lines_i32<D: Sample>(
    rows: &[i32],
    len: usize,
    p: *mut D,
    lane_step: usize,
    lanes: usize,
) {
    assert!(rows.len() >= len * LANES && lanes <= LANES);
    x86::scatter_lines_i32(rows, len, p, lane_step, lanes)
}

/// Whether `convolve_store_f32`'s error bound holds for these weights: all
/// ≥ 0, each zero or a normal number once rounded to f32 (so that no product
/// of an integer with a weight underflows), and few enough that the bound's
/// second-order terms stay far below one unit.
pub fn f32_kernel_fits(w: &[f64]) -> bool {
    w.len() <= 1024
        && w.iter().all(|&x| {
            let f = x as f32;
            x >= 0.0 && (f == 0.0 || f >= f32::MIN_POSITIVE) && x.is_finite()
        })
}

/// The factors `(lo, hi)` that widen an f32 result of a radius-`r` kernel into
/// an interval holding scipy's f64 result: `1 ∓ (r + 5)·2⁻²⁴`, exact in f32
/// (`hi` rounded up to the 2⁻²³ grid above 1).
fn f32_error_factors(r: usize) -> (f32, f32) {
    let units = (r + 5) as f64;
    let lo = 1.0 - units * 2f64.powi(-24);
    let hi = 1.0 + (units / 2.0).ceil() * 2f64.powi(-23);
    debug_assert!(lo as f32 as f64 == lo && hi as f32 as f64 == hi);
    (lo as f32, hi as f32)
}

/// Whether `gather_lines`, `scatter_lines` and `convolve_store` run (AVX2 and
/// FMA, or AVX-512 F and VL).
pub fn has_line_transposes() -> bool {
    level() >= Level::Avx2
}

/// Whether `convolve_store_f32` runs (AVX2 and FMA on 8 lanes, or AVX-512
/// on 16).
pub fn has_f32_kernel() -> bool {
    level() >= Level::Avx2
}

/// Whether `gather_lines_f32` and `scatter_lines_i32` run, which take the
/// f32 kernel to the x pass (AVX-512 F and VL).
pub fn has_f32_line_transposes() -> bool {
    level() == Level::Avx512
}

/// Converts `lanes` ≤ `LANES` contiguous lines of `len` samples (line `l`
/// starts at `p + l·lane_step`) into tile rows: `rows[i·LANES + l]` =
/// sample `i` of line `l`, zero for `l ≥ lanes`. The conversion and the 8×8
/// transposes happen in registers, with no f64 copy of the lines in between.
///
/// # Safety
/// `has_line_transposes()`; every line readable for `len` samples;
/// `rows.len() ≥ len·LANES`.
#[cfg(target_arch = "x86_64")]
pub unsafe fn gather_lines<S: Sample>(
    p: *const S,
    lane_step: usize,
    lanes: usize,
    len: usize,
    rows: &mut [f64],
) {
    assert!(rows.len() >= len * LANES && lanes <= LANES);
    match level() {
        Level::Avx512 => x86::gather_lines_avx512(p, lane_step, lanes, len, rows),
        Level::Avx2 => x86::gather_lines_avx2(p, lane_step, lanes, len, rows),
        Level::Scalar => unreachable!("gather_lines needs has_line_transposes()"),
    }
}

/// The inverse of `gather_lines`: stores tile rows back into the lines,
/// converting to the lines' dtype (C-cast semantics, as `Sample::from_f64`).
///
/// # Safety
/// As for `gather_lines`, with the lines writable.
#[cfg(target_arch = "x86_64")]
pub unsafe fn scatter_lines<D: Sample>(
    rows: &[f64],
    len: usize,
    p: *mut D,
    lane_step: usize,
    lanes: usize,
) {
    assert!(rows.len() >= len * LANES && lanes <= LANES);
    match level() {
        Level::Avx512 => x86::scatter_lines_avx512(rows, len, p, lane_step, lanes),
        Level::Avx2 => x86::scatter_lines_avx2(rows, len, p, lane_step, lanes),
        Level::Scalar => unreachable!("scatter_lines needs has_line_transposes()"),
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::LANES;
    use crate::volume::{DType, Sample};
    use std::arch::x86_64::*;

    /// Eight samples of `S` from `p`, as f64.
    #[inline(always)]
    unsafe fn load8<S: Sample>(p: *const S) -> __m512d {
        match S::DTYPE {
            DType::F64 => _mm512_loadu_pd(p as *const f64),
            DType::F32 => _mm512_cvtps_pd(_mm256_loadu_ps(p as *const f32)),
            DType::I16 => {
                _mm512_cvtepi32_pd(_mm256_cvtepi16_epi32(_mm_loadu_si128(p as *const __m128i)))
            }
            DType::U8 => {
                _mm512_cvtepi32_pd(_mm256_cvtepu8_epi32(_mm_loadl_epi64(p as *const __m128i)))
            }
            _ => load_scalar(p),
        }
    }

    /// Stores eight f64 into `p` as `D`, with `D::from_f64`'s semantics:
    /// `vcvtpd2ps` rounds as `as f32` does, and `vcvttpd2dq` gives
    /// i32::MIN for NaN and out-of-range values as `cvtt32` does, then the
    /// narrowing keeps the low bits as the C cast does.
    #[inline(always)]
    unsafe fn store8<D: Sample>(p: *mut D, v: __m512d) {
        match D::DTYPE {
            DType::F64 => _mm512_storeu_pd(p as *mut f64, v),
            DType::F32 => _mm256_storeu_ps(p as *mut f32, _mm512_cvtpd_ps(v)),
            DType::I16 => _mm_storeu_si128(
                p as *mut __m128i,
                _mm256_cvtepi32_epi16(_mm512_cvttpd_epi32(v)),
            ),
            DType::U8 => _mm_storel_epi64(
                p as *mut __m128i,
                _mm256_cvtepi32_epi8(_mm512_cvttpd_epi32(v)),
            ),
            _ => store_scalar(p, v),
        }
    }

    /// `load8`/`load4` for the dtypes without a vector conversion.
    #[inline(always)]
    unsafe fn load_scalar<S: Sample, V: Vector<E = f64>>(p: *const S) -> V {
        let mut a = [0.0; 8];
        for (i, x) in a.iter_mut().enumerate().take(V::WIDTH) {
            *x = (*p.add(i)).to_f64();
        }
        V::load(a.as_ptr())
    }

    /// `store8`/`store4` for the dtypes without a vector conversion.
    #[inline(always)]
    unsafe fn store_scalar<D: Sample, V: Vector<E = f64>>(p: *mut D, v: V) {
        let mut a = [0.0; 8];
        v.store(a.as_mut_ptr());
        D::from_f64_slice(std::slice::from_raw_parts_mut(p, V::WIDTH), &a[..V::WIDTH]);
    }

    /// Four samples of `S` from `p`, as f64 (AVX2).
    #[inline(always)]
    unsafe fn load4<S: Sample>(p: *const S) -> __m256d {
        match S::DTYPE {
            DType::F64 => _mm256_loadu_pd(p as *const f64),
            DType::F32 => _mm256_cvtps_pd(_mm_loadu_ps(p as *const f32)),
            DType::I16 => _mm256_cvtepi32_pd(_mm_cvtepi16_epi32(_mm_loadl_epi64(p as *const _))),
            DType::U8 => _mm256_cvtepi32_pd(_mm_cvtepu8_epi32(_mm_cvtsi32_si128(
                std::ptr::read_unaligned(p as *const i32),
            ))),
            _ => load_scalar(p),
        }
    }

    /// Four f64 into `p` as `D`, as `store8` (AVX2): `vcvttpd2dq` gives
    /// i32::MIN for NaN and out-of-range values, then a byte shuffle keeps
    /// the low bits, as the C cast does.
    #[inline(always)]
    unsafe fn store4<D: Sample>(p: *mut D, v: __m256d) {
        match D::DTYPE {
            DType::F64 => _mm256_storeu_pd(p as *mut f64, v),
            DType::F32 => _mm_storeu_ps(p as *mut f32, _mm256_cvtpd_ps(v)),
            DType::I16 => {
                let x = low_bytes::<D>(_mm256_cvttpd_epi32(v));
                _mm_storel_epi64(p as *mut __m128i, x)
            }
            DType::U8 => {
                let x = low_bytes::<D>(_mm256_cvttpd_epi32(v));
                std::ptr::write_unaligned(p as *mut i32, _mm_cvtsi128_si32(x))
            }
            _ => store_scalar(p, v),
        }
    }

    /// The low bytes of four int32 that the C cast keeps for `D` (two for
    /// int16, one for uint8), packed at the bottom: AVX2 has no truncating
    /// narrow, so a byte shuffle does it.
    #[inline(always)]
    unsafe fn low_bytes<D: Sample>(x: __m128i) -> __m128i {
        let keep = match D::DTYPE {
            DType::I16 => _mm_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, -1, -1, -1, -1, -1, -1, -1, -1),
            _ => _mm_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1),
        };
        _mm_shuffle_epi8(x, keep)
    }

    /// 4×4 transpose of f64 in registers: `m[j][e]` becomes `m[e][j]`.
    #[inline(always)]
    unsafe fn transpose4(m: &mut [__m256d; 8]) {
        let t0 = _mm256_unpacklo_pd(m[0], m[1]);
        let t1 = _mm256_unpackhi_pd(m[0], m[1]);
        let t2 = _mm256_unpacklo_pd(m[2], m[3]);
        let t3 = _mm256_unpackhi_pd(m[2], m[3]);
        m[0] = _mm256_permute2f128_pd::<0x20>(t0, t2);
        m[1] = _mm256_permute2f128_pd::<0x20>(t1, t3);
        m[2] = _mm256_permute2f128_pd::<0x31>(t0, t2);
        m[3] = _mm256_permute2f128_pd::<0x31>(t1, t3);
    }

    /// What the line gathers and scatters, and `convolve_store`, need of a
    /// register width beyond the kernel's arithmetic.
    trait Lines: Vector<E = f64> {
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
            load8(p)
        }
        #[inline(always)]
        unsafe fn store_as<D: Sample>(self, p: *mut D) {
            store8(p, self)
        }
        #[inline(always)]
        unsafe fn transpose(m: &mut [Self; 8]) {
            *m = transpose8(*m)
        }
    }

    impl Lines for __m256d {
        #[inline(always)]
        unsafe fn load_as<S: Sample>(p: *const S) -> Self {
            load4(p)
        }
        #[inline(always)]
        unsafe fn store_as<D: Sample>(self, p: *mut D) {
            store4(p, self)
        }
        #[inline(always)]
        unsafe fn transpose(m: &mut [Self; 8]) {
            transpose4(m)
        }
    }

    #[inline(always)]
    unsafe fn gather_lines<V: Lines, S: Sample>(
        p: *const S,
        lane_step: usize,
        lanes: usize,
        len: usize,
        rows: &mut [f64],
    ) {
        let n = V::WIDTH;
        let full = len / n * n;
        let o = rows.as_mut_ptr();
        // The next group's lines follow these in memory: fetch them a slice
        // at a time while these convert, so they arrive before they are needed.
        let block = LANES * lane_step * std::mem::size_of::<S>();
        let steps = (LANES / n * full / n).max(1);
        let per_step = block.div_ceil(steps).next_multiple_of(64);
        let mut ahead = (p as *const i8).add(block);
        for lb in (0..LANES).step_by(n) {
            let live = lanes.saturating_sub(lb).min(n);
            let line = |j: usize| p.add((lb + j) * lane_step);
            for i in (0..full).step_by(n) {
                for b in (0..per_step).step_by(64) {
                    _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(b));
                }
                ahead = ahead.wrapping_add(per_step);
                let mut m = [V::splat(0.0); 8];
                for (j, m) in m.iter_mut().enumerate().take(live) {
                    *m = V::load_as(line(j).add(i));
                }
                V::transpose(&mut m);
                for (e, v) in m.into_iter().enumerate().take(n) {
                    v.store(o.add((i + e) * LANES + lb));
                }
            }
            for i in full..len {
                for j in 0..n {
                    let x = if j < live {
                        (*line(j).add(i)).to_f64()
                    } else {
                        0.0
                    };
                    *o.add(i * LANES + lb + j) = x;
                }
            }
        }
    }

    #[inline(always)]
    unsafe fn scatter_lines<V: Lines, D: Sample>(
        rows: &[f64],
        len: usize,
        p: *mut D,
        lane_step: usize,
        lanes: usize,
    ) {
        let n = V::WIDTH;
        let full = len / n * n;
        let t = rows.as_ptr();
        for lb in (0..LANES).step_by(n) {
            let live = lanes.saturating_sub(lb).min(n);
            let line = |j: usize| p.add((lb + j) * lane_step);
            for i in (0..full).step_by(n) {
                let mut m = [V::splat(0.0); 8];
                for (e, m) in m.iter_mut().enumerate().take(n) {
                    *m = V::load(t.add((i + e) * LANES + lb));
                }
                V::transpose(&mut m);
                for (j, v) in m.into_iter().enumerate().take(live) {
                    v.store_as(line(j).add(i));
                }
            }
            for i in full..len {
                for j in 0..live {
                    *line(j).add(i) = D::from_f64(*t.add(i * LANES + lb + j));
                }
            }
        }
    }

    /// The few vector operations the kernel needs, for one register width.
    trait Vector: Copy {
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
                    $load(p)
                }
                #[inline(always)]
                unsafe fn store(self, p: *mut $e) {
                    $store(p, self)
                }
                #[inline(always)]
                unsafe fn splat(x: f64) -> Self {
                    $set1(x as $e)
                }
                #[inline(always)]
                unsafe fn add(self, o: Self) -> Self {
                    $add(self, o)
                }
                #[inline(always)]
                unsafe fn mul(self, o: Self) -> Self {
                    $mul(self, o)
                }
                #[inline(always)]
                unsafe fn add_fma(self, o: Self, one: Self) -> Self {
                    $fmadd(self, one, o)
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

    #[target_feature(enable = "avx512f")]
    pub unsafe fn convolve_avx512(tile: &[f64], out: &mut [f64], width: usize, w: &[f64]) {
        convolve::<__m512d>(tile, out, width, w)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn convolve_avx2(tile: &[f64], out: &mut [f64], width: usize, w: &[f64]) {
        convolve::<__m256d>(tile, out, width, w)
    }

    #[inline(always)]
    unsafe fn convolve<V: Vector<E = f64>>(tile: &[f64], out: &mut [f64], width: usize, w: &[f64]) {
        let o = out.as_mut_ptr();
        let len = out.len() / width;
        convolve_fixed::<V>(tile, len, width, w, |i, c, v: V| {
            v.store(o.add(i * width + c))
        })
    }

    /// The kernel with each output vector converted and stored straight into
    /// row `i` of the destination (`p + i·step`), instead of an f64 tile
    /// that a second loop would read back.
    #[inline(always)]
    unsafe fn convolve_store<V: Lines, D: Sample>(
        tile: &[f64],
        len: usize,
        width: usize,
        w: &[f64],
        p: *mut D,
        step: usize,
    ) {
        convolve_fixed::<V>(tile, len, width, w, |i, c, v| {
            v.store_as(p.add(i * step + c))
        })
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
                $generic::<$wide, $t>($($arg),*)
            }
            #[target_feature(enable = "avx2,fma")]
            pub unsafe fn $avx2<$t: Sample>($($arg: $ty),*) {
                $generic::<$narrow, $t>($($arg),*)
            }
        };
    }
    per_width!(gather_lines_avx512, gather_lines_avx2 = gather_lines<S>(
        p: *const S, lane_step: usize, lanes: usize, len: usize, rows: &mut [f64]));
    per_width!(scatter_lines_avx512, scatter_lines_avx2 = scatter_lines<D>(
        rows: &[f64], len: usize, p: *mut D, lane_step: usize, lanes: usize));
    per_width!(convolve_store_avx512, convolve_store_avx2 = convolve_store<D>(
        tile: &[f64], len: usize, width: usize, w: &[f64], p: *mut D, step: usize));

    per_width!(f32 convolve_store_f32, convolve_store_f32_avx2 = convolve_store_checked<D>(
        tile: &[f32], len: usize, width: usize, w: &[f64], p: *mut D, step: usize,
        flags: &mut [u16]));

    /// `convolve_store` for integer images, computed in f32 (16 lanes with
    /// AVX-512, 8 with AVX2) and checked (see the public wrapper for the
    /// argument). Every vector is stored as the truncation of its interval's
    /// top, and flagged where the interval's ends truncate differently;
    /// flagged vectors are recomputed afterwards. A branch inside the
    /// kernel's loop cost more (measured) than the fix-ups, which touch well
    /// under 1% of vectors on MRI-like data.
    #[inline(always)]
    unsafe fn convolve_store_checked<V: Checked, D: Sample>(
        tile: &[f32],
        len: usize,
        width: usize,
        w: &[f64],
        p: *mut D,
        step: usize,
        flags: &mut [u16],
    ) {
        let (lo, hi) = super::f32_error_factors(w.len() - 1);
        // Both factors are f32 values, so the splat is exact.
        let (lo, hi) = (V::splat(lo as f64), V::splat(hi as f64));
        let per_row = width / V::WIDTH;
        let flags = &mut flags[..len * per_row];
        let f = flags.as_mut_ptr();
        convolve_fixed::<V>(tile, len, width, w, |i, c, a| {
            *f.add(i * per_row + c / V::WIDTH) = a.store_checked(lo, hi, p.add(i * step + c));
        });
        for (n, _) in flags.iter().enumerate().filter(|(_, &m)| m != 0) {
            let (i, c) = (n / per_row, n % per_row * V::WIDTH);
            V::recompute(tile, i, c, width, w, p.add(i * step + c))
        }
    }

    /// One register width of the checked f32 kernel.
    trait Checked: Vector<E = f32> {
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
            let below = _mm512_cvttps_epi32(_mm512_mul_ps(self, lo));
            let above = _mm512_cvttps_epi32(_mm512_mul_ps(self, hi));
            store16(p, above);
            _mm512_cmpneq_epi32_mask(below, above)
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
            convolve_exact(tile, i, c, width, w, p)
        }
    }

    impl Checked for __m256 {
        #[inline(always)]
        unsafe fn store_checked<D: Sample>(self, lo: Self, hi: Self, p: *mut D) -> u16 {
            let below = _mm256_cvttps_epi32(_mm256_mul_ps(self, lo));
            let above = _mm256_cvttps_epi32(_mm256_mul_ps(self, hi));
            store8_i32(p, above);
            let same = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(below, above)));
            (same ^ 0xff) as u16
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
            convolve_exact_lanes(tile, i, c..c + 8, width, w, p)
        }
    }

    /// Eight truncated values into `p` as `D`, as `store16` (AVX2): a byte
    /// shuffle keeps each value's low bytes, as the C cast does.
    #[inline(always)]
    unsafe fn store8_i32<D: Sample>(p: *mut D, v: __m256i) {
        match D::DTYPE {
            DType::I32 => _mm256_storeu_si256(p as *mut __m256i, v),
            DType::I16 | DType::U8 => {
                // Each half's low bytes, then the two halves side by side.
                let lo = low_bytes::<D>(_mm256_castsi256_si128(v));
                let hi = low_bytes::<D>(_mm256_extracti128_si256::<1>(v));
                if D::DTYPE == DType::I16 {
                    _mm_storeu_si128(p as *mut __m128i, _mm_unpacklo_epi64(lo, hi))
                } else {
                    _mm_storel_epi64(p as *mut __m128i, _mm_unpacklo_epi32(lo, hi))
                }
            }
            _ => unreachable!("the f32 kernel stores int16, uint8 or int32 only"),
        }
    }

    /// Output row `i`, `lanes` of the tile, by scipy's f64 sequence in
    /// scalar arithmetic (Rust never contracts it), stored from `p` on.
    #[cold]
    #[inline(never)]
    unsafe fn convolve_exact_lanes<D: Sample>(
        tile: &[f32],
        i: usize,
        lanes: std::ops::Range<usize>,
        width: usize,
        w: &[f64],
        p: *mut D,
    ) {
        for (o, l) in lanes.enumerate() {
            let sum = super::scipy_sum(|row| tile[(i + row) * width + l] as f64, w);
            *p.add(o) = D::from_f64(sum);
        }
    }

    /// Sixteen truncated values into `p` as `D` (int16 or uint8), keeping
    /// the low bits as the C cast does; int32 as they are.
    #[inline(always)]
    unsafe fn store16<D: Sample>(p: *mut D, v: __m512i) {
        match D::DTYPE {
            DType::I32 => _mm512_storeu_si512(p as *mut __m512i, v),
            DType::I16 => _mm256_storeu_si256(p as *mut __m256i, _mm512_cvtepi32_epi16(v)),
            DType::U8 => _mm_storeu_si128(p as *mut __m128i, _mm512_cvtepi32_epi8(v)),
            _ => unreachable!("the f32 kernel stores int16, uint8 or int32 only"),
        }
    }

    /// Output row `i`, lanes `c..c + 16`, by scipy's f64 sequence: the rare
    /// vector whose f32 result lies too near an integer to decide.
    #[cold]
    #[inline(never)]
    #[target_feature(enable = "avx512f,avx512vl")]
    unsafe fn convolve_exact<D: Sample>(
        tile: &[f32],
        i: usize,
        c: usize,
        width: usize,
        w: &[f64],
        p: *mut D,
    ) {
        let r = w.len() - 1;
        let t = tile.as_ptr();
        for h in [0, 8] {
            let x = |row: usize| _mm512_cvtps_pd(_mm256_loadu_ps(t.add(row * width + c + h)));
            let mut acc = _mm512_mul_pd(x(i + r), _mm512_set1_pd(w[0]));
            for k in (1..=r).rev() {
                let pair = _mm512_add_pd(x(i + r - k), x(i + r + k));
                acc = _mm512_add_pd(acc, _mm512_mul_pd(pair, _mm512_set1_pd(w[k])));
            }
            store8(p.add(h), acc);
        }
    }

    /// Dispatches to a copy of the kernel compiled for the radius, so that
    /// the loop over taps is unrolled: the weights stay in registers and the
    /// sliding window is renamed at compile time instead of moved.
    #[inline(always)]
    unsafe fn convolve_fixed<V: Vector>(
        tile: &[V::E],
        len: usize,
        width: usize,
        w: &[f64],
        emit: impl Fn(usize, usize, V),
    ) {
        macro_rules! fixed {
            ($($r:literal)*) => {
                match w.len() - 1 {
                    $($r => convolve_r::<V>(tile, len, width, w, $r, emit),)*
                    r => convolve_r::<V>(tile, len, width, w, r, emit),
                }
            };
        }
        fixed!(1 2 3 4 5 6 7 8 9 10 11 12)
    }

    /// Four output rows at a time; `lo[j]`/`hi[j]` hold rows `i+j+r∓k`.
    /// `emit(i, c, v)` receives output row `i`, lanes `c..c + V::WIDTH`.
    #[inline(always)]
    unsafe fn convolve_r<V: Vector>(
        tile: &[V::E],
        len: usize,
        width: usize,
        w: &[f64],
        r: usize,
        emit: impl Fn(usize, usize, V),
    ) {
        // Opaque to the optimiser, or it would turn fma(a, 1, b) back into an add.
        let one = V::splat(std::hint::black_box(1.0));
        let w0 = V::splat(w[0]);
        let t = tile.as_ptr();
        let row = |i: usize, c: usize| V::load(t.add(i * width + c));
        let mut i = 0;
        while i + 4 <= len {
            let mut c = 0;
            while c < width {
                let mut a = [
                    row(i + r, c).mul(w0),
                    row(i + 1 + r, c).mul(w0),
                    row(i + 2 + r, c).mul(w0),
                    row(i + 3 + r, c).mul(w0),
                ];
                let mut lo = [row(i, c), row(i + 1, c), row(i + 2, c), row(i + 3, c)];
                let mut hi = [
                    row(i + 2 * r, c),
                    row(i + 2 * r + 1, c),
                    row(i + 2 * r + 2, c),
                    row(i + 2 * r + 3, c),
                ];
                let mut k = r;
                while k > 0 {
                    let wk = V::splat(*w.get_unchecked(k));
                    let p = [
                        lo[0].add(hi[0]),
                        lo[1].add_fma(hi[1], one),
                        lo[2].add(hi[2]),
                        lo[3].add_fma(hi[3], one),
                    ];
                    for j in 0..4 {
                        a[j] = a[j].add(p[j].mul(wk));
                    }
                    k -= 1;
                    if k > 0 {
                        lo = [lo[1], lo[2], lo[3], row(i + 3 + r - k, c)];
                        hi = [row(i + r + k, c), hi[0], hi[1], hi[2]];
                    }
                }
                for (j, &aj) in a.iter().enumerate() {
                    emit(i + j, c, aj);
                }
                c += V::WIDTH;
            }
            i += 4;
        }
        while i < len {
            let mut c = 0;
            while c < width {
                let mut a = row(i + r, c).mul(w0);
                for k in (1..=r).rev() {
                    let wk = V::splat(*w.get_unchecked(k));
                    a = a.add(row(i + r - k, c).add(row(i + r + k, c)).mul(wk));
                }
                emit(i, c, a);
                c += V::WIDTH;
            }
            i += 1;
        }
    }

    /// Sixteen int16 or uint8 samples from `p`, widened to int32.
    #[inline(always)]
    unsafe fn load16<S: Sample>(p: *const S) -> __m512i {
        match S::DTYPE {
            DType::I16 => _mm512_cvtepi16_epi32(_mm256_loadu_si256(p as *const __m256i)),
            DType::U8 => _mm512_cvtepu8_epi32(_mm_loadu_si128(p as *const __m128i)),
            _ => unreachable!("f32 tiles hold int16 or uint8"),
        }
    }

    #[target_feature(enable = "avx512f,avx512vl")]
    pub unsafe fn gather_lines_f32<S: Sample>(
        p: *const S,
        lane_step: usize,
        lanes: usize,
        len: usize,
        rows: &mut [f32],
    ) -> bool {
        let full = len / 16 * 16;
        let o = rows.as_mut_ptr();
        let line = |j: usize| p.add(j * lane_step);
        // As in gather_lines: fetch the next group's lines while these convert.
        let block = LANES * lane_step * std::mem::size_of::<S>();
        let per_step = block.div_ceil((full / 16).max(1)).next_multiple_of(64);
        let mut ahead = (p as *const i8).add(block);
        let mut sign = _mm512_setzero_si512();
        for i in (0..full).step_by(16) {
            for b in (0..per_step).step_by(64) {
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(b));
            }
            ahead = ahead.wrapping_add(per_step);
            let mut m = [_mm512_setzero_ps(); 16];
            for (j, m) in m.iter_mut().enumerate().take(lanes) {
                let v = load16(line(j).add(i));
                sign = _mm512_or_si512(sign, v);
                *m = _mm512_cvtepi32_ps(v);
            }
            for (e, v) in transpose16(m).into_iter().enumerate() {
                _mm512_storeu_ps(o.add((i + e) * LANES), v);
            }
        }
        let mut negative = _mm512_cmplt_epi32_mask(sign, _mm512_setzero_si512()) != 0;
        for i in full..len {
            for j in 0..LANES {
                let x = if j < lanes {
                    (*line(j).add(i)).to_f64()
                } else {
                    0.0
                };
                negative |= x < 0.0;
                *o.add(i * LANES + j) = x as f32;
            }
        }
        !negative
    }

    #[target_feature(enable = "avx512f,avx512vl")]
    pub unsafe fn scatter_lines_i32<D: Sample>(
        rows: &[i32],
        len: usize,
        p: *mut D,
        lane_step: usize,
        lanes: usize,
    ) {
        let full = len / 16 * 16;
        let t = rows.as_ptr();
        let line = |j: usize| p.add(j * lane_step);
        for i in (0..full).step_by(16) {
            let mut m = [_mm512_setzero_ps(); 16];
            for (e, m) in m.iter_mut().enumerate() {
                *m = _mm512_castsi512_ps(_mm512_loadu_si512(t.add((i + e) * LANES) as *const _));
            }
            for (j, v) in transpose16(m).into_iter().enumerate().take(lanes) {
                store16(line(j).add(i), _mm512_castps_si512(v));
            }
        }
        for i in full..len {
            for j in 0..lanes {
                // An int32 from a truncation narrows like the C cast of it.
                *line(j).add(i) = D::from_f64(f64::from(*t.add(i * LANES + j)));
            }
        }
    }

    /// 16×16 transpose of 32-bit lanes in registers: `m[j][e]` becomes `m[e][j]`.
    /// Plain loops, not `array::from_fn`: its closures would not inherit
    /// the caller's target features, and every shuffle would become a call.
    #[inline(always)]
    unsafe fn transpose16(m: [__m512; 16]) -> [__m512; 16] {
        let mut a = [_mm512_setzero_ps(); 16];
        // a[2p], a[2p+1]: rows 2p and 2p+1 interleaved (low, high pairs).
        for p in (0..16).step_by(2) {
            a[p] = _mm512_unpacklo_ps(m[p], m[p + 1]);
            a[p + 1] = _mm512_unpackhi_ps(m[p], m[p + 1]);
        }
        // b[4g + q], 128-bit lane k: column 4k + q of rows 4g..4g + 4.
        let mut b = [_mm512_setzero_ps(); 16];
        let pd = _mm512_castps_pd;
        for g in (0..16).step_by(4) {
            let (a0, a1, a2, a3) = (pd(a[g]), pd(a[g + 1]), pd(a[g + 2]), pd(a[g + 3]));
            b[g] = _mm512_castpd_ps(_mm512_unpacklo_pd(a0, a2));
            b[g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a0, a2));
            b[g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(a1, a3));
            b[g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(a1, a3));
        }
        // c[8h + 4s + q]: columns 4s + q and 8 + 4s + q of rows 8h..8h + 8.
        let mut c = [_mm512_setzero_ps(); 16];
        for h in [0, 8] {
            for q in 0..4 {
                c[h + q] = _mm512_shuffle_f32x4::<0x88>(b[h + q], b[h + 4 + q]);
                c[h + 4 + q] = _mm512_shuffle_f32x4::<0xdd>(b[h + q], b[h + 4 + q]);
            }
        }
        let mut out = [_mm512_setzero_ps(); 16];
        for j in 0..8 {
            out[j] = _mm512_shuffle_f32x4::<0x88>(c[j], c[8 + j]);
            out[8 + j] = _mm512_shuffle_f32x4::<0xdd>(c[j], c[8 + j]);
        }
        out
    }

    /// 8×8 transpose of f64 in registers: `m[j][e]` becomes `m[e][j]`.
    #[inline(always)]
    unsafe fn transpose8(m: [__m512d; 8]) -> [__m512d; 8] {
        let t: [__m512d; 8] = std::array::from_fn(|j| {
            let (a, b) = (m[j & !1], m[j | 1]);
            if j % 2 == 0 {
                _mm512_unpacklo_pd(a, b)
            } else {
                _mm512_unpackhi_pd(a, b)
            }
        });
        // t[0] = [m0_0 m1_0 m0_2 m1_2 m0_4 m1_4 m0_6 m1_6], t[1] the odd elements.
        let lo4 = _mm512_set_epi64(13, 12, 5, 4, 9, 8, 1, 0);
        let hi4 = _mm512_set_epi64(15, 14, 7, 6, 11, 10, 3, 2);
        // u[0] = columns 0 and 4 of rows 0..4, u[1] columns 1 and 5, u[2] 2 and 6, u[3] 3 and 7.
        let u = [
            _mm512_permutex2var_pd(t[0], lo4, t[2]),
            _mm512_permutex2var_pd(t[1], lo4, t[3]),
            _mm512_permutex2var_pd(t[0], hi4, t[2]),
            _mm512_permutex2var_pd(t[1], hi4, t[3]),
            _mm512_permutex2var_pd(t[4], lo4, t[6]),
            _mm512_permutex2var_pd(t[5], lo4, t[7]),
            _mm512_permutex2var_pd(t[4], hi4, t[6]),
            _mm512_permutex2var_pd(t[5], hi4, t[7]),
        ];
        let lo8 = _mm512_set_epi64(11, 10, 9, 8, 3, 2, 1, 0);
        let hi8 = _mm512_set_epi64(15, 14, 13, 12, 7, 6, 5, 4);
        [
            _mm512_permutex2var_pd(u[0], lo8, u[4]),
            _mm512_permutex2var_pd(u[1], lo8, u[5]),
            _mm512_permutex2var_pd(u[2], lo8, u[6]),
            _mm512_permutex2var_pd(u[3], lo8, u[7]),
            _mm512_permutex2var_pd(u[0], hi8, u[4]),
            _mm512_permutex2var_pd(u[1], hi8, u[5]),
            _mm512_permutex2var_pd(u[2], hi8, u[6]),
            _mm512_permutex2var_pd(u[3], hi8, u[7]),
        ]
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn transpose_in_avx512(lines: &[Vec<f64>], len: usize, rows: &mut [f64]) {
        let full = len / 8 * 8;
        for lb in (0..LANES).step_by(8) {
            for i in (0..full).step_by(8) {
                let m: [__m512d; 8] =
                    std::array::from_fn(|j| _mm512_loadu_pd(lines[lb + j].as_ptr().add(i)));
                for (e, v) in transpose8(m).into_iter().enumerate() {
                    _mm512_storeu_pd(rows.as_mut_ptr().add((i + e) * LANES + lb), v);
                }
            }
        }
        for (i, row) in rows
            .chunks_exact_mut(LANES)
            .enumerate()
            .take(len)
            .skip(full)
        {
            for (x, line) in row.iter_mut().zip(lines) {
                *x = line[i];
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn transpose_out_avx512(rows: &[f64], len: usize, lines: &mut [Vec<f64>]) {
        let full = len / 8 * 8;
        for lb in (0..LANES).step_by(8) {
            for i in (0..full).step_by(8) {
                let m: [__m512d; 8] = std::array::from_fn(|e| {
                    _mm512_loadu_pd(rows.as_ptr().add((i + e) * LANES + lb))
                });
                for (j, v) in transpose8(m).into_iter().enumerate() {
                    _mm512_storeu_pd(lines[lb + j].as_mut_ptr().add(i), v);
                }
            }
        }
        for (l, line) in lines.iter_mut().enumerate() {
            for (i, x) in line.iter_mut().enumerate().take(len).skip(full) {
                *x = rows[i * LANES + l];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::test_noise as noise;
    use crate::volume::DType;

    #[test]
    fn vector_kernel_equals_the_definition_bit_for_bit() {
        // Every radius with its own unrolled copy, and one beyond them.
        for r in 1usize..=13 {
            let w: Vec<f64> = (0..=r).map(|k| 1.0 / (1.0 + k as f64 * 0.37)).collect();
            for len in [1usize, 3, 4, 5, 8, 17, 64] {
                for width in [LANES, 3 * LANES] {
                    let tile = noise((len + 2 * r) * width, (r * 100 + len) as u64);
                    let mut fast = vec![0.0; len * width];
                    let mut slow = fast.clone();
                    convolve(&tile, &mut fast, width, &w);
                    convolve_scalar(&tile, &mut slow, width, &w);
                    let bits = |v: &[f64]| -> Vec<u64> { v.iter().map(|x| x.to_bits()).collect() };
                    assert_eq!(bits(&fast), bits(&slow), "r {r} len {len} width {width}");
                }
            }
        }
    }

    /// Integer tiles whose results land on and next to integers: constant
    /// lanes (where scipy's f64 sum falls on or just below the value),
    /// linear ramps (which a symmetric kernel reproduces), steps between 0
    /// and the top of the range, and noise.
    fn integer_tile(rows: usize, width: usize, top: f64, seed: u64) -> Vec<f64> {
        let n = noise(rows * width, seed);
        (0..rows * width)
            .map(|at| {
                let (i, l) = (at / width, at % width);
                match l % 4 {
                    0 => ((l * 997 + 3) as f64 % (top + 1.0)).floor(),
                    1 => ((i * (l + 1)) as f64 * 7.0) % (top + 1.0),
                    2 if (i / 5 + l) % 2 == 0 => top,
                    2 => 0.0,
                    _ => ((n[at] + 50.0) / 200.0 * top).floor(),
                }
            })
            .collect()
    }

    /// The f32 kernel stores exactly what scipy's f64 sequence truncates to,
    /// for real Gaussian weights (unrolled radii and the generic one), on
    /// tiles where a plain f32 truncation is wrong somewhere.
    #[cfg(target_arch = "x86_64")]
    fn f32_kernel_case<D: Sample + PartialEq + std::fmt::Debug>(top: f64) {
        use crate::filter::{ExpFlavour, Kernel1d};
        if !has_f32_kernel() {
            return;
        }
        let mut plain_f32_wrong = 0;
        // Vectors stored as the kernel computed them, not recomputed in f64,
        // by the 16- and 8-lane kernels: the stores themselves are tested.
        let mut unflagged = [0, 0];
        for sigma in [0.4, 1.0, 2.0, 2.9, 5.0] {
            let w = Kernel1d::gaussian(sigma, 4.0, ExpFlavour::Libm).half;
            let r = w.len() - 1;
            assert!(f32_kernel_fits(&w));
            let shapes = [(1usize, LANES), (7, 4 * LANES), (40, 2 * LANES)];
            // Tiles built to land on integers (whose vectors are all flagged),
            // and noise alone (mostly not).
            let tiles = shapes.into_iter().flat_map(|(len, width)| {
                let rows = len + 2 * r;
                let seed = (r * 31 + len) as u64;
                let noise = noise(rows * width, seed + 1)
                    .into_iter()
                    .map(|x| ((x + 50.0) / 200.0 * top).clamp(0.0, top).floor())
                    .collect();
                [
                    (len, width, integer_tile(rows, width, top, seed)),
                    (len, width, noise),
                ]
            });
            for (len, width, tile) in tiles {
                let mut exact = vec![0.0; len * width];
                convolve_scalar(&tile, &mut exact, width, &w);
                let want: Vec<D> = exact.iter().map(|&x| D::from_f64(x)).collect();

                let tile32: Vec<f32> = tile.iter().map(|&x| x as f32).collect();
                let mut got = vec![D::from_f64(0.0); len * width];
                let mut flags = vec![0u16; len * width / 8];
                unsafe {
                    convolve_store_f32(&tile32, len, width, &w, got.as_mut_ptr(), width, &mut flags)
                };
                assert_eq!(got, want, "sigma {sigma} len {len} width {width}");
                let vectors = len * width / if level() == Level::Avx512 { 16 } else { 8 };
                unflagged[0] += flags[..vectors].iter().filter(|&&m| m == 0).count();
                if std::is_x86_feature_detected!("avx512f") {
                    // This CPU runs the 16-lane kernel above; the 8-lane one too.
                    let mut got8 = vec![D::from_f64(0.0); len * width];
                    let (out, f) = (got8.as_mut_ptr(), &mut flags);
                    unsafe { x86::convolve_store_f32_avx2(&tile32, len, width, &w, out, width, f) };
                    assert_eq!(got8, want, "AVX2: sigma {sigma} len {len} width {width}");
                    unflagged[1] += flags.iter().filter(|&&m| m == 0).count();
                } else {
                    unflagged[1] = unflagged[0];
                }

                // The same sequence in f32, truncated unchecked.
                let w32: Vec<f32> = w.iter().map(|&x| x as f32).collect();
                for (o, &e) in exact.iter().enumerate() {
                    let (i, l) = (o / width, o % width);
                    let at = |row: usize| tile32[row * width + l];
                    let mut acc = at(i + r) * w32[0];
                    for k in (1..=r).rev() {
                        acc += (at(i + r - k) + at(i + r + k)) * w32[k];
                    }
                    plain_f32_wrong += usize::from(acc.trunc() as f64 != e.trunc());
                }
            }
        }
        assert!(
            plain_f32_wrong > 0,
            "the tiles never catch an unchecked f32 kernel"
        );
        assert!(
            unflagged.iter().all(|&n| n > 0),
            "every vector recomputed: {unflagged:?}"
        );
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn f32_kernel_truncates_like_the_f64_sequence() {
        f32_kernel_case::<i16>(32767.0);
        f32_kernel_case::<u8>(255.0);
    }

    /// The f32 gathers convert and transpose like the definition, and report
    /// a negative value wherever it is (vector part or tail); the int32
    /// scatter narrows like the C cast.
    #[cfg(target_arch = "x86_64")]
    fn f32_lines_round_trip<T: Sample + PartialEq + std::fmt::Debug>(top: f64) {
        if !has_f32_line_transposes() {
            return;
        }
        for (len, lanes, step) in [
            (37usize, 16usize, 40usize),
            (16, 5, 16),
            (3, 16, 3),
            (64, 11, 70),
        ] {
            let src: Vec<T> = integer_tile(step, LANES, top, len as u64)
                .into_iter()
                .map(T::from_f64)
                .collect();
            let mut rows = vec![f32::NAN; len * LANES];
            assert!(unsafe { gather_lines_f32(src.as_ptr(), step, lanes, len, &mut rows) });
            for i in 0..len {
                for l in 0..LANES {
                    let want = if l < lanes {
                        src[l * step + i].to_f64()
                    } else {
                        0.0
                    };
                    assert_eq!(rows[i * LANES + l] as f64, want, "{} gather", T::DTYPE);
                }
            }
            if T::DTYPE == DType::I16 {
                // One negative sample, early (in a transposed block) or last (in the tail).
                for at in [1, len - 1] {
                    let mut neg = src.clone();
                    neg[(lanes - 1) * step + at] = T::from_f64(-3.0);
                    let ok = unsafe { gather_lines_f32(neg.as_ptr(), step, lanes, len, &mut rows) };
                    assert!(!ok, "a negative sample at {at} of {len} went unnoticed");
                }
            }
            // Int32 rows beyond T's range (and i32::MIN, what a NaN truncates to).
            let tile: Vec<i32> = (0..len * LANES)
                .map(|n| match n % 5 {
                    0 => i32::MIN,
                    1 => 70000 + n as i32,
                    _ => n as i32 * 37 - 900,
                })
                .collect();
            let mut dst = src.clone();
            unsafe { scatter_lines_i32(&tile, len, dst.as_mut_ptr(), step, lanes) };
            let mut want = src.clone();
            for l in 0..lanes {
                for i in 0..len {
                    want[l * step + i] = T::from_f64(f64::from(tile[i * LANES + l]));
                }
            }
            assert_eq!(dst, want, "{} scatter len {len} lanes {lanes}", T::DTYPE);
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn f32_line_gathers_and_int32_scatters_are_exact() {
        f32_lines_round_trip::<i16>(32767.0);
        f32_lines_round_trip::<u8>(255.0);
    }

    #[test]
    fn f32_kernel_refuses_weights_its_bound_does_not_cover() {
        assert!(f32_kernel_fits(&[0.5, 0.25]));
        assert!(!f32_kernel_fits(&[0.5, -0.25]));
        assert!(!f32_kernel_fits(&[1.0, 1e-40]));
        assert!(!f32_kernel_fits(&[1.0, f64::NAN]));
        assert!(!f32_kernel_fits(&vec![0.001; 1025]));
    }

    /// Values that probe every conversion: fractions of both signs, NaN,
    /// ±Inf, and values beyond each integer type's range.
    fn awkward(n: usize) -> Vec<f64> {
        let special = [
            f64::NAN,
            f64::INFINITY,
            -f64::INFINITY,
            1e10,
            -1e10,
            70000.5,
            -0.7,
        ];
        noise(n, 9)
            .iter()
            .enumerate()
            .map(|(i, &x)| {
                if i % 7 == 3 {
                    special[i % special.len()]
                } else {
                    x * 3.0
                }
            })
            .collect()
    }

    #[cfg(target_arch = "x86_64")]
    fn lines_round_trip<T: Sample + PartialEq + std::fmt::Debug>() {
        type Gather<T> = unsafe fn(*const T, usize, usize, usize, &mut [f64]);
        type Scatter<T> = unsafe fn(&[f64], usize, *mut T, usize, usize);
        use std::arch::is_x86_feature_detected as has;
        // Each width this CPU can run, whatever NISMOOTH_SIMD says.
        let mut widths: Vec<(&str, Gather<T>, Scatter<T>)> = Vec::new();
        if has!("avx512f") && has!("avx512vl") {
            widths.push((
                "avx512",
                x86::gather_lines_avx512::<T>,
                x86::scatter_lines_avx512::<T>,
            ));
        }
        if has!("avx2") && has!("fma") {
            widths.push((
                "avx2",
                x86::gather_lines_avx2::<T>,
                x86::scatter_lines_avx2::<T>,
            ));
        }
        for (width, gather_lines, scatter_lines) in widths {
            lines_round_trip_with(width, gather_lines, scatter_lines);
        }
    }

    #[cfg(target_arch = "x86_64")]
    fn lines_round_trip_with<T: Sample + PartialEq + std::fmt::Debug>(
        width: &str,
        gather_lines: unsafe fn(*const T, usize, usize, usize, &mut [f64]),
        scatter_lines: unsafe fn(&[f64], usize, *mut T, usize, usize),
    ) {
        for (len, lanes, step) in [
            (37usize, 16usize, 40usize),
            (8, 5, 8),
            (3, 16, 3),
            (64, 11, 70),
        ] {
            let src: Vec<T> = awkward(step * LANES).into_iter().map(T::from_f64).collect();
            let mut rows = vec![f64::NAN; len * LANES];
            unsafe { gather_lines(src.as_ptr(), step, lanes, len, &mut rows) };
            for i in 0..len {
                for l in 0..LANES {
                    let want = if l < lanes {
                        src[l * step + i].to_f64()
                    } else {
                        0.0
                    };
                    assert_eq!(
                        rows[i * LANES + l].to_bits(),
                        want.to_bits(),
                        "{} gather ({width})",
                        T::DTYPE
                    );
                }
            }
            // Scatter values that are not representable in T, over a copy.
            let tile = awkward(len * LANES);
            let mut dst = src.clone();
            unsafe { scatter_lines(&tile, len, dst.as_mut_ptr(), step, lanes) };
            let mut want = src.clone();
            for l in 0..lanes {
                for i in 0..len {
                    want[l * step + i] = T::from_f64(tile[i * LANES + l]);
                }
            }
            let bits = |v: &[T]| bytemuck::cast_slice::<T, u8>(v).to_vec();
            assert_eq!(
                bits(&dst),
                bits(&want),
                "{} scatter len {len} lanes {lanes} ({width})",
                T::DTYPE
            );
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn line_gathers_and_scatters_convert_like_the_scalar_casts() {
        lines_round_trip::<u8>();
        lines_round_trip::<i8>();
        lines_round_trip::<i16>();
        lines_round_trip::<u16>();
        lines_round_trip::<i32>();
        lines_round_trip::<u32>();
        lines_round_trip::<i64>();
        lines_round_trip::<u64>();
        lines_round_trip::<f32>();
        lines_round_trip::<f64>();
    }

    #[test]
    fn transposes_are_inverse_and_correct() {
        for len in [1usize, 7, 8, 9, 24, 37] {
            let lines: Vec<Vec<f64>> = (0..LANES)
                .map(|l| (0..len).map(|i| (l * 1000 + i) as f64).collect())
                .collect();
            let mut t = vec![f64::NAN; len * LANES];
            transpose_in(&lines, len, &mut t);
            for (i, row) in t.chunks_exact(LANES).enumerate() {
                for (l, &x) in row.iter().enumerate() {
                    assert_eq!(x, (l * 1000 + i) as f64, "len {len} i {i} l {l}");
                }
            }
            let mut back = vec![vec![0.0; len]; LANES];
            transpose_out(&t, len, &mut back);
            assert_eq!(back, lines);
        }
    }
}

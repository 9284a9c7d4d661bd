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
//!
//! The CPU is asked once: `dispatch` matches `level()` and runs a `Job`
//! compiled for that level, handing it a token (`Scalar`, `Avx2`,
//! `Avx512`) whose existence proves the features. Every kernel below takes
//! the token and is resolved by its `Isa::LEVEL` at compile time, so the
//! filter's code beneath the dispatch never asks again (`volume`'s C-cast
//! conversion, a primitive below the filter, keeps its own check).

mod scalar;
#[cfg(test)]
mod tests;
#[cfg(target_arch = "x86_64")]
mod x86;

use crate::volume::Sample;
pub use scalar::convolve_scalar;

/// Tile widths are multiples of this (two AVX-512 or four AVX2 vectors), and
/// axis 0's tiles are exactly this wide (the transposes work on 16 lines).
pub const LANES: usize = 16;

/// A tile is row-major f64: row `i` holds position `i` of `width` neighbouring
/// lines. `out` row `i` = the window of `tile` centred on row `i + r`, summed
/// in scipy's order; `tile` holds `len + 2r` rows (the lines and their padding).
/// `w` is the half kernel from the centre out; `odd`: an antisymmetric one.
pub fn convolve<I: Isa>(_: I, tile: &[f64], out: &mut [f64], width: usize, w: &[f64], odd: bool) {
    assert!(!w.is_empty() && width.is_multiple_of(LANES) && width > 0);
    assert!(tile.len() >= out.len() + 2 * (w.len() - 1) * width);
    match I::LEVEL {
        // SAFETY: an `I` proves the features; the assert bounds every row read.
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => unsafe { x86::convolve_avx512(tile, out, width, w, odd) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => unsafe { x86::convolve_avx2(tile, out, width, w, odd) },
        _ => convolve_scalar(tile, out, width, w, odd),
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

/// Proof that this CPU has an instruction set: the kernels below take one
/// and are resolved at compile time by its `LEVEL`, so the CPU is asked
/// once, in `dispatch`, and every call beneath runs the code of that level.
///
/// # Safety
/// A value of an implementing type may exist only on a CPU that has
/// `LEVEL`'s features: the kernels run that level's instructions on its
/// word. `Scalar` needs nothing; `Avx2` and `Avx512` are made only by
/// `dispatch` and `detect`, after checking.
pub unsafe trait Isa: Copy {
    const LEVEL: Level;
    /// Whether `gather_lines`, `scatter_lines` and `convolve_store` run
    /// (AVX2 and FMA, or AVX-512 F and VL).
    const LINE_TRANSPOSES: bool;
    /// Whether `convolve_store_f32` runs (AVX2 and FMA on 8 lanes, or
    /// AVX-512 on 16).
    const F32_KERNEL: bool;
    /// Whether `gather_lines_f32` and `scatter_lines_i32` run, which take
    /// the f32 kernel to the x pass (AVX-512 F and VL).
    const F32_LINE_TRANSPOSES: bool;
}

/// Any CPU: the portable loops.
#[derive(Clone, Copy, Debug)]
pub struct Scalar;

// SAFETY: the scalar code runs on every CPU.
unsafe impl Isa for Scalar {
    const LEVEL: Level = Level::Scalar;
    const LINE_TRANSPOSES: bool = false;
    const F32_KERNEL: bool = false;
    const F32_LINE_TRANSPOSES: bool = false;
}

/// AVX2 and FMA (the private field keeps others from making one).
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy, Debug)]
pub struct Avx2(());

/// AVX-512 F and VL (and, as on every such CPU, AVX2 and FMA).
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy, Debug)]
pub struct Avx512(());

// SAFETY: an `Avx2` is made only where `level()` is at least `Avx2`, which
// `detect` found on the CPU.
#[cfg(target_arch = "x86_64")]
unsafe impl Isa for Avx2 {
    const LEVEL: Level = Level::Avx2;
    const LINE_TRANSPOSES: bool = true;
    const F32_KERNEL: bool = true;
    const F32_LINE_TRANSPOSES: bool = false;
}

// SAFETY: as for `Avx2`, at `Level::Avx512`.
#[cfg(target_arch = "x86_64")]
unsafe impl Isa for Avx512 {
    const LEVEL: Level = Level::Avx512;
    const LINE_TRANSPOSES: bool = true;
    const F32_KERNEL: bool = true;
    const F32_LINE_TRANSPOSES: bool = true;
}

#[cfg(all(test, target_arch = "x86_64"))]
impl Avx2 {
    /// A token when this process runs AVX2 code (for the tests of each level).
    pub fn detect() -> Option<Avx2> {
        (level() >= Level::Avx2).then_some(Avx2(()))
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
impl Avx512 {
    /// A token when this process runs AVX-512 code (for the tests of each level).
    pub fn detect() -> Option<Avx512> {
        (level() >= Level::Avx512).then_some(Avx512(()))
    }
}

/// Work written once over the instruction set (`run` should be
/// `#[inline(always)]`, so that it is compiled into `dispatch`'s copy for
/// each level, with that level's features).
pub trait Job {
    type Output;
    fn run<I: Isa>(self, isa: I) -> Self::Output;
}

/// Runs `job` with the widest instruction set `level()` allows: the one
/// place the filter asks the CPU.
pub fn dispatch<J: Job>(job: J) -> J::Output {
    match level() {
        // SAFETY: `level()` found AVX-512 F and VL (and so AVX2 and FMA).
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => unsafe { x86::run_avx512(job, Avx512(())) },
        // SAFETY: `level()` found AVX2 and FMA.
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => unsafe { x86::run_avx2(job, Avx2(())) },
        _ => job.run(Scalar),
    }
}

/// Copies `LANES` lines (each at least `len` long) into a tile `LANES` wide:
/// `rows[i·LANES + l] = lines[l][i]`.
pub fn transpose_in<I: Isa>(_: I, lines: &[Vec<f64>], len: usize, rows: &mut [f64]) {
    assert!(lines.len() == LANES && rows.len() >= len * LANES);
    #[cfg(target_arch = "x86_64")]
    if I::LEVEL == Level::Avx512 {
        // SAFETY: an `I` proves the features; the assert bounds every access.
        return unsafe { x86::transpose_in_avx512(lines, len, rows) };
    }
    for (i, row) in rows.chunks_exact_mut(LANES).enumerate().take(len) {
        for (x, line) in row.iter_mut().zip(lines) {
            *x = line[i];
        }
    }
}

/// The inverse: `lines[l][i] = rows[i·LANES + l]`.
pub fn transpose_out<I: Isa>(_: I, rows: &[f64], len: usize, lines: &mut [Vec<f64>]) {
    assert!(lines.len() == LANES && rows.len() >= len * LANES);
    #[cfg(target_arch = "x86_64")]
    if I::LEVEL == Level::Avx512 {
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
/// output tile. For groups whose lanes fill the tile.
///
/// # Safety
/// `I::LINE_TRANSPOSES`; every destination row holds `width` writable samples that `tile` does not
/// alias; `tile` holds `len + 2r` rows.
#[cfg(target_arch = "x86_64")]
pub unsafe fn convolve_store<I: Isa, D: Sample>(
    _: I,
    tile: &[f64],
    len: usize,
    width: usize,
    (w, odd): (&[f64], bool),
    p: *mut D,
    step: usize,
) {
    // SAFETY: the token proves `I`'s features; the caller keeps the rest of the contract above.
    unsafe {
        assert!(!w.is_empty() && width.is_multiple_of(LANES) && width > 0);
        assert!(tile.len() >= (len + 2 * (w.len() - 1)) * width);
        match I::LEVEL {
            Level::Avx512 => x86::convolve_store_avx512(tile, len, width, (w, odd), p, step),
            Level::Avx2 => x86::convolve_store_avx2(tile, len, width, (w, odd), p, step),
            Level::Scalar => unreachable!("convolve_store needs I::LINE_TRANSPOSES"),
        }
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
/// `I::F32_KERNEL`; as for `convolve_store`; `D` is int16 or uint8 (or
/// int32, for rows that `scatter_lines_i32` narrows later); every tile
/// value is an integer in `0..2¹⁶`; `f32_kernel_fits(w)`.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)] // seven of data; the first is the token, a proof
pub unsafe fn convolve_store_f32<I: Isa, D: Sample>(
    _: I,
    tile: &[f32],
    len: usize,
    width: usize,
    w: &[f64],
    p: *mut D,
    step: usize,
    flags: &mut [u16],
) {
    // SAFETY: the token proves `I`'s features; the caller keeps the rest of the contract above.
    unsafe {
        assert!(!w.is_empty() && width.is_multiple_of(LANES) && width > 0);
        assert!(tile.len() >= (len + 2 * (w.len() - 1)) * width);
        assert!(flags.len() >= len * width / 8);
        assert!(f32_kernel_fits(w));
        match I::LEVEL {
            Level::Avx512 => x86::convolve_store_f32(tile, len, width, w, p, step, flags),
            Level::Avx2 => x86::convolve_store_f32_avx2(tile, len, width, w, p, step, flags),
            Level::Scalar => unreachable!("convolve_store_f32 needs I::F32_KERNEL"),
        }
    }
}

/// `gather_lines` into an f32 tile, for int16 and uint8 lines (exact in
/// f32), through 16×16 transposes. Returns whether every value is ≥ 0, which
/// `convolve_store_f32` needs.
///
/// # Safety
/// `I::F32_LINE_TRANSPOSES`; as for `gather_lines`; `S` is int16 or uint8.
#[cfg(target_arch = "x86_64")]
pub unsafe fn gather_lines_f32<I: Isa, S: Sample>(
    _: I,
    p: *const S,
    lane_step: usize,
    lanes: usize,
    len: usize,
    rows: &mut [f32],
) -> bool {
    // SAFETY: the token proves `I`'s features; the caller keeps the rest of the contract above.
    unsafe {
        assert!(rows.len() >= len * LANES && lanes <= LANES);
        x86::gather_lines_f32(p, lane_step, lanes, len, rows)
    }
}

/// `scatter_lines` for the x pass of the f32 kernel: its outputs come as
/// int32 rows (`convolve_store_f32` into `D = i32`), already truncated,
/// and are narrowed into int16 or uint8 lines keeping the low bits.
///
/// # Safety
/// `I::F32_LINE_TRANSPOSES`; as for `scatter_lines`; `D` is int16 or uint8.
#[cfg(target_arch = "x86_64")]
pub unsafe fn scatter_lines_i32<I: Isa, D: Sample>(
    _: I,
    rows: &[i32],
    len: usize,
    p: *mut D,
    lane_step: usize,
    lanes: usize,
) {
    // SAFETY: the token proves `I`'s features; the caller keeps the rest of the contract above.
    unsafe {
        assert!(rows.len() >= len * LANES && lanes <= LANES);
        x86::scatter_lines_i32(rows, len, p, lane_step, lanes)
    }
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

/// Converts `lanes` ≤ `LANES` contiguous lines of `len` samples (line `l`
/// starts at `p + l·lane_step`) into tile rows: `rows[i·LANES + l]` =
/// sample `i` of line `l`, zero for `l ≥ lanes`. The conversion and the 8×8
/// transposes happen in registers, with no f64 copy of the lines in between.
///
/// # Safety
/// `I::LINE_TRANSPOSES`; every line readable for `len` samples;
/// `rows.len() ≥ len·LANES`.
#[cfg(target_arch = "x86_64")]
pub unsafe fn gather_lines<I: Isa, S: Sample>(
    _: I,
    p: *const S,
    lane_step: usize,
    lanes: usize,
    len: usize,
    rows: &mut [f64],
) {
    // SAFETY: the token proves `I`'s features; the caller keeps the rest of the contract above.
    unsafe {
        assert!(rows.len() >= len * LANES && lanes <= LANES);
        match I::LEVEL {
            Level::Avx512 => x86::gather_lines_avx512(p, lane_step, lanes, len, rows),
            Level::Avx2 => x86::gather_lines_avx2(p, lane_step, lanes, len, rows),
            Level::Scalar => unreachable!("gather_lines needs I::LINE_TRANSPOSES"),
        }
    }
}

/// The inverse of `gather_lines`: stores tile rows back into the lines,
/// converting to the lines' dtype (C-cast semantics, as `Sample::from_f64`).
///
/// # Safety
/// As for `gather_lines`, with the lines writable.
#[cfg(target_arch = "x86_64")]
pub unsafe fn scatter_lines<I: Isa, D: Sample>(
    _: I,
    rows: &[f64],
    len: usize,
    p: *mut D,
    lane_step: usize,
    lanes: usize,
) {
    // SAFETY: the token proves `I`'s features; the caller keeps the rest of the contract above.
    unsafe {
        assert!(rows.len() >= len * LANES && lanes <= LANES);
        match I::LEVEL {
            Level::Avx512 => x86::scatter_lines_avx512(rows, len, p, lane_step, lanes),
            Level::Avx2 => x86::scatter_lines_avx2(rows, len, p, lane_step, lanes),
            Level::Scalar => unreachable!("scatter_lines needs I::LINE_TRANSPOSES"),
        }
    }
}

//! The convolution itself, written once over `Vector`: scipy's sequence per
//! output with a sliding window of rows in registers, unrolled per radius;
//! the stores straight into the destination; the f32 kernel with its
//! interval check, and the exact f64 recomputation of the rare vector it
//! cannot decide.

use super::*;

#[inline(always)]
pub(super) unsafe fn convolve<V: Vector<E = f64>>(
    tile: &[f64],
    out: &mut [f64],
    width: usize,
    w: &[f64],
    odd: bool,
) {
    // SAFETY: reached only through an entry point compiled for, and called on, a CPU with this
    // width's features; the caller keeps the contract on the pointers and lengths (the module's and
    // this function's).
    unsafe {
        let o = out.as_mut_ptr();
        let len = out.len() / width;
        convolve_fixed::<V>(tile, len, width, (w, odd), |i, c, v: V| {
            v.store(o.add(i * width + c))
        })
    }
}

/// The kernel with each output vector converted and stored straight into
/// row `i` of the destination (`p + i·step`), instead of an f64 tile
/// that a second loop would read back.
#[inline(always)]
pub(super) unsafe fn convolve_store<V: Lines, D: Sample>(
    tile: &[f64],
    len: usize,
    width: usize,
    w: (&[f64], bool),
    p: *mut D,
    step: usize,
) {
    // SAFETY: reached only through an entry point compiled for, and called on, a CPU with this
    // width's features; the caller keeps the contract on the pointers and lengths (the module's and
    // this function's).
    unsafe {
        convolve_fixed::<V>(tile, len, width, w, |i, c, v| {
            v.store_as(p.add(i * step + c))
        })
    }
}

/// `convolve_store` for integer images, computed in f32 (16 lanes with
/// AVX-512, 8 with AVX2) and checked (see the public wrapper for the
/// argument). Every vector is stored as the truncation of its interval's
/// top, and flagged where the interval's ends truncate differently;
/// flagged vectors are recomputed afterwards. A branch inside the
/// kernel's loop cost more (measured) than the fix-ups, which touch well
/// under 1% of vectors on MRI-like data.
#[inline(always)]
pub(super) unsafe fn convolve_store_checked<V: Checked, D: Sample>(
    tile: &[f32],
    len: usize,
    width: usize,
    w: &[f64],
    p: *mut D,
    step: usize,
    flags: &mut [u16],
) {
    // SAFETY: reached only through an entry point compiled for, and called on, a CPU with this
    // width's features; the caller keeps the contract on the pointers and lengths (the module's and
    // this function's).
    unsafe {
        let (lo, hi) = crate::filter::simd::f32_error_factors(w.len() - 1);
        // Both factors are f32 values, so the splat is exact.
        let (lo, hi) = (V::splat(lo as f64), V::splat(hi as f64));
        let per_row = width / V::WIDTH;
        let flags = &mut flags[..len * per_row];
        let f = flags.as_mut_ptr();
        // The f32 kernel takes non-negative weights only: never an odd kernel.
        convolve_fixed::<V>(tile, len, width, (w, false), |i, c, a| {
            *f.add(i * per_row + c / V::WIDTH) = a.store_checked(lo, hi, p.add(i * step + c));
        });
        for (n, _) in flags.iter().enumerate().filter(|(_, &m)| m != 0) {
            let (i, c) = (n / per_row, n % per_row * V::WIDTH);
            V::recompute(tile, i, c, width, w, p.add(i * step + c))
        }
    }
}

/// Output row `i`, `lanes` of the tile, by scipy's f64 sequence in
/// scalar arithmetic (Rust never contracts it), stored from `p` on.
#[cold]
#[inline(never)]
pub(super) unsafe fn convolve_exact_lanes<D: Sample>(
    tile: &[f32],
    i: usize,
    lanes: std::ops::Range<usize>,
    width: usize,
    w: &[f64],
    p: *mut D,
) {
    // SAFETY: reached only through an entry point compiled for, and called on, a CPU with this
    // width's features; the caller keeps the contract on the pointers and lengths (the module's and
    // this function's).
    unsafe {
        for (o, l) in lanes.enumerate() {
            let sum = crate::filter::simd::scalar::scipy_sum(
                |row| tile[(i + row) * width + l] as f64,
                w,
                false,
            );
            *p.add(o) = D::from_f64(sum);
        }
    }
}

/// Output row `i`, lanes `c..c + 16`, by scipy's f64 sequence: the rare
/// vector whose f32 result lies too near an integer to decide.
#[cold]
#[inline(never)]
#[target_feature(enable = "avx512f,avx512vl")]
pub(super) unsafe fn convolve_exact<D: Sample>(
    tile: &[f32],
    i: usize,
    c: usize,
    width: usize,
    w: &[f64],
    p: *mut D,
) {
    // SAFETY: reached only through an entry point compiled for, and called on, a CPU with this
    // width's features; the caller keeps the contract on the pointers and lengths (the module's and
    // this function's).
    unsafe {
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
}

/// Dispatches to a copy of the kernel compiled for the radius, so that
/// the loop over taps is unrolled: the weights stay in registers and the
/// sliding window is renamed at compile time instead of moved. An odd
/// (antisymmetric) kernel has copies of its own.
#[inline(always)]
pub(super) unsafe fn convolve_fixed<V: Vector>(
    tile: &[V::E],
    len: usize,
    width: usize,
    (w, odd): (&[f64], bool),
    emit: impl Fn(usize, usize, V),
) {
    // SAFETY: reached only through an entry point compiled for, and called on, a CPU with this
    // width's features; the caller keeps the contract on the pointers and lengths (the module's and
    // this function's).
    unsafe {
        macro_rules! fixed {
            ($odd:literal; $($r:literal)*) => {
                match w.len() - 1 {
                    $($r => convolve_r::<V, $odd>(tile, len, width, w, $r, emit),)*
                    r => convolve_r::<V, $odd>(tile, len, width, w, r, emit),
                }
            };
        }
        if odd {
            fixed!(true; 1 2 3 4 5 6 7 8 9 10 11 12)
        } else {
            fixed!(false; 1 2 3 4 5 6 7 8 9 10 11 12)
        }
    }
}

/// Four output rows at a time; `lo[j]`/`hi[j]` hold rows `i+j+r∓k`.
/// `emit(i, c, v)` receives output row `i`, lanes `c..c + V::WIDTH`.
/// `ODD`: the pairs are `lo − hi`, as `fma(hi, −1, lo)` (one rounding, as
/// scipy's subtraction).
#[inline(always)]
pub(super) unsafe fn convolve_r<V: Vector, const ODD: bool>(
    tile: &[V::E],
    len: usize,
    width: usize,
    w: &[f64],
    r: usize,
    emit: impl Fn(usize, usize, V),
) {
    // SAFETY: reached only through an entry point compiled for, and called on, a CPU with this
    // width's features; the caller keeps the contract on the pointers and lengths (the module's and
    // this function's).
    unsafe {
        // Opaque to the optimiser, or it would turn fma(a, 1, b) back into an add.
        let one = V::splat(std::hint::black_box(1.0));
        let minus_one = V::splat(-1.0);
        let pair = |lo: V, hi: V, on_fma: bool| {
            if ODD {
                hi.add_fma(lo, minus_one)
            } else if on_fma {
                lo.add_fma(hi, one)
            } else {
                lo.add(hi)
            }
        };
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
                        pair(lo[0], hi[0], false),
                        pair(lo[1], hi[1], true),
                        pair(lo[2], hi[2], false),
                        pair(lo[3], hi[3], true),
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
                    a = a.add(pair(row(i + r - k, c), row(i + r + k, c), false).mul(wk));
                }
                emit(i, c, a);
                c += V::WIDTH;
            }
            i += 1;
        }
    }
}

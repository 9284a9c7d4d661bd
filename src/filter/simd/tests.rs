use super::*;
use crate::filter::test_noise as noise;
use crate::volume::DType;

#[test]
fn vector_kernel_equals_the_definition_bit_for_bit() {
    kernel_case(Scalar);
    #[cfg(target_arch = "x86_64")]
    {
        if let Some(isa) = Avx2::detect() {
            kernel_case(isa);
        }
        if let Some(isa) = Avx512::detect() {
            kernel_case(isa);
        }
    }
}

fn kernel_case<I: Isa>(isa: I) {
    // Every radius with its own unrolled copy, and one beyond them.
    for r in 1usize..=13 {
        let w: Vec<f64> = (0..=r).map(|k| 1.0 / (1.0 + k as f64 * 0.37)).collect();
        for len in [1usize, 3, 4, 5, 8, 17, 64] {
            for width in [LANES, 3 * LANES] {
                let tile = noise((len + 2 * r) * width, (r * 100 + len) as u64);
                // Symmetric, and odd (antisymmetric, the derivatives' kernels).
                for odd in [false, true] {
                    let mut fast = vec![0.0; len * width];
                    let mut slow = fast.clone();
                    convolve(isa, &tile, &mut fast, width, &w, odd);
                    convolve_scalar(&tile, &mut slow, width, &w, odd);
                    let bits = |v: &[f64]| -> Vec<u64> { v.iter().map(|x| x.to_bits()).collect() };
                    assert_eq!(
                        bits(&fast),
                        bits(&slow),
                        "{:?} r {r} len {len} width {width} odd {odd}",
                        I::LEVEL
                    );
                }
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
/// tiles where a plain f32 truncation is wrong somewhere. Over 80 lines on
/// purpose: one sweep checks every tile with both vector widths and counts
/// the tiles where plain truncation fails, so the test shows it can fail.
#[cfg(target_arch = "x86_64")]
fn f32_kernel_case<D: Sample + PartialEq + std::fmt::Debug>(top: f64) {
    use crate::filter::{ExpFlavour, Kernel1d};
    let Some(avx2) = Avx2::detect() else {
        return;
    };
    let avx512 = Avx512::detect();
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
            convolve_scalar(&tile, &mut exact, width, &w, false);
            let want: Vec<D> = exact.iter().map(|&x| D::from_f64(x)).collect();

            let tile32: Vec<f32> = tile.iter().map(|&x| x as f32).collect();
            let mut got = vec![D::from_f64(0.0); len * width];
            let mut flags = vec![0u16; len * width / 8];
            let (out, f) = (got.as_mut_ptr(), &mut flags);
            // SAFETY: the tokens prove the f32 kernel; `got` and `flags` hold len × width outputs
            // and their flags.
            unsafe {
                match avx512 {
                    Some(isa) => convolve_store_f32(isa, &tile32, len, width, &w, out, width, f),
                    None => convolve_store_f32(avx2, &tile32, len, width, &w, out, width, f),
                }
            };
            assert_eq!(got, want, "sigma {sigma} len {len} width {width}");
            let vectors = len * width / if avx512.is_some() { 16 } else { 8 };
            unflagged[0] += flags[..vectors].iter().filter(|&&m| m == 0).count();
            if avx512.is_some() {
                // This CPU runs the 16-lane kernel above; the 8-lane one too.
                let mut got8 = vec![D::from_f64(0.0); len * width];
                let (out, f) = (got8.as_mut_ptr(), &mut flags);
                // SAFETY: as above, at AVX2.
                unsafe { convolve_store_f32(avx2, &tile32, len, width, &w, out, width, f) };
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
    let Some(isa) = Avx512::detect() else {
        return;
    };
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
        // SAFETY: the token proves the f32 line transposes; `src` holds `lanes` lines of `len` at
        // `step`, `rows` len × LANES.
        assert!(unsafe { gather_lines_f32(isa, src.as_ptr(), step, lanes, len, &mut rows) });
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
                // SAFETY: as above, on a copy of `src`.
                let ok =
                    unsafe { gather_lines_f32(isa, neg.as_ptr(), step, lanes, len, &mut rows) };
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
        // SAFETY: the token proves the f32 line transposes; `dst` holds `lanes` lines of `len` at
        // `step`, `tile` len × LANES.
        unsafe { scatter_lines_i32(isa, &tile, len, dst.as_mut_ptr(), step, lanes) };
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
        // SAFETY: the caller passes only widths this CPU runs; `src` holds `lanes` lines of `len`
        // at `step`, `rows` len × LANES.
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
        // SAFETY: as for the gather; `dst` holds the same lines, writable.
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
    transposes_case(Scalar);
    #[cfg(target_arch = "x86_64")]
    if let Some(isa) = Avx512::detect() {
        transposes_case(isa);
    }
}

fn transposes_case<I: Isa>(isa: I) {
    for len in [1usize, 7, 8, 9, 24, 37] {
        let lines: Vec<Vec<f64>> = (0..LANES)
            .map(|l| (0..len).map(|i| (l * 1000 + i) as f64).collect())
            .collect();
        let mut t = vec![f64::NAN; len * LANES];
        transpose_in(isa, &lines, len, &mut t);
        for (i, row) in t.chunks_exact(LANES).enumerate() {
            for (l, &x) in row.iter().enumerate() {
                assert_eq!(x, (l * 1000 + i) as f64, "len {len} i {i} l {l}");
            }
        }
        let mut back = vec![vec![0.0; len]; LANES];
        transpose_out(isa, &t, len, &mut back);
        assert_eq!(back, lines);
    }
}

//! Lines in, tile rows out (and back): the conversions and the in-register
//! transposes (4×4, 8×8, 16×16) that let every pass, axis 0 included, work
//! on the same tile layout without an f64 copy of its lines.

use super::*;

/// 4×4 transpose of f64 in registers: `m[j][e]` becomes `m[e][j]`.
#[inline(always)]
pub(super) unsafe fn transpose4(m: &mut [__m256d; 8]) {
    // SAFETY: reached only through an entry point compiled for, and called on, a CPU with this
    // width's features; the caller keeps the contract on the pointers and lengths (the module's and
    // this function's).
    unsafe {
        let t0 = _mm256_unpacklo_pd(m[0], m[1]);
        let t1 = _mm256_unpackhi_pd(m[0], m[1]);
        let t2 = _mm256_unpacklo_pd(m[2], m[3]);
        let t3 = _mm256_unpackhi_pd(m[2], m[3]);
        m[0] = _mm256_permute2f128_pd::<0x20>(t0, t2);
        m[1] = _mm256_permute2f128_pd::<0x20>(t1, t3);
        m[2] = _mm256_permute2f128_pd::<0x31>(t0, t2);
        m[3] = _mm256_permute2f128_pd::<0x31>(t1, t3);
    }
}

#[inline(always)]
pub(super) unsafe fn gather_lines<V: Lines, S: Sample>(
    p: *const S,
    lane_step: usize,
    lanes: usize,
    len: usize,
    rows: &mut [f64],
) {
    // SAFETY: reached only through an entry point compiled for, and called on, a CPU with this
    // width's features; the caller keeps the contract on the pointers and lengths (the module's and
    // this function's).
    unsafe {
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
}

#[inline(always)]
pub(super) unsafe fn scatter_lines<V: Lines, D: Sample>(
    rows: &[f64],
    len: usize,
    p: *mut D,
    lane_step: usize,
    lanes: usize,
) {
    // SAFETY: reached only through an entry point compiled for, and called on, a CPU with this
    // width's features; the caller keeps the contract on the pointers and lengths (the module's and
    // this function's).
    unsafe {
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
}

#[target_feature(enable = "avx512f,avx512vl")]
pub unsafe fn gather_lines_f32<S: Sample>(
    p: *const S,
    lane_step: usize,
    lanes: usize,
    len: usize,
    rows: &mut [f32],
) -> bool {
    // SAFETY: an entry point: its caller checked `Level` for these features and keeps the
    // contract of the `simd` function of the same name on the pointers and lengths.
    unsafe {
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
}

#[target_feature(enable = "avx512f,avx512vl")]
pub unsafe fn scatter_lines_i32<D: Sample>(
    rows: &[i32],
    len: usize,
    p: *mut D,
    lane_step: usize,
    lanes: usize,
) {
    // SAFETY: an entry point: its caller checked `Level` for these features and keeps the
    // contract of the `simd` function of the same name on the pointers and lengths.
    unsafe {
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
}

/// 16×16 transpose of 32-bit lanes in registers: `m[j][e]` becomes `m[e][j]`.
/// Plain loops, not `array::from_fn`: its closures would not inherit
/// the caller's target features, and every shuffle would become a call.
#[inline(always)]
pub(super) unsafe fn transpose16(m: [__m512; 16]) -> [__m512; 16] {
    // SAFETY: reached only through an entry point compiled for, and called on, a CPU with this
    // width's features; the caller keeps the contract on the pointers and lengths (the module's and
    // this function's).
    unsafe {
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
}

/// 8×8 transpose of f64 in registers: `m[j][e]` becomes `m[e][j]`.
#[inline(always)]
pub(super) unsafe fn transpose8(m: [__m512d; 8]) -> [__m512d; 8] {
    // SAFETY: reached only through an entry point compiled for, and called on, a CPU with this
    // width's features; the caller keeps the contract on the pointers and lengths (the module's and
    // this function's).
    unsafe {
        // Plain loops, as in transpose16 (closures lose the target features).
        let mut t = [_mm512_setzero_pd(); 8];
        for p in (0..8).step_by(2) {
            t[p] = _mm512_unpacklo_pd(m[p], m[p + 1]);
            t[p + 1] = _mm512_unpackhi_pd(m[p], m[p + 1]);
        }
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
}

#[target_feature(enable = "avx512f")]
pub unsafe fn transpose_in_avx512(lines: &[Vec<f64>], len: usize, rows: &mut [f64]) {
    // SAFETY: an entry point: its caller checked `Level` for these features and keeps the
    // contract of the `simd` function of the same name on the pointers and lengths.
    unsafe {
        let full = len / 8 * 8;
        for lb in (0..LANES).step_by(8) {
            for i in (0..full).step_by(8) {
                let mut m = [_mm512_setzero_pd(); 8];
                for (j, v) in m.iter_mut().enumerate() {
                    *v = _mm512_loadu_pd(lines[lb + j].as_ptr().add(i));
                }
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
}

#[target_feature(enable = "avx512f")]
pub unsafe fn transpose_out_avx512(rows: &[f64], len: usize, lines: &mut [Vec<f64>]) {
    // SAFETY: an entry point: its caller checked `Level` for these features and keeps the
    // contract of the `simd` function of the same name on the pointers and lengths.
    unsafe {
        let full = len / 8 * 8;
        for lb in (0..LANES).step_by(8) {
            for i in (0..full).step_by(8) {
                let mut m = [_mm512_setzero_pd(); 8];
                for (e, v) in m.iter_mut().enumerate() {
                    *v = _mm512_loadu_pd(rows.as_ptr().add((i + e) * LANES + lb));
                }
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

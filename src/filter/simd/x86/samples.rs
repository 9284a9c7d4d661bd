//! Samples to registers and back: each dtype loaded as f64 (or int32) lanes,
//! and stored with the C cast's semantics (`Sample::from_f64`), so that the
//! kernels are written once over f64 and never see the file's dtype.

use super::*;

/// Eight samples of `S` from `p`, as f64.
#[inline(always)]
pub(super) unsafe fn load8<S: Sample>(p: *const S) -> __m512d {
    // SAFETY: reached only through an entry point compiled for, and called on, a CPU with this
    // width's features; the caller keeps the contract on the pointers and lengths (the module's and
    // this function's).
    unsafe {
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
}

/// Stores eight f64 into `p` as `D`, with `D::from_f64`'s semantics:
/// `vcvtpd2ps` rounds as `as f32` does, and `vcvttpd2dq` gives
/// i32::MIN for NaN and out-of-range values as `cvtt32` does, then the
/// narrowing keeps the low bits as the C cast does.
#[inline(always)]
pub(super) unsafe fn store8<D: Sample>(p: *mut D, v: __m512d) {
    // SAFETY: reached only through an entry point compiled for, and called on, a CPU with this
    // width's features; the caller keeps the contract on the pointers and lengths (the module's and
    // this function's).
    unsafe {
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
}

/// `load8`/`load4` for the dtypes without a vector conversion.
#[inline(always)]
pub(super) unsafe fn load_scalar<S: Sample, V: Vector<E = f64>>(p: *const S) -> V {
    // SAFETY: reached only through an entry point compiled for, and called on, a CPU with this
    // width's features; the caller keeps the contract on the pointers and lengths (the module's and
    // this function's).
    unsafe {
        let mut a = [0.0; 8];
        for (i, x) in a.iter_mut().enumerate().take(V::WIDTH) {
            *x = (*p.add(i)).to_f64();
        }
        V::load(a.as_ptr())
    }
}

/// `store8`/`store4` for the dtypes without a vector conversion.
#[inline(always)]
pub(super) unsafe fn store_scalar<D: Sample, V: Vector<E = f64>>(p: *mut D, v: V) {
    // SAFETY: reached only through an entry point compiled for, and called on, a CPU with this
    // width's features; the caller keeps the contract on the pointers and lengths (the module's and
    // this function's).
    unsafe {
        let mut a = [0.0; 8];
        v.store(a.as_mut_ptr());
        D::from_f64_slice(std::slice::from_raw_parts_mut(p, V::WIDTH), &a[..V::WIDTH]);
    }
}

/// Four samples of `S` from `p`, as f64 (AVX2).
#[inline(always)]
pub(super) unsafe fn load4<S: Sample>(p: *const S) -> __m256d {
    // SAFETY: reached only through an entry point compiled for, and called on, a CPU with this
    // width's features; the caller keeps the contract on the pointers and lengths (the module's and
    // this function's).
    unsafe {
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
}

/// Four f64 into `p` as `D`, as `store8` (AVX2): `vcvttpd2dq` gives
/// i32::MIN for NaN and out-of-range values, then a byte shuffle keeps
/// the low bits, as the C cast does.
#[inline(always)]
pub(super) unsafe fn store4<D: Sample>(p: *mut D, v: __m256d) {
    // SAFETY: reached only through an entry point compiled for, and called on, a CPU with this
    // width's features; the caller keeps the contract on the pointers and lengths (the module's and
    // this function's).
    unsafe {
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
}

/// The low bytes of four int32 that the C cast keeps for `D` (two for
/// int16, one for uint8), packed at the bottom: AVX2 has no truncating
/// narrow, so a byte shuffle does it.
#[inline(always)]
pub(super) unsafe fn low_bytes<D: Sample>(x: __m128i) -> __m128i {
    // SAFETY: reached only through an entry point compiled for, and called on, a CPU with this
    // width's features; the caller keeps the contract on the pointers and lengths (the module's and
    // this function's).
    unsafe {
        let keep = match D::DTYPE {
            DType::I16 => _mm_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, -1, -1, -1, -1, -1, -1, -1, -1),
            _ => _mm_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1),
        };
        _mm_shuffle_epi8(x, keep)
    }
}

/// Eight truncated values into `p` as `D`, as `store16` (AVX2): a byte
/// shuffle keeps each value's low bytes, as the C cast does.
#[inline(always)]
pub(super) unsafe fn store8_i32<D: Sample>(p: *mut D, v: __m256i) {
    // SAFETY: reached only through an entry point compiled for, and called on, a CPU with this
    // width's features; the caller keeps the contract on the pointers and lengths (the module's and
    // this function's).
    unsafe {
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
}

/// Sixteen truncated values into `p` as `D` (int16 or uint8), keeping
/// the low bits as the C cast does; int32 as they are.
#[inline(always)]
pub(super) unsafe fn store16<D: Sample>(p: *mut D, v: __m512i) {
    // SAFETY: reached only through an entry point compiled for, and called on, a CPU with this
    // width's features; the caller keeps the contract on the pointers and lengths (the module's and
    // this function's).
    unsafe {
        match D::DTYPE {
            DType::I32 => _mm512_storeu_si512(p as *mut __m512i, v),
            DType::I16 => _mm256_storeu_si256(p as *mut __m256i, _mm512_cvtepi32_epi16(v)),
            DType::U8 => _mm_storeu_si128(p as *mut __m128i, _mm512_cvtepi32_epi8(v)),
            _ => unreachable!("the f32 kernel stores int16, uint8 or int32 only"),
        }
    }
}

/// Sixteen int16 or uint8 samples from `p`, widened to int32.
#[inline(always)]
pub(super) unsafe fn load16<S: Sample>(p: *const S) -> __m512i {
    // SAFETY: reached only through an entry point compiled for, and called on, a CPU with this
    // width's features; the caller keeps the contract on the pointers and lengths (the module's and
    // this function's).
    unsafe {
        match S::DTYPE {
            DType::I16 => _mm512_cvtepi16_epi32(_mm256_loadu_si256(p as *const __m256i)),
            DType::U8 => _mm512_cvtepu8_epi32(_mm_loadu_si128(p as *const __m128i)),
            _ => unreachable!("f32 tiles hold int16 or uint8"),
        }
    }
}

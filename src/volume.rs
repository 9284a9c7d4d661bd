//! Voxel buffers of any NIfTI numeric type, their shape, and the conversions scipy applies.
//!
//! scipy reads every line into float64 and stores each pass's result back in
//! the output dtype with a plain C cast: float32 rounds to nearest, integers
//! truncate toward zero with no clamping. `Sample::from_f64` reproduces the
//! x86-64 code gcc emits for those casts, so even out-of-range values (from a
//! large `--cval`, say) come out as scipy's do.

use std::fmt;
use std::str::FromStr;

/// Element types nismooth reads, filters and writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    U8,
    I8,
    I16,
    U16,
    I32,
    U32,
    I64,
    U64,
    F32,
    F64,
}

impl DType {
    pub const ALL: [DType; 10] = [
        DType::U8,
        DType::I8,
        DType::I16,
        DType::U16,
        DType::I32,
        DType::U32,
        DType::I64,
        DType::U64,
        DType::F32,
        DType::F64,
    ];

    pub fn size(self) -> usize {
        match self {
            DType::U8 | DType::I8 => 1,
            DType::I16 | DType::U16 => 2,
            DType::I32 | DType::U32 | DType::F32 => 4,
            DType::I64 | DType::U64 | DType::F64 => 8,
        }
    }

    /// numpy's name for the type.
    pub fn name(self) -> &'static str {
        match self {
            DType::U8 => "uint8",
            DType::I8 => "int8",
            DType::I16 => "int16",
            DType::U16 => "uint16",
            DType::I32 => "int32",
            DType::U32 => "uint32",
            DType::I64 => "int64",
            DType::U64 => "uint64",
            DType::F32 => "float32",
            DType::F64 => "float64",
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F64)
    }

    /// NIfTI-1 `datatype` code.
    pub fn nifti_code(self) -> i16 {
        match self {
            DType::U8 => 2,
            DType::I16 => 4,
            DType::I32 => 8,
            DType::F32 => 16,
            DType::F64 => 64,
            DType::I8 => 256,
            DType::U16 => 512,
            DType::U32 => 768,
            DType::I64 => 1024,
            DType::U64 => 1280,
        }
    }

    pub fn from_nifti_code(code: i16) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.nifti_code() == code)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DType {
    type Err = crate::choice::UnknownChoice;
    fn from_str(s: &str) -> Result<DType, Self::Err> {
        match s {
            "uint8" | "u8" => Ok(DType::U8),
            "int8" | "i8" => Ok(DType::I8),
            "int16" | "i16" => Ok(DType::I16),
            "uint16" | "u16" => Ok(DType::U16),
            "int32" | "i32" => Ok(DType::I32),
            "uint32" | "u32" => Ok(DType::U32),
            "int64" | "i64" => Ok(DType::I64),
            "uint64" | "u64" => Ok(DType::U64),
            "float32" | "f32" => Ok(DType::F32),
            "float64" | "f64" => Ok(DType::F64),
            _ => Err(crate::choice::UnknownChoice {
                given: s.into(),
                expected: DType::ALL.map(|d| d.name()).join(", "),
            }),
        }
    }
}

/// A voxel type the filter reads from and stores into.
pub trait Sample: bytemuck::Pod + Send + Sync + 'static {
    const DTYPE: DType;
    fn to_f64(self) -> f64;
    /// The C cast `(T) v` as gcc compiles it on x86-64.
    fn from_f64(v: f64) -> Self;
    fn swap_bytes(self) -> Self;
    /// `from_f64` over a slice (as long as the shorter of the two); integer
    /// types override it with vector conversions of the same C-cast semantics.
    #[inline(always)]
    fn from_f64_slice(dst: &mut [Self], src: &[f64]) {
        for (y, &x) in dst.iter_mut().zip(src) {
            *y = Self::from_f64(x);
        }
    }
}

/// `cvtt32` over a slice: eight at a time with AVX-512's `vcvttpd2dq`, which
/// gives i32::MIN for NaN and out-of-range values exactly as the scalar
/// instruction does. A conversion primitive below the filter (readers use it
/// too), so it asks std's cached feature detection itself rather than the
/// filter's `simd::level()`; the bits are the same either way.
#[inline(always)]
fn cvtt32_slice(src: &[f64], out: &mut [i32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: feature detected; both slices are bounded by the zip.
            unsafe { cvtt32_avx512(src, out) };
            return;
        }
    }
    for (o, &x) in out.iter_mut().zip(src) {
        *o = cvtt32(x);
    }
}

/// # Safety
/// The CPU has AVX-512 F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn cvtt32_avx512(src: &[f64], out: &mut [i32]) {
    // SAFETY: AVX-512 F is the caller's promise; every 8-lane load and store
    // starts below `full` ≤ the shorter length, so it stays inside both slices.
    unsafe {
        use std::arch::x86_64::*;
        let n = src.len().min(out.len());
        let full = n / 8 * 8;
        for i in (0..full).step_by(8) {
            let v = _mm512_loadu_pd(src.as_ptr().add(i));
            _mm256_storeu_si256(
                out.as_mut_ptr().add(i) as *mut __m256i,
                _mm512_cvttpd_epi32(v),
            );
        }
        for i in full..n {
            out[i] = cvtt32(src[i]);
        }
    }
}

/// `cvttsd2si` with a 32-bit destination: out of range and NaN give i32::MIN.
#[inline(always)]
fn cvtt32(v: f64) -> i32 {
    if v > -2147483649.0 && v < 2147483648.0 {
        v as i32
    } else {
        i32::MIN
    }
}

/// `cvttsd2si` with a 64-bit destination: out of range and NaN give i64::MIN.
#[inline(always)]
fn cvtt64(v: f64) -> i64 {
    if (-9223372036854775808.0..9223372036854775808.0).contains(&v) {
        v as i64
    } else {
        i64::MIN
    }
}

macro_rules! narrow_int {
    ($t:ty, $d:expr) => {
        impl Sample for $t {
            const DTYPE: DType = $d;
            #[inline(always)]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline(always)]
            fn from_f64(v: f64) -> Self {
                cvtt32(v) as $t
            }
            #[inline(always)]
            fn from_f64_slice(dst: &mut [Self], src: &[f64]) {
                let mut buf = [0i32; 64];
                for (d, s) in dst.chunks_mut(64).zip(src.chunks(64)) {
                    let n = d.len().min(s.len());
                    cvtt32_slice(&s[..n], &mut buf[..n]);
                    for (y, &i) in d.iter_mut().zip(&buf[..n]) {
                        *y = i as $t;
                    }
                }
            }
            #[inline(always)]
            fn swap_bytes(self) -> Self {
                <$t>::swap_bytes(self)
            }
        }
    };
}
narrow_int!(u8, DType::U8);
narrow_int!(i8, DType::I8);
narrow_int!(i16, DType::I16);
narrow_int!(u16, DType::U16);
narrow_int!(i32, DType::I32);

impl Sample for u32 {
    const DTYPE: DType = DType::U32;
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self as f64
    }
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        cvtt64(v) as u32
    }
    fn swap_bytes(self) -> Self {
        u32::swap_bytes(self)
    }
}

impl Sample for i64 {
    const DTYPE: DType = DType::I64;
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self as f64
    }
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        cvtt64(v)
    }
    fn swap_bytes(self) -> Self {
        i64::swap_bytes(self)
    }
}

impl Sample for u64 {
    const DTYPE: DType = DType::U64;
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self as f64
    }
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        const TWO63: f64 = 9223372036854775808.0;
        // As numpy's C cast compiles on x86-64: NaN fails `v >= 2^63`
        // (comisd: unordered), so it takes the signed conversion, 2^63.
        if v < TWO63 || v.is_nan() {
            cvtt64(v) as u64
        } else {
            (cvtt64(v - TWO63) as u64) ^ (1 << 63)
        }
    }
    fn swap_bytes(self) -> Self {
        u64::swap_bytes(self)
    }
}

impl Sample for f32 {
    const DTYPE: DType = DType::F32;
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self as f64
    }
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    fn swap_bytes(self) -> Self {
        f32::from_bits(self.to_bits().swap_bytes())
    }
}

impl Sample for f64 {
    const DTYPE: DType = DType::F64;
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self
    }
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v
    }
    fn swap_bytes(self) -> Self {
        f64::from_bits(self.to_bits().swap_bytes())
    }
}

/// An image's voxels in NIfTI (Fortran) order, x fastest.
#[derive(Clone, Debug, PartialEq)]
pub enum Voxels {
    U8(Vec<u8>),
    I8(Vec<i8>),
    I16(Vec<i16>),
    U16(Vec<u16>),
    I32(Vec<i32>),
    U32(Vec<u32>),
    I64(Vec<i64>),
    U64(Vec<u64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
}

/// Runs `$body` with `$v` bound to the typed Vec inside a `Voxels`.
#[macro_export]
macro_rules! with_voxels {
    ($vox:expr, $v:ident => $body:expr) => {
        match $vox {
            $crate::volume::Voxels::U8($v) => $body,
            $crate::volume::Voxels::I8($v) => $body,
            $crate::volume::Voxels::I16($v) => $body,
            $crate::volume::Voxels::U16($v) => $body,
            $crate::volume::Voxels::I32($v) => $body,
            $crate::volume::Voxels::U32($v) => $body,
            $crate::volume::Voxels::I64($v) => $body,
            $crate::volume::Voxels::U64($v) => $body,
            $crate::volume::Voxels::F32($v) => $body,
            $crate::volume::Voxels::F64($v) => $body,
        }
    };
}

/// Runs `$body` with type alias `$t` set to the Rust type of a `DType`.
#[macro_export]
macro_rules! with_dtype {
    ($dtype:expr, $t:ident => $body:expr) => {
        match $dtype {
            $crate::volume::DType::U8 => {
                type $t = u8;
                $body
            }
            $crate::volume::DType::I8 => {
                type $t = i8;
                $body
            }
            $crate::volume::DType::I16 => {
                type $t = i16;
                $body
            }
            $crate::volume::DType::U16 => {
                type $t = u16;
                $body
            }
            $crate::volume::DType::I32 => {
                type $t = i32;
                $body
            }
            $crate::volume::DType::U32 => {
                type $t = u32;
                $body
            }
            $crate::volume::DType::I64 => {
                type $t = i64;
                $body
            }
            $crate::volume::DType::U64 => {
                type $t = u64;
                $body
            }
            $crate::volume::DType::F32 => {
                type $t = f32;
                $body
            }
            $crate::volume::DType::F64 => {
                type $t = f64;
                $body
            }
        }
    };
}

/// Typed access to a `Voxels` variant from generic code.
pub trait VoxelVec: Sample {
    fn wrap(v: Vec<Self>) -> Voxels;
    /// The vector back out of `v` when it holds this type.
    fn unwrap(v: Voxels) -> Option<Vec<Self>>;
}

macro_rules! voxel_vec {
    ($t:ty, $var:ident) => {
        impl VoxelVec for $t {
            fn wrap(v: Vec<Self>) -> Voxels {
                Voxels::$var(v)
            }
            fn unwrap(v: Voxels) -> Option<Vec<Self>> {
                match v {
                    Voxels::$var(v) => Some(v),
                    _ => None,
                }
            }
        }
    };
}
voxel_vec!(u8, U8);
voxel_vec!(i8, I8);
voxel_vec!(i16, I16);
voxel_vec!(u16, U16);
voxel_vec!(i32, I32);
voxel_vec!(u32, U32);
voxel_vec!(i64, I64);
voxel_vec!(u64, U64);
voxel_vec!(f32, F32);
voxel_vec!(f64, F64);

impl Voxels {
    pub fn dtype(&self) -> DType {
        with_voxels!(self, v => sample_dtype(v.as_slice()))
    }

    pub fn len(&self) -> usize {
        with_voxels!(self, v => v.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The voxels as bytes in the machine's native byte order.
    pub fn as_bytes(&self) -> &[u8] {
        with_voxels!(self, v => bytemuck::cast_slice(v.as_slice()))
    }

    /// The voxels as writable bytes in the machine's native byte order.
    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        with_voxels!(self, v => bytemuck::cast_slice_mut(v.as_mut_slice()))
    }

    /// A copy of the voxels in `range` (e.g. some volumes of a 4-D image).
    pub fn copy_range(&self, range: std::ops::Range<usize>) -> Voxels {
        fn wrap<T: VoxelVec>(v: Vec<T>) -> Voxels {
            T::wrap(v)
        }
        with_voxels!(self, v => wrap(v[range].to_vec()))
    }

    /// A zeroed buffer of `n` voxels (`zeroed_vec`).
    pub fn zeros(dtype: DType, n: usize) -> Voxels {
        with_dtype!(dtype, T => T::wrap(zeroed_vec(n)))
    }

    /// Converts every voxel with scipy's cast rules (used when no axis is filtered).
    pub fn cast(&self, dtype: DType) -> Voxels {
        if self.dtype() == dtype {
            return self.clone();
        }
        with_voxels!(self, src => with_dtype!(dtype, T => {
            T::wrap(src.iter().map(|&x| T::from_f64(x.to_f64())).collect())
        }))
    }
}

fn sample_dtype<T: Sample>(_: &[T]) -> DType {
    T::DTYPE
}

/// The geometry a backend sees: spatial shape (x, y, z; missing axes are 1),
/// how many of those axes are real, and how many volumes follow one another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub spatial: [usize; 3],
    pub spatial_ndim: usize,
    pub volumes: usize,
}

impl Shape {
    pub fn volume_len(&self) -> usize {
        self.spatial.iter().product()
    }
    pub fn len(&self) -> usize {
        self.volume_len() * self.volumes
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `n` zeroed values, for a whole image's voxels. The allocator maps a large
/// buffer (beyond malloc's mmap threshold, at most 32 MiB) fresh from the
/// kernel, already zero, so nothing is written here; each page is faulted in
/// where it is first written (the read, the filter), not once more by a
/// clearing pass. (Asking for huge pages, to fault once
/// per 2 MiB, was tried: with the kernel's usual `defrag=madvise` a fault
/// could stall for a compaction, up to 0.7 s; docs/performance.md.)
pub fn zeroed_vec<T: bytemuck::Zeroable + Clone>(n: usize) -> Vec<T> {
    vec![T::zeroed(); n]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_stores_truncate_toward_zero() {
        assert_eq!(i16::from_f64(-2.9), -2);
        assert_eq!(i16::from_f64(2.9), 2);
        assert_eq!(u8::from_f64(254.999), 254);
        assert_eq!(u8::from_f64(-0.7), 0);
        assert_eq!(f32::from_f64(0.1), 0.1f32);
    }

    #[test]
    fn out_of_range_stores_wrap_like_c_not_saturate() {
        // (unsigned char)(int)1000.0 keeps the low byte: 1000 = 0x3E8.
        assert_eq!(u8::from_f64(1000.0), 0xE8);
        assert_eq!(i16::from_f64(40000.0), (40000i32 as u16) as i16);
        assert_eq!(i32::from_f64(3e9), i32::MIN);
        assert_eq!(u32::from_f64(3e9), 3_000_000_000);
        assert_eq!(u64::from_f64(1.5e19), 15_000_000_000_000_000_000);
    }

    #[test]
    fn nifti_codes_round_trip() {
        for d in [DType::U8, DType::I16, DType::F32, DType::U64, DType::I8] {
            assert_eq!(DType::from_nifti_code(d.nifti_code()), Some(d));
        }
        assert_eq!(DType::from_nifti_code(32), None); // complex64
    }
}

//! The NIfTI-1 and NIfTI-2 headers, parsed by one routine over a table of
//! field offsets per version.
//!
//! The two versions hold the same fields at different places and widths
//! (NIfTI-2 widens dims to i64 and floats to f64), so one parser with a
//! `Version` that knows where each field lives reads both, in either byte
//! order, and the writer patches an output header through the same table.
//! Every check that keeps a hostile header from costing memory or time is
//! made here, before a voxel is read.

mod affine;

use super::ReadError;
use crate::volume::DType;
use crate::volume::Shape;

/// Which NIfTI header a file carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Version {
    #[serde(rename = "nifti1")]
    Nifti1,
    #[serde(rename = "nifti2")]
    Nifti2,
}

/// The magic of a single file (`.nii`) and of a `.hdr`/`.img` pair.
const MAGIC1_SINGLE: &[u8] = b"n+1\0";
const MAGIC1_PAIR: &[u8] = b"ni1\0";
const MAGIC2_SINGLE: &[u8] = b"n+2\0\r\n\x1a\n";
const MAGIC2_PAIR: &[u8] = b"ni2\0\r\n\x1a\n";

impl Version {
    /// `sizeof_hdr`, which is also where extensions (or data) begin.
    pub fn header_len(self) -> usize {
        match self {
            Version::Nifti1 => 348,
            Version::Nifti2 => 540,
        }
    }
    /// Which version a header's first four bytes (`sizeof_hdr`) announce,
    /// and whether it is big-endian.
    pub fn detect(first4: [u8; 4]) -> Result<(Version, bool), ReadError> {
        let (le, be) = (i32::from_le_bytes(first4), i32::from_be_bytes(first4));
        match (le, be) {
            (348, _) => Ok((Version::Nifti1, false)),
            (_, 348) => Ok((Version::Nifti1, true)),
            (540, _) => Ok((Version::Nifti2, false)),
            (_, 540) => Ok((Version::Nifti2, true)),
            _ => Err(ReadError::NotNifti(format!(
                "sizeof_hdr is {le}, expected 348 (NIfTI-1) or 540 (NIfTI-2)"
            ))),
        }
    }
    fn magic(self, pair: bool) -> &'static [u8] {
        match (self, pair) {
            (Version::Nifti1, false) => MAGIC1_SINGLE,
            (Version::Nifti1, true) => MAGIC1_PAIR,
            (Version::Nifti2, false) => MAGIC2_SINGLE,
            (Version::Nifti2, true) => MAGIC2_PAIR,
        }
    }
    fn magic_at(self) -> usize {
        match self {
            Version::Nifti1 => 344,
            Version::Nifti2 => 4,
        }
    }
    pub fn datatype_at(self) -> usize {
        match self {
            Version::Nifti1 => 70,
            Version::Nifti2 => 12,
        }
    }
    pub fn bitpix_at(self) -> usize {
        match self {
            Version::Nifti1 => 72,
            Version::Nifti2 => 14,
        }
    }
    fn dim_at(self) -> usize {
        match self {
            Version::Nifti1 => 40,
            Version::Nifti2 => 16,
        }
    }
    pub(super) fn pixdim_at(self) -> usize {
        match self {
            Version::Nifti1 => 76,
            Version::Nifti2 => 104,
        }
    }
    fn vox_offset_at(self) -> usize {
        match self {
            Version::Nifti1 => 108,
            Version::Nifti2 => 168,
        }
    }
    pub fn scl_at(self) -> usize {
        match self {
            Version::Nifti1 => 112,
            Version::Nifti2 => 176,
        }
    }
    pub fn scl_inter_at(self) -> usize {
        self.scl_at() + self.widths().1
    }
    /// Bytes of one integer (dim) and one float (pixdim, scaling) field.
    pub(super) fn widths(self) -> (usize, usize) {
        match self {
            Version::Nifti1 => (2, 4),
            Version::Nifti2 => (8, 8),
        }
    }
}

/// Reads and writes header fields in the file's byte order and widths.
pub struct Fields<'h> {
    pub head: &'h [u8],
    pub version: Version,
    pub big_endian: bool,
}

impl Fields<'_> {
    fn bytes<const N: usize>(&self, off: usize) -> [u8; N] {
        let mut b = [0u8; N];
        b.copy_from_slice(&self.head[off..off + N]);
        if self.big_endian {
            b.reverse();
        }
        b
    }
    pub fn i16(&self, off: usize) -> i16 {
        i16::from_le_bytes(self.bytes(off))
    }
    /// An integer field of the version's width (dim).
    fn int(&self, off: usize) -> i64 {
        match self.version.widths().0 {
            2 => self.i16(off) as i64,
            _ => i64::from_le_bytes(self.bytes(off)),
        }
    }
    pub fn i32(&self, off: usize) -> i32 {
        i32::from_le_bytes(self.bytes(off))
    }
    /// A float field of the version's width (pixdim, vox_offset in NIfTI-1, scaling).
    pub(super) fn float(&self, off: usize) -> f64 {
        match self.version.widths().1 {
            4 => f32::from_le_bytes(self.bytes(off)) as f64,
            _ => f64::from_le_bytes(self.bytes(off)),
        }
    }
    /// vox_offset: an f32 in NIfTI-1, an i64 in NIfTI-2 (as f64 for one check).
    fn float_or_int_offset(&self) -> f64 {
        match self.version {
            Version::Nifti1 => self.float(self.version.vox_offset_at()),
            Version::Nifti2 => i64::from_le_bytes(self.bytes(self.version.vox_offset_at())) as f64,
        }
    }
}

/// Writes `v` at `off` as the version's float field, in the given byte order.
pub fn put_float(h: &mut [u8], off: usize, v: f64, version: Version, big_endian: bool) {
    let mut b: Vec<u8> = match version.widths().1 {
        4 => (v as f32).to_le_bytes().to_vec(),
        _ => v.to_le_bytes().to_vec(),
    };
    if big_endian {
        b.reverse();
    }
    h[off..off + b.len()].copy_from_slice(&b);
}

pub fn put_i16(h: &mut [u8], off: usize, v: i16, big_endian: bool) {
    let b = if big_endian {
        v.to_be_bytes()
    } else {
        v.to_le_bytes()
    };
    h[off..off + 2].copy_from_slice(&b);
}

/// Writes a data offset: an f32 in NIfTI-1, an i64 in NIfTI-2.
pub fn put_vox_offset(h: &mut [u8], v: usize, version: Version, big_endian: bool) {
    let off = version.vox_offset_at();
    match version {
        Version::Nifti1 => put_float(h, off, v as f64, version, big_endian),
        Version::Nifti2 => {
            let b = if big_endian {
                (v as i64).to_be_bytes()
            } else {
                (v as i64).to_le_bytes()
            };
            h[off..off + 8].copy_from_slice(&b);
        }
    }
}

/// Drops a chain of extensions that readers cannot follow (a size that is
/// not a positive multiple of 16, or runs past the voxels): copied as is,
/// it would make an output that nibabel refuses. Clears the extender's flag
/// byte, so the bytes stay as padding. Returns whether it dropped them.
pub fn drop_bad_extensions(head: &mut [u8], version: Version, big_endian: bool) -> bool {
    let start = version.header_len() + 4;
    if head.len() < start || head[start - 4] == 0 {
        return false;
    }
    let mut off = start;
    while off + 8 <= head.len() {
        let raw = [head[off], head[off + 1], head[off + 2], head[off + 3]];
        let esize = if big_endian {
            i32::from_be_bytes(raw)
        } else {
            i32::from_le_bytes(raw)
        } as i64;
        if esize < 16 || esize % 16 != 0 || off as i64 + esize > head.len() as i64 {
            head[start - 4] = 0;
            return true;
        }
        off += esize as usize;
    }
    false
}

/// Turns a pair's header into a single file's: the magic, and data right
/// after the header and its extensions (`data_at`, a multiple of 16).
pub fn make_single(h: &mut [u8], version: Version, big_endian: bool, data_at: usize) {
    let at = version.magic_at();
    let magic = version.magic(false);
    h[at..at + magic.len()].copy_from_slice(magic);
    put_vox_offset(h, data_at, version, big_endian);
}

/// What the pipeline needs to know of an image without reading its voxels.
#[derive(Clone, Debug)]
pub struct HeaderInfo {
    pub version: Version,
    pub shape: Shape,
    pub stored: DType,
    /// pixdim 1–3 as stored: float32 in NIfTI-1, float64 in NIfTI-2 (whose
    /// 0.7 nibabel gives as 0.7, not float32's 0.699999988).
    pub pixdim: [f64; 3],
    /// The column norms of nibabel's affine (sform, else qform, else
    /// pixdim): the voxel sizes nilearn smooths with.
    pub voxel_sizes: [f64; 3],
    /// Where the voxels start: in the file itself, or in the `.img` of a pair.
    pub vox_offset: usize,
    pub big_endian: bool,
    pub gz: bool,
    /// The header came from the `.hdr` of a `.hdr`/`.img` pair.
    pub pair: bool,
    /// (slope, inter) when nibabel would scale the data.
    pub scaling: Option<(f64, f64)>,
}

impl HeaderInfo {
    pub fn voxels(&self) -> u64 {
        self.shape.len() as u64
    }
    pub fn data_bytes(&self) -> u64 {
        self.voxels() * self.stored.size() as u64
    }
    /// The image's size in memory, as nismooth holds it (the presented dtype).
    pub fn memory_bytes(&self) -> u64 {
        self.voxels() * self.presented().size() as u64
    }
    /// The dtype nibabel presents: float64 when scaled.
    pub fn presented(&self) -> DType {
        if self.scaling.is_some() {
            DType::F64
        } else {
            self.stored
        }
    }
}

/// The name of a datatype code nismooth cannot smooth, for the error message.
fn unsupported_name(code: i16) -> &'static str {
    match code {
        0 => "unknown (0)",
        1 => "binary",
        32 => "complex64",
        128 => "RGB24",
        1536 => "float128",
        1792 => "complex128",
        2048 => "complex256",
        2304 => "RGBA32",
        _ => "not a NIfTI datatype",
    }
}

/// Validates a whole header (`head.len()` is the version's length) and
/// extracts what the pipeline needs. `pair`: it was read from a `.hdr`.
pub fn parse(head: &[u8], gz: bool, pair: bool) -> Result<HeaderInfo, ReadError> {
    let (version, big_endian) = Version::detect([head[0], head[1], head[2], head[3]])?;
    let f = Fields {
        head,
        version,
        big_endian,
    };
    check_magic(head, version, pair)?;
    let (dims, ndim) = dims(&f)?;
    let code = f.i16(version.datatype_at());
    let stored = DType::from_nifti_code(code).ok_or(ReadError::UnsupportedType {
        code,
        name: unsupported_name(code),
    })?;
    let pixdim = std::array::from_fn(|a| {
        as_nibabel_loads(f.float(version.pixdim_at() + version.widths().1 * (a + 1)))
    });
    Ok(HeaderInfo {
        version,
        shape: Shape {
            spatial: [dims[0], dims[1], dims[2]],
            spatial_ndim: ndim.min(3),
            volumes: dims[3..].iter().product(),
        },
        stored,
        pixdim,
        voxel_sizes: affine::voxel_sizes(&f, ndim),
        vox_offset: vox_offset(&f, pair)?,
        big_endian,
        gz,
        pair,
        scaling: scaling(&f)?,
    })
}

/// The magic must match the file's kind; a mismatch that names a likelier
/// cause (a pair's header in a `.nii`, an Analyze header) says so.
fn check_magic(head: &[u8], version: Version, pair: bool) -> Result<(), ReadError> {
    let at = version.magic_at();
    let magic = &head[at..at + version.magic(pair).len()];
    if magic == version.magic(pair) {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&magic[..3]).into_owned();
    Err(match (pair, magic) {
        (false, m) if m == version.magic(true) => ReadError::NotNifti(format!(
            "magic \"{text}\" marks the header of a .hdr/.img pair, but the file is not named .hdr"
        )),
        (true, m) if m == version.magic(false) => ReadError::NotNifti(format!(
            "magic \"{text}\" marks a single .nii file, but the file is named .hdr"
        )),
        (true, m) if m.iter().all(|&b| b == 0) => ReadError::NotNifti(
            "no NIfTI magic: an Analyze 7.5 header, which has no reliable orientation; convert it to NIfTI".into(),
        ),
        _ => ReadError::NotNifti(format!(
            "magic is \"{}\", expected \"{}\"",
            magic.escape_ascii(),
            version.magic(pair).escape_ascii()
        )),
    })
}

/// The seven dims (1 past `dim[0]`) and `dim[0]`: each positive, and at
/// most 2^48 voxels in all, far beyond any file, which keeps every later
/// size computation in range.
fn dims(f: &Fields) -> Result<([usize; 7], usize), ReadError> {
    let version = f.version;
    let ndim = f.int(version.dim_at());
    if !(1..=7).contains(&ndim) {
        return Err(ReadError::BadDims(format!(
            "dim[0] = {ndim}, expected 1..7"
        )));
    }
    let ndim = ndim as usize;
    let iw = version.widths().0;
    let mut dims = [1usize; 7];
    let mut total: u64 = 1;
    for (i, d) in dims.iter_mut().enumerate().take(ndim) {
        let v = f.int(version.dim_at() + iw * (i + 1));
        if v <= 0 {
            return Err(ReadError::BadDims(format!("dim[{}] = {v}", i + 1)));
        }
        *d = usize::try_from(v).map_err(|_| ReadError::BadDims(format!("dim[{}] = {v}", i + 1)))?;
        total = total.saturating_mul(v as u64);
    }
    if total > (1u64 << 48) {
        let dims: Vec<String> = dims[..ndim].iter().map(usize::to_string).collect();
        return Err(ReadError::BadDims(format!(
            "{} is more than 2^48 voxels",
            dims.join("×")
        )));
    }
    Ok((dims, ndim))
}

/// Where the voxels start: a whole number of bytes, past the header and its
/// 4 extension bytes in a `.nii` (anywhere in a pair's `.img`).
fn vox_offset(f: &Fields, pair: bool) -> Result<usize, ReadError> {
    let vox = f.float_or_int_offset();
    let min_offset = if pair {
        0.0
    } else {
        f.version.header_len() as f64 + 4.0
    };
    if !vox.is_finite() || vox < min_offset || vox.fract() != 0.0 || vox > 1e9 {
        return Err(ReadError::BadOffset(vox));
    }
    Ok(vox as usize)
}

/// `scl_slope`/`scl_inter`: none when the slope is 0 or not finite (the
/// standard's "no scaling") or the identity; an infinite intercept with a
/// slope is an error.
fn scaling(f: &Fields) -> Result<Option<(f64, f64)>, ReadError> {
    let slope = f.float(f.version.scl_at());
    let inter = f.float(f.version.scl_inter_at());
    if slope == 0.0 || !slope.is_finite() {
        Ok(None)
    } else if !inter.is_finite() {
        Err(ReadError::BadScaling)
    } else if slope == 1.0 && inter == 0.0 {
        Ok(None)
    } else {
        Ok(Some((slope, inter)))
    }
}

/// A voxel size as nibabel loads it (`_chk_pixdims`, the fix every
/// `nib.load` applies): 0 is 1 and a negative size its absolute value, so
/// the kernel is the one `img.header.get_zooms()` and `img.affine` give.
pub(crate) fn as_nibabel_loads(p: f64) -> f64 {
    if p == 0.0 {
        1.0
    } else {
        p.abs()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal valid header of `version`, 4×3×2 int16, little-endian.
    fn header(version: Version) -> Vec<u8> {
        let mut h = vec![0u8; version.header_len()];
        h[..4].copy_from_slice(&(version.header_len() as i32).to_le_bytes());
        let (iw, fw) = version.widths();
        let put_int = |h: &mut Vec<u8>, off: usize, v: i64| {
            h[off..off + iw].copy_from_slice(&v.to_le_bytes()[..iw]);
        };
        for (i, v) in [3i64, 4, 3, 2].into_iter().enumerate() {
            put_int(&mut h, version.dim_at() + iw * i, v);
        }
        put_i16(&mut h, version.datatype_at(), 4, false);
        for a in 1..=3 {
            put_float(
                &mut h,
                version.pixdim_at() + fw * a,
                a as f64,
                version,
                false,
            );
        }
        put_vox_offset(&mut h, version.header_len() + 4, version, false);
        let magic = version.magic(false);
        h[version.magic_at()..version.magic_at() + magic.len()].copy_from_slice(magic);
        h
    }

    #[test]
    fn both_versions_parse_to_the_same_image() {
        for version in [Version::Nifti1, Version::Nifti2] {
            let info = parse(&header(version), false, false).unwrap();
            assert_eq!(info.version, version);
            assert_eq!(info.shape.spatial, [4, 3, 2]);
            assert_eq!(info.stored, DType::I16);
            assert_eq!(info.pixdim, [1.0, 2.0, 3.0]);
            assert_eq!(info.vox_offset, version.header_len() + 4);
            assert!(info.scaling.is_none());
        }
    }

    #[test]
    fn a_pair_header_is_refused_as_a_single_file_and_converted_on_request() {
        for version in [Version::Nifti1, Version::Nifti2] {
            let mut h = header(version);
            let at = version.magic_at();
            h[at + 1] = b'i';
            let e = parse(&h, false, false).unwrap_err().to_string();
            assert!(e.contains(".hdr/.img pair"), "{e}");
            assert!(parse(&h, false, true).is_ok());
            make_single(&mut h, version, false, 1024);
            let info = parse(&h, false, false).unwrap();
            assert_eq!(info.vox_offset, 1024);
        }
    }

    #[test]
    fn hostile_fields_are_refused() {
        for version in [Version::Nifti1, Version::Nifti2] {
            let (iw, _) = version.widths();
            let mut h = header(version);
            h[version.dim_at() + iw * 2] = 0; // dim[2] = 0
            assert!(matches!(
                parse(&h, false, false),
                Err(ReadError::BadDims(_))
            ));
            let mut h = header(version);
            put_i16(&mut h, version.datatype_at(), 32, false);
            let e = parse(&h, false, false).unwrap_err().to_string();
            assert!(e.contains("complex64"), "{e}");
            let mut h = header(version);
            put_vox_offset(&mut h, 10, version, false);
            assert!(matches!(
                parse(&h, false, false),
                Err(ReadError::BadOffset(_))
            ));
            let mut h = header(version);
            h[..4].copy_from_slice(&349i32.to_le_bytes());
            assert!(matches!(
                parse(&h, false, false),
                Err(ReadError::NotNifti(_))
            ));
        }
    }
}

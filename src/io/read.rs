//! Reading: header validation first, allocation only once the file can hold what it claims.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use super::{gzip, Image, ReadError, HEADER_LEN};
use crate::filter::Shape;
use crate::volume::{DType, Sample, VoxelVec, Voxels};
use crate::{with_dtype, with_voxels};

/// Deflate cannot expand data by more than ~1032:1; a header that claims more
/// voxels than that is lying, and is refused before anything is allocated.
const MAX_INFLATE_RATIO: u64 = 1032;

/// What planning needs to know of an image without reading its voxels.
#[derive(Clone, Debug)]
pub struct HeaderInfo {
    pub shape: Shape,
    pub stored: DType,
    pub pixdim: [f32; 3],
    pub vox_offset: usize,
    pub big_endian: bool,
    pub gz: bool,
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

/// Reads and validates only the header (cheap; used to plan and balance work).
pub fn read_header_info(path: &Path) -> Result<HeaderInfo, ReadError> {
    let mut file = BufReader::new(File::open(path)?);
    let mut magic = [0u8; 2];
    file.read_exact(&mut magic)?;
    let mut chained = (&magic[..]).chain(file);
    let gz = gzip::is_gzip(&magic);
    let mut head = vec![0u8; HEADER_LEN];
    if gz {
        read_header_bytes(&mut gzip::decoder(chained), &mut head, true)?;
    } else {
        read_header_bytes(&mut chained, &mut head, false)?;
    }
    parse_header(&head, gz)
}

/// Reads a whole image: header, extensions and voxels (scaled as nibabel does).
pub fn read_image(path: &Path) -> Result<Image, ReadError> {
    read_image_into(path, None)
}

/// As `read_image`, reusing `spare`'s allocation for the voxels when it has
/// the right type (the pipeline hands back each written image's buffer, so
/// that a long run does not map and fault in fresh memory for every image).
/// The file is streamed: its compressed bytes are never all in memory.
pub fn read_image_into(path: &Path, spare: Option<Voxels>) -> Result<Image, ReadError> {
    let file = File::open(path)?;
    let bytes_in = file.metadata()?.len();
    let mut input = BufReader::with_capacity(1 << 20, file);
    if gzip::is_gzip(input.fill_buf()?) {
        read_stream(&mut gzip::decoder(input), true, bytes_in, spare)
    } else {
        read_stream(&mut input, false, bytes_in, spare)
    }
}

/// Header, extensions and voxels from `r` (the inflated stream when `gz`).
/// A header that claims more data than the file can hold is refused before
/// anything is allocated: a plain file must hold it, and deflate cannot
/// expand more than MAX_INFLATE_RATIO-fold.
fn read_stream(
    r: &mut impl Read,
    gz: bool,
    bytes_in: u64,
    spare: Option<Voxels>,
) -> Result<Image, ReadError> {
    let mut head = vec![0u8; HEADER_LEN];
    read_header_bytes(r, &mut head, gz)?;
    let info = parse_header(&head, gz)?;
    let have = if gz {
        bytes_in.saturating_mul(MAX_INFLATE_RATIO)
    } else {
        bytes_in.saturating_sub(info.vox_offset as u64)
    };
    if info.data_bytes() > have {
        return Err(ReadError::Truncated {
            want: info.data_bytes(),
            have,
        });
    }
    head.resize(info.vox_offset, 0);
    r.read_exact(&mut head[HEADER_LEN..]).map_err(|e| {
        if gz {
            gzip_error(e, "header extensions")
        } else {
            ReadError::Io(e)
        }
    })?;
    let raw = read_voxels(r, &info, spare)?;
    Ok(image(info, head, raw, bytes_in))
}

fn image(info: HeaderInfo, raw_header: Vec<u8>, raw: Voxels, bytes_in: u64) -> Image {
    let voxels = match info.scaling {
        Some((slope, inter)) => apply_scaling(&raw, slope, inter),
        None => raw,
    };
    Image {
        raw_header,
        big_endian: info.big_endian,
        shape: info.shape,
        pixdim: info.pixdim,
        stored: info.stored,
        scaled: info.scaling.is_some(),
        voxels,
        bytes_in,
    }
}

fn read_header_bytes(r: &mut impl Read, head: &mut [u8], gz: bool) -> Result<(), ReadError> {
    let mut got = 0;
    while got < head.len() {
        match r.read(&mut head[got..]) {
            Ok(0) => return Err(ReadError::TooShort(got)),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if gz => return Err(ReadError::Gzip(e.to_string())),
            Err(e) => return Err(ReadError::Io(e)),
        }
    }
    Ok(())
}

fn gzip_error(e: std::io::Error, what: &str) -> ReadError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        ReadError::Gzip(format!("stream ends inside the {what}"))
    } else {
        ReadError::Gzip(e.to_string())
    }
}

fn i16_at(h: &[u8], off: usize, be: bool) -> i16 {
    let b = [h[off], h[off + 1]];
    if be {
        i16::from_be_bytes(b)
    } else {
        i16::from_le_bytes(b)
    }
}

fn i32_at(h: &[u8], off: usize, be: bool) -> i32 {
    let b = [h[off], h[off + 1], h[off + 2], h[off + 3]];
    if be {
        i32::from_be_bytes(b)
    } else {
        i32::from_le_bytes(b)
    }
}

/// Validates a 348-byte NIfTI-1 header and extracts what the pipeline needs.
/// Field parsing goes through the `nifti` crate; the checks it leaves to its
/// callers (sizeof_hdr, dims, datatype, offset, scaling) are made here.
fn parse_header(head: &[u8], gz: bool) -> Result<HeaderInfo, ReadError> {
    let big_endian = match (i32_at(head, 0, false), i32_at(head, 0, true)) {
        (348, _) => false,
        (_, 348) => true,
        (540, _) | (_, 540) => {
            return Err(ReadError::NotNifti(
                "NIfTI-2 header (sizeof_hdr 540) is not supported yet".into(),
            ))
        }
        (v, _) => {
            return Err(ReadError::NotNifti(format!(
                "sizeof_hdr is {v}, expected 348"
            )))
        }
    };
    if &head[344..348] == b"ni1\0" {
        return Err(ReadError::PairNotSupported);
    }
    if &head[344..348] != b"n+1\0" {
        return Err(ReadError::NotNifti(format!(
            "magic is {:?}, expected \"n+1\"",
            String::from_utf8_lossy(&head[344..347])
        )));
    }
    let h =
        nifti::NiftiHeader::from_reader(head).map_err(|e| ReadError::NotNifti(e.to_string()))?;

    let ndim = i16_at(head, 40, big_endian);
    if !(1..=7).contains(&ndim) {
        return Err(ReadError::BadDims(format!(
            "dim[0] = {ndim}, expected 1..7"
        )));
    }
    let ndim = ndim as usize;
    let mut dims = [1usize; 7];
    let mut total: u64 = 1;
    for (i, d) in dims.iter_mut().enumerate().take(ndim) {
        let v = i16_at(head, 42 + 2 * i, big_endian);
        if v <= 0 {
            return Err(ReadError::BadDims(format!("dim[{}] = {v}", i + 1)));
        }
        *d = v as usize;
        total = total.saturating_mul(v as u64);
    }
    let stored =
        DType::from_nifti_code(h.datatype).ok_or(ReadError::UnsupportedType(h.datatype))?;
    let vox = h.vox_offset;
    if !vox.is_finite() || vox < 352.0 || vox.fract() != 0.0 || vox > 1e9 {
        return Err(ReadError::BadOffset(vox));
    }
    let scaling = if h.scl_slope == 0.0 || !h.scl_slope.is_finite() {
        None
    } else if !h.scl_inter.is_finite() {
        return Err(ReadError::BadScaling);
    } else if h.scl_slope == 1.0 && h.scl_inter == 0.0 {
        None
    } else {
        Some((h.scl_slope as f64, h.scl_inter as f64))
    };
    let spatial = [dims[0], dims[1], dims[2]];
    let volumes = dims[3..].iter().product();
    if total > (usize::MAX / 8) as u64 {
        return Err(ReadError::BadDims(format!("{total} voxels")));
    }
    Ok(HeaderInfo {
        shape: Shape {
            spatial,
            spatial_ndim: ndim.min(3),
            volumes,
        },
        stored,
        pixdim: [h.pixdim[1], h.pixdim[2], h.pixdim[3]],
        vox_offset: vox as usize,
        big_endian,
        gz,
        scaling,
    })
}

fn read_voxels(
    r: &mut impl Read,
    info: &HeaderInfo,
    spare: Option<Voxels>,
) -> Result<Voxels, ReadError> {
    let n = info.shape.len();
    with_dtype!(info.stored, T => read_typed::<T>(r, n, info.big_endian, info.gz, spare))
}

fn read_typed<T: Sample + VoxelVec>(
    r: &mut impl Read,
    n: usize,
    big_endian: bool,
    gz: bool,
    spare: Option<Voxels>,
) -> Result<Voxels, ReadError> {
    // A reused buffer keeps its old (initialised) values until read_exact
    // overwrites them all: no clearing pass over tens of MB.
    let mut v: Vec<T> = spare.and_then(T::unwrap).unwrap_or_default();
    v.truncate(n);
    v.resize(n, T::zeroed());
    r.read_exact(bytemuck::cast_slice_mut(&mut v))
        .map_err(|e| {
            if gz {
                gzip_error(e, "voxel data")
            } else {
                ReadError::Io(e)
            }
        })?;
    if big_endian != cfg!(target_endian = "big") {
        v.iter_mut().for_each(|x| *x = x.swap_bytes());
    }
    Ok(T::wrap(v))
}

/// nibabel's `apply_read_scaling`: float64, multiply unless slope is 1, add unless inter is 0.
fn apply_scaling(raw: &Voxels, slope: f64, inter: f64) -> Voxels {
    with_voxels!(raw, v => Voxels::F64(v.iter().map(|&x| {
        let mut y = x.to_f64();
        if slope != 1.0 {
            y *= slope;
        }
        if inter != 0.0 {
            y += inter;
        }
        y
    }).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::NoiseChoice;
    use crate::generate::{generate, PhantomSpec};
    use crate::io::OutputFormat;

    #[test]
    fn header_only_read_agrees_with_the_full_read() {
        let dir = tempfile::tempdir().unwrap();
        for format in [OutputFormat::Nii, OutputFormat::NiiGz] {
            let spec = PhantomSpec {
                shape: vec![7, 5, 3, 2],
                dtype: DType::I16,
                seed: 1,
                vary_size: false,
                noise: NoiseChoice::Gaussian,
                format,
            };
            let path = generate(&dir.path().join(format.extension()), 1, &spec)
                .unwrap()
                .remove(0);
            let info = read_header_info(&path).unwrap();
            let img = read_image(&path).unwrap();
            assert_eq!(info.shape, img.shape);
            assert_eq!(info.voxels(), 7 * 5 * 3 * 2);
            assert_eq!(info.stored, DType::I16);
            assert_eq!(info.gz, format == OutputFormat::NiiGz);
            assert_eq!(img.voxels.len() as u64, info.voxels());
        }
    }

    #[test]
    fn header_only_read_rejects_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.nii");
        std::fs::write(&p, vec![7u8; 400]).unwrap();
        assert!(matches!(read_header_info(&p), Err(ReadError::NotNifti(_))));
    }
}

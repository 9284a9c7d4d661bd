//! NIfTI-1 read and atomic write, as nibabel sees the files.
//!
//! Reading keeps the input's header bytes (and extensions) verbatim so that the
//! output can carry them unchanged except for the fields the filter changes
//! (datatype, bitpix, scaling). Voxels are presented as nibabel's
//! `np.asanyarray(img.dataobj)` presents them: scaled by `scl_slope` and
//! `scl_inter` when those are set, in nibabel's float type. Writing goes to a
//! temporary file in the output directory that is renamed into place only when
//! complete, so a crash or an error never leaves a half-written output.

pub mod gzip;
mod read;
mod write;

pub use read::{read_header_info, read_image, read_image_into, HeaderInfo};
pub use write::{
    exists_nonempty, new_header, output_header, write_image, OutputFormat, WriteOptions,
};

use std::path::PathBuf;

use crate::filter::Shape;
use crate::volume::{DType, Voxels};

/// Size of a NIfTI-1 header; data may start after it plus 4 extension bytes.
pub const HEADER_LEN: usize = 348;

/// One image in memory: the header as read, and the voxels as nibabel sees them.
#[derive(Debug)]
pub struct Image {
    /// Bytes 0..vox_offset of the input (header, extender, extensions).
    pub raw_header: Vec<u8>,
    pub big_endian: bool,
    pub shape: Shape,
    /// Voxel size along x, y, z (pixdim[1..=3]) in the header's units.
    pub pixdim: [f32; 3],
    /// The dtype on disk (before scaling).
    pub stored: DType,
    /// True when scl_slope/scl_inter were applied on read.
    pub scaled: bool,
    pub voxels: Voxels,
    /// Bytes read from disk (compressed size for .nii.gz).
    pub bytes_in: u64,
}

/// Why an image could not be read. Each message names the cause; the caller adds the path.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file could not be opened or read (missing, permissions, I/O error).
    #[error("cannot read file: {0}")]
    Io(#[from] std::io::Error),
    /// The gzip stream is damaged or ends early.
    #[error("corrupt or truncated gzip stream: {0}")]
    Gzip(String),
    /// Fewer bytes than a 348-byte header.
    #[error("file too short for a NIfTI-1 header ({0} bytes)")]
    TooShort(usize),
    /// `sizeof_hdr` is not 348 in either byte order, or the magic is wrong.
    #[error("not a NIfTI-1 file: {0}")]
    NotNifti(String),
    /// A `.hdr`/`.img` pair (magic "ni1"), not yet supported.
    #[error("two-file NIfTI (.hdr/.img, magic \"ni1\") is not supported; convert to .nii")]
    PairNotSupported,
    /// `dim` is inconsistent: dim[0] outside 1..=7, or a used dimension ≤ 0.
    #[error("invalid dimensions: {0}")]
    BadDims(String),
    /// A datatype nismooth cannot filter (complex, RGB, float128, binary).
    #[error("unsupported datatype code {0} (only real integer and float types can be smoothed)")]
    UnsupportedType(i16),
    /// `vox_offset` points inside the header or past the end of the data.
    #[error("invalid vox_offset {0}")]
    BadOffset(f32),
    /// The header promises more voxels than the file can hold.
    #[error("header claims {want} bytes of voxel data but the file holds only {have}")]
    Truncated { want: u64, have: u64 },
    /// scl_slope is valid but scl_inter is not finite (nibabel refuses these too).
    #[error("valid scl_slope but non-finite scl_inter")]
    BadScaling,
}

/// Why an output could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Creating, writing or renaming the temporary file failed (disk full, read-only, ...).
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

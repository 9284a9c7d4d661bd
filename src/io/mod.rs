//! NIfTI-1 and NIfTI-2 read and atomic write, as nibabel sees the files.
//!
//! Reading keeps the input's header bytes (and extensions) verbatim so that the
//! output can carry them unchanged except for the fields the filter changes
//! (datatype, bitpix, scaling). Voxels are presented as nibabel's
//! `np.asanyarray(img.dataobj)` presents them: scaled by `scl_slope` and
//! `scl_inter` when those are set, in nibabel's float type. Writing goes to a
//! temporary file in the output directory that is renamed into place only when
//! complete, so a crash or an error never leaves a half-written output.

pub mod gzip;
pub mod header;
mod read;
mod shared;
mod write;

pub use header::{HeaderInfo, Version};
pub use read::{
    input_id, mtime_ns, open_regular, open_regular_file, pair_data_path, read_header_info,
    read_image, read_image_from_bytes, read_image_into, read_regular, ImageStream,
};
pub use shared::{ShareWriter, SharedOutput};
pub use write::{
    commit_batch, element_swap, exists_nonempty, file_order, new_header, output_header,
    report_target, short_name, special_file, stage_image, sync_dir, temp_owner, write_file_atomic,
    write_image, write_report_file, OutputFormat, OutputStream, Staged, Target, WriteOptions,
    TEMP_NAME_KEEPS,
};

use std::path::PathBuf;

use crate::volume::Shape;
use crate::volume::{DType, Voxels};

/// One image in memory: the header as read, and the voxels as nibabel sees them.
#[derive(Debug)]
pub struct Image {
    /// Bytes 0..vox_offset of the input (header, extender, extensions); for
    /// a `.hdr`/`.img` pair, already made the header of a single file.
    pub raw_header: Vec<u8>,
    pub version: Version,
    pub big_endian: bool,
    pub shape: Shape,
    /// Voxel size along x, y, z (pixdim[1..=3]) in the header's units.
    pub pixdim: [f64; 3],
    /// Voxel sizes from nibabel's affine (`HeaderInfo::voxel_sizes`).
    pub voxel_sizes: [f64; 3],
    /// The dtype on disk (before scaling).
    pub stored: DType,
    /// True when scl_slope/scl_inter were applied on read.
    pub scaled: bool,
    pub voxels: Voxels,
    /// Bytes read from disk (compressed size for .nii.gz).
    pub bytes_in: u64,
    /// What the input was when read (for `--resume`).
    pub id: InputId,
    /// The input's extensions could not be followed and are not copied.
    pub dropped_extensions: bool,
}

/// Size and modification time of a file as it was read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Source {
    pub bytes: u64,
    pub mtime_ns: u64,
}

/// What identifies an input's content, for `--resume`: the file's (and a
/// pair's data file's) size and mtime, and a CRC-32 of its header bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InputId {
    pub file: Source,
    pub data: Option<Source>,
    pub header_crc: u32,
}

impl InputId {
    pub fn new(file: Source, data: Option<Source>, header: &[u8]) -> InputId {
        InputId {
            file,
            data,
            header_crc: gzip::crc32(header),
        }
    }
}

/// Why an image could not be read. Each message names the cause; the caller adds the path.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// A symlink whose target does not exist (an annexed file not fetched, say).
    #[error("broken symlink: its target {} does not exist", .0.display())]
    BrokenLink(PathBuf),
    /// Not a regular file: reading a FIFO or a device would block or never end.
    #[error("not a regular file ({0}); only regular files are read")]
    NotRegular(&'static str),
    /// The file could not be opened or read (missing, permissions, I/O error).
    #[error("cannot read file: {0}")]
    Io(#[from] std::io::Error),
    /// The gzip stream is damaged or ends early.
    #[error("corrupt or truncated gzip stream: {0}")]
    Gzip(String),
    /// Fewer bytes than the header that `sizeof_hdr` announces (348 or 540).
    #[error("file too short for a NIfTI header ({0} bytes)")]
    TooShort(usize),
    /// `sizeof_hdr` is neither 348 nor 540 in either byte order, or the magic is wrong.
    #[error("not a NIfTI file: {0}")]
    NotNifti(String),
    /// The `.img` beside a `.hdr` is missing or unreadable.
    #[error("the data file {path} of this .hdr/.img pair cannot be read: {source}")]
    MissingData {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `dim` is inconsistent: dim[0] outside 1..=7, a used dimension ≤ 0, or
    /// more voxels than any file could hold.
    #[error("invalid dimensions: {0}")]
    BadDims(String),
    /// A datatype nismooth cannot filter (complex, RGB, float128, binary).
    #[error("unsupported datatype {name} (code {code}): only real integer and float images can be smoothed")]
    UnsupportedType { code: i16, name: &'static str },
    /// `vox_offset` points inside the header, is not a whole number, or is absurd.
    #[error("invalid vox_offset {0}")]
    BadOffset(f64),
    /// `vox_offset` lies past the end of the file.
    #[error("vox_offset {offset} is beyond the end of the file ({len} bytes)")]
    OffsetBeyondEnd { offset: u64, len: u64 },
    /// The header promises more voxels than the file can hold.
    #[error("header claims {want} bytes of voxel data but the file holds only {have}")]
    Truncated { want: u64, have: u64 },
    /// The image would take more memory than this process may still take.
    #[error(
        "needs about {} MiB in memory{}, more than the {} MiB left under {limit}",
        .need >> 20,
        if *.scaled { " (scaled voxels are held as float64)" } else { "" },
        .room >> 20
    )]
    NoRoom {
        need: u64,
        room: u64,
        limit: &'static str,
        scaled: bool,
    },
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

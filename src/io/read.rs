//! Reading: header validation first, allocation only once the file can hold what it claims.
//!
//! A single file (`.nii`, `.nii.gz`) is streamed once: header, extensions,
//! voxels. A `.hdr`/`.img` pair is read as its two files, and its header is
//! turned into a single file's so that the output is an ordinary `.nii`.
//! Compressed inputs may hold several gzip members (BGZF, `cat a.gz b.gz`):
//! every member is inflated, in order.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use super::header::{self, HeaderInfo, Version};
use super::{gzip, Image, InputId, ReadError, Source};
use crate::volume::{Sample, VoxelVec, Voxels};
use crate::{with_dtype, with_voxels};

/// Deflate cannot expand data by more than ~1032:1; a header that claims more
/// voxels than that is lying, and is refused before anything is allocated.
const MAX_INFLATE_RATIO: u64 = 1032;

/// Extensions in a pair's `.hdr` beyond this are refused (real ones are a few KiB).
const MAX_PAIR_EXTENSIONS: u64 = 64 << 20;

/// For a `.hdr` or `.hdr.gz` name, the pair's data file: the `.img` (or
/// `.img.gz`) beside it, the one that exists, preferring the header's own
/// compression. `None` for any other name.
pub fn pair_data_path(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?.to_string_lossy().into_owned();
    let lower = name.to_lowercase();
    let (stem, order) = if lower.ends_with(".hdr.gz") {
        (&name[..name.len() - 7], [".img.gz", ".img"])
    } else if lower.ends_with(".hdr") {
        (&name[..name.len() - 4], [".img", ".img.gz"])
    } else {
        return None;
    };
    let candidates = order.map(|ext| path.with_file_name(format!("{stem}{ext}")));
    let found = candidates.iter().find(|p| p.is_file()).cloned();
    Some(found.unwrap_or_else(|| candidates[0].clone()))
}

/// A file's bytes, inflated when they are gzip: (stream, gz).
fn stream<'a>(mut input: impl BufRead + 'a) -> std::io::Result<(Box<dyn Read + 'a>, bool)> {
    if gzip::is_gzip(input.fill_buf()?) {
        Ok((Box::new(gzip::decoder(input)), true))
    } else {
        Ok((Box::new(input), false))
    }
}

/// Opens `path` for streaming: (stream, gz, its size and mtime).
fn open(path: &Path) -> Result<(Box<dyn Read>, bool, Source), ReadError> {
    let (file, source) = open_regular(path)?;
    let (r, gz) = stream(BufReader::with_capacity(64 << 10, file))?;
    Ok((r, gz, source))
}

/// `open_regular` for the files beside the images (journals, sidecars,
/// descriptions): a FIFO planted under one of their names is an error, not
/// a process that waits in `open` forever.
pub fn open_regular_file(path: &Path) -> std::io::Result<File> {
    match open_regular(path) {
        Ok((file, _)) => Ok(file),
        Err(ReadError::Io(e)) => Err(e),
        Err(e) => Err(std::io::Error::other(e.to_string())),
    }
}

/// A small file's bytes (a sidecar, a description, a report), when it is a
/// regular file (`open_regular_file`).
pub fn read_regular(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut open_regular_file(path)?, &mut bytes)?;
    Ok(bytes)
}

/// Opens a regular file, and nothing else: a FIFO would block the reader
/// (and planning) forever, a device would stream without end. The open
/// itself does not block (O_NONBLOCK, which regular files ignore); the
/// type is checked on the opened file, so nothing can swap it in between.
pub fn open_regular(path: &Path) -> Result<(File, Source), ReadError> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match std::fs::symlink_metadata(path) {
            Ok(m) if e.kind() == std::io::ErrorKind::NotFound && m.is_symlink() => {
                let to = std::fs::read_link(path).unwrap_or_default();
                ReadError::BrokenLink(to)
            }
            _ => ReadError::Io(e),
        })?;
    let meta = file.metadata()?;
    let kind = meta.file_type();
    if !kind.is_file() {
        use std::os::unix::fs::FileTypeExt;
        let what = if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_dir() {
            "a directory"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "a device"
        };
        return Err(ReadError::NotRegular(what));
    }
    let mtime_ns = mtime_ns(&meta).unwrap_or(0);
    Ok((
        file,
        Source {
            bytes: meta.len(),
            mtime_ns,
        },
    ))
}

/// Reads and validates only the header (cheap; used to plan and balance work).
pub fn read_header_info(path: &Path) -> Result<HeaderInfo, ReadError> {
    let (mut r, gz, _) = open(path)?;
    Ok(read_header(&mut r, gz, pair_data_path(path).is_some())?.1)
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
    ImageStream::open(path)?.read_whole(spare)
}

/// A single-file image held in memory (the fuzz target's way in).
pub fn read_image_from_bytes(bytes: &[u8]) -> Result<Image, ReadError> {
    let (r, gz) = stream(bytes)?;
    let source = Source {
        bytes: bytes.len() as u64,
        mtime_ns: 0,
    };
    ImageStream::single(r, gz, source)?.read_whole(None)
}

/// An image opened for its voxels a few volumes at a time: the header and
/// extensions read and checked, the stream at the first voxel. A series is
/// streamed this way, volume by volume, so that memory follows the volume,
/// not the series; a whole image is one read of every volume.
pub struct ImageStream<'a> {
    /// The image without its voxels (`voxels` is empty).
    head: Image,
    info: HeaderInfo,
    r: Box<dyn Read + 'a>,
    /// The voxels' stream is gzip (a pair's data file may differ from its header).
    data_gz: bool,
    voxels_read: usize,
}

impl ImageStream<'static> {
    /// Opens `path` (a single file or a pair's `.hdr`): its header is read
    /// and checked against the file; `reserve` then asks room for what
    /// will be read at a time.
    pub fn open(path: &Path) -> Result<ImageStream<'static>, ReadError> {
        if let Some(data) = pair_data_path(path) {
            return open_pair(path, &data);
        }
        let lower = path.to_string_lossy().to_lowercase();
        if lower.ends_with(".img") || lower.ends_with(".img.gz") {
            return Err(ReadError::NotNifti(
                "an .img holds only the voxels of a .hdr/.img pair; name its .hdr".into(),
            ));
        }
        let (r, gz, source) = open(path)?;
        ImageStream::single(r, gz, source)
    }
}

impl<'a> ImageStream<'a> {
    /// Header and extensions of a single file from `r` (the inflated stream
    /// when `gz`; `source.bytes` on disk). A header that claims more than the
    /// file can hold is refused before anything is allocated: a plain file
    /// must hold it, and deflate cannot expand more than MAX_INFLATE_RATIO-fold.
    fn single(
        mut r: Box<dyn Read + 'a>,
        gz: bool,
        source: Source,
    ) -> Result<ImageStream<'a>, ReadError> {
        let (mut head, info) = read_head(&mut r, gz, source.bytes)?;
        let id = InputId::new(source, None, &head);
        let dropped = header::drop_bad_extensions(&mut head, info.version, info.big_endian);
        let mut img = image(&info, head, source);
        img.id = id;
        img.dropped_extensions = dropped;
        Ok(ImageStream {
            head: img,
            info,
            r,
            data_gz: gz,
            voxels_read: 0,
        })
    }

    /// The image as its header describes it, without voxels.
    pub fn head(&self) -> &Image {
        &self.head
    }

    /// The dtype the voxels are held in: float64 when the header scales them.
    pub fn dtype(&self) -> crate::volume::DType {
        self.info.presented()
    }

    /// Refuses, before anything is allocated, to read `voxels` at a time
    /// when this process has no room for them (`check_memory`).
    pub fn reserve(&self, voxels: usize) -> Result<(), ReadError> {
        check_memory(&self.info, voxels as u64)
    }

    /// The next `n` volumes (fewer at the end), scaled as nibabel scales
    /// them.
    pub fn read_volumes(&mut self, n: usize, spare: Option<Voxels>) -> Result<Voxels, ReadError> {
        self.read_next(n.saturating_mul(self.info.shape.volume_len()), spare)
    }

    /// The next `n` voxels in file order (fewer at the end), scaled as
    /// nibabel scales them: whole volumes, or whole z-slices of a 3-D
    /// image. After the last one, a gzip stream is read to its end, so
    /// that its CRC-32 and length are checked.
    pub fn read_next(&mut self, n: usize, spare: Option<Voxels>) -> Result<Voxels, ReadError> {
        let total = self.info.shape.len();
        let n = n.min(total - self.voxels_read);
        let raw = read_voxels(&mut self.r, &self.info, n, spare)?;
        self.voxels_read += n;
        if self.voxels_read == total && self.data_gz {
            read_to_end_of_stream(&mut self.r)?;
        }
        Ok(match self.info.scaling {
            Some((slope, inter)) => apply_scaling(&raw, slope, inter),
            None => raw,
        })
    }

    /// Passes over the next `n` voxels without keeping them: a rank's share
    /// of a split image starts past them (a gzip stream is inflated to
    /// there; nothing else can find the place).
    pub fn skip(&mut self, n: usize) -> Result<(), ReadError> {
        let total = self.info.shape.len();
        let n = n.min(total - self.voxels_read);
        let bytes = n as u64 * self.info.stored.size() as u64;
        let passed = std::io::copy(&mut (&mut self.r).take(bytes), &mut std::io::sink())
            .map_err(|e| stream_error(e, self.data_gz, "voxel data"))?;
        if passed < bytes {
            return Err(stream_error(eof(), self.data_gz, "voxel data"));
        }
        self.voxels_read += n;
        if self.voxels_read == total && self.data_gz {
            read_to_end_of_stream(&mut self.r)?;
        }
        Ok(())
    }

    /// Every volume at once: the whole image.
    pub fn read_whole(mut self, spare: Option<Voxels>) -> Result<Image, ReadError> {
        self.reserve(self.info.shape.len())?;
        let voxels = self.read_next(usize::MAX, spare)?;
        Ok(Image {
            voxels,
            ..self.head
        })
    }
}

/// The header and extensions of a single file (bytes 0..vox_offset).
fn read_head(r: &mut dyn Read, gz: bool, len: u64) -> Result<(Vec<u8>, HeaderInfo), ReadError> {
    let (mut head, info) = read_header(r, gz, false)?;
    check_room(&info, info.vox_offset as u64, len, gz)?;
    let rest = info.vox_offset - head.len();
    r.take(rest as u64)
        .read_to_end(&mut head)
        .map_err(|e| stream_error(e, gz, "header extensions"))?;
    if head.len() < info.vox_offset {
        return Err(stream_error(eof(), gz, "header extensions"));
    }
    Ok((head, info))
}

/// What identifies an input for `--resume`: its size and mtime, and a
/// CRC-32 of its header and extensions (as read, inflated). Reads only the
/// header, so checking a skipped image costs one small read.
pub fn input_id(path: &Path) -> Result<super::InputId, ReadError> {
    let data = pair_data_path(path);
    let (mut r, gz, source) = open(path)?;
    let head = match &data {
        Some(_) => read_header(&mut r, gz, true)?.0,
        None => read_head(&mut r, gz, source.bytes)?.0,
    };
    let data_source = match data {
        Some(d) => Some(open_regular(&d)?.1),
        None => None,
    };
    Ok(super::InputId::new(source, data_source, &head))
}

/// Reads a gzip stream past the voxels to its end, so that every member's
/// CRC-32 and length (its 8-byte trailer) are checked: a file cut inside its
/// trailer still holds every voxel, and must fail as gzip and Python do.
fn read_to_end_of_stream(r: &mut dyn Read) -> Result<(), ReadError> {
    std::io::copy(r, &mut std::io::sink())
        .map(drop)
        .map_err(|e| stream_error(e, true, "gzip trailer"))
}

/// A `.hdr`/`.img` pair: the header (and its extensions) from `hdr`, the
/// voxels from `data` at vox_offset. The header kept for the output is that
/// of a single file, with the data right after its extensions.
fn open_pair(hdr: &Path, data: &Path) -> Result<ImageStream<'static>, ReadError> {
    let (mut r, gz, hdr_source) = open(hdr)?;
    let (mut head, info) = read_header(&mut r, gz, true)?;
    // The header as on disk, before it becomes a single file's.
    let header_crc = gzip::crc32(&head);
    r.take(MAX_PAIR_EXTENSIONS + 1)
        .read_to_end(&mut head)
        .map_err(|e| stream_error(e, gz, "header extensions"))?;
    if head.len() as u64 > MAX_PAIR_EXTENSIONS {
        return Err(ReadError::NotNifti(format!(
            "more than {MAX_PAIR_EXTENSIONS} bytes of extensions after the header"
        )));
    }
    // Extensions need their 4-byte extender; without one, none follow.
    let n = info.version.header_len();
    if head.len() < n + 4 || head[n] == 0 {
        head.truncate(n);
        head.extend_from_slice(&[0; 4]);
    }
    let data_at = head.len().next_multiple_of(16);
    head.resize(data_at, 0);
    header::make_single(&mut head, info.version, info.big_endian, data_at);

    let (mut r, data_gz, data_source) = open(data).map_err(|e| ReadError::MissingData {
        path: data.to_path_buf(),
        source: match e {
            ReadError::Io(e) => e,
            other => std::io::Error::other(other.to_string()),
        },
    })?;
    let data_len = data_source.bytes;
    let info = HeaderInfo {
        gz: data_gz,
        ..info
    };
    check_room(&info, info.vox_offset as u64, data_len, data_gz)?;
    let skipped = std::io::copy(
        &mut r.by_ref().take(info.vox_offset as u64),
        &mut std::io::sink(),
    )
    .map_err(|e| stream_error(e, data_gz, "data file"))?;
    if skipped < info.vox_offset as u64 {
        return Err(stream_error(eof(), data_gz, "data file"));
    }
    let mut img = image(&info, head, hdr_source);
    img.bytes_in += data_len;
    img.id = InputId {
        file: hdr_source,
        data: Some(data_source),
        header_crc,
    };
    Ok(ImageStream {
        head: img,
        info,
        r,
        data_gz,
        voxels_read: 0,
    })
}

/// Refuses a header whose data cannot fit in a file of `len` bytes.
fn check_room(info: &HeaderInfo, offset: u64, len: u64, gz: bool) -> Result<(), ReadError> {
    let want = info.data_bytes();
    if gz {
        let have = len.saturating_mul(MAX_INFLATE_RATIO);
        if offset.saturating_add(want) > have {
            return Err(ReadError::Truncated {
                want,
                have: have.saturating_sub(offset),
            });
        }
    } else if offset > len {
        return Err(ReadError::OffsetBeyondEnd { offset, len });
    } else if want > len - offset {
        return Err(ReadError::Truncated {
            want,
            have: len - offset,
        });
    }
    Ok(())
}

/// Reads needing less than this are not checked against the memory room:
/// reading the limits (about 50 µs) costs more than such a read could ever
/// matter. Parts of series and slabs (8 MiB) are checked: under a tight
/// `ulimit -v` an unchecked 8 MiB part failed to allocate and aborted the run.
const CHECK_MEMORY_FROM: u64 = 1 << 20;

/// What a read needs beside its voxels (the compressor's blocks, small
/// buffers): room kept free so that those allocations do not fail either,
/// since under `ulimit -v` a failed allocation aborts the process.
const MEMORY_MARGIN: u64 = 16 << 20;

/// Refuses an image that would take more memory than this process may still
/// take (its cgroup, `ulimit -v`, the node), before anything is allocated:
/// otherwise the allocation ends the process and every other image with it.
/// The need is the peak of reading `voxels` at a time: the voxels as stored
/// and, for a scaled image, as held (float64). Filtering at the default
/// dtype works in place.
fn check_memory(info: &HeaderInfo, voxels: u64) -> Result<(), ReadError> {
    let voxels = voxels.min(info.voxels());
    let stored = voxels * info.stored.size() as u64;
    let need = match info.scaling {
        Some(_) => stored.saturating_add(voxels * 8),
        None => stored,
    };
    if need < CHECK_MEMORY_FROM {
        return Ok(());
    }
    let need = need.saturating_add(MEMORY_MARGIN);
    match crate::resources::memory_room() {
        Some(room) if need > room.bytes => Err(ReadError::NoRoom {
            need,
            room: room.bytes,
            limit: room.limit,
            scaled: info.scaling.is_some(),
        }),
        _ => Ok(()),
    }
}

/// The image a header describes, its voxels still to be read.
fn image(info: &HeaderInfo, raw_header: Vec<u8>, source: Source) -> Image {
    let id = InputId::new(source, None, &raw_header);
    Image {
        raw_header,
        version: info.version,
        big_endian: info.big_endian,
        shape: info.shape,
        pixdim: info.pixdim,
        voxel_sizes: info.voxel_sizes,
        stored: info.stored,
        scaled: info.scaling.is_some(),
        voxels: Voxels::U8(Vec::new()),
        bytes_in: source.bytes,
        id,
        dropped_extensions: false,
    }
}

/// Reads `sizeof_hdr`, then the rest of the header it announces, and parses it.
fn read_header(r: &mut dyn Read, gz: bool, pair: bool) -> Result<(Vec<u8>, HeaderInfo), ReadError> {
    let mut head = vec![0u8; 4];
    fill(r, &mut head, 0, gz)?;
    let (version, _) = Version::detect([head[0], head[1], head[2], head[3]])?;
    head.resize(version.header_len(), 0);
    fill(r, &mut head, 4, gz)?;
    let info = header::parse(&head, gz, pair)?;
    Ok((head, info))
}

/// Fills `buf[from..]`; a short file is `TooShort` with the bytes it had.
fn fill(r: &mut dyn Read, buf: &mut [u8], from: usize, gz: bool) -> Result<(), ReadError> {
    let mut got = from;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => return Err(ReadError::TooShort(got)),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if gz => return Err(ReadError::Gzip(e.to_string())),
            Err(e) => return Err(ReadError::Io(e)),
        }
    }
    Ok(())
}

fn eof() -> std::io::Error {
    std::io::ErrorKind::UnexpectedEof.into()
}

/// An error met while streaming `what`: a gzip error names the stream, a
/// plain file's early end says what was missing.
fn stream_error(e: std::io::Error, gz: bool, what: &str) -> ReadError {
    match (gz, e.kind()) {
        (true, std::io::ErrorKind::UnexpectedEof) => {
            ReadError::Gzip(format!("stream ends inside the {what}"))
        }
        (true, _) => ReadError::Gzip(e.to_string()),
        (false, std::io::ErrorKind::UnexpectedEof) => ReadError::Io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("file ends inside the {what}"),
        )),
        (false, _) => ReadError::Io(e),
    }
}

/// The next `n` voxels as stored, in the machine's byte order.
fn read_voxels(
    r: &mut dyn Read,
    info: &HeaderInfo,
    n: usize,
    spare: Option<Voxels>,
) -> Result<Voxels, ReadError> {
    with_dtype!(info.stored, T => read_typed::<T>(r, n, info.big_endian, info.gz, spare))
}

fn read_typed<T: Sample + VoxelVec>(
    r: &mut dyn Read,
    n: usize,
    big_endian: bool,
    gz: bool,
    spare: Option<Voxels>,
) -> Result<Voxels, ReadError> {
    // A reused buffer keeps its old (initialised) values until read_exact
    // overwrites them all: no clearing pass over tens of MB.
    let mut v: Vec<T> = match spare.and_then(T::unwrap) {
        Some(mut v) => {
            v.truncate(n);
            v.resize(n, T::zeroed());
            v
        }
        // A large one comes fresh from the kernel, already zero: not written twice.
        None => crate::volume::zeroed_vec(n),
    };
    r.read_exact(bytemuck::cast_slice_mut(&mut v))
        .map_err(|e| stream_error(e, gz, "voxel data"))?;
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

/// A file's modification time in nanoseconds since the Unix epoch (what
/// `--resume` compares: an input's and an output's).
pub fn mtime_ns(meta: &std::fs::Metadata) -> Option<u64> {
    let t = meta.modified().ok()?;
    Some(t.duration_since(std::time::UNIX_EPOCH).ok()?.as_nanos() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::NoiseChoice;
    use crate::generate::{generate, PhantomSpec};
    use crate::io::OutputFormat;
    use crate::volume::DType;

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

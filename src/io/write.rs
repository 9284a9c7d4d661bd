//! Writing: the input's header with updated type fields, through a temp file and a rename.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::header;
use super::{gzip, Image, WriteError};
use crate::volume::{DType, Voxels};
use crate::with_voxels;

/// Output container: plain `.nii` or gzip-compressed `.nii.gz`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum OutputFormat {
    #[serde(rename = "nii")]
    Nii,
    #[serde(rename = "nii.gz")]
    NiiGz,
}

impl OutputFormat {
    pub fn extension(self) -> &'static str {
        match self {
            OutputFormat::Nii => ".nii",
            OutputFormat::NiiGz => ".nii.gz",
        }
    }
}

#[derive(Clone, Copy)]
pub struct WriteOptions<'a> {
    pub format: OutputFormat,
    /// Compresses `.nii.gz` outputs (its level and its threads).
    pub gzip: &'a gzip::Compressor,
    /// The output will be synced before its rename: start writing large
    /// ones to disk at once (small ones wait for their batch's one sync).
    pub durable: bool,
}

/// Outputs from this size on are sent to the disk as soon as they are written.
const EARLY_WRITEBACK: u64 = 4 << 20;

/// Removes the temp file unless the write completed and was renamed.
pub(super) struct TempGuard {
    pub(super) path: PathBuf,
    pub(super) armed: bool,
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The output a temp file of ours (`.NAME.nismooth-PID-N.tmp`, as
/// `temp_path` makes them) belongs to: NAME (shortened as `short_name`
/// does for a long one), or None for any other file.
pub fn temp_owner(file_name: &str) -> Option<&str> {
    let rest = file_name.strip_prefix('.')?.strip_suffix(".tmp")?;
    rest.rsplit_once(".nismooth-").map(|(name, _)| name)
}

/// `name` within `max` bytes: itself, or its start and a hash of the whole
/// (stable across builds: FNV-1a). A file name may have 255 bytes, and the
/// names made from an output's (its temp file, its one-file lock) add to it:
/// a legal 237-byte output name made a temp name too long to create.
pub fn short_name(name: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if name.len() <= max {
        return name.into();
    }
    let hash = name.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    });
    let mut end = max.saturating_sub(17);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}~{hash:016x}", &name[..end]).into()
}

/// The longest output name a temp name keeps whole: 255 bytes less
/// `.` and `.nismooth-PID-N.tmp` (PID up to 10 digits, N up to 20).
pub const TEMP_NAME_KEEPS: usize = 200;

fn temp_path(dest: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let full = dest
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let name = short_name(&full, TEMP_NAME_KEEPS);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    dest.with_file_name(format!(".{name}.nismooth-{}-{n}.tmp", std::process::id()))
}

/// The input's header bytes with datatype/bitpix set for `dtype`, and scaling
/// reset to identity when the input was scaled on read (its values are now real).
pub fn output_header(img: &Image, dtype: DType) -> Vec<u8> {
    let mut h = img.raw_header.clone();
    let (v, be) = (img.version, img.big_endian);
    header::put_i16(&mut h, v.datatype_at(), dtype.nifti_code(), be);
    header::put_i16(&mut h, v.bitpix_at(), (dtype.size() * 8) as i16, be);
    if img.scaled {
        header::put_float(&mut h, v.scl_at(), 1.0, v, be);
        header::put_float(&mut h, v.scl_inter_at(), 0.0, v, be);
    }
    h
}

/// Writes `header` + `voxels` to `dest` atomically and durably; returns the
/// bytes written. Never follows a symlink onto an existing file: the temp
/// file is created fresh (O_EXCL) and `rename` replaces the directory
/// entry, not its target.
pub fn write_image(
    dest: &Path,
    header: &[u8],
    big_endian: bool,
    voxels: &Voxels,
    opts: WriteOptions<'_>,
) -> Result<u64, WriteError> {
    let staged = stage_image(dest, header, big_endian, voxels, opts)?;
    staged.sync()?;
    staged.commit()
}

/// A whole output in its temp file, not yet under its name. Dropped
/// without `commit`, the temp file goes.
pub struct Staged {
    pub(super) file: File,
    pub(super) dest: PathBuf,
    pub(super) bytes: u64,
    pub(super) guard: TempGuard,
}

/// Writes the output to a fresh temp file beside `dest` and asks the kernel
/// to start writing it to disk (without waiting), so that the `sync` that
/// must precede the rename finds little left to do.
pub fn stage_image(
    dest: &Path,
    header: &[u8],
    big_endian: bool,
    voxels: &Voxels,
    opts: WriteOptions<'_>,
) -> Result<Staged, WriteError> {
    let data_len = voxels.as_bytes().len() as u64;
    let mut out = OutputStream::begin(dest, header, big_endian, voxels.dtype(), data_len, opts)?;
    out.append(voxels)?;
    out.finish()
}

/// An output written a piece at a time (a series volume by volume) into its
/// temp file: the bytes are those of the whole written at once. Dropped
/// before `finish`, the temp file goes.
pub struct OutputStream<'a> {
    w: BufWriter<File>,
    guard: TempGuard,
    dest: PathBuf,
    opts: WriteOptions<'a>,
    /// Byte-swap each element of this many bytes (1: the machine's order).
    swap: usize,
    gz: Option<gzip::GzStream>,
}

impl<'a> OutputStream<'a> {
    /// A fresh temp file beside `dest` with `header` written, for
    /// `data_len` bytes of `dtype` voxels to come.
    pub fn begin(
        dest: &Path,
        header: &[u8],
        big_endian: bool,
        dtype: DType,
        data_len: u64,
        opts: WriteOptions<'a>,
    ) -> Result<OutputStream<'a>, WriteError> {
        let (file, guard) = create_temp(dest).map_err(io_error(dest))?;
        // Small: it only gathers the header and the gzip framing. The voxels and
        // the compressed chunks (each far larger) go straight to the file.
        let mut w = BufWriter::with_capacity(64 << 10, file);
        let swap = element_swap(big_endian, dtype);
        let gz = match opts.format {
            OutputFormat::Nii => {
                w.write_all(header).map_err(io_error(dest))?;
                None
            }
            OutputFormat::NiiGz => Some(
                opts.gzip
                    .begin(&mut w, header, data_len, swap)
                    .map_err(io_error(dest))?,
            ),
        };
        Ok(OutputStream {
            w,
            guard,
            dest: dest.to_path_buf(),
            opts,
            swap,
            gz,
        })
    }

    /// The next voxels, in file order.
    pub fn append(&mut self, voxels: &Voxels) -> Result<(), WriteError> {
        let written = match &mut self.gz {
            Some(gz) => self.opts.gzip.append(gz, &mut self.w, voxels.as_bytes()),
            None => write_voxels(&mut self.w, self.swap, voxels),
        };
        written.map_err(io_error(&self.dest))
    }

    /// Ends the file (the gzip trailer) and stages it for its rename.
    pub fn finish(mut self) -> Result<Staged, WriteError> {
        let dest = self.dest;
        if let Some(gz) = self.gz.take() {
            self.opts
                .gzip
                .end(gz, &mut self.w)
                .map_err(io_error(&dest))?;
        }
        let file = self
            .w
            .into_inner()
            .map_err(|e| io_error(&dest)(e.into_error()))?;
        let bytes = file.metadata().map_err(io_error(&dest))?.len();
        if self.opts.durable && bytes >= EARLY_WRITEBACK {
            start_writeback(&file);
        }
        Ok(Staged {
            file,
            dest,
            bytes,
            guard: self.guard,
        })
    }
}

pub(super) fn io_error(dest: &Path) -> impl FnOnce(std::io::Error) -> WriteError + '_ {
    move |source| WriteError::Io {
        path: dest.to_path_buf(),
        source,
    }
}

/// A fresh temp file beside `dest` (O_EXCL: never an existing file, never
/// through a symlink), removed by its guard unless committed.
pub(super) fn create_temp(dest: &Path) -> std::io::Result<(File, TempGuard)> {
    let path = temp_path(dest);
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)?;
    Ok((file, TempGuard { path, armed: true }))
}

/// Starts writing a file's dirty pages to disk without waiting for them.
fn start_writeback(file: &File) {
    #[cfg(target_os = "linux")]
    // SAFETY: a valid open file descriptor; the call only schedules I/O.
    unsafe {
        use std::os::fd::AsRawFd;
        libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
    }
}

impl Staged {
    fn io_err(&self, source: std::io::Error) -> WriteError {
        WriteError::Io {
            path: self.dest.clone(),
            source,
        }
    }

    /// Waits until the file's data is on disk.
    pub fn sync(&self) -> Result<(), WriteError> {
        self.file.sync_data().map_err(|e| self.io_err(e))
    }

    /// Puts the file under its name; returns its size. Call after its data
    /// is on disk (`sync`, or `commit_batch`): then, after a node crash, the
    /// name holds the old file or the whole new one, never a hole.
    pub fn commit(mut self) -> Result<u64, WriteError> {
        if let Some(what) = special_file(&self.dest) {
            let why = format!("{what} is at this name: not replaced");
            return Err(self.io_err(std::io::Error::other(why)));
        }
        std::fs::rename(&self.guard.path, &self.dest).map_err(|e| self.io_err(e))?;
        self.guard.armed = false;
        Ok(self.bytes)
    }
}

/// What stands at `path` when it is neither a regular file nor a symbolic
/// link (a rename would replace a FIFO, a device or a socket with a file,
/// and cannot replace a folder): its kind, for the error.
pub fn special_file(path: &Path) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    let kind = std::fs::symlink_metadata(path).ok()?.file_type();
    if kind.is_file() || kind.is_symlink() {
        None
    } else if kind.is_fifo() {
        Some("a FIFO")
    } else if kind.is_dir() {
        Some("a folder")
    } else if kind.is_socket() {
        Some("a socket")
    } else {
        Some("a device")
    }
}

/// Puts a batch of outputs (all in one folder) in place durably: their
/// data on disk, then the renames, then one sync of the folder. A batch of
/// several is synced with one `syncfs` (on ext4, a journal commit per file
/// costs more than the writing of a small one); if that fails, file by file,
/// so that each error lands on its own output.
/// With `sync` false, only renames (atomic against a kill, not a crash).
///
/// `done(i, result)` is told of output `i` the moment it is in place (or
/// failed), before the next one is synced: the caller's journal line then
/// follows each rename at once, and a kill between the two (an output no
/// journal vouches for, which `--resume` redoes) has microseconds to land
/// in, not the rest of the batch's syncs.
pub fn commit_batch(
    batch: Vec<Staged>,
    sync: bool,
    mut done: impl FnMut(usize, Result<u64, WriteError>),
) {
    let all_synced = !sync || (batch.len() >= SYNCFS_BATCH && syncfs(&batch[0].file));
    let mut folder = None;
    for (i, st) in batch.into_iter().enumerate() {
        let dest_folder = st.dest.parent().map(Path::to_path_buf);
        let synced = if all_synced { Ok(()) } else { st.sync() };
        let result = synced.and_then(|()| st.commit());
        if result.is_ok() && folder.is_none() {
            folder = dest_folder;
        }
        done(i, result);
    }
    if let Some(folder) = folder.filter(|f| sync && !f.as_os_str().is_empty()) {
        if let Err(e) = sync_dir(&folder) {
            log::warn!("cannot sync {} to disk: {e}", folder.display());
        }
    }
}

/// Batches at least this long are synced with one `syncfs`.
const SYNCFS_BATCH: usize = 4;

/// Syncs the whole file system `file` lives on; false if that failed.
fn syncfs(file: &File) -> bool {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: a valid open file descriptor.
        unsafe { libc::syncfs(file.as_raw_fd()) == 0 }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = file;
        false
    }
}

/// Voxels in file order, byte-swapped when `swap` > 1 (a foreign byte
/// order) through a small buffer, never a second full copy.
pub(super) fn write_voxels(
    w: &mut impl Write,
    swap: usize,
    voxels: &Voxels,
) -> std::io::Result<()> {
    if swap <= 1 {
        return w.write_all(voxels.as_bytes());
    }
    with_voxels!(voxels, v => {
        for chunk in v.chunks(1 << 16) {
            let swapped: Vec<_> = chunk.iter().map(|x| crate::volume::Sample::swap_bytes(*x)).collect();
            w.write_all(bytemuck::cast_slice(&swapped))?;
        }
        Ok(())
    })
}

/// The size of the elements to byte-swap on the way to a file in this byte
/// order (1: the machine's own, nothing to swap).
pub fn element_swap(big_endian: bool, dtype: DType) -> usize {
    if big_endian == cfg!(target_endian = "big") {
        1
    } else {
        dtype.size()
    }
}

/// The voxels' bytes as a file in this byte order holds them.
pub fn file_order(voxels: &Voxels, big_endian: bool) -> std::borrow::Cow<'_, [u8]> {
    let swap = element_swap(big_endian, voxels.dtype());
    if swap <= 1 {
        return std::borrow::Cow::Borrowed(voxels.as_bytes());
    }
    let mut v = Vec::with_capacity(voxels.as_bytes().len());
    // Writing into memory cannot fail.
    let _ = write_voxels(&mut v, swap, voxels);
    std::borrow::Cow::Owned(v)
}

/// Whether `path` could be a complete file of ours: used by `--skip-existing`.
pub fn exists_nonempty(path: &Path) -> bool {
    // metadata, not open: opening a FIFO at the output's name would block.
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.len() > 0)
        .unwrap_or(false)
}

/// Makes the renames done in `dir` durable (fsync of the folder itself).
/// Batched by callers: one call covers every rename before it.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `bytes` to `dest` as `write_image` writes an image: a fresh temp
/// file beside it, synced, renamed into place, the folder synced. Errors name `dest`.
pub fn write_file_atomic(dest: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    let io_err = |source| WriteError::Io {
        path: dest.to_path_buf(),
        source,
    };
    let (mut file, guard) = create_temp(dest).map_err(io_err)?;
    file.write_all(bytes).map_err(io_err)?;
    let staged = Staged {
        file,
        dest: dest.to_path_buf(),
        bytes: bytes.len() as u64,
        guard,
    };
    staged.sync()?;
    staged.commit()?;
    let folder = dest.parent().filter(|p| !p.as_os_str().is_empty());
    sync_dir(folder.unwrap_or(Path::new("."))).map_err(io_err)
}

/// What a path given for a report, a CSV or a merged report names today.
/// A regular file (or nothing yet) is replaced atomically; anything else a
/// user can name (`/dev/stdout`, a FIFO, a terminal) is written into as it
/// is, because renaming over it would replace the device with a file.
#[derive(Debug, PartialEq, Eq)]
pub enum Target {
    /// A regular file, or no file yet: written beside and renamed to this
    /// path (a symlink's own target, so that the link stays a link).
    Replace(PathBuf),
    /// A device, FIFO or socket (or a link to one): opened and written.
    Stream,
}

/// Says how `dest` will be written, or why it cannot be: a folder, an
/// empty path or a missing parent folder is refused here, before any work.
pub fn report_target(dest: &Path) -> Result<Target, WriteError> {
    let refuse = |why: &str| WriteError::Io {
        path: dest.to_path_buf(),
        source: std::io::Error::other(why.to_string()),
    };
    if dest.as_os_str().is_empty() {
        return Err(refuse("an empty path names no file"));
    }
    // `/dev/stdout` redirected to a log resolves to the log: write into it
    // where the shell put it, not over it.
    if names_an_open_file(dest) && std::fs::metadata(dest).is_ok_and(|m| !m.is_dir()) {
        return Ok(Target::Stream);
    }
    match std::fs::metadata(dest) {
        Ok(m) if m.is_dir() => Err(refuse("is a folder: name a file")),
        Ok(m) if m.is_file() => Ok(Target::Replace(
            std::fs::canonicalize(dest).unwrap_or_else(|_| dest.to_path_buf()),
        )),
        Ok(_) => Ok(Target::Stream),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if std::fs::symlink_metadata(dest).is_ok() {
                return Err(refuse("is a symbolic link to nothing: name a file"));
            }
            let parent = dest.parent().filter(|p| !p.as_os_str().is_empty());
            match parent.map(std::fs::metadata) {
                None => Ok(Target::Replace(dest.to_path_buf())),
                Some(Ok(m)) if m.is_dir() => Ok(Target::Replace(dest.to_path_buf())),
                Some(_) => Err(refuse("its folder does not exist")),
            }
        }
        Err(e) => Err(WriteError::Io {
            path: dest.to_path_buf(),
            source: e,
        }),
    }
}

/// Whether `path` names a file some process holds open (`/dev/stdout`,
/// `/dev/fd/3`, `/proc/self/fd/1`, `/proc/PID/fd/N`) rather than a place in
/// a file system: renaming over what it resolves to would cut the file off
/// from whoever holds it.
fn names_an_open_file(path: &Path) -> bool {
    let text = path.to_string_lossy();
    if ["/dev/stdout", "/dev/stderr", "/dev/stdin"].contains(&text.as_ref())
        || text.starts_with("/dev/fd/")
    {
        return true;
    }
    let mut parts = text.strip_prefix("/proc/").unwrap_or("").split('/');
    let pid = parts.next().unwrap_or("");
    let process = pid == "self" || pid == "thread-self" || pid.bytes().all(|b| b.is_ascii_digit());
    !pid.is_empty() && process && parts.next() == Some("fd")
}

/// Writes `bytes` to `dest` as `report_target` says: atomically to a
/// regular file, directly into a device or FIFO. Errors name `dest`.
pub fn write_report_file(dest: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    match report_target(dest)? {
        Target::Replace(path) => write_file_atomic(&path, bytes),
        Target::Stream => write_into(dest, bytes).map_err(|source| WriteError::Io {
            path: dest.to_path_buf(),
            source,
        }),
    }
}

/// Writes into a device, FIFO or open file. Appended: a log behind
/// `/dev/stdout` keeps what is already in it. Opened without blocking, so
/// that a FIFO nobody reads is an error, not a process that waits forever
/// with its report; the writes then block as usual.
fn write_into(dest: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = OpenOptions::new()
        .append(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(dest)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ENXIO) => std::io::Error::other("a FIFO that no process is reading"),
            _ => e,
        })?;
    // SAFETY: fcntl on the descriptor `file` owns, clearing one status flag.
    unsafe {
        use std::os::fd::AsRawFd;
        let fd = file.as_raw_fd();
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK);
        }
    }
    (&file).write_all(bytes)
}

/// A fresh little-endian NIfTI-1 single-file header (352 bytes with the
/// extension flag): `dims` up to 7, voxel size `pixdim`, and the affine's
/// first three rows `srow` (used for both sform and a diagonal qform).
pub fn new_header(
    dims: &[usize],
    dtype: DType,
    pixdim: &[f32],
    srow: [[f32; 4]; 3],
    descrip: &str,
) -> Vec<u8> {
    let mut h = vec![0u8; 352];
    let i16_at =
        |h: &mut Vec<u8>, off: usize, v: i16| h[off..off + 2].copy_from_slice(&v.to_le_bytes());
    let f32_at =
        |h: &mut Vec<u8>, off: usize, v: f32| h[off..off + 4].copy_from_slice(&v.to_le_bytes());
    h[0..4].copy_from_slice(&348i32.to_le_bytes());
    h[38] = b'r';
    i16_at(&mut h, 40, dims.len() as i16);
    for (i, &d) in dims.iter().enumerate().take(7) {
        i16_at(&mut h, 42 + 2 * i, d as i16);
    }
    for i in dims.len()..7 {
        i16_at(&mut h, 42 + 2 * i, 1);
    }
    i16_at(&mut h, 70, dtype.nifti_code());
    i16_at(&mut h, 72, (dtype.size() * 8) as i16);
    f32_at(&mut h, 76, 1.0); // qfac
    for (i, &p) in pixdim.iter().enumerate().take(7) {
        f32_at(&mut h, 80 + 4 * i, p);
    }
    f32_at(&mut h, 108, 352.0);
    f32_at(&mut h, 112, 1.0);
    h[123] = 2 | 8; // mm, seconds
    let d = descrip.as_bytes();
    h[148..148 + d.len().min(79)].copy_from_slice(&d[..d.len().min(79)]);
    i16_at(&mut h, 252, 1); // qform: scanner
    i16_at(&mut h, 254, 1); // sform: scanner
    for (k, off) in [268, 272, 276].into_iter().enumerate() {
        f32_at(&mut h, off, srow[k][3]);
    }
    for (row, base) in srow.iter().zip([280, 296, 312]) {
        for (j, &v) in row.iter().enumerate() {
            f32_at(&mut h, base + 4 * j, v);
        }
    }
    h[344..348].copy_from_slice(b"n+1\0");
    h
}

//! An output written by several processes at once: one image split among
//! MPI ranks (`driver::split`).
//!
//! Root creates the temp file beside the output, as every write does; each
//! rank opens that same file (`ShareWriter`) and writes its bytes at its own offset
//! (`pwrite`: no rank waits for another, and none moves a shared file
//! position); root writes what only it knows (the header, the gzip
//! trailer), syncs and renames. Whatever fails, root's guard removes the
//! temp file, so a split image is whole under its name or absent.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::write::{create_temp, io_error, Staged, TempGuard};
use super::WriteError;

/// Root's side: the temp file, removed on drop unless staged and committed.
pub struct SharedOutput {
    file: File,
    dest: PathBuf,
    guard: TempGuard,
}

impl SharedOutput {
    /// A fresh temp file beside `dest` (O_EXCL, as every output's).
    pub fn create(dest: &Path) -> Result<SharedOutput, WriteError> {
        let (file, guard) = create_temp(dest).map_err(io_error(dest))?;
        Ok(SharedOutput {
            file,
            dest: dest.to_path_buf(),
            guard,
        })
    }

    /// The temp file's path, for the other ranks (`ShareWriter`).
    pub fn temp(&self) -> &Path {
        &self.guard.path
    }

    pub fn write_at(&self, offset: u64, bytes: &[u8]) -> Result<(), WriteError> {
        self.file
            .write_all_at(bytes, offset)
            .map_err(io_error(&self.dest))
    }

    /// Every rank has written: ready for `sync` and `commit`, as any output.
    pub fn stage(self) -> Result<Staged, WriteError> {
        let bytes = self.file.metadata().map_err(io_error(&self.dest))?.len();
        Ok(Staged {
            file: self.file,
            dest: self.dest,
            bytes,
            guard: self.guard,
        })
    }
}

/// Another rank's side: root's temp file for `dest`, opened to write its
/// run at its offset. The file must exist: it is opened without O_CREAT
/// and without following a symbolic link.
pub struct ShareWriter {
    file: File,
    dest: PathBuf,
}

impl ShareWriter {
    pub fn open(temp: &Path, dest: &Path) -> Result<ShareWriter, WriteError> {
        let file = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(temp)
            .map_err(io_error(dest))?;
        Ok(ShareWriter {
            file,
            dest: dest.to_path_buf(),
        })
    }

    pub fn write_at(&self, offset: u64, bytes: &[u8]) -> Result<(), WriteError> {
        self.file
            .write_all_at(bytes, offset)
            .map_err(io_error(&self.dest))
    }

    /// Waits until this rank's bytes are on disk: on a shared file system
    /// each writer must flush its own before root renames the file.
    pub fn sync(&self) -> Result<(), WriteError> {
        self.file.sync_data().map_err(io_error(&self.dest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_land_at_their_offsets_and_a_dropped_output_leaves_nothing() {
        let dir = std::env::temp_dir().join(format!("nismooth-shared-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let dest = dir.join("a.nii");
        let out = SharedOutput::create(&dest).unwrap();
        ShareWriter::open(out.temp(), &dest)
            .unwrap()
            .write_at(4, b"world")
            .unwrap();
        out.write_at(0, b"hey ").unwrap();
        out.stage().unwrap().commit().unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"hey world");
        let dropped = SharedOutput::create(&dir.join("b.nii")).unwrap();
        let temp = dropped.temp().to_path_buf();
        drop(dropped);
        assert!(!temp.exists());
        // A rank never creates the file: a name root did not make is an error.
        assert!(ShareWriter::open(&dir.join(".gone.tmp"), &dest).is_err());
        assert!(!dir.join(".gone.tmp").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

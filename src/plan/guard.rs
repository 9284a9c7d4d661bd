//! What a report, a CSV, a job script or an estimate is never written over.
//!
//! Why one place: `run --report/--csv`, `sbatch --write` and `estimate
//! --json/--sbatch` each checked a part of it, and every part one of them
//! left out was a way to lose data: the voxel file of a `.hdr/.img` input,
//! the `--list` file, a raw BIDS dataset's sidecars and description, the
//! derivative dataset's own sidecars, the study an estimate reads. The
//! inputs themselves, the outputs and the state folder are checked where
//! the tasks are known (`check_reports`, sbatch's `script_target`), with
//! `is_input` for an input and its pair's voxels.

use std::path::{Path, PathBuf};

use super::identity::{resolve_future, FileId, Place};

/// A derivative dataset's own files at its top, beside the `sub-*` folders.
const DATASET_FILES: [&str; 9] = [
    "dataset_description.json",
    "README",
    "README.md",
    "README.rst",
    "README.txt",
    "CHANGES",
    "LICENSE",
    "participants.tsv",
    "participants.json",
];

/// The files and folders a job reads or owns besides its images.
#[derive(Clone, Debug, Default)]
pub struct Guard {
    /// Files read besides the images, each with what it is (`--list`, `--from`).
    pub read: Vec<(&'static str, PathBuf)>,
    /// Folders nothing is written into (a BIDS dataset being read).
    pub trees: Vec<PathBuf>,
    /// A BIDS derivative dataset being written: its dataset files and its
    /// participants' folders are its own.
    pub dataset: Option<PathBuf>,
}

impl Guard {
    /// Why `path` may not be written, or None.
    pub fn refuses(&self, path: &Path) -> Option<String> {
        let place = Place::of(path);
        if let Some((what, f)) = self.read.iter().find(|(_, f)| same_file(&place, f)) {
            return Some(format!("it is {what} {}, which the job reads", f.display()));
        }
        let real = resolve_future(path);
        if let Some(tree) = self
            .trees
            .iter()
            .find(|t| real.starts_with(resolve_future(t)))
        {
            return Some(format!(
                "it is inside the BIDS dataset {}, which nothing writes into",
                tree.display()
            ));
        }
        let dataset = self.dataset.as_ref()?;
        let inside = real.strip_prefix(resolve_future(dataset)).ok()?;
        let first = inside.components().next()?.as_os_str().to_string_lossy();
        let owned = first.starts_with("sub-") || DATASET_FILES.contains(&first.as_ref());
        owned.then(|| {
            format!(
                "it is a file of the derivative dataset {} ({first}), which the run writes",
                dataset.display()
            )
        })
    }
}

/// Whether `place` is the file `path` (through any link), or the same name.
fn same_file(place: &Place, path: &Path) -> bool {
    place.same(&Place::of(path))
}

/// Whether `place` is the image `input`, or the voxel file of a `.hdr` pair.
pub fn is_input(place: &Place, input: &Path) -> bool {
    let same = |p: &Path| place.file.is_some() && place.file == FileId::of(p);
    same(input) || crate::io::pair_data_path(input).is_some_and(|d| same(&d))
}

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
    /// Folders nothing is written into, each with what it is (a BIDS
    /// dataset being read, a study's images and runs).
    pub trees: Vec<(&'static str, PathBuf)>,
    /// BIDS derivative datasets being written (one, or where a merged
    /// run's may be now): their dataset files and participants' folders
    /// are their own.
    pub datasets: Vec<PathBuf>,
}

impl Guard {
    /// Why `path` may not be written, or None.
    pub fn refuses(&self, path: &Path) -> Option<String> {
        let place = Place::of(path);
        if let Some((what, f)) = self.read.iter().find(|(_, f)| same_file(&place, f)) {
            return Some(format!("it is {what} {}, which the job reads", f.display()));
        }
        let real = resolve_future(path);
        // A derivative inside the dataset it comes from (BIDS's own
        // `derivatives/` layout) is written into: its rule is the dataset's.
        let in_output = (self.datasets.iter()).any(|d| real.starts_with(resolve_future(d)));
        let inside = |(_, t): &&(&str, PathBuf)| real.starts_with(resolve_future(t));
        if let Some((what, tree)) = self.trees.iter().find(inside).filter(|_| !in_output) {
            return Some(format!(
                "it is inside {what} {}, which nothing writes into",
                tree.display()
            ));
        }
        self.datasets.iter().find_map(|dataset| {
            let inside = real.strip_prefix(resolve_future(dataset)).ok()?;
            let first = inside.components().next()?.as_os_str().to_string_lossy();
            let owned = first.starts_with("sub-") || DATASET_FILES.contains(&first.as_ref());
            owned.then(|| {
                format!(
                    "it is a file of the derivative dataset {} ({first}), which the run writes",
                    dataset.display()
                )
            })
        })
    }
}

/// Why no report, CSV, script or estimate may be written at `path`,
/// whatever the job, or None: they are text, never an image; and a run's
/// state folder (its journals and lock) is nismooth's own. A report whose
/// paths are relative to a folder it does not record (a journal, an old
/// report) cannot tell its run's outputs from elsewhere: these rules need
/// no folder. Checked after the job's own rules, whose words are closer.
pub fn never_text(path: &Path) -> Option<String> {
    let img = (path.file_name().map(|n| n.to_string_lossy().to_lowercase()))
        .is_some_and(|n| n.ends_with(".img") || n.ends_with(".img.gz"));
    if super::is_nifti_name(path) || img {
        return Some("it has a NIfTI image's name, and what is written here is text".into());
    }
    let real = resolve_future(path);
    if real.components().any(|c| c.as_os_str() == super::STATE_DIR) {
        return Some(format!(
            "it is inside a run's {} folder (its journals and lock)",
            super::STATE_DIR
        ));
    }
    None
}

/// Whether `place` is the file `path` (through any link), or the same name.
fn same_file(place: &Place, path: &Path) -> bool {
    place.same(&Place::of(path))
}

/// Whether `place` is the image `input` or the other file of its pair: the
/// voxels of a `.hdr`, or the header of an `.img` (a run fails an input so
/// named, but the header is still the user's).
pub fn is_input(place: &Place, input: &Path) -> bool {
    let same = |p: &Path| place.file.is_some() && place.file == FileId::of(p);
    same(input)
        || crate::io::pair_data_path(input).is_some_and(|d| same(&d))
        || pair_headers(input).iter().any(|h| same(h))
}

/// For an `.img` or `.img.gz` name, the headers a pair may have beside it.
fn pair_headers(input: &Path) -> Vec<PathBuf> {
    let name = input.file_name().unwrap_or_default().to_string_lossy();
    let lower = name.to_lowercase();
    let cut = match () {
        _ if lower.ends_with(".img.gz") => 7,
        _ if lower.ends_with(".img") => 4,
        _ => return Vec::new(),
    };
    let Some(stem) = name.get(..name.len().saturating_sub(cut)) else {
        return Vec::new();
    };
    [".hdr", ".hdr.gz", ".HDR"]
        .iter()
        .map(|ext| input.with_file_name(format!("{stem}{ext}")))
        .collect()
}

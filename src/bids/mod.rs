//! BIDS datasets in, a BIDS derivatives dataset out (`nismooth bids`).
//!
//! A raw dataset (`sub-*/[ses-*/]anat|func/*_T1w.nii.gz`) or a derivatives
//! one (fMRIPrep's `…_space-…_desc-preproc_bold.nii.gz`) is searched for the
//! images a query selects; each output keeps its input's place and entities
//! in the order the input gave them, with `desc-LABEL` as the last entity
//! (an existing `desc-` replaced). The images then run through the same
//! driver as `nismooth run`; `sidecar` writes the metadata around them.
//! Participants are independent, so a job array shares them, not images.

pub mod sidecar;

use std::path::{Path, PathBuf};

use crate::error::UsageError;
use crate::plan::{is_nifti_name, Input};

/// What to smooth in a dataset, and the label of the outputs.
#[derive(Clone, Debug)]
pub struct Query {
    pub root: PathBuf,
    /// Labels without `sub-`; empty: every participant.
    pub participants: Vec<String>,
    /// Labels without `ses-`; empty: every session (and none).
    pub sessions: Vec<String>,
    pub datatypes: Vec<String>,
    pub suffixes: Vec<String>,
    /// The outputs' `desc-` label.
    pub desc: String,
}

/// A BIDS file name taken apart: `key-value` entities in their order, the
/// suffix, and the extension.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Name {
    pub entities: Vec<(String, String)>,
    pub suffix: String,
    pub extension: String,
}

impl Name {
    /// `sub-01_ses-02_task-rest_bold.nii.gz`; None when it is not a BIDS name.
    pub fn parse(file_name: &str) -> Option<Name> {
        let dot = file_name.find('.')?;
        let (stem, extension) = file_name.split_at(dot);
        let mut parts: Vec<&str> = stem.split('_').collect();
        let suffix = parts.pop()?;
        if suffix.is_empty() || suffix.contains('-') || !label_ok(suffix) {
            return None;
        }
        let entities = parts
            .into_iter()
            .map(|p| {
                let (k, v) = p.split_once('-')?;
                (label_ok(k) && label_ok(v)).then(|| (k.to_string(), v.to_string()))
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Name {
            entities,
            suffix: suffix.to_string(),
            extension: extension.to_string(),
        })
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.entities
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The same name with `desc-LABEL` as its last entity.
    pub fn with_desc(&self, label: &str) -> Name {
        let mut entities: Vec<_> = self
            .entities
            .iter()
            .filter(|(k, _)| k != "desc")
            .cloned()
            .collect();
        entities.push(("desc".into(), label.into()));
        Name {
            entities,
            ..self.clone()
        }
    }

    pub fn render(&self) -> String {
        let mut s: Vec<String> = self
            .entities
            .iter()
            .map(|(k, v)| format!("{k}-{v}"))
            .collect();
        s.push(self.suffix.clone());
        s.join("_") + &self.extension
    }
}

/// Entity keys, values and suffixes are alphanumeric in BIDS.
pub fn label_ok(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric())
}

fn or_all(labels: &[String]) -> String {
    if labels.is_empty() {
        "all".into()
    } else {
        labels.join(" ")
    }
}

/// The longest `desc-` label taken from the kernel's value: a FWHM of 1e-300
/// would otherwise make a 300-digit label and names no file system takes.
pub const MAX_DESC: usize = 40;

/// A label given as `sub-01` or `01`: the part BIDS calls the label (an
/// empty `key` takes the value as it is).
pub fn bare<'a>(label: &'a str, key: &str) -> &'a str {
    if key.is_empty() {
        return label;
    }
    label
        .strip_prefix(key)
        .and_then(|l| l.strip_prefix('-'))
        .unwrap_or(label)
}

/// The folders below `dir` whose names are `key-LABEL`, sorted, with labels.
fn labelled(dir: &Path, key: &str) -> Result<Vec<(String, PathBuf)>, UsageError> {
    let rd = std::fs::read_dir(dir).map_err(|source| UsageError::Unreadable {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut found: Vec<(String, PathBuf)> = rd
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let label = name.strip_prefix(key)?.strip_prefix('-')?.to_string();
            label_ok(&label).then_some((label, e.path()))
        })
        .collect();
    found.sort();
    Ok(found)
}

/// A BIDS image is one file: `sub-01_T1w.nii` beside `sub-01_T1w.nii.gz`
/// is the same image twice (the validator's error), and both would share
/// one sidecar that names only one of them.
fn one_image_per_name(inputs: &[Input]) -> Result<(), UsageError> {
    let mut seen: std::collections::HashMap<PathBuf, &Path> = std::collections::HashMap::new();
    for input in inputs {
        // A BIDS name's extension starts at its first dot.
        let name = input.path.file_name().unwrap_or_default().to_string_lossy();
        let stem = input
            .path
            .with_file_name(name.split('.').next().unwrap_or_default());
        if let Some(first) = seen.insert(stem, &input.path) {
            return Err(UsageError::Bids(format!(
                "{} and {} are one image twice (BIDS allows one file per name): keep one",
                first.display(),
                input.path.display()
            )));
        }
    }
    Ok(())
}

impl Query {
    /// Two kernels under one `desc-` label conflict before any work: an
    /// output of `found` (in `outdir`) whose sidecar records other
    /// `settings`, or none, is refused, naming the differing setting.
    pub fn check_kernel_conflicts(
        &self,
        found: &[Input],
        outdir: &Path,
        settings: &serde_json::Value,
    ) -> Result<(), UsageError> {
        let outputs: Vec<PathBuf> = found
            .iter()
            .filter_map(|i| Some(outdir.join(&i.subdir).join(i.name.as_ref()?)))
            .collect();
        sidecar::check_kernel_conflicts(outputs.iter().map(PathBuf::as_path), settings)
            .map_err(UsageError::Bids)
    }

    /// The images the query selects, each with its output's folder and name
    /// and its participant (the unit a job array shares).
    pub fn discover(&self) -> Result<Vec<Input>, UsageError> {
        check_dataset(&self.root).map_err(UsageError::Bids)?;
        let subjects = labelled(&self.root, "sub")?;
        let wanted: Vec<&str> = self.participants.iter().map(|l| bare(l, "sub")).collect();
        if let Some(missing) = wanted
            .iter()
            .find(|w| !subjects.iter().any(|(l, _)| l == *w))
        {
            return Err(UsageError::Bids(format!(
                "participant {missing} is not in {}",
                self.root.display()
            )));
        }
        let mut out = Vec::new();
        for (label, dir) in subjects {
            if wanted.is_empty() || wanted.contains(&label.as_str()) {
                self.subject(&label, &dir, &mut out)?;
            }
        }
        if out.is_empty() {
            return Err(UsageError::Bids(format!(
                "no image in {} matches: participants {}, sessions {}, datatypes {}, suffixes {}",
                self.root.display(),
                or_all(&self.participants),
                or_all(&self.sessions),
                self.datatypes.join(" "),
                self.suffixes.join(" ")
            )));
        }
        one_image_per_name(&out)?;
        // Metadata that cannot be read is refused now, not lost later.
        for input in &out {
            sidecar::inherited(&self.root, &input.path).map_err(UsageError::Bids)?;
        }
        Ok(out)
    }

    /// One participant's images: in each session folder (or none), in each datatype folder.
    fn subject(&self, label: &str, dir: &Path, out: &mut Vec<Input>) -> Result<(), UsageError> {
        let sessions = labelled(dir, "ses")?;
        let wanted: Vec<&str> = self.sessions.iter().map(|l| bare(l, "ses")).collect();
        let mut folders = vec![dir.to_path_buf()];
        folders.extend(
            sessions
                .into_iter()
                .filter(|(l, _)| wanted.is_empty() || wanted.contains(&l.as_str()))
                .map(|(_, p)| p),
        );
        // Without sessions in the query, the subject's own folder counts too.
        if !wanted.is_empty() {
            folders.remove(0);
        }
        for folder in folders {
            for datatype in &self.datatypes {
                let d = folder.join(datatype);
                if d.is_dir() {
                    self.images_in(&d, label, out)?;
                }
            }
        }
        Ok(())
    }

    /// The selected NIfTI images of one datatype folder, sorted.
    fn images_in(&self, dir: &Path, subject: &str, out: &mut Vec<Input>) -> Result<(), UsageError> {
        let rd = std::fs::read_dir(dir).map_err(|source| UsageError::Unreadable {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut files: Vec<PathBuf> = rd
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| is_nifti_name(p) && !p.is_dir())
            .collect();
        files.sort();
        let subdir = dir.strip_prefix(&self.root).unwrap_or(dir).to_path_buf();
        for path in files {
            let file_name = path.file_name().unwrap_or_default().to_string_lossy();
            let Some(name) = Name::parse(&file_name) else {
                log::info!("skipped {}: not a BIDS file name", path.display());
                continue;
            };
            let selected = self.suffixes.contains(&name.suffix)
                && name.get("sub") == Some(subject)
                && !matches!(name.extension.as_str(), ".hdr" | ".hdr.gz");
            if selected {
                out.push(Input {
                    name: Some(name.with_desc(&self.desc).render().into()),
                    group: Some(subject.to_string()),
                    subdir: subdir.clone(),
                    path,
                });
            }
        }
        Ok(())
    }
}

/// The default `desc-` label, from the kernel: `smooth6mm` for a FWHM of
/// 6 mm, `smooth4x4x8mm` per axis, `smooth2p5mm`, `smoothsigma2vox` for
/// σ = 2 voxels, `smoothsigma2mm` for σ in mm.
pub fn default_desc(values: [f64; 3], units: crate::filter::Units) -> String {
    use crate::filter::Units;
    let number = |v: f64| format!("{v}").replace('.', "p").replace('-', "");
    let values = if values.iter().all(|v| *v == values[0]) {
        number(values[0])
    } else {
        values.map(number).join("x")
    };
    match units {
        Units::FwhmMm => format!("smooth{values}mm"),
        Units::Mm => format!("smoothsigma{values}mm"),
        Units::Voxel => format!("smoothsigma{values}vox"),
    }
}

/// Why `root` is not a BIDS dataset we can read, if it is not: a path that
/// does not exist is said to, before anything about BIDS.
pub fn check_dataset(root: &Path) -> Result<(), String> {
    let shown = root.display();
    match std::fs::metadata(root) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(format!("{shown} does not exist"))
        }
        Err(e) => Err(format!("{shown}: {e}")),
        Ok(m) if !m.is_dir() => Err(format!("{shown} is not a folder (a BIDS dataset is one)")),
        Ok(_) if !root.join("dataset_description.json").is_file() => Err(format!(
            "{shown} is not a BIDS dataset: it has no dataset_description.json"
        )),
        Ok(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::Units;

    #[test]
    fn names_keep_their_entity_order_and_take_desc_last() {
        let n = Name::parse("sub-01_ses-2_task-rest_run-1_bold.nii.gz").unwrap();
        assert_eq!(n.suffix, "bold");
        assert_eq!(n.get("task"), Some("rest"));
        assert_eq!(
            n.with_desc("smooth6mm").render(),
            "sub-01_ses-2_task-rest_run-1_desc-smooth6mm_bold.nii.gz"
        );
        let prep =
            Name::parse("sub-01_task-rest_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz")
                .unwrap();
        assert_eq!(
            prep.with_desc("smooth6mm").render(),
            "sub-01_task-rest_space-MNI152NLin2009cAsym_desc-smooth6mm_bold.nii.gz"
        );
        assert!(Name::parse("notes.nii.gz").is_some_and(|n| n.entities.is_empty()));
        assert!(Name::parse("sub-01_task-re_st_bold.nii").is_none());
        assert!(Name::parse("sub-01_bold_x-1.nii").is_none());
    }

    #[test]
    fn default_labels_are_alphanumeric() {
        assert_eq!(default_desc([6.0; 3], Units::FwhmMm), "smooth6mm");
        assert_eq!(default_desc([2.5; 3], Units::FwhmMm), "smooth2p5mm");
        assert_eq!(
            default_desc([4.0, 4.0, 8.0], Units::FwhmMm),
            "smooth4x4x8mm"
        );
        assert_eq!(default_desc([2.0; 3], Units::Voxel), "smoothsigma2vox");
        for l in ["smooth2p5mm", "smooth4x4x8mm"] {
            assert!(label_ok(l));
        }
    }
}

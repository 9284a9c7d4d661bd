//! From what the user named to a list of tasks, refusing unsafe runs up front.
//!
//! Discovery expands directories and list files; naming maps each input to its
//! output; the refusals (no inputs, an output directory that holds an input,
//! two inputs writing the same output) happen here, before any image is read,
//! so a bad command line costs nothing and never touches a file.

pub mod schedule;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::error::UsageError;
use crate::io::OutputFormat;

/// One image to process.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Task {
    /// Position in the discovered list (stable across ranks and runs).
    pub index: usize,
    pub input: PathBuf,
    pub output: PathBuf,
}

/// The names nismooth reads: single files and the headers of pairs (an
/// `.img` is found from its `.hdr`).
const NIFTI_SUFFIXES: [&str; 4] = [".nii.gz", ".nii", ".hdr.gz", ".hdr"];

pub fn is_nifti_name(p: &Path) -> bool {
    nifti_suffix_len(p) > 0
}

fn nifti_suffix_len(p: &Path) -> usize {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    NIFTI_SUFFIXES
        .iter()
        .find(|s| name.ends_with(*s))
        .map_or(0, |s| s.len())
}

pub fn is_gz_name(p: &Path) -> bool {
    p.file_name()
        .map(|n| n.to_string_lossy().to_lowercase().ends_with(".gz"))
        .unwrap_or(false)
}

/// Expands directories (their *.nii, *.nii.gz and *.hdr[.gz], sorted) and the list file.
/// Plain file arguments are kept as given, even if missing: a missing file is
/// that image's error, reported with the others processed.
pub fn discover(inputs: &[PathBuf], list: Option<&Path>) -> Result<Vec<PathBuf>, UsageError> {
    let mut out = Vec::new();
    let mut named: Vec<PathBuf> = inputs.to_vec();
    if let Some(list) = list {
        let text = std::fs::read_to_string(list).map_err(|source| UsageError::Unreadable {
            path: list.to_path_buf(),
            source,
        })?;
        let base = list.parent().unwrap_or(Path::new(""));
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("").trim();
            if !line.is_empty() {
                let p = PathBuf::from(line);
                named.push(if p.is_relative() { base.join(p) } else { p });
            }
        }
    }
    for p in named {
        if p.is_dir() {
            let rd = std::fs::read_dir(&p).map_err(|source| UsageError::Unreadable {
                path: p.clone(),
                source,
            })?;
            let mut found: Vec<PathBuf> = rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.is_file() && is_nifti_name(f))
                .collect();
            found.sort();
            out.extend(found);
        } else {
            out.push(p);
        }
    }
    Ok(out)
}

/// The output path of `input`: its file name in `outdir`, with the extension of `format`.
pub fn output_path(input: &Path, outdir: &Path, format: Option<OutputFormat>) -> PathBuf {
    let name = input
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem_len = name.len() - nifti_suffix_len(input);
    let format = format.unwrap_or(if is_gz_name(input) {
        OutputFormat::NiiGz
    } else {
        OutputFormat::Nii
    });
    outdir.join(format!("{}{}", &name[..stem_len], format.extension()))
}

/// Each task's cost for the schedules: its voxel count from the header, read
/// on `workers` threads (headers of 40 000 files on a shared file system take
/// a while one at a time). An unreadable header costs 0: the image will fail
/// fast on whichever rank gets it, and its error is reported there.
pub fn costs(tasks: &[Task], workers: usize) -> Vec<u64> {
    let mut costs = vec![0u64; tasks.len()];
    let chunk = tasks.len().div_ceil(workers.max(1)).max(1);
    std::thread::scope(|s| {
        for (ts, cs) in tasks.chunks(chunk).zip(costs.chunks_mut(chunk)) {
            s.spawn(move || {
                for (t, c) in ts.iter().zip(cs) {
                    *c = crate::io::read_header_info(&t.input)
                        .map(|h| h.voxels())
                        .unwrap_or(0);
                }
            });
        }
    });
    costs
}

fn canonical_dir(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Builds the task list and applies every refusal. Creates `outdir`.
pub fn make_tasks(
    inputs: Vec<PathBuf>,
    outdir: &Path,
    format: Option<OutputFormat>,
) -> Result<Vec<Task>, UsageError> {
    if inputs.is_empty() {
        return Err(UsageError::NoInputs);
    }
    let out_canon = canonical_dir(outdir);
    let mut seen: HashMap<PathBuf, PathBuf> = HashMap::new();
    let mut tasks = Vec::with_capacity(inputs.len());
    for (index, input) in inputs.into_iter().enumerate() {
        let parent = input
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if canonical_dir(parent) == out_canon {
            return Err(UsageError::OutdirHoldsInput {
                outdir: outdir.to_path_buf(),
                input,
            });
        }
        let output = output_path(&input, outdir, format);
        if let Some(first) = seen.get(&output) {
            return Err(UsageError::DuplicateOutput {
                first: first.clone(),
                second: input,
                name: output.file_name().unwrap().to_string_lossy().into_owned(),
            });
        }
        seen.insert(output.clone(), input.clone());
        tasks.push(Task {
            index,
            input,
            output,
        });
    }
    std::fs::create_dir_all(outdir).map_err(|source| UsageError::Outdir {
        path: outdir.to_path_buf(),
        source,
    })?;
    probe_writable(outdir)?;
    Ok(tasks)
}

/// Creates and removes a file in `outdir`, so that a read-only or full
/// directory is one clear refusal up front rather than an error per image.
fn probe_writable(outdir: &Path) -> Result<(), UsageError> {
    let probe = outdir.join(format!(".nismooth-probe-{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"nismooth"))
        .map_err(|source| {
            let _ = std::fs::remove_file(&probe);
            UsageError::NotWritable {
                path: outdir.to_path_buf(),
                source,
            }
        })?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Removes the temp files a killed run left for these tasks' outputs (only
/// ours: `.NAME.nismooth-PID-N.tmp` for an output NAME of this plan).
/// Returns how many went.
pub fn remove_stale_temps(tasks: &[Task], outdir: &Path) -> usize {
    let names: std::collections::HashSet<String> = tasks
        .iter()
        .filter_map(|t| t.output.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .collect();
    let Ok(dir) = std::fs::read_dir(outdir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in dir.filter_map(Result::ok) {
        let file = entry.file_name().to_string_lossy().into_owned();
        let ours = crate::io::temp_owner(&file).is_some_and(|dest| names.contains(dest));
        if ours && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_names_follow_format() {
        let o = Path::new("/out");
        assert_eq!(
            output_path(Path::new("/a/x.nii.gz"), o, None),
            Path::new("/out/x.nii.gz")
        );
        assert_eq!(
            output_path(Path::new("/a/x.nii"), o, None),
            Path::new("/out/x.nii")
        );
        assert_eq!(
            output_path(Path::new("/a/x.nii.gz"), o, Some(OutputFormat::Nii)),
            Path::new("/out/x.nii")
        );
        assert_eq!(
            output_path(Path::new("x.NII"), o, Some(OutputFormat::NiiGz)),
            Path::new("/out/x.nii.gz")
        );
        // A pair becomes a single file.
        assert_eq!(
            output_path(Path::new("/a/p.hdr"), o, None),
            Path::new("/out/p.nii")
        );
        assert_eq!(
            output_path(Path::new("/a/p.HDR.gz"), o, None),
            Path::new("/out/p.nii.gz")
        );
    }

    #[test]
    fn refusals() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        assert!(matches!(
            make_tasks(vec![], &b, None),
            Err(UsageError::NoInputs)
        ));
        let r = make_tasks(vec![a.join("x.nii")], &a, None);
        assert!(matches!(r, Err(UsageError::OutdirHoldsInput { .. })));
        let r = make_tasks(
            vec![a.join("x.nii"), b.join("x.nii")],
            &dir.path().join("o"),
            None,
        );
        assert!(matches!(r, Err(UsageError::DuplicateOutput { .. })));
        // x.nii and x.nii.gz collide once the format is forced.
        let r = make_tasks(
            vec![a.join("x.nii"), b.join("x.nii.gz")],
            &dir.path().join("o"),
            Some(OutputFormat::NiiGz),
        );
        assert!(matches!(r, Err(UsageError::DuplicateOutput { .. })));
        assert!(
            !dir.path().join("o").exists(),
            "refused runs create nothing"
        );
    }

    #[test]
    fn discovery_sorts_directories_and_reads_lists() {
        let dir = tempfile::tempdir().unwrap();
        for n in ["b.nii.gz", "a.nii", "notes.txt", "c.nii"] {
            std::fs::write(dir.path().join(n), b"x").unwrap();
        }
        let found = discover(&[dir.path().to_path_buf()], None).unwrap();
        let names: Vec<_> = found
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap())
            .collect();
        assert_eq!(names, ["a.nii", "b.nii.gz", "c.nii"]);
        let list = dir.path().join("list.txt");
        std::fs::write(&list, "# header\na.nii\n\n  c.nii  # trailing\n").unwrap();
        let found = discover(&[], Some(&list)).unwrap();
        assert_eq!(
            found,
            vec![dir.path().join("a.nii"), dir.path().join("c.nii")]
        );
    }
}

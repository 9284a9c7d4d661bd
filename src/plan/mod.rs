//! From what the user named to a list of tasks, refusing unsafe runs up front.
//!
//! Discovery expands directories and list files; naming maps each input to its
//! output; the refusals (no inputs, an output directory that holds an input,
//! two inputs writing the same output) happen here, before any image is read,
//! so a bad command line costs nothing and never touches a file.

pub mod array;
pub mod discover;
pub mod guard;
pub mod identity;
pub mod lock;
pub mod schedule;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub use discover::{Input, Sources, Written};
pub use guard::Guard;

use crate::error::UsageError;
use crate::io::OutputFormat;
use identity::{FileId, Place};

/// The folder inside OUTDIR where nismooth keeps its state: the lock and the
/// per-rank journals. Outputs never go there.
pub const STATE_DIR: &str = ".nismooth";

/// One image to process.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Task {
    /// Position in the discovered list (stable across ranks and runs).
    pub index: usize,
    /// File names are bytes on Unix, not always UTF-8: they travel as bytes.
    #[serde(with = "bytes_path")]
    pub input: PathBuf,
    #[serde(with = "bytes_path")]
    pub output: PathBuf,
}

/// Serialises a path as a string when it is UTF-8, else as its bytes, so
/// that any name the file system allows crosses the broadcast intact.
mod bytes_path {
    use std::ffi::OsString;
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    use std::path::{Path, PathBuf};

    pub fn serialize<S: serde::Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
        match p.to_str() {
            Some(text) => s.serialize_str(text),
            None => s.serialize_bytes(p.as_os_str().as_bytes()),
        }
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Form {
            Text(String),
            Bytes(Vec<u8>),
        }
        Ok(match <Form as serde::Deserialize>::deserialize(d)? {
            Form::Text(t) => PathBuf::from(t),
            Form::Bytes(b) => PathBuf::from(OsString::from_vec(b)),
        })
    }
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

/// The output path of `input`: its file name in `outdir`, with the extension of `format`.
pub fn output_path(input: &Path, outdir: &Path, format: Option<OutputFormat>) -> PathBuf {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let name = input.file_name().map(|n| n.as_bytes()).unwrap_or_default();
    let stem = &name[..name.len() - nifti_suffix_len(input)];
    let format = format.unwrap_or(if is_gz_name(input) {
        OutputFormat::NiiGz
    } else {
        OutputFormat::Nii
    });
    let mut out = stem.to_vec();
    out.extend_from_slice(format.extension().as_bytes());
    outdir.join(std::ffi::OsString::from_vec(out))
}

/// Each task's cost for the schedules: its voxel count from the header, read
/// on `workers` threads (headers of 40 000 files on a shared file system take
/// a while one at a time). An unreadable header costs 0: the image will fail
/// fast on whichever rank gets it, and its error is reported there.
pub fn costs(tasks: &[Task], workers: usize) -> Vec<u64> {
    sizes(tasks, workers).iter().map(|s| s.voxels).collect()
}

/// What a task's header says of its size: voxels (the schedules' cost) and
/// what one pipeline slot holds of it in memory (`resources::held_bytes`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Size {
    pub voxels: u64,
    pub held_bytes: u64,
}

/// Each task's `Size`, headers read on `workers` threads; an unreadable
/// header is size 0.
pub fn sizes(tasks: &[Task], workers: usize) -> Vec<Size> {
    let mut sizes = vec![Size::default(); tasks.len()];
    let chunk = tasks.len().div_ceil(workers.max(1)).max(1);
    std::thread::scope(|s| {
        for (ts, cs) in tasks.chunks(chunk).zip(sizes.chunks_mut(chunk)) {
            s.spawn(move || {
                for (t, c) in ts.iter().zip(cs) {
                    if let Ok(h) = crate::io::read_header_info(&t.input) {
                        *c = Size {
                            voxels: h.voxels(),
                            held_bytes: crate::resources::held_bytes(
                                h.memory_bytes(),
                                h.shape.volumes,
                            ),
                        };
                    }
                }
            });
        }
    });
    sizes
}

/// The folders an input's bytes live in: the one it is named in, and where
/// its symlink (and a pair's `.img`) really points.
fn input_folders(input: &Path) -> Vec<FileId> {
    let folder = |p: &Path| {
        p.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf()
    };
    let mut files = vec![input.to_path_buf()];
    files.extend(crate::io::pair_data_path(input));
    let mut ids = Vec::new();
    for f in files {
        ids.extend(FileId::of(&folder(&f)));
        if let Ok(real) = std::fs::canonicalize(&f) {
            ids.extend(FileId::of(&folder(&real)));
        }
    }
    ids
}

/// The report files a run will write (`--report`, `--csv`), named by their flag.
pub type ReportFiles<'a> = [(&'static str, &'a Path)];

/// Builds the task list and applies every refusal. Creates `outdir`, and
/// removes again what it created when a later refusal stops the run.
pub fn make_tasks(
    inputs: Vec<Input>,
    outdir: &Path,
    format: Option<OutputFormat>,
    reports: &ReportFiles,
    guard: &Guard,
) -> Result<Vec<Task>, UsageError> {
    let tasks = plan_tasks(inputs, outdir, format)?;
    let created = create_outdir(outdir)?;
    let checked = probe_writable(outdir)
        .and_then(|()| check_reports(reports, &tasks, outdir, guard))
        .and_then(|()| create_subfolders(&tasks, outdir));
    if let (Err(_), Some(top)) = (&checked, created) {
        // Only empty folders go: what we made, from OUTDIR up to the top one.
        for folder in outdir.ancestors() {
            let _ = std::fs::remove_dir(folder);
            if folder == top {
                break;
            }
        }
    }
    checked.map(|()| tasks)
}

/// The one task of a run whose `-o` names an output file, as fslmaths and
/// niimath take it: exactly one image, written to `outdir/name` (the
/// extension gives the container). The folder must exist: a name that ends
/// in `.nii.gz` is never made into a folder. Unlike OUTDIR, the folder may
/// hold the input (the file is named, nothing else is written beside it
/// but the run's state folder), but the output is never the input.
pub fn file_task(
    inputs: Vec<Input>,
    outdir: &Path,
    name: &std::ffi::OsStr,
    reports: &ReportFiles,
    guard: &Guard,
) -> Result<Vec<Task>, UsageError> {
    let output = outdir.join(name);
    let [input] = <[Input; 1]>::try_from(inputs).map_err(|all| UsageError::OutputNamesAFile {
        output: output.clone(),
        images: all.len(),
    })?;
    if !outdir.as_os_str().is_empty() && !outdir.is_dir() {
        return Err(UsageError::NoOutputFolder {
            output,
            folder: outdir.to_path_buf(),
        });
    }
    let same = |a: &Path, b: &Path| FileId::of(a).is_some() && FileId::of(a) == FileId::of(b);
    let data = crate::io::pair_data_path(&input.path);
    if same(&output, &input.path) || data.is_some_and(|d| same(&output, &d)) {
        return Err(UsageError::OutputIsInput(output));
    }
    if let Some(what) = crate::io::special_file(&output) {
        return Err(UsageError::SpecialOutput { output, what });
    }
    let tasks = vec![Task {
        index: 0,
        input: input.path,
        output,
    }];
    let folder = if outdir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        outdir
    };
    probe_writable(folder).and_then(|()| check_reports(reports, &tasks, folder, guard))?;
    Ok(tasks)
}

/// The task list and the refusals that need nothing on disk: no output
/// folder that holds an input or leaves OUTDIR, no output over a special
/// file, no two inputs with one output. Creates nothing, so `sbatch`
/// refuses what the run would, before the job waits in a queue.
pub fn plan_tasks(
    inputs: Vec<Input>,
    outdir: &Path,
    format: Option<OutputFormat>,
) -> Result<Vec<Task>, UsageError> {
    if inputs.is_empty() {
        return Err(UsageError::NoInputs);
    }
    // Each output folder as it will be once created is compared by identity
    // with the folders of all inputs (as named, and through symlinks): in a
    // tree, one image's output folder may hold another image.
    let mut input_folder: HashMap<FileId, PathBuf> = HashMap::new();
    for found in &inputs {
        for id in input_folders(&found.path) {
            input_folder.entry(id).or_insert_with(|| found.path.clone());
        }
    }
    // Each subfolder's identity and real path: outputs are told apart by
    // where they really go, so that a symlinked subfolder of OUTDIR
    // (`out/a -> b`) cannot give two inputs one file.
    let mut folder_ids: HashMap<PathBuf, (Option<FileId>, PathBuf)> = HashMap::new();
    let mut seen: HashMap<PathBuf, PathBuf> = HashMap::new();
    let real_outdir = identity::resolve_future(outdir);
    let mut tasks = Vec::with_capacity(inputs.len());
    for (index, found) in inputs.into_iter().enumerate() {
        let Input {
            path: input,
            subdir,
            name,
            ..
        } = found;
        let folder = outdir.join(&subdir);
        if !folder_ids.contains_key(&subdir) {
            inside_outdir(&folder, &subdir, outdir, &real_outdir)?;
        }
        let (out_id, real_folder) = folder_ids.entry(subdir).or_insert_with(|| {
            let real = identity::resolve_future(&folder);
            (FileId::of(&real), real)
        });
        let out_id = *out_id;
        if let Some(held) = out_id.and_then(|id| input_folder.get(&id)) {
            return Err(UsageError::OutdirHoldsInput {
                outdir: folder,
                input: held.clone(),
            });
        }
        let output = output_path(
            name.as_ref().map_or(&input, |n| Path::new(n)),
            &folder,
            format,
        );
        if let Some(what) = crate::io::special_file(&output) {
            return Err(UsageError::SpecialOutput { output, what });
        }
        let real_output = real_folder.join(output.file_name().unwrap_or_default());
        if let Some(first) = seen.get(&real_output) {
            return Err(UsageError::DuplicateOutput {
                first: first.clone(),
                second: input,
                name: output
                    .strip_prefix(outdir)
                    .unwrap_or(&output)
                    .display()
                    .to_string(),
            });
        }
        seen.insert(real_output, input.clone());
        tasks.push(Task {
            index,
            input,
            output,
        });
    }
    Ok(tasks)
}

/// An output folder must stay inside OUTDIR once symlinks are resolved: a
/// link planted inside OUTDIR (`sub-01/anat -> ../../raw/sub-02/anat`) or a
/// `..` in a folder's name would put outputs, and the files beside them,
/// somewhere the user never named.
fn inside_outdir(
    folder: &Path,
    subdir: &Path,
    outdir: &Path,
    real_outdir: &Path,
) -> Result<(), UsageError> {
    let plain = subdir
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)));
    if plain && identity::resolve_future(folder).starts_with(real_outdir) {
        return Ok(());
    }
    Err(UsageError::OutsideOutdir {
        folder: folder.to_path_buf(),
        outdir: outdir.to_path_buf(),
    })
}

/// The folders below OUTDIR that a tree's outputs go to.
fn create_subfolders(tasks: &[Task], outdir: &Path) -> Result<(), UsageError> {
    let folders: std::collections::BTreeSet<&Path> =
        tasks.iter().filter_map(|t| t.output.parent()).collect();
    for f in folders.into_iter().filter(|f| *f != outdir) {
        std::fs::create_dir_all(f).map_err(|source| UsageError::Outdir {
            path: f.to_path_buf(),
            source,
        })?;
    }
    Ok(())
}

/// Creates `outdir` and its missing parents; returns the topmost folder it
/// created (None when it existed), so that a refusal can take it back.
fn create_outdir(outdir: &Path) -> Result<Option<PathBuf>, UsageError> {
    let top = outdir
        .ancestors()
        .take_while(|a| !a.as_os_str().is_empty() && std::fs::symlink_metadata(a).is_err())
        .last()
        .map(Path::to_path_buf);
    std::fs::create_dir_all(outdir).map_err(|source| UsageError::Outdir {
        path: outdir.to_path_buf(),
        source,
    })?;
    Ok(top)
}

/// Each report must land in an existing, writable folder, and on no input
/// (nor a pair's voxel file), no output of this run, no other report and
/// nothing `guard` keeps.
fn check_reports(
    reports: &ReportFiles,
    tasks: &[Task],
    outdir: &Path,
    guard: &Guard,
) -> Result<(), UsageError> {
    let refuse = |flag: &str, path: &Path, why: String| UsageError::Report {
        flag: flag.to_string(),
        path: path.to_path_buf(),
        why,
    };
    // The journals, the lock and the temp files there are what --resume
    // and the next run trust: a report over one of them loses it.
    let state = identity::resolve_future(&outdir.join(STATE_DIR));
    let mut places: Vec<(&str, Place)> = Vec::new();
    for &(flag, path) in reports {
        if identity::resolve_future(path).starts_with(&state) {
            return Err(refuse(
                flag,
                path,
                format!(
                    "it is inside {}, nismooth's own journal and lock",
                    state.display()
                ),
            ));
        }
        // A device or FIFO is written into, never replaced: no folder to probe.
        match crate::io::report_target(path) {
            Err(crate::io::WriteError::Io { source, .. }) => {
                return Err(refuse(flag, path, source.to_string()))
            }
            Ok(crate::io::Target::Stream) => continue,
            Ok(crate::io::Target::Replace(_)) => {}
        }
        let folder = match path.parent().filter(|p| !p.as_os_str().is_empty()) {
            Some(f) => f.to_path_buf(),
            None => PathBuf::from("."),
        };
        if !folder.is_dir() {
            return Err(refuse(
                flag,
                path,
                format!("its folder {} does not exist", folder.display()),
            ));
        }
        probe_writable(&folder).map_err(|e| refuse(flag, path, e.to_string()))?;
        if let Some(why) = guard.refuses(path) {
            return Err(refuse(flag, path, why));
        }
        let place = Place::of(path);
        if let Some((other, _)) = places.iter().find(|(_, p)| p.same(&place)) {
            return Err(refuse(flag, path, format!("it is also the {other} file")));
        }
        // Cheap per task (40 000 of them on a shared file system): a file
        // that exists is an input only if it is the same file (through any
        // symlink or hard link); an output only if it has the same name.
        for t in tasks {
            if guard::is_input(&place, &t.input) {
                return Err(refuse(
                    flag,
                    path,
                    format!("it is input {}", t.input.display()),
                ));
            }
            let same_name = t.output.file_name() == Some(place.name.as_os_str());
            if same_name && place.same(&Place::of(&t.output)) {
                return Err(refuse(
                    flag,
                    path,
                    format!("it is the output of {}", t.input.display()),
                ));
            }
        }
        if let Some(why) = guard::never_text(path) {
            return Err(refuse(flag, path, why));
        }
        places.push((flag, place));
    }
    Ok(())
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
pub fn remove_stale_temps(tasks: &[Task]) -> usize {
    let mut names: HashMap<&Path, std::collections::HashSet<String>> = HashMap::new();
    for t in tasks {
        if let (Some(folder), Some(name)) = (t.output.parent(), t.output.file_name()) {
            let name = name.to_string_lossy();
            let name = crate::io::short_name(&name, crate::io::TEMP_NAME_KEEPS).into_owned();
            names.entry(folder).or_default().insert(name);
        }
    }
    let mut removed = 0;
    for (folder, names) in names {
        let Ok(dir) = std::fs::read_dir(folder) else {
            continue;
        };
        for entry in dir.filter_map(Result::ok) {
            let file = entry.file_name().to_string_lossy().into_owned();
            let ours = crate::io::temp_owner(&file).is_some_and(|dest| names.contains(dest));
            if ours && std::fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
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

    fn flat(paths: Vec<PathBuf>) -> Vec<Input> {
        paths.into_iter().map(Input::flat).collect()
    }

    #[test]
    fn refusals() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        assert!(matches!(
            make_tasks(vec![], &b, None, &[], &Guard::default()),
            Err(UsageError::NoInputs)
        ));
        let r = make_tasks(
            flat(vec![a.join("x.nii")]),
            &a,
            None,
            &[],
            &Guard::default(),
        );
        assert!(matches!(r, Err(UsageError::OutdirHoldsInput { .. })));
        let r = make_tasks(
            flat(vec![a.join("x.nii"), b.join("x.nii")]),
            &dir.path().join("o"),
            None,
            &[],
            &Guard::default(),
        );
        assert!(matches!(r, Err(UsageError::DuplicateOutput { .. })));
        // x.nii and x.nii.gz collide once the format is forced.
        let r = make_tasks(
            flat(vec![a.join("x.nii"), b.join("x.nii.gz")]),
            &dir.path().join("o"),
            Some(OutputFormat::NiiGz),
            &[],
            &Guard::default(),
        );
        assert!(matches!(r, Err(UsageError::DuplicateOutput { .. })));
        assert!(
            !dir.path().join("o").exists(),
            "refused runs create nothing"
        );
    }
}

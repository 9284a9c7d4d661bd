//! From what the user named to the images to smooth, each with the folder
//! its output goes to inside OUTDIR.
//!
//! Three ways to name inputs: files and folders on the command line (a
//! folder's NIfTI files, or with `--recursive` every NIfTI file below it,
//! the tree kept in OUTDIR so that equal names in different folders never
//! collide), and a list (`--list FILE`, `-` for standard input, relative
//! paths against the working directory as every other tool reads them).
//! A file named on the command line that does not exist is a typo: refused
//! before any work. One missing from a list is counted and named here and
//! fails as its image, so the rest of a long list still runs.

use std::collections::HashSet;
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};

use super::identity::FileId;
use super::is_nifti_name;
use crate::error::UsageError;

/// What the user named: the command line's paths, the list, and whether
/// folders are searched to the bottom.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    pub paths: Vec<PathBuf>,
    /// A list file, or `-` for standard input.
    pub list: Option<PathBuf>,
    pub recursive: bool,
    /// OUTDIR, never searched (it may sit inside an input tree).
    pub outdir: Option<PathBuf>,
    /// What earlier runs wrote in a folder, as their journals vouch
    /// (`report::journal::written`: the journal's format is the report's).
    /// Without it, every image in an OUTDIR inside the tree is the tree's.
    pub written: Option<WrittenIn>,
}

/// The outputs earlier runs wrote below a folder: the reader of its journals.
pub type WrittenIn = fn(&Path) -> HashSet<Written>;

/// A file nismooth wrote: its name, and its size and modification time as
/// it left them (a file since replaced or edited is no longer the one).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Written {
    pub name: std::ffi::OsString,
    pub bytes: u64,
    pub mtime_ns: u64,
}

impl Written {
    /// The file at `path` as it is now, if it is a regular file.
    pub fn of(path: &Path) -> Option<Written> {
        let m = std::fs::symlink_metadata(path).ok()?;
        Some(Written {
            name: path.file_name()?.to_os_string(),
            bytes: m.len(),
            mtime_ns: crate::io::mtime_ns(&m).filter(|_| m.is_file())?,
        })
    }
}

/// One image found: where it is, and the folder (relative, possibly empty)
/// its output goes to inside OUTDIR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Input {
    pub path: PathBuf,
    pub subdir: PathBuf,
    /// The output's file name when it is not the input's (a BIDS
    /// derivative's `desc-`); the extension still follows `--format`.
    pub name: Option<std::ffi::OsString>,
    /// The unit a job array shares (a BIDS participant); None: the image.
    pub group: Option<String>,
}

impl Input {
    /// An image whose output goes straight into OUTDIR.
    pub fn flat(path: PathBuf) -> Input {
        Input {
            path,
            subdir: PathBuf::new(),
            name: None,
            group: None,
        }
    }
}

/// The folder names a tree search never enters: a BIDS dataset's own
/// derivatives (outputs of earlier runs, often this tool's).
const SKIPPED_FOLDERS: [&str; 1] = ["derivatives"];

impl Sources {
    pub fn new(paths: Vec<PathBuf>) -> Sources {
        Sources {
            paths,
            ..Sources::default()
        }
    }

    /// Every input image, in order: the command line's, then the list's.
    pub fn discover(&self) -> Result<Vec<Input>, UsageError> {
        if let Some(missing) = self
            .paths
            .iter()
            .find(|p| std::fs::symlink_metadata(p).is_err())
        {
            return Err(UsageError::MissingInput(missing.clone()));
        }
        let mut out = Vec::new();
        let skip = Skip::new(self.outdir.as_deref(), self.written);
        for p in &self.paths {
            if !p.is_dir() {
                out.push(Input::flat(p.clone()));
            } else if self.recursive {
                walk(p, Path::new(""), &skip, &mut HashSet::new(), &mut out)?;
            } else {
                let found = scan_folder(p)?;
                if !found.folders.is_empty() {
                    log::info!(
                        "{}: {} subfolder(s) not searched (-r/--recursive searches the tree)",
                        p.display(),
                        found.folders.len()
                    );
                }
                out.extend(found.files.into_iter().map(Input::flat));
            }
        }
        if let Some(list) = &self.list {
            let listed = read_list(list)?;
            let missing: Vec<_> = listed
                .iter()
                .filter(|p| std::fs::symlink_metadata(p).is_err())
                .collect();
            if !missing.is_empty() {
                log::warn!(
                    "{} of {} image(s) in {} do not exist; each fails as its image: {}",
                    missing.len(),
                    listed.len(),
                    list.display(),
                    names(&missing)
                );
            }
            out.extend(listed.into_iter().map(Input::flat));
        }
        Ok(out)
    }

    /// The paths alone (for the commands that only read the images).
    pub fn paths(&self) -> Result<Vec<PathBuf>, UsageError> {
        Ok(self.discover()?.into_iter().map(|i| i.path).collect())
    }
}

/// Up to five names, then how many more.
fn names(paths: &[&PathBuf]) -> String {
    let mut s: Vec<String> = paths
        .iter()
        .take(5)
        .map(|p| p.display().to_string())
        .collect();
    if paths.len() > 5 {
        s.push(format!("and {} more", paths.len() - 5));
    }
    s.join(", ")
}

/// What a tree search leaves out besides hidden and derivatives folders:
/// OUTDIR itself.
struct Skip {
    outdir: Option<FileId>,
    written: Option<WrittenIn>,
}

impl Skip {
    const OUTDIR: &'static str = "the output directory";

    fn new(outdir: Option<&Path>, written: Option<WrittenIn>) -> Skip {
        Skip {
            outdir: outdir.and_then(FileId::of),
            written,
        }
    }

    /// Why `dir` (named `name`) is not searched, if it is not.
    fn why(&self, dir: &Path, name: &str) -> Option<&'static str> {
        if name.starts_with('.') {
            Some("hidden")
        } else if SKIPPED_FOLDERS.contains(&name) {
            Some("a derivatives folder")
        } else if self.outdir.is_some() && FileId::of(dir) == self.outdir {
            Some(Skip::OUTDIR)
        } else {
            None
        }
    }
}

/// Every NIfTI file below `dir`, sorted folder by folder; `rel` is `dir`'s
/// place below the folder named on the command line. A folder reached
/// twice (a symlink loop) is searched once.
fn walk(
    dir: &Path,
    rel: &Path,
    skip: &Skip,
    seen: &mut HashSet<FileId>,
    out: &mut Vec<Input>,
) -> Result<(), UsageError> {
    if let Some(id) = FileId::of(dir) {
        if !seen.insert(id) {
            log::info!(
                "skipped {}: already searched (a symlink loop)",
                dir.display()
            );
            return Ok(());
        }
    }
    let found = scan_folder(dir)?;
    out.extend(found.files.into_iter().map(|path| Input {
        subdir: rel.to_path_buf(),
        ..Input::flat(path)
    }));
    for sub in found.folders {
        let name = sub.file_name().unwrap_or_default();
        if let Some(why) = skip.why(&sub, &name.to_string_lossy()) {
            if why == Skip::OUTDIR {
                refuse_foreign_outdir(&sub, skip.written)?;
            }
            log::info!("skipped {}: {why}", sub.display());
            continue;
        }
        walk(&sub, &rel.join(name), skip, seen, out)?;
    }
    Ok(())
}

/// OUTDIR inside the tree being smoothed is skipped when every image in it
/// is one an earlier run wrote there (its journals vouch for each); any
/// other is an image of the tree that the run would neither smooth nor
/// spare: refused. A `.nismooth` folder alone proves nothing: a one-file
/// run (`-o DIR/x.nii.gz`) makes one in any folder, raw images beside it.
fn refuse_foreign_outdir(dir: &Path, written: Option<WrittenIn>) -> Result<(), UsageError> {
    match foreign_image_below(dir, written) {
        Some(input) => Err(UsageError::OutdirHoldsInput {
            outdir: dir.to_path_buf(),
            input,
        }),
        None => Ok(()),
    }
}

/// The first image below `dir` (hidden folders aside) that no journal of
/// `dir` vouches for.
pub fn foreign_image_below(dir: &Path, written: Option<WrittenIn>) -> Option<PathBuf> {
    let ours = written.map(|read| read(dir)).unwrap_or_default();
    let foreign = |p: &Path| Written::of(p).is_none_or(|w| !ours.contains(&w));
    first_image_below(dir, &mut HashSet::new(), &foreign)
}

/// Any NIfTI file below `dir` (hidden folders aside) that `pick` picks,
/// the search ending at the first.
fn first_image_below(
    dir: &Path,
    seen: &mut HashSet<FileId>,
    pick: &dyn Fn(&Path) -> bool,
) -> Option<PathBuf> {
    if !FileId::of(dir).is_some_and(|id| seen.insert(id)) {
        return None;
    }
    let found = scan_folder(dir).ok()?;
    if let Some(f) = found.files.into_iter().find(|f| pick(f)) {
        return Some(f);
    }
    found
        .folders
        .iter()
        .filter(|f| {
            !f.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .find_map(|f| first_image_below(f, seen, pick))
}

/// The longest line a list may hold: a path is at most PATH_MAX (4096).
const MAX_LIST_LINE: u64 = 64 << 10;

/// A list's paths: one a line, relative to the working directory; a line
/// whose first non-blank character is `#` is a comment (a `#` inside a
/// file name is part of the name). `-` reads standard input.
fn read_list(list: &Path) -> Result<Vec<PathBuf>, UsageError> {
    let unreadable = |source| UsageError::Unreadable {
        path: list.to_path_buf(),
        source,
    };
    let reader: Box<dyn std::io::Read> = if list == Path::new("-") {
        Box::new(std::io::stdin())
    } else {
        Box::new(std::fs::File::open(list).map_err(unreadable)?)
    };
    let mut r = std::io::BufReader::new(reader);
    let mut text = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        // A line is a path: more than MAX_LIST_LINE bytes (a device of
        // zeros, a binary file given as the list) is no list, refused as it
        // is read instead of held (it took 23 GB in 33 s).
        let n = (&mut r)
            .take(MAX_LIST_LINE + 1)
            .read_until(b'\n', &mut line)
            .map_err(unreadable)?;
        if n == 0 {
            break;
        }
        if line.len() as u64 > MAX_LIST_LINE {
            return Err(unreadable(std::io::Error::other(format!(
                "a line of more than {MAX_LIST_LINE} bytes: not a list of paths, one a line"
            ))));
        }
        text.extend_from_slice(&line);
    }
    // A byte-order mark (a list saved by a Windows editor) is no part of
    // the first path: kept, it named a file that looked like one that exists.
    let text = text.strip_prefix("\u{feff}".as_bytes()).unwrap_or(&text);
    Ok(text
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l).trim_ascii())
        .filter(|l| !l.is_empty() && !l.starts_with(b"#"))
        .map(|l| PathBuf::from(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(l)))
        .collect())
}

/// A folder's NIfTI files (sorted) and subfolders (sorted).
struct Scanned {
    files: Vec<PathBuf>,
    folders: Vec<PathBuf>,
}

/// A folder's entries: NIfTI files, and a NIfTI name that is not a regular
/// file (a broken symlink, say an annexed file not fetched) too, to fail as
/// an image; special files are named in the log; other files (notes,
/// sidecars) are expected in a data folder and pass in silence.
fn scan_folder(dir: &Path) -> Result<Scanned, UsageError> {
    let rd = std::fs::read_dir(dir).map_err(|source| UsageError::Unreadable {
        path: dir.to_path_buf(),
        source,
    })?;
    let (mut files, mut folders) = (Vec::new(), Vec::new());
    for entry in rd.filter_map(Result::ok) {
        let path = entry.path();
        let nifti = is_nifti_name(&path);
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() && nifti => files.push(path),
            Ok(m) if m.is_dir() => folders.push(path),
            Ok(m) if !m.is_file() => {
                log::info!("skipped {}: not a regular file", path.display());
            }
            Err(_) if nifti => files.push(path),
            _ => {}
        }
    }
    files.sort();
    folders.sort();
    Ok(Scanned { files, folders })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(dir: &Path, names: &[&str]) {
        for n in names {
            let p = dir.join(n);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"x").unwrap();
        }
    }

    #[test]
    fn folders_are_sorted_and_lists_read_against_the_working_directory() {
        let dir = tempfile::tempdir().unwrap();
        touch(
            dir.path(),
            &["b.nii.gz", "a.nii", "notes.txt", "c.nii", "sub/d.nii"],
        );
        let found = Sources::new(vec![dir.path().to_path_buf()])
            .paths()
            .unwrap();
        let names: Vec<_> = found
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap())
            .collect();
        assert_eq!(
            names,
            ["a.nii", "b.nii.gz", "c.nii"],
            "no subfolder without -r"
        );
        let list = dir.path().join("list.txt");
        std::fs::write(
            &list,
            "# header\na.nii\n\n  /abs/c.nii  \n  # indented comment\n",
        )
        .unwrap();
        let sources = Sources {
            list: Some(list),
            ..Sources::default()
        };
        // Relative to the working directory, not to the list's folder.
        assert_eq!(
            sources.paths().unwrap(),
            [PathBuf::from("a.nii"), PathBuf::from("/abs/c.nii")]
        );
    }

    #[test]
    fn a_missing_command_line_input_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("typo.nii.gz");
        let r = Sources::new(vec![gone.clone()]).discover();
        assert!(matches!(r, Err(UsageError::MissingInput(p)) if p == gone));
    }

    #[test]
    fn trees_keep_their_folders_and_skip_hidden_derivatives_and_outdir() {
        let dir = tempfile::tempdir().unwrap();
        let top = dir.path().join("data");
        touch(
            &top,
            &[
                "T1.nii.gz",
                "s2/T1.nii.gz",
                "s1/T1.nii.gz",
                "s1/deeper/x.nii",
                ".git/y.nii",
                "derivatives/old/z.nii.gz",
                "out/o.nii.gz",
                "out/.nismooth/lock",
            ],
        );
        // The journal of out/ vouches for o.nii.gz as it is now.
        fn journal(dir: &Path) -> HashSet<Written> {
            Written::of(&dir.join("o.nii.gz")).into_iter().collect()
        }
        let sources = Sources {
            paths: vec![top.clone()],
            recursive: true,
            outdir: Some(top.join("out")),
            written: Some(journal),
            ..Sources::default()
        };
        let found: Vec<(String, String)> = sources
            .discover()
            .unwrap()
            .into_iter()
            .map(|i| {
                let rel = i.path.strip_prefix(&top).unwrap().display().to_string();
                (rel, i.subdir.display().to_string())
            })
            .collect();
        let want = [
            ("T1.nii.gz", ""),
            ("s1/T1.nii.gz", "s1"),
            ("s1/deeper/x.nii", "s1/deeper"),
            ("s2/T1.nii.gz", "s2"),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(found, want);
    }

    /// An OUTDIR inside the tree with a `.nismooth` (a one-file run makes
    /// one anywhere) and an image no journal vouches for is refused.
    #[test]
    fn an_outdir_in_the_tree_with_an_image_no_journal_vouches_for_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        touch(dir.path(), &["a.nii", "out/raw.nii", "out/.nismooth/lock"]);
        fn journal(_: &Path) -> HashSet<Written> {
            HashSet::new()
        }
        let sources = Sources {
            paths: vec![dir.path().to_path_buf()],
            recursive: true,
            outdir: Some(dir.path().join("out")),
            written: Some(journal),
            ..Sources::default()
        };
        let err = sources.discover().unwrap_err().to_string();
        assert!(err.contains("raw.nii"), "{err}");
    }

    #[test]
    fn a_symlink_loop_is_searched_once() {
        let dir = tempfile::tempdir().unwrap();
        touch(dir.path(), &["a/x.nii"]);
        std::os::unix::fs::symlink(dir.path(), dir.path().join("a/loop")).unwrap();
        let sources = Sources {
            paths: vec![dir.path().to_path_buf()],
            recursive: true,
            ..Sources::default()
        };
        assert_eq!(sources.discover().unwrap().len(), 1);
    }
}

//! Which file is which: identities (device and inode), not spellings.
//!
//! Two paths name the same folder in many ways a string comparison misses:
//! `in/new/..` is `in` once `new` exists, a bind mount shows `in` under
//! another name, and a symlinked input's real file may sit in OUTDIR. So
//! every refusal that protects a file compares what the file system says:
//! a folder's (device, inode), and for a file not yet written, its folder's
//! identity and its name.

use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

/// A file's or folder's identity on its file system.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    /// The identity of what `path` names, through symlinks; None if it does not exist.
    pub fn of(path: &Path) -> Option<FileId> {
        let m = std::fs::metadata(path).ok()?;
        Some(FileId {
            dev: m.dev(),
            ino: m.ino(),
        })
    }
}

/// Where `path` will be once its missing folders exist: each existing
/// prefix resolved by the file system (symlinks, `..`), the missing rest
/// applied as the kernel will apply it after creating those folders (a `..`
/// after a folder that does not exist yet cancels it).
pub fn resolve_future(path: &Path) -> PathBuf {
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    };
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::Prefix(_) | Component::RootDir => out.push(c),
            Component::CurDir => {}
            // `out` is canonical where it exists, so a lexical step up is the real one.
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => {
                out.push(n);
                if let Ok(real) = std::fs::canonicalize(&out) {
                    out = real;
                }
            }
        }
    }
    out
}

/// A file, existing or to be written, as its folder's identity and its
/// name; and, when it exists, its own identity (a hard link is the same file).
#[derive(Clone, Debug)]
pub struct Place {
    pub folder: Option<FileId>,
    pub name: OsString,
    pub file: Option<FileId>,
}

impl Place {
    /// The place `path` names (its folder resolved as `resolve_future` does).
    pub fn of(path: &Path) -> Place {
        let full = resolve_future(path);
        let name = full.file_name().map(OsString::from).unwrap_or_default();
        let folder = full.parent().and_then(FileId::of);
        Place {
            folder,
            name,
            file: FileId::of(path),
        }
    }

    /// Whether two places are one file: the same file, or the same name in the same folder.
    pub fn same(&self, other: &Place) -> bool {
        (self.file.is_some() && self.file == other.file)
            || (self.folder.is_some() && self.folder == other.folder && self.name == other.name)
    }

    /// The first of `paths` that is the file `path` names (through any
    /// link or hard link): a file about to be written must be none of them.
    pub fn among<'a>(path: &Path, paths: &'a [PathBuf]) -> Option<&'a PathBuf> {
        let place = Place::of(path);
        paths.iter().find(|p| Place::of(p).same(&place))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_folder_then_dot_dot_is_the_folder_itself() {
        let d = tempfile::tempdir().unwrap();
        let input = d.path().join("in");
        std::fs::create_dir(&input).unwrap();
        let sneaky = input.join("nonexist").join("..");
        assert_eq!(
            resolve_future(&sneaky),
            std::fs::canonicalize(&input).unwrap()
        );
        assert!(
            !input.join("nonexist").exists(),
            "resolving creates nothing"
        );
        let link = d.path().join("alias");
        std::os::unix::fs::symlink(&input, &link).unwrap();
        assert_eq!(
            FileId::of(&resolve_future(&link.join("new/.."))),
            FileId::of(&input)
        );
        let fresh = resolve_future(&d.path().join("a/b/../c"));
        assert!(fresh.ends_with("a/c"), "{}", fresh.display());
    }

    #[test]
    fn places_match_by_folder_identity_and_name() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("x"), b"1").unwrap();
        std::fs::hard_link(d.path().join("x"), d.path().join("y")).unwrap();
        let x = Place::of(&d.path().join("x"));
        assert!(x.same(&Place::of(&d.path().join("y"))), "hard links");
        assert!(x.same(&Place::of(&d.path().join("sub/../x"))));
        assert!(!x.same(&Place::of(&d.path().join("z"))));
        assert!(Place::of(&d.path().join("z")).same(&Place::of(&d.path().join("./z"))));
    }
}

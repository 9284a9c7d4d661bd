//! Every input the fuzzer (`fuzz/fuzz_targets/read.rs`) has flagged, and
//! every seed of its corpus, read again on each test run: a finding must
//! stay an image or an error (never a panic), and a seed must stay readable.

use std::path::{Path, PathBuf};

use nismooth::io::read_image_from_bytes;

fn files(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

/// The fuzz target's own checks, outside libFuzzer.
fn read_checked(path: &Path) -> Result<(), String> {
    let bytes = std::fs::read(path).unwrap();
    let outcome = std::panic::catch_unwind(|| read_image_from_bytes(&bytes))
        .map_err(|_| format!("{} panicked the reader", path.display()))?;
    match outcome {
        Ok(img) => {
            assert_eq!(img.voxels.len(), img.shape.len(), "{}", path.display());
            assert!(img.raw_header.len() >= img.version.header_len() + 4);
            Ok(())
        }
        Err(e) => Err(e.to_string()),
    }
}

#[test]
fn fuzz_findings_give_an_image_or_an_error() {
    let found = files("tests/data/fuzz");
    assert!(!found.is_empty());
    for f in found {
        if let Err(e) = read_checked(&f) {
            assert!(!e.contains("panicked"), "{e}");
        }
    }
}

#[test]
fn fuzz_seeds_stay_readable() {
    let seeds = files("fuzz/seeds/read");
    assert!(seeds.len() >= 8);
    for s in seeds {
        read_checked(&s).unwrap_or_else(|e| panic!("{}: {e}", s.display()));
    }
}

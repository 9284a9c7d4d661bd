//! Several readers per rank (`--readers`): they share the task list, each
//! image is read once, records come back in task order, the outputs are the
//! bytes one reader writes, and a bad file still fails alone. In a test
//! binary of its own, so that no other test's pipeline threads are counted.
#![cfg(target_os = "linux")]

use std::path::Path;

use nismooth::config::RunConfig;
use nismooth::driver::{self, comm::Single};
use nismooth::filter::{cpu::CpuBackend, Backend, FilterError, FilterSpec, Shape};
use nismooth::report::Status;
use nismooth::resources::default_readers;
use nismooth::volume::{DType, Voxels};

mod common;
use common::{config, phantoms};

/// Smooths with the CPU backend and counts, at each image, the pipeline's
/// reader threads alive in this process (by their names).
struct CountsReaders {
    cpu: CpuBackend,
    most: usize,
}

impl Backend for CountsReaders {
    fn name(&self) -> &'static str {
        "counts-readers"
    }
    fn smooth(
        &mut self,
        v: Voxels,
        sh: Shape,
        sp: &FilterSpec,
        o: DType,
    ) -> Result<Voxels, FilterError> {
        let readers = std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter(|t| {
                let comm = t.as_ref().unwrap().path().join("comm");
                std::fs::read_to_string(comm).is_ok_and(|c| c.starts_with("nismooth-read"))
            })
            .count();
        self.most = self.most.max(readers);
        self.cpu.smooth(v, sh, sp, o)
    }
}

#[test]
fn several_readers_share_the_list_each_image_once_and_a_bad_file_fails_alone() {
    let dir = tempfile::tempdir().unwrap();
    let indir = dir.path().join("in");
    // The default: a second reader once the rank has a second core.
    for (threads, readers) in [(1, 1), (2, 2), (16, 2)] {
        assert_eq!(default_readers(threads), readers, "--threads {threads}");
    }
    let inputs = phantoms(&indir, 9);
    // A cut gzip stream among them.
    let bad = indir.join("sub-0004_T1w.nii.gz");
    assert!(inputs.contains(&bad));
    let bytes = std::fs::read(&bad).unwrap();
    std::fs::write(&bad, &bytes[..bytes.len() / 2]).unwrap();

    let mut outputs = Vec::new();
    for readers in ["1", "3"] {
        let out = dir.path().join(format!("readers-{readers}"));
        let cfg = RunConfig {
            threads: 2,
            readers: readers.parse().unwrap(),
            ..config(&indir, &out)
        };
        assert_eq!(cfg.readers, readers.parse::<usize>().unwrap());
        let mut backend = CountsReaders {
            cpu: CpuBackend::new(1).unwrap(),
            most: 0,
        };
        let outcome = driver::run(&cfg, &Single, &mut backend, vec![]).unwrap();
        assert_eq!(
            backend.most.to_string(),
            readers,
            "reader threads alive while filtering"
        );
        assert_eq!(outcome.failed, 1);
        let report = outcome.report.unwrap();
        let indices: Vec<usize> = report.images.iter().map(|r| r.index).collect();
        assert_eq!(indices, (0..inputs.len()).collect::<Vec<_>>(), "task order");
        let mut written = Vec::new();
        for rec in &report.images {
            if rec.input == bad.display().to_string() {
                assert_eq!(rec.status, Status::Failed);
                assert!(!Path::new(&rec.output).exists(), "nothing written for it");
            } else {
                assert_eq!(rec.status, Status::Ok, "{}", rec.input);
                written.push(std::fs::read(&rec.output).unwrap());
            }
        }
        assert_eq!(written.len(), inputs.len() - 1);
        outputs.push(written);
    }
    assert!(
        outputs[0] == outputs[1],
        "the same bytes with 1 and 3 readers"
    );
}

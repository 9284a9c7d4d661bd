//! The driver's single-process path through the `Comm` trait, in plain
//! `cargo test`: every schedule processes every image exactly once with
//! identical outputs, a refusal comes back as an error, and a panic inside
//! the filter becomes that image's recorded error (static and dynamic paths).
//! The multi-rank paths run under mpirun in tests/python/test_mpi.py.

use std::path::{Path, PathBuf};

use clap::Parser;
use nismooth::cli::{Cli, Command};
use nismooth::config::RunConfig;
use nismooth::driver::{self, comm::Single};
use nismooth::filter::{cpu::CpuBackend, Backend, FilterError, FilterSpec, Shape};
use nismooth::generate::{self, PhantomSpec};
use nismooth::report::Status;
use nismooth::volume::{DType, Voxels};

fn config(args: &[&str]) -> RunConfig {
    let mut argv = vec!["nismooth", "run", "--progress", "none"];
    argv.extend_from_slice(args);
    match Cli::parse_from(argv).command {
        Command::Run(a) => RunConfig::from_args(&a, 1, 1).expect("valid options"),
        _ => unreachable!(),
    }
}

fn phantoms(dir: &Path, n: usize) -> Vec<PathBuf> {
    let spec = PhantomSpec {
        shape: vec![14, 12, 9],
        dtype: DType::F32,
        seed: 11,
        vary_size: true,
        noise: nismooth::cli::NoiseChoice::Rician,
        format: nismooth::io::OutputFormat::NiiGz,
    };
    generate::generate(dir, n, &spec).expect("phantoms")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn every_schedule_processes_each_image_once_with_identical_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = phantoms(&dir.path().join("in"), 5);
    let mut first: Option<Vec<Vec<u8>>> = None;
    for schedule in ["block", "cyclic", "balanced", "dynamic"] {
        let out = dir.path().join(schedule);
        let cfg = config(&[
            s(&dir.path().join("in")),
            "-o",
            s(&out),
            "--threads",
            "1",
            "--schedule",
            schedule,
        ]);
        let mut backend = CpuBackend::new(1).unwrap();
        let outcome = driver::run(&cfg, &Single, &mut backend, vec![]).expect("not refused");
        assert_eq!(outcome.failed, 0);
        let report = outcome.report.expect("root has the report");
        let indices: Vec<usize> = report.images.iter().map(|r| r.index).collect();
        assert_eq!(indices, (0..inputs.len()).collect::<Vec<_>>(), "{schedule}");
        assert!(report
            .images
            .iter()
            .all(|r| r.status == Status::Ok && r.rank == 0));
        assert_eq!(report.processes.len(), 1);
        assert_eq!(report.processes[0].images, inputs.len());
        assert_eq!(
            report.processes[0].voxels,
            report.images.iter().map(|r| r.voxels).sum::<u64>()
        );
        let bytes: Vec<Vec<u8>> = report
            .images
            .iter()
            .map(|r| std::fs::read(&r.output).unwrap())
            .collect();
        match &first {
            None => first = Some(bytes),
            Some(f) => assert!(f == &bytes, "{schedule} wrote different bytes"),
        }
    }
}

#[test]
fn refusal_comes_back_as_an_error_and_touches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    phantoms(&dir.path().join("in"), 1);
    let into_inputs = dir.path().join("in");
    let cfg = config(&[s(&into_inputs), "-o", s(&into_inputs)]);
    let mut backend = CpuBackend::new(1).unwrap();
    let err = driver::run(&cfg, &Single, &mut backend, vec![])
        .err()
        .expect("refused");
    assert!(err.to_string().contains("holds input"), "{err}");
    assert_eq!(std::fs::read_dir(&into_inputs).unwrap().count(), 1);
}

/// Panics on the second image it sees, smooths the others with the CPU backend.
struct PanicOnSecond {
    seen: usize,
    cpu: CpuBackend,
}

impl Backend for PanicOnSecond {
    fn name(&self) -> &'static str {
        "panics"
    }
    fn smooth(
        &mut self,
        input: Voxels,
        shape: Shape,
        spec: &FilterSpec,
        out: DType,
    ) -> Result<Voxels, FilterError> {
        self.seen += 1;
        if self.seen == 2 {
            panic!("injected fault");
        }
        self.cpu.smooth(input, shape, spec, out)
    }
}

#[test]
fn a_panic_in_the_filter_is_recorded_and_the_run_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = phantoms(&dir.path().join("in"), 4);
    // Dynamic runs root's pipeline on a second thread: the panic must not cross it.
    for schedule in ["cyclic", "dynamic"] {
        let out = dir.path().join(schedule);
        let cfg = config(&[
            s(&dir.path().join("in")),
            "-o",
            s(&out),
            "--schedule",
            schedule,
        ]);
        let mut backend = PanicOnSecond {
            seen: 0,
            cpu: CpuBackend::new(1).unwrap(),
        };
        let outcome = driver::run(&cfg, &Single, &mut backend, vec![]).unwrap();
        assert_eq!(outcome.failed, 1, "{schedule}");
        let report = outcome.report.unwrap();
        assert_eq!(report.images.len(), inputs.len());
        let failed: Vec<_> = report
            .images
            .iter()
            .filter(|r| r.status == Status::Failed)
            .collect();
        assert_eq!(failed.len(), 1);
        assert!(failed[0]
            .error
            .as_deref()
            .unwrap()
            .contains("injected fault"));
        assert!(!Path::new(&failed[0].output).exists());
        let written = std::fs::read_dir(&out)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name() != ".nismooth")
            .count();
        assert_eq!(
            written,
            inputs.len() - 1,
            "no temp file left, the rest written"
        );
    }
}
